"""Chat JSONL -> tokenized train/val shards with loss masks, for supervised fine-tuning.

Each line is {"messages": [...]} or {"prompt", "completion"}. A conversation is
rendered with the model's chat template (or the built-in one), tokenized once
as a whole, and stored with a per-token loss mask (assistant tokens, or all).
Over-long examples are truncated or dropped; bad lines stop the run with
their line number, or are skipped; everything is counted in metadata.json.
The output directory appears atomically, in the format of data/shards.py.
"""

import collections
import dataclasses
import json
import os
import shutil

import numpy as np

from data import chat, shards, sources
from data import tokenizer as tokenizer_lib
from data.corpus import expand_inputs
from data.prep_io import atomic_directory, file_sha256, write_json_atomic
from errors import UserError

SPLITS = ("train", "val")


@dataclasses.dataclass(frozen=True)
class SftOptions:
  val_fraction: float = 0.05
  max_len: int = 2048          # tokens per example, the longest row it can be packed into
  overlong: str = "truncate"   # "truncate" | "drop"
  bad_lines: str = "error"     # "error" | "skip" (and count)
  loss_on: str = "assistant"   # "assistant" | "all" tokens
  template: str = "model"      # "model" (its own, else built-in) | "builtin" | a .jinja file
  seed: int = 0

  def check(self):
    for field, allowed in (("overlong", ("truncate", "drop")), ("bad_lines", ("error", "skip")),
                           ("loss_on", ("assistant", "all"))):
      if getattr(self, field) not in allowed:
        raise UserError(f"--{field}={getattr(self, field)!r}; expected one of {allowed}")
    if not 0 < self.val_fraction < 1:
      raise UserError(f"--val_fraction={self.val_fraction}; expected a fraction in (0, 1)")
    if self.max_len < 2:
      raise UserError(f"--max_len={self.max_len}; expected at least 2 tokens")


def chat_template(model_dir: str, choice: str) -> tuple[str, str]:
  """(template source, where it came from)."""
  if choice == "builtin":
    return chat.DEFAULT_TEMPLATE, "builtin"
  if choice == "model":
    own = chat.template_from_dir(model_dir)
    return (own, f"{model_dir}") if own else (chat.DEFAULT_TEMPLATE, "builtin")
  if not os.path.isfile(choice):
    raise UserError(f"--template={choice!r}: expected 'model', 'builtin' or a .jinja file")
  with open(choice) as f:
    return f.read(), choice


def json_records(files: list[str], stats: collections.Counter, bad_lines: str, skipped: list):
  """(where, record) for every non-blank line; undecodable lines raise or are skipped."""
  for path in files:
    for where, record in sources.jsonl_records(path):
      if not isinstance(record, json.JSONDecodeError):
        yield where, record
      elif bad_lines == "error":
        raise UserError(f"{where}: not valid JSON ({record.msg}); pass --bad_lines=skip to skip such lines")
      else:
        stats["skipped_bad_line"] += 1
        skipped.append(f"{where}: not valid JSON")


def parsed_records(files: list[str], parse, stats: collections.Counter, bad_lines: str, skipped: list):
  """(where, parse(record, where)) for every line; a line that does not decode, or that `parse` refuses
  (UserError), stops the run naming it or, with bad_lines="skip", is skipped and counted."""
  for where, record in json_records(files, stats, bad_lines, skipped):
    stats["lines"] += 1
    try:
      parsed = parse(record, where)
    except UserError as e:
      if bad_lines == "error":
        raise UserError(f"{e}; pass --bad_lines=skip to skip such lines") from None
      stats["skipped_bad_line"] += 1
      skipped.append(str(e))
      continue
    yield where, parsed


def encode_examples(files, tok, formatter, opts: SftOptions, stats: collections.Counter, skipped: list):
  """(tokens, loss mask) per usable example, after validation, truncation and dropping."""
  for _, messages in parsed_records(files, chat.parse_example, stats, opts.bad_lines, skipped):
    text, spans = formatter.render_with_spans(messages)
    ids, mask = chat.tokenize_with_mask(tok, text, spans if opts.loss_on == "assistant" else [(0, len(text))])
    if len(ids) > opts.max_len:
      if opts.overlong == "drop":
        stats["dropped_overlong"] += 1
        continue
      ids, mask = ids[:opts.max_len], mask[:opts.max_len]
      stats["truncated"] += 1
    if sum(mask[1:]) == 0:  # nothing left to learn (the first token is never a target)
      stats["dropped_no_target_tokens"] += 1
      continue
    stats["examples"] += 1
    yield ids, mask


def val_split(n: int, val_fraction: float, seed: int) -> np.ndarray:
  """Index -> "val"? Exactly round(n * val_fraction) examples (at least one) go to val."""
  n_val = min(n - 1, max(1, round(n * val_fraction)))
  is_val = np.zeros(n, bool)
  is_val[np.random.default_rng(seed).permutation(n)[:n_val]] = True
  return is_val


def model_chat(model_dir: str, template: str | None = None):
  """(a model directory's tokenizer, a chat formatter with its special-token strings): `template`, or
  the directory's own chat template, or the built-in one."""
  specials = tokenizer_lib.special_token_strings(model_dir)
  formatter = chat.ChatFormatter(template or chat.template_from_dir(model_dir), specials["bos_token"],
                                 specials["eos_token"])
  return tokenizer_lib.load_dir(model_dir), formatter


def dataset_chat(meta: dict, base_dir: str = ""):
  """(tokenizer, chat formatter) as a run's dataset was rendered: the template it records, with the
  tokenizer and special tokens of the model directory it was prepared from (`base_dir`, a run's
  config.init.hf_dir), or else of the dataset's own tokenizer."""
  if base_dir:
    return model_chat(base_dir, meta.get("chat_template"))
  tok = tokenizer_lib.load(meta["tokenizer_path"])
  specials = {k: tok.id_to_token(i) if i is not None else ""
              for k, i in (("bos_token", tok.bos_id), ("eos_token", tok.eos_id))}
  return tok, chat.ChatFormatter(meta.get("chat_template"), specials["bos_token"], specials["eos_token"])


def open_chat_inputs(inputs: list[str], model_dir: str, output: str, opts, overwrite: bool):
  """(input files, the model's tokenizer, its chat formatter, where the template came from), after
  checking the options, that OUTPUT is free and that the inputs name files."""
  opts.check()
  if os.path.exists(output) and not overwrite:
    raise UserError(f"output directory {output} already exists; pass --overwrite to replace it")
  files = expand_inputs(inputs)
  if not files:
    raise UserError(f"--input={','.join(inputs)} names no files")
  tok = tokenizer_lib.load_dir(model_dir)
  specials = tokenizer_lib.special_token_strings(model_dir)
  source, template_from = chat_template(model_dir, opts.template)
  return files, tok, chat.ChatFormatter(source, specials["bos_token"], specials["eos_token"]), template_from


def prepare_sft(inputs: list[str], model_dir: str, output: str, opts: SftOptions = SftOptions(),
                overwrite: bool = False) -> dict:
  """Writes OUTPUT (atomically) and returns its metadata."""
  files, tok, formatter, template_from = open_chat_inputs(inputs, model_dir, output, opts, overwrite)
  source = formatter.source
  stats, skipped = collections.Counter(), []
  examples = list(encode_examples(files, tok, formatter, opts, stats, skipped))
  if len(examples) < 2:
    raise UserError(f"{','.join(inputs)} gave {len(examples)} usable examples; need at least 2 "
                    f"(one for training, one for validation)")
  is_val = val_split(len(examples), opts.val_fraction, opts.seed)

  with atomic_directory(output) as tmp:
    writers = {s: shards.SplitWriter(tmp, s) for s in SPLITS}
    for (ids, mask), val in zip(examples, is_val):
      writers["val" if val else "train"].write(ids, mask)
    splits = {s: w.close() for s, w in writers.items()}
    for s in SPLITS:
      splits[s]["target_tokens"] = int(sum(sum(m[1:]) for (_, m), v in zip(examples, is_val)
                                           if v == (s == "val")))
    meta = write_chat_metadata(tmp, "chat", tok, source, template_from, splits, stats, skipped, files, opts)
  return meta


def write_chat_metadata(directory: str, kind: str, tok, template: str, template_from: str, splits: dict,
                        stats: collections.Counter, skipped: list, files: list[str], opts) -> dict:
  """The tokenizer file and metadata.json of a dataset rendered with a chat template; returns the metadata."""
  shutil.copyfile(tok.path, os.path.join(directory, os.path.basename(tok.path)))
  meta = {
      "format": shards.FORMAT,
      "kind": kind,
      "fields": ["tokens", "loss_mask"],
      "tokenizer": os.path.basename(tok.path),
      "tokenizer_kind": tok.kind,
      "vocab_size": tok.vocab_size,
      "bos_id": tok.bos_id,
      "add_bos": tok.add_bos,
      "eos_id": tok.eos_id,
      "chat_template": template,
      "chat_template_from": template_from,
      "splits": splits,
      "counts": dict(stats),
      "skipped_examples": skipped[:20],
      "inputs": {f: file_sha256(f) for f in files},
      "options": dataclasses.asdict(opts),
  }
  write_json_atomic(os.path.join(directory, shards.METADATA), meta)
  return meta
