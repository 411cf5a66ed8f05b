"""Plot train.py runs' metrics.jsonl to one PNG, several runs on the same axes.

  python scripts/plot_metrics.py runs/quickstart                        # -> runs/quickstart/plots.png
  python scripts/plot_metrics.py runs/a runs/b --output=compare.png     # or --output=DIR for DIR/plots.png

Panels: train and val loss against step and tokens seen, test loss, learning
rate, gradient norm, tokens/s, and every metric of each task/... split.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

from errors import UserError  # noqa: E402
from evals import curves  # noqa: E402

_OUTPUT = flags.DEFINE_string("output", None, "A .png path, or a directory for DIR/plots.png; "
                              "default WORKDIR[0]/plots.png.")


def main(argv):
  workdirs = argv[1:]
  if not workdirs:
    sys.exit("usage: plot_metrics.py WORKDIR [WORKDIR...] [--output=DIR_OR_PNG]")
  try:
    path = curves.plot_runs(workdirs, _OUTPUT.value)
  except UserError as e:
    sys.exit(f"error: {e}")
  print(f"wrote {path}")


if __name__ == "__main__":
  app.run(main)
