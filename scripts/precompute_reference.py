"""Compute DPO's reference log-probabilities once, into a prepared preference dataset.

  python scripts/precompute_reference.py --data_dir=datasets/stdlib_prefs --model_dir=exports/stdlib-sft
  python train.py --config=configs/dpo.py --workdir=runs/dpo_pre --config.train.dpo.reference=precomputed

For every side of every pair: the sum of its completion tokens' log-probabilities under --model_dir (the
DPO run's starting model, config.init.hf_dir), computed as the DPO loss computes them live. Written beside
the shards (SPLIT.ref_logps.npy) and recorded in metadata.json with the model's fingerprint; a run checks
that fingerprint against its own starting model. The run then holds no reference and runs no forward
pass for it.
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

from errors import UserError  # noqa: E402
from trainer import reference_logps  # noqa: E402

_DATA = flags.DEFINE_string("data_dir", None, "A preference dataset (scripts/prepare_preferences.py).", required=True)
_MODEL = flags.DEFINE_string("model_dir", None, "The reference: an HF model directory (the DPO run's "
                             "config.init.hf_dir).", required=True)
_BATCH = flags.DEFINE_integer("batch_pairs", 8, "Pairs per forward pass.")
_CHUNK = flags.DEFINE_integer("vocab_chunk", 0, "Vocabulary columns at a time (0: all at once).")


def main(argv):
  del argv
  try:
    means = reference_logps.precompute(_DATA.value, _MODEL.value, _BATCH.value, _CHUNK.value)
  except UserError as e:
    sys.exit(f"error: {e}")
  print(json.dumps({"data_dir": _DATA.value, "model_dir": _MODEL.value,
                    **{f"{s}_mean_logp": v for s, v in means.items()}}))


if __name__ == "__main__":
  app.run(main)
