"""Prompt JSONL -> tokenized train/val shards of prompts, for online RL (train.objective="grpo").

Each line is {"prompt": "..." | [messages], "answer": "..."}: the prompt as a user turn or as chat
messages (ending with a user turn), and an optional reference answer that reward functions check
completions against (trainer/rewards.py). Any other fields are kept too and reach reward functions by
name, as TRL passes a dataset's columns. Prompts are rendered with the model's chat template up to the
assistant's turn (add_generation_prompt), exactly as the policy will see them when it samples.
A prompt longer than --max_len cannot be cut (its end is where the answer starts): it is dropped and
counted, or stops the run. The records (prompt messages, answer, extra fields) are stored beside the
shards, one per prompt (SPLIT.records.jsonl); the output directory appears atomically.
"""

import collections
import dataclasses
import os

import numpy as np

from data import sft, shards
from data.examples import EpochOrder, example_row
from data.preferences import as_messages
from data.prep_io import atomic_directory
from errors import UserError

SPLITS = ("train", "val")


@dataclasses.dataclass(frozen=True)
class PromptOptions:
  val_fraction: float = 0.05
  max_len: int = 256           # prompt tokens, after the chat template
  overlong: str = "drop"       # "drop" | "error": a prompt is never cut
  bad_lines: str = "error"     # "error" | "skip" (and count)
  template: str = "model"      # "model" (its own, else built-in) | "builtin" | a .jinja file
  seed: int = 0

  def check(self):
    sft.SftOptions(val_fraction=self.val_fraction, max_len=self.max_len, bad_lines=self.bad_lines,
                   template=self.template, seed=self.seed).check()
    if self.overlong not in ("drop", "error"):
      raise UserError(f"--overlong={self.overlong!r}; expected 'drop' or 'error' (a prompt is never cut)")


def parse_prompt(record, where: str) -> dict:
  """{"prompt": messages, "answer": str | None, ...other fields}; errors name `where`."""
  if not isinstance(record, dict):
    raise UserError(f"{where}: expected a JSON object")
  if "prompt" not in record:
    raise UserError(f"{where}: missing field 'prompt' (a string, or a list of chat messages)")
  prompt = as_messages(record["prompt"], where, "prompt", "user")
  if prompt[-1]["role"] == "assistant":
    raise UserError(f"{where}: 'prompt' ends with an assistant turn; the model answers after the last user turn")
  answer = record.get("answer")
  if answer is not None and not isinstance(answer, str):
    raise UserError(f"{where}: 'answer' must be a string, not {type(answer).__name__}")
  return {**record, "prompt": prompt, "answer": answer}


def encode_prompts(files, tok, formatter, opts: PromptOptions, stats: collections.Counter, skipped: list):
  """(token ids, record) per usable prompt."""
  for where, record in sft.parsed_records(files, parse_prompt, stats, opts.bad_lines, skipped):
    ids = tok.encode(formatter.render(record["prompt"], add_generation_prompt=True))
    if len(ids) > opts.max_len:
      if opts.overlong == "error":
        raise UserError(f"{where}: the prompt renders to {len(ids)} tokens, more than --max_len={opts.max_len}; "
                        f"raise --max_len or pass --overlong=drop")
      stats["dropped_overlong"] += 1
      continue
    stats["prompts"] += 1
    stats["with_answer"] += record["answer"] is not None
    yield ids, record


def _report(meta: dict) -> str:
  lines = ["# Prompts", ""] + [f"- {k}: {v}" for k, v in sorted(meta["counts"].items())]
  lines += ["", "| split | prompts | tokens (mean / max) |", "| --- | --- | --- |"]
  for split, s in meta["splits"].items():
    lines.append(f"| {split} | {s['num_docs']} | {s['num_tokens'] / s['num_docs']:.1f} / {s['max_len']} |")
  if meta["skipped_examples"]:
    lines += ["", "Skipped (first 20):", ""] + [f"- {s}" for s in meta["skipped_examples"]]
  return "\n".join(lines) + "\n"


def prepare_prompts(inputs: list[str], model_dir: str, output: str, opts: PromptOptions = PromptOptions(),
                    overwrite: bool = False) -> dict:
  """Writes OUTPUT (atomically) and returns its metadata."""
  files, tok, formatter, template_from = sft.open_chat_inputs(inputs, model_dir, output, opts, overwrite)
  stats, skipped = collections.Counter(), []
  prompts = list(encode_prompts(files, tok, formatter, opts, stats, skipped))
  if len(prompts) < 2:
    raise UserError(f"{','.join(inputs)} gave {len(prompts)} usable prompts; need at least 2 "
                    f"(one for training, one for validation)")
  is_val = sft.val_split(len(prompts), opts.val_fraction, opts.seed)
  with atomic_directory(output) as tmp:
    writers = {s: shards.SplitWriter(tmp, s) for s in SPLITS}
    for (ids, record), val in zip(prompts, is_val):
      writers["val" if val else "train"].write(ids, json_record=record)
    splits = {s: w.close() for s, w in writers.items()}
    for s in SPLITS:
      splits[s]["max_len"] = int(max(len(ids) for (ids, _), v in zip(prompts, is_val) if v == (s == "val")))
    meta = sft.write_chat_metadata(tmp, "prompts", tok, formatter.source, template_from, splits, stats, skipped,
                                   files, opts)
    with open(os.path.join(tmp, "report.md"), "w") as f:
      f.write(_report(meta))
  return meta


class PromptRows:
  """Row g -> {"tokens", "segment_ids", "positions"} int32 [seq_len] (the prompt, then padding),
  "prompt_len", "prompt_index" (the prompt's document in its split) and "dataset".

  Each prompt fills `repeats` consecutive rows (GRPO's group of completions of one prompt), so a group
  never straddles two batches when the batch is a multiple of `repeats`; prompts come in a seeded order
  that changes every epoch, as labelled examples do (data/examples.py).
  """

  def __init__(self, source, lengths, seq_len: int, seed: int, shuffle: bool, dataset: int = 0, repeats: int = 1):
    self.source, self.seq_len, self.dataset, self.repeats = source, seq_len, dataset, repeats
    self.rows_per_epoch = len(lengths) * repeats
    self.truncated_docs = int((np.asarray(lengths) > seq_len).sum())
    self.order = EpochOrder(len(lengths), seed, shuffle)

  def __len__(self):
    return len(self.order) * self.repeats

  def __getitem__(self, g: int) -> dict:
    k = self.order[int(g) // self.repeats]
    ids, _ = shards.decode_record(self.source[k], has_mask=False)
    row = example_row(ids, np.zeros(len(ids), np.int32), self.seq_len)
    del row["token_types"]
    return {**row, "prompt_len": np.int32(min(len(ids), self.seq_len)), "prompt_index": np.int32(k),
            "dataset": np.int32(self.dataset)}
