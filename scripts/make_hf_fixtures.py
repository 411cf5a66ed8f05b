"""Regenerate tests/fixtures/hf/: tiny random HF models and their transformers logits.

  pip install torch==2.13.0 transformers==5.23.0 && python scripts/make_hf_fixtures.py

CI checks our import against these golden logits without needing torch; the
live test in tests/test_hf.py compares against transformers directly when it
is installed.
"""

import json
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests"))

import numpy as np  # noqa: E402

import hf_models  # noqa: E402


def write_golden_rolling(out: str) -> None:
  """golden_rolling.json: transformers' windowed log-probability of hf_models.ROLLING_DOC."""
  golden = [{"window": w, "stride": s, "logprob": hf_models.hf_rolling_logprob(out, hf_models.ROLLING_DOC, w, s)}
            for w, s in hf_models.ROLLING_WINDOWS]
  with open(os.path.join(out, "golden_rolling.json"), "w") as f:
    json.dump(golden, f, indent=1)


def main():
  root = os.path.join(REPO, "tests", "fixtures", "hf")
  for name in sorted(hf_models.CASES):
    out = os.path.join(root, name)
    logits = hf_models.make(name, out)
    for extra in ("generation_config.json",):
      if os.path.exists(os.path.join(out, extra)):
        os.remove(os.path.join(out, extra))
    np.save(os.path.join(out, "golden_logits.npy"), logits.astype(np.float32))
    write_golden_rolling(out)
    print(f"{name}: logits {logits.shape}, {sum(os.path.getsize(os.path.join(out, f)) for f in os.listdir(out)):,} bytes")


if __name__ == "__main__":
  main()
