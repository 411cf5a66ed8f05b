"""Turn a server's request log and user feedback into preference pairs for DPO or a reward model.

  python scripts/feedback_to_preferences.py --request_log=serve_logs --output=datasets/feedback_pairs.jsonl
  python scripts/prepare_preferences.py --inputs=datasets/feedback_pairs.jsonl --model_dir=exports/sft \\
      --output=datasets/feedback_prefs
  python train.py --config=configs/dpo.py --config.init.hf_dir=exports/sft \\
      --config.data.dir=datasets/feedback_prefs --workdir=runs/dpo_feedback

--request_log is scripts/serve.py's (requests.jsonl, its rotated
files, feedback.jsonl). Pairing rules: scripts/serving/feedback.py. The output
is written atomically; the counts go to stdout as one JSON line.
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

from errors import UserError  # noqa: E402
from scripts.serving import feedback  # noqa: E402

_LOG_DIR = flags.DEFINE_string("request_log", None, "The server's --request_log directory.", required=True)
_OUTPUT = flags.DEFINE_string("output", None, "Preference JSONL to write.", required=True)
_MAX_PAIRS = flags.DEFINE_integer("max_pairs_per_prompt", 16, "Cap on rating pairs per prompt.", lower_bound=1)


def main(argv):
  del argv
  try:
    print(json.dumps(feedback.convert(_LOG_DIR.value, _OUTPUT.value, _MAX_PAIRS.value)))
  except UserError as e:
    sys.exit(f"error: {e}")


if __name__ == "__main__":
  app.run(main)
