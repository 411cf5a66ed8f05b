"""Logged responses plus user feedback -> preference pairs, in the JSONL that
scripts/prepare_preferences.py reads (data/preferences.py), for DPO or a reward model.

Two kinds of feedback make pairs:
  {"chosen": ID, "rejected": ID}  an explicit comparison of two responses to the same prompt;
  {"id": ID, "rating": +1 | -1}   ratings: every +1 response to a prompt is paired with every
                                  -1 response to the same prompt (the newest rating of a response
                                  counts; at most `max_pairs_per_prompt` pairs per prompt).
A chat response becomes {"prompt": messages, "chosen": [assistant message], "rejected": [...]}; a
completion response plain strings. The prompt is what the model saw (after retrieval and input
guardrails). Feedback naming unknown responses, comparing different prompts or identical answers,
or on refused answers, is counted and skipped.
"""

import collections
import itertools
import json

from data.prep_io import write_text_atomic
from errors import UserError
from scripts.serving.request_log import JsonlLog


def _prompt_key(record: dict) -> str:
  return json.dumps([record.get("endpoint"), record.get("prompt")], sort_keys=True)


def _pair(chosen: dict, rejected: dict) -> dict:
  good, bad = chosen["choices"][0], rejected["choices"][0]
  if chosen.get("endpoint") == "chat":
    return {"prompt": chosen["prompt"], "chosen": [{"role": "assistant", "content": good}],
            "rejected": [{"role": "assistant", "content": bad}]}
  return {"prompt": chosen["prompt"], "chosen": good, "rejected": bad}


def preference_pairs(responses, feedback, max_pairs_per_prompt: int = 16) -> tuple[list[dict], dict]:
  """(pairs, counts) from response records and feedback records (each an iterable of dicts)."""
  by_id = {r["id"]: r for r in responses if r.get("id")}
  counts = collections.Counter()
  pairs, seen = [], set()

  def usable(record_id: str) -> dict | None:
    record = by_id.get(record_id)
    if record is None:
      counts["skipped_unknown_response"] += 1
      return None
    if not record.get("choices") or "content_filter" in (record.get("finish_reasons") or []):
      counts["skipped_refused_or_empty"] += 1
      return None
    return record

  def add(chosen: dict, rejected: dict, kind: str) -> None:
    if _prompt_key(chosen) != _prompt_key(rejected):
      counts["skipped_different_prompts"] += 1
      return
    if chosen["choices"][0] == rejected["choices"][0]:
      counts["skipped_identical_answers"] += 1
      return
    key = (chosen["id"], rejected["id"])
    if key not in seen:
      seen.add(key)
      pairs.append(_pair(chosen, rejected))
      counts[f"pairs_from_{kind}"] += 1

  ratings = {}
  for item in feedback:
    if "chosen" in item:
      chosen, rejected = usable(item["chosen"]), usable(item["rejected"])
      if chosen and rejected:
        add(chosen, rejected, "comparisons")
    elif "id" in item:
      ratings[item["id"]] = item["rating"]  # the newest rating counts
  by_prompt = collections.defaultdict(lambda: ([], []))
  for response_id, rating in ratings.items():
    record = usable(response_id)
    if record:
      by_prompt[_prompt_key(record)][0 if rating > 0 else 1].append(record)
  for good, bad in by_prompt.values():
    for chosen, rejected in itertools.islice(itertools.product(good, bad), max_pairs_per_prompt):
      add(chosen, rejected, "ratings")
  counts["pairs"] = len(pairs)
  return pairs, dict(counts)


def convert(log_dir: str, output: str, max_pairs_per_prompt: int = 16) -> dict:
  requests, ratings = JsonlLog(log_dir, "requests"), JsonlLog(log_dir, "feedback")
  if not requests.files():
    raise UserError(f"--request_log={log_dir}: no requests.jsonl; give a server's --request_log directory")
  pairs, counts = preference_pairs(requests.records(), ratings.records(), max_pairs_per_prompt)
  if not pairs:
    raise UserError(f"{log_dir}: the feedback makes no preference pairs ({counts}); rate or compare responses "
                    "to the same prompt")
  write_text_atomic(output, "".join(json.dumps(p, ensure_ascii=False) + "\n" for p in pairs))
  return counts
