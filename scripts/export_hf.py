"""Export a train.py run as a Hugging Face model directory.

  python scripts/export_hf.py --workdir=runs/quickstart --output=exports/quickstart [--step=N] [--dtype=bfloat16]

The result loads with transformers' AutoModelForCausalLM and AutoTokenizer.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

from errors import UserError  # noqa: E402
from trainer import export  # noqa: E402

_WORKDIR = flags.DEFINE_string("workdir", None, "A train.py --workdir.", required=True)
_OUTPUT = flags.DEFINE_string("output", None, "Directory to create.", required=True)
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step; default the newest.")
_DTYPE = flags.DEFINE_enum("dtype", "float32", sorted(export.DTYPES), "Weight dtype in the export.")


def main(argv):
  del argv
  try:
    step = export.export(_WORKDIR.value, _OUTPUT.value, _STEP.value, _DTYPE.value)
  except UserError as e:
    sys.exit(f"error: {e}")
  print(f"exported step {step} of {_WORKDIR.value} to {_OUTPUT.value}")


if __name__ == "__main__":
  app.run(main)
