"""Text files -> sentencepiece tokenizer + tokenized train/val/test shards.

Documents are assigned to splits by a hash of their id, so the split of a
document never depends on which other documents are present. The output
directory appears atomically: everything is written to a temporary sibling
and renamed into place at the end.
"""

import hashlib
import json
import os
import shutil
import tempfile

import numpy as np
from absl import logging

from data import corpus, shards, tokenizer
from errors import UserError

SPLITS = ("train", "val", "test")


def split_of(doc_id: str, val_fraction: float, test_fraction: float) -> str:
  u = int.from_bytes(hashlib.sha256(doc_id.encode()).digest()[:8], "big") / 2.0**64
  if u < test_fraction:
    return "test"
  return "val" if u < test_fraction + val_fraction else "train"


def _write_training_lines(docs, path: str) -> None:
  with open(path, "w", encoding="utf-8") as f:
    for _, text in docs:
      for line in text.splitlines():
        if line.strip():
          f.write(line + "\n")


def prepare(out_dir: str, files: list[str], root: str | None, vocab_size: int,
            val_fraction: float = 0.02, test_fraction: float = 0.02, seed: int = 0,
            overwrite: bool = False, source_name: str = "files") -> dict:
  """Builds a dataset in `out_dir` and returns its metadata."""
  if os.path.exists(out_dir) and not overwrite:
    raise UserError(f"output directory {out_dir} already exists; pass --overwrite to replace it")
  docs = list(corpus.read_documents(files, root))
  if not docs:
    raise UserError(f"no non-empty documents among {len(files)} input files")
  by_split = {s: [d for d in docs if split_of(d[0], val_fraction, test_fraction) == s] for s in SPLITS}
  for s in SPLITS:
    if not by_split[s]:
      raise UserError(f"split {s!r} received no documents out of {len(docs)}; "
                      f"use more input files or larger val/test fractions")

  parent = os.path.dirname(os.path.abspath(out_dir))
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=".tmp-" + os.path.basename(out_dir) + "-", dir=parent)
  os.chmod(tmp, 0o755)
  try:
    lines = os.path.join(tmp, "tokenizer_train.txt")
    _write_training_lines(by_split["train"], lines)
    logging.info("training a %d-piece sentencepiece tokenizer", vocab_size)
    tokenizer.train_sentencepiece(lines, os.path.join(tmp, "tokenizer"), vocab_size, seed=seed)
    os.remove(lines)
    os.remove(os.path.join(tmp, "tokenizer.vocab"))
    sp = tokenizer.load(os.path.join(tmp, "tokenizer.model"))

    splits = {}
    for s in SPLITS:
      writer = shards.SplitWriter(tmp, s)
      texts = [t for _, t in by_split[s]]
      for ids in sp.encode(texts, num_threads=os.cpu_count() or 1):
        writer.write(ids)
      splits[s] = writer.close()
      logging.info("%s: %d documents, %d tokens", s, splits[s]["num_docs"], splits[s]["num_tokens"])

    fingerprint = hashlib.sha256()
    for doc_id, text in docs:
      fingerprint.update(doc_id.encode() + b"\0" + text.encode() + b"\0")
    train_chars = sum(len(t) for _, t in by_split["train"])
    meta = {
        "format": shards.FORMAT,
        "source": source_name,
        "tokenizer": "tokenizer.model",
        "vocab_size": sp.vocab_size(),
        "bos_id": tokenizer.BOS_ID,
        "eos_id": tokenizer.EOS_ID,
        "splits": splits,
        "chars_per_token_train": train_chars / max(1, splits["train"]["num_tokens"]),
        "inputs_sha256": fingerprint.hexdigest(),
        "config": {"vocab_size": vocab_size, "val_fraction": val_fraction,
                   "test_fraction": test_fraction, "seed": seed},
    }
    with open(os.path.join(tmp, shards.METADATA), "w") as f:
      json.dump(meta, f, indent=2)
    if os.path.exists(out_dir):
      shutil.rmtree(out_dir)
    os.rename(tmp, out_dir)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return meta


def prepare_stdlib(out_dir: str, vocab_size: int, val_fraction: float, test_fraction: float,
                   seed: int = 0) -> dict:
  import sysconfig
  root = sysconfig.get_paths()["stdlib"]
  return prepare(out_dir, corpus.stdlib_files(), root, vocab_size, val_fraction, test_fraction,
                 seed, source_name=f"python-stdlib:{root}")


def num_tokens(meta: dict, split: str) -> int:
  return int(np.int64(meta["splits"][split]["num_tokens"]))
