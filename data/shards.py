"""On-disk format of a prepared dataset.

    DIR/metadata.json             tokenizer, vocab size, files and counts per split
    DIR/tokenizer.model           sentencepiece model
    DIR/SPLIT-NNNNN.array_record  one record per document: int32 token ids, then (chat
                                  datasets) one uint8 loss-mask byte per token, or
                                  (classification datasets) one uint8 token-type byte
    DIR/SPLIT.lengths.npy         tokens per document, in record order
    DIR/SPLIT.labels.npy          (classification datasets) the label id of each document
    DIR/SPLIT.margins.npy         (preference datasets, optional) each document's pair's reward margin
    DIR/SPLIT.ref_logps.npy       (preference datasets, optional) each document's completion log-probability
                                  under a DPO reference model (trainer/reference_logps.py)
    DIR/SPLIT.records.jsonl       (prompt datasets) each document's JSON record: its prompt messages and
                                  reference answer, which reward functions read

The lengths file lets the packer place documents into rows without reading them.
`metadata["fields"]` says whether records carry a loss mask.

Integrity: each split's entry in metadata.json also records, per shard, its
records, bytes and sha256 (`"shards"`), and the same for its lengths file
(`"lengths"`). `verify_split` checks them (train.py does, once per run, for
every split it reads); a read error from a shard names the file. Datasets
written before these fields existed still load: their shards are checked
for record counts only, with a warning to re-prepare them.
"""

import hashlib
import json
import os

import grain
import numpy as np
from absl import logging
from array_record.python.array_record_module import ArrayRecordWriter

from errors import UserError

FORMAT = "strata.tokenized.v1"
METADATA = "metadata.json"


class SplitWriter:
  """Streams documents into ArrayRecord shards of about `docs_per_shard` records."""

  def __init__(self, directory: str, split: str, docs_per_shard: int = 2048):
    self.directory, self.split, self.docs_per_shard = directory, split, docs_per_shard
    self.files, self.lengths, self.labels, self.margins, self.shards = [], [], [], [], []
    self.records = []
    self._writer, self._in_shard = None, 0

  def write(self, token_ids, loss_mask=None, label: int | None = None, margin: float | None = None,
            json_record: dict | None = None) -> None:
    """One document; `loss_mask` is its per-token uint8 field (a loss mask, or token types); `label` its
    class, `margin` its preference pair's margin, `json_record` a JSON object kept beside it (each given for
    every document of a split, or none)."""
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
    if label is not None:
      self.labels.append(label)
    if margin is not None:
      self.margins.append(margin)
    if json_record is not None:
      self.records.append(json_record)
    self._in_shard += 1

  def _close_shard(self):
    if self._writer is not None:
      self._writer.close()
      self.shards.append(file_record(self.directory, self.files[-1], records=self._in_shard))
    self._writer, self._in_shard = None, 0

  def close(self) -> dict:
    """The split's entry for metadata.json: files, counts, and what `verify_split` checks."""
    self._close_shard()
    lengths = np.asarray(self.lengths, dtype=np.int32)
    name = f"{self.split}.lengths.npy"
    np.save(os.path.join(self.directory, name), lengths)
    info = {"files": self.files, "num_docs": int(lengths.size), "num_tokens": int(lengths.sum()),
            "shards": self.shards, "lengths": file_record(self.directory, name)}
    if self.labels:
      if len(self.labels) != lengths.size:
        raise ValueError(f"{len(self.labels)} labels for {lengths.size} documents")
      np.save(os.path.join(self.directory, f"{self.split}.labels.npy"), np.asarray(self.labels, dtype=np.int32))
      info["labels"] = file_record(self.directory, f"{self.split}.labels.npy")
    if self.margins:
      if len(self.margins) != lengths.size:
        raise ValueError(f"{len(self.margins)} margins for {lengths.size} documents")
      np.save(os.path.join(self.directory, f"{self.split}.margins.npy"), np.asarray(self.margins, dtype=np.float32))
      info["margins"] = file_record(self.directory, f"{self.split}.margins.npy")
    if self.records:
      if len(self.records) != lengths.size:
        raise ValueError(f"{len(self.records)} records for {lengths.size} documents")
      with open(os.path.join(self.directory, f"{self.split}.records.jsonl"), "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in self.records)
      info["records"] = file_record(self.directory, f"{self.split}.records.jsonl")
    return info


def file_sha256(path: str) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      h.update(block)
  return h.hexdigest()


def file_record(directory: str, name: str, **extra) -> dict:
  path = os.path.join(directory, name)
  return {"file": name, "bytes": os.path.getsize(path), "sha256": file_sha256(path), **extra}


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


def _rewrite_hint(meta: dict) -> str:
  tool = {"chat": "scripts/prepare_sft.py", "classification": "scripts/prepare_classify.py",
          "preference": "scripts/prepare_preferences.py", "prompts": "scripts/prepare_prompts.py"}.get(
      meta.get("kind"), "scripts/prepare_data.py")
  return f"re-create the dataset with {tool}"


class ShardSource:
  """grain's ArrayRecordDataSource over a split's shards, whose read errors name the shard file.

  riegeli reports corruption as a bare RuntimeError ("Corrupted Riegeli/records
  file ...") without the path; this finds the shard that holds the record.
  """

  def __init__(self, paths: list[str], hint: str = ""):
    self.paths, self.hint = paths, hint
    try:
      self._source = grain.sources.ArrayRecordDataSource(paths)
    except (RuntimeError, OSError) as e:
      raise self._error(self._unreadable_shard(e), e) from None
    self._ends = None

  def _error(self, path: str, e: Exception) -> UserError:
    detail = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return UserError(f"{path} is corrupt ({detail}); {self.hint or 're-create the dataset'}")

  def _unreadable_shard(self, e: Exception) -> str:
    """The first shard that fails to open on its own (all of them, named, if none does)."""
    for path in self.paths:
      try:
        grain.sources.ArrayRecordDataSource([path])
      except (RuntimeError, OSError):
        return path
    return ", ".join(self.paths)

  def _shard_of(self, index: int) -> str:
    if self._ends is None:
      self._ends = np.cumsum([len(grain.sources.ArrayRecordDataSource([p])) for p in self.paths])
    return self.paths[min(int(np.searchsorted(self._ends, index, side="right")), len(self.paths) - 1)]

  def __len__(self):
    return len(self._source)

  def __getitem__(self, index) -> bytes:
    try:
      return self._source[index]
    except (RuntimeError, OSError) as e:
      raise self._error(self._shard_of(int(index)), e) from None

  def __iter__(self):
    return (self[i] for i in range(len(self)))

  def __repr__(self):
    return f"ShardSource({self.paths!r})"


def _load_lengths(path: str, hint: str) -> np.ndarray:
  try:
    lengths = np.load(path)
  except (OSError, ValueError, EOFError) as e:
    raise UserError(f"{path} is corrupt ({e}); {hint}") from None
  if lengths.ndim != 1 or lengths.dtype.kind not in "iu":
    raise UserError(f"{path} is corrupt (holds {lengths.dtype} {lengths.shape}, expected 1-d integers); {hint}")
  return lengths


def open_split(directory: str, split: str, meta: dict | None = None):
  """Returns (random-access source of stored records, per-document lengths).

  Cheap checks only (files present, record counts); `verify_split` checks contents.
  """
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
  hint = _rewrite_hint(meta)
  lengths = _load_lengths(os.path.join(directory, f"{split}.lengths.npy"), hint)
  if lengths.size != info["num_docs"]:
    raise UserError(f"{directory}/{split}.lengths.npy lists {lengths.size} documents, "
                    f"metadata.json says {info['num_docs']}; the dataset is corrupt ({hint})")
  source = ShardSource(paths, hint)
  if len(source) != info["num_docs"]:
    raise UserError(f"the shards of split {split!r} in {directory} hold {len(source)} records, "
                    f"metadata.json says {info['num_docs']}; the dataset is corrupt ({hint})")
  return source, lengths


# (path, size, mtime_ns) -> sha256: a process checks an unchanged file once.
_HASHES: dict = {}
_WARNED_LEGACY: set = set()


def _cached_sha256(path: str) -> str:
  st = os.stat(path)
  key = (os.path.abspath(path), st.st_size, st.st_mtime_ns)
  if key not in _HASHES:
    _HASHES[key] = file_sha256(path)
  return _HASHES[key]


def check_file(directory: str, record: dict, hint: str) -> None:
  path = os.path.join(directory, record["file"])
  if not os.path.isfile(path):
    raise UserError(f"{path} is missing; {hint}")
  size = os.path.getsize(path)
  if size != record["bytes"]:
    raise UserError(f"{path} is corrupt: {size} bytes, metadata.json recorded {record['bytes']} (truncated or "
                    f"changed since it was written); {hint}")
  if _cached_sha256(path) != record["sha256"]:
    raise UserError(f"{path} is corrupt: its sha256 differs from metadata.json (the file changed since it was "
                    f"written); {hint}")
  if "records" in record:
    found = len(ShardSource([path], hint))
    if found != record["records"]:
      raise UserError(f"{path} is corrupt: {found} records, metadata.json recorded {record['records']}; {hint}")


def verify_split(directory: str, split: str, meta: dict | None = None) -> bool:
  """Checks every shard of `split`, and its lengths file, against metadata.json: size, sha256, records.

  False (and a warning, once) for a dataset written before checksums were recorded.
  """
  meta = meta or load_metadata(directory)
  info = meta["splits"].get(split)
  if info is None:
    raise UserError(f"dataset {directory} has no split {split!r}; it has {sorted(meta['splits'])}")
  hint = _rewrite_hint(meta)
  if "shards" not in info or "lengths" not in info:
    if directory not in _WARNED_LEGACY:
      _WARNED_LEGACY.add(directory)
      logging.warning("%s/metadata.json records no shard checksums (written by an older version); only "
                      "record counts are checked; %s to have its contents verified", directory, hint)
    return False
  for record in info["shards"] + [info["lengths"]] + [info[k] for k in ("labels", "margins", "records", "ref_logps")
                                                    if k in info]:
    check_file(directory, record, hint)
  return True


def open_margins(directory: str, split: str, meta: dict) -> np.ndarray | None:
  """Each document's pair margin (float32) of a preference split, or None when it has none."""
  return _open_floats(directory, split, meta, "margins")


def open_ref_logps(directory: str, split: str, meta: dict) -> np.ndarray | None:
  """Each document's reference log-probability (float32; trainer/reference_logps.py), or None."""
  return _open_floats(directory, split, meta, "ref_logps")


def _open_floats(directory: str, split: str, meta: dict, key: str) -> np.ndarray | None:
  """SPLIT.KEY.npy: one float32 per document of a split, or None when the split has none."""
  if key not in meta["splits"][split]:
    return None
  path = os.path.join(directory, f"{split}.{key}.npy")
  try:
    values = np.load(path)
  except (OSError, ValueError, EOFError) as e:
    raise UserError(f"{path} is corrupt ({e}); {_rewrite_hint(meta)}") from None
  if values.shape != (meta["splits"][split]["num_docs"],) or values.dtype != np.float32:
    raise UserError(f"{path} holds {values.dtype} {values.shape}, expected one float32 per document of "
                    f"{split}; the dataset is corrupt ({_rewrite_hint(meta)})")
  return values


def open_labels(directory: str, split: str, meta: dict) -> np.ndarray:
  """The label id of each document of `split` (classification datasets)."""
  path = os.path.join(directory, f"{split}.labels.npy")
  if "labels" not in meta["splits"][split]:
    raise UserError(f"dataset {directory} has no labels; prepare labelled data with scripts/prepare_classify.py")
  labels = _load_lengths(path, _rewrite_hint(meta))
  if labels.size != meta["splits"][split]["num_docs"]:
    raise UserError(f"{path} lists {labels.size} labels, metadata.json says {meta['splits'][split]['num_docs']} "
                    f"documents; the dataset is corrupt ({_rewrite_hint(meta)})")
  return labels


def open_records(directory: str, split: str, meta: dict) -> list[dict]:
  """Each document's JSON record of `split` (prompt datasets: {"prompt": messages, "answer": ...})."""
  path = os.path.join(directory, f"{split}.records.jsonl")
  if "records" not in meta["splits"][split]:
    raise UserError(f"dataset {directory} has no per-prompt records; prepare prompts with scripts/prepare_prompts.py")
  try:
    with open(path, encoding="utf-8") as f:
      records = [json.loads(line) for line in f]
  except (OSError, ValueError) as e:
    raise UserError(f"{path} is corrupt ({e}); {_rewrite_hint(meta)}") from None
  if len(records) != meta["splits"][split]["num_docs"]:
    raise UserError(f"{path} lists {len(records)} records, metadata.json says {meta['splits'][split]['num_docs']} "
                    f"documents; the dataset is corrupt ({_rewrite_hint(meta)})")
  return records
