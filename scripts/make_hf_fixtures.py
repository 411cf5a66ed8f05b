"""Regenerate tests/fixtures/hf/: tiny random HF models and their transformers logits.

  pip install torch==2.13.0 transformers==5.23.0 && python scripts/make_hf_fixtures.py

CI checks our import against these golden logits without needing torch; the
live test in tests/test_hf.py compares against transformers directly when it
is installed.
"""

import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests"))

import numpy as np  # noqa: E402

import hf_models  # noqa: E402


def main():
  root = os.path.join(REPO, "tests", "fixtures", "hf")
  for name in sorted(hf_models.CASES):
    out = os.path.join(root, name)
    logits = hf_models.make(name, out)
    for extra in ("generation_config.json",):
      if os.path.exists(os.path.join(out, extra)):
        os.remove(os.path.join(out, extra))
    np.save(os.path.join(out, "golden_logits.npy"), logits.astype(np.float32))
    print(f"{name}: logits {logits.shape}, {sum(os.path.getsize(os.path.join(out, f)) for f in os.listdir(out)):,} bytes")


if __name__ == "__main__":
  main()
