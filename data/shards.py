"""On-disk format of a prepared dataset.

    DIR/metadata.json             tokenizer, vocab size, files and counts per split
    DIR/tokenizer.model           sentencepiece model
    DIR/SPLIT-NNNNN.array_record  one record per document: int32 token ids, then (chat
                                  datasets) one uint8 loss-mask byte per token
    DIR/SPLIT.lengths.npy         tokens per document, in record order

The lengths file lets the packer place documents into rows without reading them.
`metadata["fields"]` says whether records carry a loss mask.
"""

import json
import os

import grain
import numpy as np
from array_record.python.array_record_module import ArrayRecordWriter

from errors import UserError

FORMAT = "strata.tokenized.v1"
METADATA = "metadata.json"


class SplitWriter:
  """Streams documents into ArrayRecord shards of about `docs_per_shard` records."""

  def __init__(self, directory: str, split: str, docs_per_shard: int = 2048):
    self.directory, self.split, self.docs_per_shard = directory, split, docs_per_shard
    self.files, self.lengths = [], []
    self._writer, self._in_shard = None, 0

  def write(self, token_ids, loss_mask=None) -> None:
    if self._writer is None or self._in_shard == self.docs_per_shard:
      self._close_shard()
      name = f"{self.split}-{len(self.files):05d}.array_record"
      self.files.append(name)
      self._writer = ArrayRecordWriter(os.path.join(self.directory, name), "group_size:1")
    record = np.asarray(token_ids, dtype=np.int32).tobytes()
    if loss_mask is not None:
      record += np.asarray(loss_mask, dtype=np.uint8).tobytes()
    self._writer.write(record)
    self.lengths.append(len(token_ids))
    self._in_shard += 1

  def _close_shard(self):
    if self._writer is not None:
      self._writer.close()
    self._writer, self._in_shard = None, 0

  def close(self) -> dict:
    self._close_shard()
    lengths = np.asarray(self.lengths, dtype=np.int32)
    np.save(os.path.join(self.directory, f"{self.split}.lengths.npy"), lengths)
    return {"files": self.files, "num_docs": int(lengths.size), "num_tokens": int(lengths.sum())}


def decode_record(raw: bytes, has_mask: bool) -> tuple[np.ndarray, np.ndarray | None]:
  """(int32 tokens, uint8 loss mask or None) of one stored document."""
  if not has_mask:
    return np.frombuffer(raw, dtype=np.int32), None
  n = len(raw) // 5
  return np.frombuffer(raw, dtype=np.int32, count=n), np.frombuffer(raw, dtype=np.uint8, offset=4 * n)


def has_loss_mask(meta: dict) -> bool:
  return "loss_mask" in meta.get("fields", ("tokens",))


def load_metadata(directory: str) -> dict:
  if not directory:
    raise UserError("config.data.dir is empty; point it at a dataset from scripts/prepare_data.py")
  path = os.path.join(directory, METADATA)
  if not os.path.isdir(directory):
    raise UserError(f"data directory {directory} does not exist; create it with scripts/prepare_data.py")
  if not os.path.isfile(path):
    raise UserError(f"data directory {directory} has no {METADATA}; it is empty or not a prepared "
                    f"dataset (scripts/prepare_data.py writes one)")
  try:
    with open(path) as f:
      meta = json.load(f)
  except json.JSONDecodeError as e:
    raise UserError(f"{path} is corrupt: {e}") from None
  if meta.get("format") != FORMAT:
    raise UserError(f"{path}: format {meta.get('format')!r}, expected {FORMAT!r}")
  return meta


def open_split(directory: str, split: str, meta: dict | None = None):
  """Returns (random-access source of int32 arrays, per-document lengths)."""
  meta = meta or load_metadata(directory)
  if split not in meta["splits"]:
    raise UserError(f"dataset {directory} has no split {split!r}; it has {sorted(meta['splits'])}")
  info = meta["splits"][split]
  if info["num_docs"] == 0:
    raise UserError(f"split {split!r} of dataset {directory} is empty")
  paths = [os.path.join(directory, f) for f in info["files"]]
  missing = [p for p in paths if not os.path.isfile(p)]
  if missing:
    raise UserError(f"dataset {directory} is missing shard files: {missing[:3]}")
  lengths = np.load(os.path.join(directory, f"{split}.lengths.npy"))
  if lengths.size != info["num_docs"]:
    raise UserError(f"{directory}/{split}.lengths.npy lists {lengths.size} documents, "
                    f"metadata.json says {info['num_docs']}; the dataset is corrupt")
  return grain.sources.ArrayRecordDataSource(paths), lengths
