"""Write the standard-library instruction dataset (data/stdlib_chat.py) as chat JSONL.

  python scripts/make_stdlib_chat.py --output=datasets/stdlib_chat.jsonl
  python scripts/make_stdlib_chat.py --preferences --output=datasets/stdlib_prefs.jsonl

With --preferences, {"prompt", "chosen", "rejected"} pairs instead (for train.objective="reward" or
"dpo"): each question's own answer preferred to the same words shuffled (--rejected=shuffled) or to the
answer about another function (--rejected=other).
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
_PREFERENCES = flags.DEFINE_bool("preferences", False, "Write preference pairs instead of conversations.")
_REJECTED = flags.DEFINE_enum("rejected", "shuffled", stdlib_chat.REJECTED,
                              "With --preferences, the rejected answer: the chosen one's words shuffled, or "
                              "another function's answer.")


def main(argv):
  del argv
  files = corpus.stdlib_files()
  files = files[:_MAX_FILES.value] if _MAX_FILES.value else files
  rows = (stdlib_chat.preference_pairs(files, _REJECTED.value) if _PREFERENCES.value
          else stdlib_chat.examples(files))
  directory = os.path.dirname(os.path.abspath(_OUTPUT.value))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-")
  with os.fdopen(fd, "w") as f:
    for row in rows:
      f.write(json.dumps(row) + "\n")
  os.replace(tmp, _OUTPUT.value)
  print(f"wrote {len(rows)} {'pairs' if _PREFERENCES.value else 'conversations'} to {_OUTPUT.value}")


if __name__ == "__main__":
  app.run(main)
