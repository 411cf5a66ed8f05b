"""Write the standard-library instruction dataset (data/stdlib_chat.py) as chat JSONL.

  python scripts/make_stdlib_chat.py --output=datasets/stdlib_chat.jsonl
  python scripts/make_stdlib_chat.py --preferences --output=datasets/stdlib_prefs.jsonl
  python scripts/make_stdlib_chat.py --prompts --output=datasets/stdlib_prompts.jsonl

With --preferences, {"prompt", "chosen", "rejected"} pairs instead (for train.objective="reward" or
"dpo"): each question's own answer preferred to the same words shuffled (--rejected=shuffled) or to the
answer about another function (--rejected=other). With --prompts, {"prompt", "answer"} lines for
train.objective="grpo": each question, answered by the first word of its docstring (the exact-match reward).
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
_PROMPTS = flags.DEFINE_bool("prompts", False, "Write prompts with reference answers instead of conversations.")
_REJECTED = flags.DEFINE_enum("rejected", "shuffled", stdlib_chat.REJECTED,
                              "With --preferences, the rejected answer: the chosen one's words shuffled, or "
                              "another function's answer.")


def main(argv):
  del argv
  files = corpus.stdlib_files()
  files = files[:_MAX_FILES.value] if _MAX_FILES.value else files
  if _PREFERENCES.value and _PROMPTS.value:
    sys.exit("error: pass at most one of --preferences and --prompts")
  if _PREFERENCES.value:
    rows, what = stdlib_chat.preference_pairs(files, _REJECTED.value), "pairs"
  elif _PROMPTS.value:
    rows, what = stdlib_chat.prompts(files), "prompts"
  else:
    rows, what = stdlib_chat.examples(files), "conversations"
  directory = os.path.dirname(os.path.abspath(_OUTPUT.value))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-")
  with os.fdopen(fd, "w") as f:
    for row in rows:
      f.write(json.dumps(row) + "\n")
  os.replace(tmp, _OUTPUT.value)
  print(f"wrote {len(rows)} {what} to {_OUTPUT.value}")


if __name__ == "__main__":
  app.run(main)
