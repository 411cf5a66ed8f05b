"""Export a train.py run as a Hugging Face model directory.

  python scripts/export_hf.py --workdir=runs/quickstart --output=exports/quickstart [--step=N] [--dtype=bfloat16]
  python scripts/export_hf.py --workdir=runs/sft --output=exports/sft --best   # lowest val loss
  python scripts/export_hf.py --workdir=runs/lora --output=exports/adapter --peft

The result loads with transformers' AutoModelForCausalLM and AutoTokenizer. A
LoRA run exports its adapters merged into the base, or with --peft the
adapters alone (adapter_config.json + adapter_model.safetensors) for `peft`.
Libraries' INFO logs (JAX, Orbax) show only with --verbose.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

import quiet_logs  # noqa: E402
from errors import UserError  # noqa: E402
from trainer import export  # noqa: E402

_WORKDIR = flags.DEFINE_string("workdir", None, "A train.py --workdir.", required=True)
_OUTPUT = flags.DEFINE_string("output", None, "Directory to create.", required=True)
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step; default the newest.")
_DTYPE = flags.DEFINE_enum("dtype", "float32", sorted(export.DTYPES), "Weight dtype in the export.")
_BEST = flags.DEFINE_bool("best", False, "Export WORKDIR/best (config.checkpoint.keep_best), not checkpoints/.")
_PEFT = flags.DEFINE_bool("peft", False, "LoRA runs: write the adapters alone in PEFT's format.")


def main(argv):
  del argv
  quiet_logs.apply()
  try:
    step = export.export(_WORKDIR.value, _OUTPUT.value, _STEP.value, _DTYPE.value, _BEST.value, _PEFT.value)
  except UserError as e:
    sys.exit(f"error: {e}")
  print(f"exported step {step} of {_WORKDIR.value} to {_OUTPUT.value}")


if __name__ == "__main__":
  app.run(main)
