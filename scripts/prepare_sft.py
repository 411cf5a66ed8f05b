"""Prepare chat / instruction data for supervised fine-tuning (configs/sft.py).

  python scripts/prepare_sft.py --input=chats.jsonl --model_dir=/models/llama --output=datasets/chats

Each JSONL line is {"messages": [{"role": "system"|"user"|"assistant", "content": ...}, ...]}
or {"prompt": ..., "completion": ...}. Conversations are rendered with the
model's chat template (tokenizer_config.json / chat_template.jinja), or the
built-in ChatML template when it has none, and tokenized with the model's
tokenizer. The loss covers assistant turns (--loss_on=all: every token).
Writes train/val shards, the tokenizer and metadata.json with the counts.
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

from data import sft  # noqa: E402
from errors import UserError  # noqa: E402

_DEFAULTS = sft.SftOptions()
_INPUT = flags.DEFINE_list("input", None, "JSONL files (.gz/.zst too), directories or globs.", required=True)
_MODEL_DIR = flags.DEFINE_string("model_dir", None, "HF model directory: its tokenizer and chat template.",
                                 required=True)
_OUTPUT = flags.DEFINE_string("output", None, "Dataset directory to create.", required=True)
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace an existing --output.")
_VAL = flags.DEFINE_float("val_fraction", _DEFAULTS.val_fraction, "Share of examples held out for validation.")
_MAX_LEN = flags.DEFINE_integer("max_len", _DEFAULTS.max_len, "Longest example in tokens.")
_OVERLONG = flags.DEFINE_enum("overlong", _DEFAULTS.overlong, ["truncate", "drop"], "Longer examples are...")
_BAD = flags.DEFINE_enum("bad_lines", _DEFAULTS.bad_lines, ["error", "skip"],
                         "Invalid lines stop the run (naming the line) or are skipped and counted.")
_LOSS_ON = flags.DEFINE_enum("loss_on", _DEFAULTS.loss_on, ["assistant", "all"], "Tokens that carry loss.")
_TEMPLATE = flags.DEFINE_string("template", _DEFAULTS.template,
                                "'model' (the model's own, else built-in), 'builtin', or a .jinja file.")
_SEED = flags.DEFINE_integer("seed", _DEFAULTS.seed, "Seed of the train/val split.")


def main(argv):
  del argv
  opts = sft.SftOptions(val_fraction=_VAL.value, max_len=_MAX_LEN.value, overlong=_OVERLONG.value,
                        bad_lines=_BAD.value, loss_on=_LOSS_ON.value, template=_TEMPLATE.value,
                        seed=_SEED.value)
  try:
    meta = sft.prepare_sft(_INPUT.value, _MODEL_DIR.value, _OUTPUT.value, opts, _OVERWRITE.value)
  except UserError as e:
    sys.exit(f"error: {e}")
  print(json.dumps({"output": _OUTPUT.value, "template": meta["chat_template_from"], **meta["counts"],
                    **{f"{s}_examples": v["num_docs"] for s, v in meta["splits"].items()},
                    **{f"{s}_target_tokens": v["target_tokens"] for s, v in meta["splits"].items()}}))


if __name__ == "__main__":
  app.run(main)
