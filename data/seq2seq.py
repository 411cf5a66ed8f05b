"""Text-to-text examples (T5): JSONL {"input", "target"} -> shards, and their two-sided packed rows.

Preparation tokenizes each example's input (after an optional task prefix such
as "summarize: ") and its target, each ending with EOS, as T5 does. An example
is two records, input then target, so the lengths file alone tells both sides'
lengths. A side longer than its limit is truncated (its EOS kept) and counted,
or stops the run naming the line (overlong="error"); a line without `input` or
`target` stops the run naming it, or is skipped and counted (bad_lines="skip").

Rows pack examples two-sided: an example joins the row while its input fits
the encoder row (seq_len) and its target the decoder row (target_len); both
sides of the row give it the same segment id, so cross-attention stays inside
each example. Examples are packed once, in a seeded order; whole rows then
shuffle every epoch (data/examples.py's EpochOrder), so any process reads just
its own rows and resumption needs only the next row's index.
"""

import collections
import dataclasses
import os
import shutil

import numpy as np

from data import shards
from data.corpus import expand_inputs
from data.examples import EpochOrder
from data.labelled import load_tokenizer
from data.prep_io import atomic_directory, file_sha256, write_json_atomic
from data.sft import parsed_records, val_split
from errors import UserError

KIND = "seq2seq"


@dataclasses.dataclass(frozen=True)
class Seq2SeqOptions:
  prefix: str = ""              # put before every input, e.g. "summarize: "
  input_field: str = "input"
  target_field: str = "target"
  max_input_len: int = 512      # tokens, EOS included
  max_target_len: int = 128
  overlong: str = "truncate"    # "truncate" (and count) | "error"
  bad_lines: str = "error"      # "error" | "skip" (and count)
  val_fraction: float = 0.05
  seed: int = 0

  def check(self):
    for field, allowed in (("overlong", ("truncate", "error")), ("bad_lines", ("error", "skip"))):
      if getattr(self, field) not in allowed:
        raise UserError(f"--{field}={getattr(self, field)!r}; expected one of {allowed}")
    for field in ("max_input_len", "max_target_len"):
      if getattr(self, field) < 2:
        raise UserError(f"--{field}={getattr(self, field)}; expected at least 2 tokens (one and EOS)")
    if not 0 < self.val_fraction < 1:
      raise UserError(f"--val_fraction={self.val_fraction}; expected a fraction in (0, 1)")


def _parse(opts: Seq2SeqOptions):
  def parse(record, where: str) -> tuple[str, str]:
    if not isinstance(record, dict):
      raise UserError(f"{where}: expected a JSON object with {opts.input_field!r} and {opts.target_field!r}")
    for field in (opts.input_field, opts.target_field):
      if not isinstance(record.get(field), str) or not record[field].strip():
        raise UserError(f"{where}: field {field!r} is missing or not a non-empty string")
    return record[opts.input_field], record[opts.target_field]
  return parse


def encode_examples(files: list[str], tok, opts: Seq2SeqOptions, stats: collections.Counter, skipped: list):
  """(input ids, target ids) per example, each ending with EOS, cut to their limits or refused."""
  for where, (text, target) in parsed_records(files, _parse(opts), stats, opts.bad_lines, skipped):
    sides = []
    for ids, limit, name in ((tok.encode(opts.prefix + text), opts.max_input_len, "input"),
                             (tok.encode(target), opts.max_target_len, "target")):
      ids = list(ids) + [tok.eos_id]
      if len(ids) > limit:
        if opts.overlong == "error":
          raise UserError(f"{where}: the {name} is {len(ids)} tokens (EOS included), longer than "
                          f"--max_{name}_len={limit}; raise it, or pass --overlong=truncate")
        ids = ids[:limit - 1] + [tok.eos_id]
        stats[f"truncated_{name}s"] += 1
      sides.append(ids)
    stats["examples"] += 1
    yield sides[0], sides[1]


def prepare_seq2seq(inputs: list[str], tokenizer_from: str, output: str, opts: Seq2SeqOptions = Seq2SeqOptions(),
                    overwrite: bool = False) -> dict:
  """Writes OUTPUT (atomically): train/val shards of (input, target) record pairs, the tokenizer, metadata.json."""
  opts.check()
  if os.path.exists(output) and not overwrite:
    raise UserError(f"output directory {output} already exists; pass --overwrite to replace it")
  files = expand_inputs(inputs)
  if not files:
    raise UserError(f"--input={','.join(inputs)} names no files")
  tok, _ = load_tokenizer(tokenizer_from)
  if tok.eos_id is None:
    raise UserError(f"the tokenizer of {tokenizer_from} has no EOS token; text-to-text examples end with one")
  stats, skipped = collections.Counter(), []
  examples = list(encode_examples(files, tok, opts, stats, skipped))
  if len(examples) < 2:
    raise UserError(f"{','.join(inputs)} gave {len(examples)} usable examples; need at least 2 "
                    f"(one for training, one for validation)")
  is_val = val_split(len(examples), opts.val_fraction, opts.seed)
  with atomic_directory(output) as tmp:
    writers = {s: shards.SplitWriter(tmp, s) for s in ("train", "val")}
    for (source, target), val in zip(examples, is_val):
      writer = writers["val" if val else "train"]
      writer.write(source)
      writer.write(target)
    splits = {s: w.close() for s, w in writers.items()}
    shutil.copyfile(tok.path, os.path.join(tmp, os.path.basename(tok.path)))
    meta = {"format": shards.FORMAT, "kind": KIND, "fields": ["tokens"], "tokenizer": os.path.basename(tok.path),
            "tokenizer_kind": tok.kind, "vocab_size": tok.vocab_size, "bos_id": tok.bos_id, "add_bos": False,
            "eos_id": tok.eos_id, "splits": splits, "counts": dict(stats), "skipped_examples": skipped[:20],
            "max_input_len": max(len(s) for s, _ in examples), "max_target_len": max(len(t) for _, t in examples),
            "inputs": {f: file_sha256(f) for f in files}, "options": dataclasses.asdict(opts)}
    write_json_atomic(os.path.join(tmp, shards.METADATA), meta)
  return meta


def pack(input_lengths, target_lengths, order, seq_len: int, target_len: int) -> list[list[int]]:
  """Examples (in `order`) grouped into rows: a row takes the next example while both sides fit."""
  rows, row, used_in, used_out = [], [], 0, 0
  for k in order:
    n_in, n_out = min(int(input_lengths[k]), seq_len), min(int(target_lengths[k]), target_len)
    if row and (used_in + n_in > seq_len or used_out + n_out > target_len):
      rows.append(row)
      row, used_in, used_out = [], 0, 0
    row.append(int(k))
    used_in, used_out = used_in + n_in, used_out + n_out
  return rows + ([row] if row else [])


class Seq2SeqRows:
  """Row g -> the encoder's "encoder_tokens", "encoder_positions", "encoder_segment_ids" [seq_len] and the
  decoder's "tokens" (targets shifted right after the start token), "positions", "segment_ids", "targets",
  "target_weights" [target_len], and "dataset"."""

  def __init__(self, source, lengths, seq_len: int, target_len: int, seed: int, shuffle: bool, dataset: int = 0,
               decoder_start_id: int = 0):
    lengths = np.asarray(lengths)
    if lengths.size % 2:
      raise ValueError(f"{lengths.size} records cannot be (input, target) pairs")
    self.source, self.seq_len, self.target_len, self.dataset = source, seq_len, target_len, dataset
    self.decoder_start_id = decoder_start_id
    inputs, targets = lengths[0::2], lengths[1::2]
    self.truncated_docs = int((inputs > seq_len).sum() + (targets > target_len).sum())
    order = np.random.default_rng([seed, 1]).permutation(inputs.size) if shuffle else np.arange(inputs.size)
    self.groups = pack(inputs, targets, order, seq_len, target_len)
    self.rows_per_epoch = len(self.groups)
    self.order = EpochOrder(self.rows_per_epoch, seed, shuffle)

  def __len__(self):
    return len(self.order)

  def _side(self, ids_list: list[np.ndarray], length: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    tokens, positions, segments = (np.zeros(length, np.int32) for _ in range(3))
    at = 0
    for s, ids in enumerate(ids_list, 1):
      n = len(ids)
      tokens[at:at + n], positions[at:at + n], segments[at:at + n] = ids, np.arange(n), s
      at += n
    return tokens, positions, segments

  def __getitem__(self, g: int) -> dict:
    group = self.groups[self.order[int(g)]]
    read = lambda r, limit: shards.decode_record(self.source[r], has_mask=False)[0][:limit]  # noqa: E731
    inputs = [read(2 * k, self.seq_len) for k in group]
    targets = [read(2 * k + 1, self.target_len) for k in group]
    enc_tokens, enc_positions, enc_segments = self._side(inputs, self.seq_len)
    shifted = [np.concatenate([[self.decoder_start_id], t[:-1]]) for t in targets]
    dec_tokens, positions, segments = self._side(shifted, self.target_len)
    target_ids, _, _ = self._side(targets, self.target_len)
    return {"encoder_tokens": enc_tokens, "encoder_positions": enc_positions, "encoder_segment_ids": enc_segments,
            "tokens": dec_tokens, "positions": positions, "segment_ids": segments, "targets": target_ids,
            "target_weights": (segments != 0).astype(np.float32), "dataset": np.int32(self.dataset)}
