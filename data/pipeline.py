"""grain pipelines that feed the train and eval steps.

A global batch is `global_batch` consecutive rows of the packed stream. Each
process reads only rows [row_start, row_stop) of every global batch -- the
rows its devices hold -- so the global batch is the same whatever the number
of processes.
"""

import grain
import numpy as np

from data import shards
from errors import UserError
from data.packing import PackedRows
from data.tokenizer import BOS_ID, EOS_ID


class _ReadProcessRow(grain.transforms.Map):
  """Local example index -> the global row this process owns."""

  def __init__(self, rows: PackedRows, global_batch: int, row_start: int, row_stop: int):
    self.rows, self.global_batch = rows, global_batch
    self.row_start, self.local_batch = row_start, row_stop - row_start

  def map(self, i):
    step, j = divmod(int(i), self.local_batch)
    return self.rows[step * self.global_batch + self.row_start + j]


def packed_rows(data_cfg, split: str, seq_len: int, seed: int, shuffle: bool) -> PackedRows:
  source, lengths = shards.open_split(data_cfg.dir, split)
  return PackedRows(source, lengths, seq_len, seed=seed, shuffle=shuffle,
                    bos_id=BOS_ID if data_cfg.add_bos else None,
                    eos_id=EOS_ID if data_cfg.add_eos else None)


def _local_batches(rows: PackedRows, global_batch: int, row_start: int, row_stop: int,
                   num_batches: int | None) -> grain.MapDataset:
  local = row_stop - row_start
  total_steps = len(rows) // global_batch if num_batches is None else num_batches
  return (grain.MapDataset.range(total_steps * local)
          .map(_ReadProcessRow(rows, global_batch, row_start, row_stop))
          .batch(local, drop_remainder=True))


def train_iterator(data_cfg, seq_len: int, global_batch: int, row_start: int, row_stop: int,
                   seed: int, split: str = "train"):
  """Endless, shuffled (per epoch), checkpointable iterator of this process's batch rows."""
  rows = packed_rows(data_cfg, split, seq_len, seed=seed, shuffle=True)
  ds = _local_batches(rows, global_batch, row_start, row_stop, None).to_iter_dataset()
  if data_cfg.worker_count > 0:
    ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=data_cfg.worker_count))
  return iter(ds)


def eval_batches(data_cfg, split: str, seq_len: int, global_batch: int, row_start: int,
                 row_stop: int, num_batches: int) -> list[dict]:
  """The first `num_batches` batches of a split, in document order (the same every eval).

  Fewer if the split is smaller: never wraps around, so no row counts twice.
  """
  rows = packed_rows(data_cfg, split, seq_len, seed=0, shuffle=False)
  available = rows.rows_per_epoch // global_batch
  if available == 0:
    raise UserError(f"split {split!r} of {data_cfg.dir} has {rows.rows_per_epoch} rows of "
                    f"{seq_len} tokens, fewer than one batch of {global_batch}")
  num_batches = min(num_batches, available)
  ds = _local_batches(rows, global_batch, row_start, row_stop, num_batches)
  return [ds[i] for i in range(len(ds))]
