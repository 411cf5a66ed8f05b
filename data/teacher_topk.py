"""A teacher's top-k next-token logits, precomputed over a dataset's packed rows (scripts/precompute_teacher.py).

A distillation run with config.train.distill.teacher_topk_dir reads them with its rows instead of holding
and running the teacher. A prediction belongs to the context it was computed in, and a packed row's
context depends on how documents were packed. So these rows are packed once, in stored order (PackedRows
without shuffling), and a run reading them shuffles the order of whole rows each epoch instead of
repacking documents: row r of a split is always the same tokens, with the same stored predictions.

    DIR/metadata.json      kind "teacher_topk"; top_k; the dataset and packing the rows come from
                           ("rows_of"); the teacher; per split its row count and file checksums
    DIR/SPLIT.ids.npy      [rows, seq_len, top_k] uint16 (int32 past 65536 tokens): the teacher's k
                           likeliest next tokens at each position, likeliest first
    DIR/SPLIT.logps.npy    [rows, seq_len, top_k] float16 or float32: their log-probabilities at T=1
                           (not logits: float16 would round logits of 10-30 by up to 0.016)
    DIR/SPLIT.norms.npy    [rows, seq_len, 2, 2] float32: at t = 1 and at the distillation temperature
                           recorded in metadata.json ("temperature"), the logsumexp of all the teacher's
                           logits / t and of the other V - k: the top k's probabilities at t, and the
                           mass left outside them, exactly

The train split may hold only the first rows (precompute_teacher --train_rows): a run then trains on those.
"""

import json
import os

import numpy as np

from data import shards
from data.examples import EpochOrder
from errors import UserError

KIND = "teacher_topk"
FIELDS = ("teacher_ids", "teacher_logps", "teacher_norms")
FILES = ("ids", "logps", "norms")
HINT = "recompute it with scripts/precompute_teacher.py"


def norms_index(temperature: float) -> int:
  """Which of a position's two (all, rest) logsumexp pairs is at `temperature` (1, or the recorded T)."""
  return 0 if temperature == 1.0 else 1


def rows_of(data_cfg, seq_len: int) -> dict:
  """What the packed rows depend on: the dataset (by its metadata's checksum) and how it is packed."""
  if data_cfg.mixture:
    raise UserError("a precomputed teacher covers one dataset's rows; config.data.mixture is not supported "
                    "with config.train.distill.teacher_topk_dir")
  shards.load_metadata(data_cfg.dir)  # a clear error where there is no dataset
  meta_path = os.path.join(data_cfg.dir, shards.METADATA)
  return {"data_dir": os.path.abspath(data_cfg.dir), "data_metadata_sha256": shards.file_sha256(meta_path),
          "seq_len": seq_len, "packing": data_cfg.packing, "add_bos": data_cfg.add_bos,
          "add_eos": data_cfg.add_eos}


def load(directory: str) -> dict:
  """The metadata of a precomputed-teacher directory, with a clear error when it is not one."""
  path = os.path.join(directory, shards.METADATA)
  if not os.path.isfile(path):
    raise UserError(f"config.train.distill.teacher_topk_dir={directory} holds no {shards.METADATA}; write it "
                    f"with scripts/precompute_teacher.py")
  with open(path) as f:
    meta = json.load(f)
  if meta.get("kind") != KIND:
    raise UserError(f"{path} is a {meta.get('kind')!r} directory, not a precomputed teacher ({KIND!r})")
  return meta


def check_rows_of(directory: str, meta: dict, data_cfg, seq_len: int) -> None:
  """The run's rows are the ones the logits were computed on: same dataset, length and packing."""
  want, have = meta["rows_of"], rows_of(data_cfg, seq_len)
  where = f"config.train.distill.teacher_topk_dir={directory} was computed on the rows of"
  if want["data_metadata_sha256"] != have["data_metadata_sha256"]:
    raise UserError(f"{where} the dataset {want['data_dir']} as it was then, not config.data.dir={data_cfg.dir} "
                    f"as it is now; {HINT} for this run's data")
  names = {"seq_len": "config.train.seq_len", "packing": "config.data.packing", "add_bos": "config.data.add_bos",
           "add_eos": "config.data.add_eos"}
  for key, name in names.items():
    if want[key] != have[key]:
      raise UserError(f"{where} {name}={want[key]!r}, but the run has {name}={have[key]!r}; {HINT} for this run")


def verify(directory: str, meta: dict, split: str) -> None:
  """Checks a split's files against the checksums in metadata.json."""
  info = meta["splits"].get(split)
  if info is None:
    raise UserError(f"config.train.distill.teacher_topk_dir={directory} has no split {split!r} (it has "
                    f"{sorted(meta['splits'])}); {HINT}")
  for field in FILES:
    shards.check_file(directory, info[field], HINT)


class TopkRows:
  """Row g -> packed row order_e[g mod n] (from `base`, a PackedRows in stored order) with the teacher's
  "teacher_ids" and "teacher_logps" [seq_len, top_k] (as stored) and "teacher_norms" float32 [seq_len, 2, 2]
  for it, where n is the split's
  precomputed rows and order_e a seeded permutation per epoch (or stored order without shuffling)."""

  def __init__(self, base, directory: str, meta: dict, split: str, seed: int, shuffle: bool):
    self.base, self.directory, self.split = base, directory, split
    self.rows_per_epoch = meta["splits"][split]["rows"]
    if self.rows_per_epoch > base.rows_per_epoch:
      raise UserError(f"{directory} holds {self.rows_per_epoch} rows of split {split!r}, but it packs into "
                      f"{base.rows_per_epoch}; {HINT}")
    self.truncated_docs = base.truncated_docs
    self.order = EpochOrder(self.rows_per_epoch, seed, shuffle)
    self._arrays = None  # memory-mapped on first read, in each process that reads

  def __getstate__(self):  # grain workers map the files themselves rather than receive copies
    return {**self.__dict__, "_arrays": None}

  def __len__(self):
    return len(self.order)

  def _open(self):
    if self._arrays is None:
      self._arrays = tuple(np.load(os.path.join(self.directory, f"{self.split}.{f}.npy"), mmap_mode="r")
                           for f in FILES)
    return self._arrays

  def __getitem__(self, g: int) -> dict:
    r = self.order[int(g)]
    ids, logps, norms = self._open()  # as stored (uint16, float16): widened on the device
    return {**self.base[r], "teacher_ids": np.asarray(ids[r]), "teacher_logps": np.asarray(logps[r]),
            "teacher_norms": np.asarray(norms[r])}
