"""Write the standard-library instruction dataset (data/stdlib_chat.py) as chat JSONL.

  python scripts/make_stdlib_chat.py --output=datasets/stdlib_chat.jsonl
"""

import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

from data import corpus, stdlib_chat  # noqa: E402

_OUTPUT = flags.DEFINE_string("output", None, "JSONL file to write.", required=True)
_MAX_FILES = flags.DEFINE_integer("max_files", 0, "Use only the first N standard-library files (0 = all).")


def main(argv):
  del argv
  files = corpus.stdlib_files()
  rows = stdlib_chat.examples(files[:_MAX_FILES.value] if _MAX_FILES.value else files)
  directory = os.path.dirname(os.path.abspath(_OUTPUT.value))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-")
  with os.fdopen(fd, "w") as f:
    for row in rows:
      f.write(json.dumps(row) + "\n")
  os.replace(tmp, _OUTPUT.value)
  print(f"wrote {len(rows)} conversations to {_OUTPUT.value}")


if __name__ == "__main__":
  app.run(main)
