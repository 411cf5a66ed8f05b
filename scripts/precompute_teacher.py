"""Compute a distillation teacher's top-k logits once, over the rows a distillation config reads.

  python scripts/precompute_teacher.py --config=configs/distill.py --out_dir=datasets/stdlib_teacher_top16 \\
      --top_k=16
  python train.py --config=configs/distill.py --workdir=runs/distill_topk \\
      --config.train.distill.teacher_topk_dir=datasets/stdlib_teacher_top16

The config's data, sequence length, packing, teacher (train.distill.teacher_workdir or teacher_hf_dir) and
mesh are used exactly as the run would use them (the same --config.a.b=value overrides apply). It covers
the rows the run reads: the first train.steps x train.batch_size rows of train (--train_rows sets another
count; a run shuffles whatever rows there are each epoch) and the rows its evaluations read of val and
the final split. A run reading the directory never loads the teacher, and checks that the rows, the
vocabulary and (when it names one) the teacher are the ones the logits came from. The format and why rows
are packed once are in data/teacher_topk.py.
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from configs import overrides  # noqa: E402
from errors import UserError  # noqa: E402
from trainer import teacher_topk  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "The distillation run's config (configs/*.py).",
                                          lock_config=True)
_OUT = flags.DEFINE_string("out_dir", None, "Directory to write (replaced if it is an earlier one).", required=True)
_TOP_K = flags.DEFINE_integer("top_k", 16, "Likeliest next tokens kept per position.")
_TRAIN_ROWS = flags.DEFINE_integer("train_rows", 0, "Rows of the train split to cover (0: the run's steps x "
                                   "batch_size; -1: all of them).")
_DTYPE = flags.DEFINE_enum("logps_dtype", "float16", ["float16", "float32"], "How the log-probabilities are stored.")
_BATCH = flags.DEFINE_integer("batch_rows", 8, "Rows per forward pass.")
flags.mark_flags_as_required(["config"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.WARNING)
  try:
    summary = teacher_topk.precompute(_CONFIG.value, _OUT.value, _TOP_K.value, _TRAIN_ROWS.value, _DTYPE.value,
                                      _BATCH.value)
  except UserError as e:
    sys.exit(f"error: {e}")
  print(json.dumps({"out_dir": _OUT.value, "top_k": _TOP_K.value, **summary}))


if __name__ == "__main__":
  app.run(main, flags_parser=overrides.parse_flags)
