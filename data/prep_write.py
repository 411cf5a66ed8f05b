"""The last step of both runners: tokenizer, shards, metadata.json, report.md and logs, atomically.

The runner hands over the decisions as ordered streams (kept documents for the
tokenizer sample, every document with its tokens or the duplicate it was
dropped for, every removal record), so whatever ran the stages, equal
decisions give a byte-identical dataset. Everything is written into a
temporary directory that is renamed into place only when all of it succeeded
(prep_io.atomic_directory).
"""

import contextlib
import hashlib
import json
import os
import shutil
from typing import Callable, Iterable, Iterator

from data import report, shards, span_corruption, stage_stats
from data import tokenizer as tokenizer_lib
from data.prep_io import SPLITS, atomic_directory, gzip_writer, note, split_of, write_json_atomic
from errors import UserError

DEDUP_STAGE = {"exact_duplicate": "exact_dedup", "near_duplicate": "near_dedup"}
STAGE_ORDER = ("read", "normalize", "quality", "pii", "boilerplate", "decontam", "exact_dedup", "near_dedup")


def fingerprint(input_sha256s: list[str], cfg) -> str:
  """What the dataset was made from: the config and every input file's content, in input order."""
  config = cfg.to_dict()
  if not config.get("tokenizer", {}).get("encoder_specials", True):  # datasets made before the key keep theirs
    del config["tokenizer"]["encoder_specials"]
  if not config.get("tokenizer", {}).get("sentinels", 1):
    del config["tokenizer"]["sentinels"]
  h = hashlib.sha256(json.dumps(config, sort_keys=True).encode())
  for digest in input_sha256s:
    h.update(digest.encode())
  return h.hexdigest()


def dedup_stage(docs_in: int, docs_out: int, chars_in: int, chars_out: int, reason: str) -> dict:
  s = stage_stats.new_stage()
  s.update(docs_in=docs_in, docs_out=docs_out, chars_in=chars_in, chars_out=chars_out)
  if docs_in != docs_out:
    s["removed"][reason] = docs_in - docs_out
  return s


def dedup_removals(drops: dict) -> list[dict]:
  return [{"id": doc_id, "stage": DEDUP_STAGE[reason], "reason": reason, "duplicate_of": kept}
          for doc_id, (reason, kept) in sorted(drops.items())]


def is_train(doc_id: str, cfg) -> bool:
  return split_of(doc_id, cfg.split.val_fraction, cfg.split.test_fraction) == "train"


def _tokenizer(cfg, kept_train_docs: Iterator[dict], out_dir: str) -> tokenizer_lib.Tokenizer:
  """The configured tokenizer copied into the dataset, or one trained on the first kept train text."""
  t = cfg.tokenizer
  if t.path:
    tok = tokenizer_lib.load(t.path)
    name = "tokenizer.json" if tok.kind == "hf" else "tokenizer.model"
    shutil.copyfile(t.path, os.path.join(out_dir, name))
    # The model directory's config goes with it, so the dataset's tokenizer (and everything
    # that later loads it by path) tokenizes exactly as the model's does in transformers.
    config = os.path.join(os.path.dirname(t.path), "tokenizer_config.json")
    if os.path.isfile(config):
      shutil.copyfile(config, os.path.join(out_dir, "tokenizer_config.json"))
    tok = tokenizer_lib.load(os.path.join(out_dir, name))
    if t.get("encoder_specials") and not tokenizer_lib.encoder_special_ids(tok):
      raise UserError(f"config.tokenizer.encoder_specials=True, but tokenizer.path={t.path} has no [MASK] "
                      f"token; train one (leave tokenizer.path empty) or use a tokenizer that has one")
    have = span_corruption.sentinel_count(tok, tok.vocab_size)
    if have < t.get("sentinels", 0):
      raise UserError(f"config.tokenizer.sentinels={t.sentinels}, but tokenizer.path={t.path} has {have} "
                      f"(<extra_id_0> at the last id and down); train one (leave tokenizer.path empty)")
    return tok
  sample = os.path.join(out_dir, "tokenizer_sample.txt")
  chars = 0
  with open(sample, "w", encoding="utf-8") as f:
    for doc in kept_train_docs:
      for line in doc["text"].splitlines():
        if line.strip():
          f.write(line + "\n")
      chars += len(doc["text"])
      if chars >= t.sample_chars:
        break
  symbols = tuple(s for s in t.user_defined_symbols.split(",") if s)
  note(f"training a {t.vocab_size}-piece {t.model_type} tokenizer on {chars} characters")
  path = tokenizer_lib.train_sentencepiece(sample, os.path.join(out_dir, "tokenizer"), t.vocab_size, t.seed,
                                           t.model_type, t.byte_fallback, symbols,
                                           encoder_specials=bool(t.get("encoder_specials", False)),
                                           sentinels=int(t.get("sentinels", 0)))
  os.remove(os.path.join(out_dir, "tokenizer.vocab"))
  os.remove(sample)
  return tokenizer_lib.load(path)


def _write_splits(cfg, documents: Iterable[tuple], out_dir: str, write_text: bool, stats: dict) -> dict:
  """Shards per split from (doc, drop, token ids) in order; dropped duplicates become report examples."""
  writers = {s: shards.SplitWriter(out_dir, s, cfg.output.docs_per_shard) for s in SPLITS}
  measures = {s: {"chars": 0, "bytes": 0, "words": 0, "tokens": 0} for s in SPLITS}
  k = cfg.output.examples_per_reason
  with contextlib.ExitStack() as stack:
    texts = {}
    if write_text:
      os.makedirs(os.path.join(out_dir, "text"), exist_ok=True)
      texts = {s: stack.enter_context(gzip_writer(os.path.join(out_dir, "text", f"{s}.jsonl.gz")))
               for s in SPLITS}
    for doc, drop, ids in documents:
      if drop is not None:
        reason, kept = drop
        slot = stats[DEDUP_STAGE[reason]]["examples"].setdefault(reason, [])
        if len(slot) < k:
          slot.append({"id": doc["id"], "text": doc["text"][:400], "duplicate_of": kept})
        continue
      s = split_of(doc["id"], cfg.split.val_fraction, cfg.split.test_fraction)
      writers[s].write(ids)
      m = measures[s]
      m["chars"] += len(doc["text"])
      m["bytes"] += len(doc["text"].encode())
      m["words"] += len(doc["text"].split())
      m["tokens"] += len(ids)
      if write_text:
        texts[s].write((json.dumps({"id": doc["id"], "source": doc["source"], "text": doc["text"]}) + "\n").encode())
  splits = {s: writers[s].close() for s in SPLITS}
  for s in SPLITS:
    m = measures[s]
    splits[s].update(chars=m["chars"], bytes=m["bytes"], words=m["words"],
                     tokens_per_word=m["tokens"] / max(1, m["words"]),
                     bytes_per_token=m["bytes"] / max(1, m["tokens"]))
  return splits


_REMOVAL_KEYS = ("id", "stage", "reason", "duplicate_of")


def _write_removal_log(path: str, removals: Iterable[dict]) -> None:
  """One line per removed document, keys in one order: {"id", "stage", "reason"[, "duplicate_of"]}."""
  with gzip_writer(path) as f:
    for record in removals:
      f.write((json.dumps({k: record[k] for k in _REMOVAL_KEYS if k in record}) + "\n").encode())


def _canonical(stats: dict) -> dict:
  """Stages in pipeline order, every mapping inside sorted by key: the same bytes from both runners."""
  stats = json.loads(json.dumps(stats, sort_keys=True))
  return {name: stats[name] for name in sorted(stats, key=lambda n: (n not in STAGE_ORDER, STAGE_ORDER.index(n)
                                                                      if n in STAGE_ORDER else n))}


def write_dataset(cfg, output: str, stats: dict, inputs_sha256: str, num_files: int,
                  kept_train_docs: Callable[[], Iterator[dict]],
                  documents: Callable[[str], Iterable[tuple]],
                  removals: Callable[[], Iterable[dict]], write_text: bool) -> dict:
  """Writes the dataset at `output` (replacing what is there) and returns its metadata.

  kept_train_docs(): kept train documents in input order (the tokenizer sample).
  documents(tokenizer_path): (doc, drop, token ids) for every document that reached dedup, in
    input order; drop is (reason, kept id) or None, token ids None for a dropped one.
  removals(): every removal record, in input order then dedup drops by id.
  """
  stats = _canonical(stats)
  with atomic_directory(output) as tmp:
    tok = _tokenizer(cfg, kept_train_docs(), tmp)
    splits = _write_splits(cfg, documents(tok.path), tmp, write_text, stats)
    for s in SPLITS:
      if splits[s]["num_docs"] == 0:
        raise UserError(f"split {s!r} received no documents; use more input or larger split fractions")
    meta = {
        "format": shards.FORMAT,
        "sources": {name: cfg.sources[name].inputs for name in cfg.sources},
        "tokenizer": os.path.basename(tok.path),
        "tokenizer_kind": tok.kind,
        "vocab_size": tok.vocab_size,
        "bos_id": tok.bos_id,
        "add_bos": tok.add_bos,  # whether the tokenizer itself starts a text with BOS
        "eos_id": tok.eos_id,
        **tokenizer_lib.encoder_special_ids(tok),  # mask_id, cls_id, sep_id, pad_id: only with a mask token
        "splits": splits,
        "chars_per_token_train": splits["train"]["chars"] / max(1, splits["train"]["num_tokens"]),
        "inputs_sha256": inputs_sha256,
        "num_input_files": num_files,
        "config": cfg.to_dict(),
    }
    write_json_atomic(os.path.join(tmp, shards.METADATA), meta)
    report.write(os.path.join(tmp, "report.md"), meta, stats)
    _write_removal_log(os.path.join(tmp, "removed.jsonl.gz"), removals())
    with open(os.path.join(tmp, "stats.json"), "w") as f:
      json.dump(stats, f, indent=1)
  return meta
