"""Preference JSONL -> tokenized train/val shards of (chosen, rejected) pairs, for reward models and DPO.

Each line is one of the common forms:
  {"prompt": "...", "chosen": "...", "rejected": "..."}                 strings;
  {"prompt": [messages], "chosen": [messages], "rejected": [messages]}  chat-message lists;
  {"chosen": [messages], "rejected": [messages]}                        implicit prompt: two whole
      conversations, whose shared leading messages are the prompt.
Any form may add "margin": a number, how much better chosen is (a reward model trains on
-log sigmoid(r_chosen - r_rejected - margin)); stored per pair, 0 for lines without one.
Both sides are rendered with the model's chat template (as SFT renders a
conversation) and tokenized whole; the loss mask covers the completion (what
follows the prompt) only. Pair k is stored as records 2k (chosen) and 2k+1
(rejected) of its split, so shuffling, sharding and resuming, which address
pairs (data/pairs.py), never separate them. Over-long pairs are truncated at
the end or dropped; bad lines stop the run naming the line, or are skipped;
everything is counted in metadata.json and report.md. The output directory
appears atomically, in the format of data/shards.py.
"""

import collections
import dataclasses
import math
import os

import numpy as np

from data import chat, sft, shards
from data.prep_io import atomic_directory
from errors import UserError

SPLITS = ("train", "val")
SIDES = ("chosen", "rejected")


@dataclasses.dataclass(frozen=True)
class PreferenceOptions:
  val_fraction: float = 0.05
  max_len: int = 1024          # tokens per side (prompt + completion)
  overlong: str = "truncate"   # "truncate" (the completion's end) | "drop"
  bad_lines: str = "error"     # "error" | "skip" (and count)
  template: str = "model"      # "model" (its own, else built-in) | "builtin" | a .jinja file
  seed: int = 0

  def check(self):
    sft.SftOptions(val_fraction=self.val_fraction, max_len=self.max_len, overlong=self.overlong,
                   bad_lines=self.bad_lines, template=self.template, seed=self.seed).check()


def as_messages(value, where: str, field: str, role: str) -> list[dict]:
  """A side or prompt as messages: a string is one `role` turn; a list is checked turn by turn."""
  if isinstance(value, str):
    if not value.strip():
      raise UserError(f"{where}: '{field}' is empty")
    return [{"role": role, "content": value}]
  if not isinstance(value, list) or not value:
    raise UserError(f"{where}: '{field}' must be a non-empty string or list of messages")
  for i, m in enumerate(value):
    if not isinstance(m, dict) or m.get("role") not in chat.ROLES or not isinstance(m.get("content"), str):
      raise UserError(f"{where}: '{field}' message {i} needs a role among {chat.ROLES} and a string 'content'")
  return [{"role": m["role"], "content": m["content"]} for m in value]


def parse_pair(record, where: str) -> tuple[list[dict], list[dict], list[dict]]:
  """(prompt, chosen completion, rejected completion) as messages; errors name `where`."""
  if not isinstance(record, dict):
    raise UserError(f"{where}: expected a JSON object")
  missing = [f for f in SIDES if f not in record]
  if missing:
    raise UserError(f"{where}: missing field(s) {missing}; expected 'chosen' and 'rejected' (and 'prompt', "
                    f"unless both are whole conversations)")
  if "prompt" in record:
    prompt = as_messages(record["prompt"], where, "prompt", "user")
    chosen, rejected = (as_messages(record[s], where, s, "assistant") for s in SIDES)
  else:
    if isinstance(record["chosen"], str) or isinstance(record["rejected"], str):
      raise UserError(f"{where}: 'chosen' and 'rejected' are strings but there is no 'prompt'; give a prompt, "
                      f"or two whole conversations (lists of messages)")
    whole_c, whole_r = (as_messages(record[s], where, s, "assistant") for s in SIDES)
    shared = 0
    while shared < min(len(whole_c), len(whole_r)) and whole_c[shared] == whole_r[shared]:
      shared += 1
    prompt, chosen, rejected = whole_c[:shared], whole_c[shared:], whole_r[shared:]
    if not prompt:
      raise UserError(f"{where}: the two conversations share no leading messages, so there is no prompt")
  for side, completion in (("chosen", chosen), ("rejected", rejected)):
    if not completion or not any(m["content"].strip() for m in completion):
      raise UserError(f"{where}: '{side}' has an empty completion")
  if chosen == rejected:
    raise UserError(f"{where}: 'chosen' and 'rejected' are the same completion; a pair must differ")
  return prompt, chosen, rejected


def margin_of(record: dict, where: str) -> float | None:
  """A pair's optional "margin" (how much better chosen is: the reward model's -log sigmoid(r_c - r_r - margin))."""
  value = record.get("margin")
  if value is None:
    return None
  if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
    raise UserError(f"{where}: 'margin' must be a finite number, not {value!r}")
  return float(value)


def encode_side(tok, formatter: chat.ChatFormatter, prompt: list[dict], completion: list[dict]):
  """(token ids, loss mask over the completion's tokens, prompt length in tokens)."""
  before = formatter.render(prompt, add_generation_prompt=True)
  text = formatter.render(prompt + completion)
  if not text.startswith(before):
    raise UserError("the chat template does not render the prompt as a prefix of the whole conversation, so "
                    "completion tokens cannot be located; use --template=builtin")
  ids, mask = chat.tokenize_with_mask(tok, text, [(len(before), len(text))])
  return ids, mask, len(ids) - sum(mask)


def encode_pairs(files, tok, formatter, opts: PreferenceOptions, stats: collections.Counter, skipped: list):
  """([(chosen ids, mask), (rejected ids, mask)], margin or None) per usable pair, after validation,
  truncation and dropping."""
  parse = lambda record, where: (*parse_pair(record, where), margin_of(record, where))  # noqa: E731
  for _, (prompt, chosen, rejected, margin) in sft.parsed_records(files, parse, stats, opts.bad_lines, skipped):
    sides = [encode_side(tok, formatter, prompt, c) for c in (chosen, rejected)]
    if any(len(ids) > opts.max_len for ids, _, _ in sides):
      if opts.overlong == "drop":
        stats["dropped_overlong"] += 1
        continue
      if any(n_prompt >= opts.max_len for _, _, n_prompt in sides):  # no completion token would be left
        stats["dropped_prompt_too_long"] += 1
        continue
      sides = [(ids[:opts.max_len], mask[:opts.max_len], n) for ids, mask, n in sides]
      stats["truncated"] += 1
    stats["pairs"] += 1
    stats["prompt_tokens"] += sides[0][2]
    yield [(ids, mask) for ids, mask, _ in sides], margin


def _report(meta: dict) -> str:
  counts, lines = meta["counts"], ["# Preference data", ""]
  lines += [f"- {k}: {v}" for k, v in sorted(counts.items())]
  lines += ["", "| split | pairs | chosen tokens (mean / max) | rejected tokens (mean / max) |", "| --- | --- | --- | --- |"]
  for split, s in meta["splits"].items():
    lines.append(f"| {split} | {s['pairs']} | {s['chosen_mean_len']:.1f} / {s['chosen_max_len']} | "
                 f"{s['rejected_mean_len']:.1f} / {s['rejected_max_len']} |")
  if meta["skipped_examples"]:
    lines += ["", "Skipped (first 20):", ""] + [f"- {s}" for s in meta["skipped_examples"]]
  return "\n".join(lines) + "\n"


def prepare_preferences(inputs: list[str], model_dir: str, output: str,
                        opts: PreferenceOptions = PreferenceOptions(), overwrite: bool = False) -> dict:
  """Writes OUTPUT (atomically) and returns its metadata."""
  files, tok, formatter, template_from = sft.open_chat_inputs(inputs, model_dir, output, opts, overwrite)
  source = formatter.source
  stats, skipped = collections.Counter(), []
  pairs = list(encode_pairs(files, tok, formatter, opts, stats, skipped))
  if len(pairs) < 2:
    raise UserError(f"{','.join(inputs)} gave {len(pairs)} usable pairs; need at least 2 "
                    f"(one for training, one for validation)")
  is_val = sft.val_split(len(pairs), opts.val_fraction, opts.seed)

  with atomic_directory(output) as tmp:
    writers = {s: shards.SplitWriter(tmp, s) for s in SPLITS}
    has_margins = any(margin is not None for _, margin in pairs)  # then 0 where a line gives none
    for (sides, margin), val in zip(pairs, is_val):
      for ids, mask in sides:  # records 2k and 2k+1: the pair stays together
        writers["val" if val else "train"].write(ids, mask, margin=(margin or 0.0) if has_margins else None)
    splits = {s: w.close() for s, w in writers.items()}
    for s in SPLITS:
      in_split = [sides for (sides, _), v in zip(pairs, is_val) if v == (s == "val")]
      splits[s]["pairs"] = len(in_split)
      for k, side in enumerate(SIDES):
        lengths = np.array([len(p[k][0]) for p in in_split])
        splits[s][f"{side}_mean_len"] = float(lengths.mean())
        splits[s][f"{side}_max_len"] = int(lengths.max())
    meta = sft.write_chat_metadata(tmp, "preference", tok, source, template_from, splits, stats, skipped, files,
                                   opts)
    with open(os.path.join(tmp, "report.md"), "w") as f:
      f.write(_report(meta))
  return meta
