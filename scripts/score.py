"""Score responses with a reward model (train.objective="reward", configs/reward.py).

  python scripts/score.py --workdir=runs/reward --input=answers.jsonl
  python scripts/score.py --hf_dir=exports/reward --prompt="What does json.dumps do?" \\
      --response="Serialize obj to a JSON formatted str." --response="str JSON a formatted obj to Serialize."

--input lines are {"prompt": str | [messages], "response": str | [messages]}, or {"messages": [...]}
(the trailing assistant turns are the response). Prints one JSON line per response with its reward,
or writes them to --output (atomically). Text is rendered and tokenized as the reward model's
training pairs were.
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

import quiet_logs  # noqa: E402
from data import prep_io  # noqa: E402
from data.preferences import as_messages  # noqa: E402
from data.sources import jsonl_records  # noqa: E402
from errors import UserError  # noqa: E402

_WORKDIR = flags.DEFINE_string("workdir", None, "A reward run's --workdir.")
_HF_DIR = flags.DEFINE_string("hf_dir", None, "An exported reward model (one-label sequence classifier).")
_INPUT = flags.DEFINE_string("input", None, "JSONL of {\"prompt\", \"response\"} or {\"messages\"} lines.")
_PROMPT = flags.DEFINE_string("prompt", None, "One prompt, scored with each --response.")
_RESPONSE = flags.DEFINE_multi_string("response", [], "A response to --prompt (repeatable).")
_OUTPUT = flags.DEFINE_string("output", None, "Write the scored lines here (JSONL) instead of printing them.")
_BEST = flags.DEFINE_bool("best", False, "With --workdir: the best checkpoint, not the newest.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 32, "Conversations per model call.", lower_bound=1)
_MAX_LEN = flags.DEFINE_integer("max_len", 0, "Tokens kept per conversation, cut at the end; 0: where the run's "
                                "preparation cut its pairs (--workdir), or min(1024, the model's positions).",
                                lower_bound=0)


def _conversation(record, where: str) -> tuple[list[dict], list[dict]]:
  """(prompt messages, response messages) of one input line."""
  if not isinstance(record, dict):
    raise UserError(f"{where}: expected a JSON object")
  if "messages" in record:
    messages = as_messages(record["messages"], where, "messages", "user")
    split = len(messages)
    while split > 0 and messages[split - 1]["role"] == "assistant":
      split -= 1
    if split in (0, len(messages)):
      raise UserError(f"{where}: 'messages' must end with assistant turns after at least one other turn")
    return messages[:split], messages[split:]
  if "prompt" not in record or "response" not in record:
    raise UserError(f"{where}: expected 'prompt' and 'response' (or 'messages')")
  return (as_messages(record["prompt"], where, "prompt", "user"),
          as_messages(record["response"], where, "response", "assistant"))


def _inputs() -> list[tuple[list[dict], list[dict]]]:
  if _INPUT.value:
    if not os.path.isfile(_INPUT.value):
      raise UserError(f"--input={_INPUT.value}: no such file")
    out = []
    for where, record in jsonl_records(_INPUT.value):
      if isinstance(record, json.JSONDecodeError):
        raise UserError(f"{where}: not valid JSON ({record.msg})")
      out.append(_conversation(record, where))
    return out
  if _PROMPT.value is None or not _RESPONSE.value:
    raise UserError("give --input, or --prompt with one or more --response")
  return [_conversation({"prompt": _PROMPT.value, "response": r}, f"--response {i + 1}")
          for i, r in enumerate(_RESPONSE.value)]


def main(argv):
  del argv
  quiet_logs.apply()
  try:
    if _OUTPUT.value and not os.path.isdir(os.path.dirname(os.path.abspath(_OUTPUT.value))):
      raise UserError(f"--output={_OUTPUT.value}: its directory does not exist")
    conversations = _inputs()
    if not conversations:
      raise UserError(f"{_INPUT.value} holds no lines to score")
    from trainer.reward_scorer import RewardScorer
    scorer = RewardScorer.load(_WORKDIR.value, _HF_DIR.value, best=_BEST.value, batch_size=_BATCH_SIZE.value,
                               max_len=_MAX_LEN.value)
    rewards = scorer.score(conversations)
  except UserError as e:
    sys.exit(f"error: {e}")
  lines = [json.dumps({"prompt": prompt[-1]["content"], "response": response[-1]["content"],
                       "reward": round(float(r), 6)}) for (prompt, response), r in zip(conversations, rewards)]
  if _OUTPUT.value:
    prep_io.write_text_atomic(_OUTPUT.value, "".join(line + "\n" for line in lines))
    print(f"wrote {len(lines)} scores to {_OUTPUT.value}")
  else:
    print("\n".join(lines))


if __name__ == "__main__":
  app.run(main)
