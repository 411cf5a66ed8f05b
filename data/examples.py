"""Random-access rows of labelled examples: one example per row, padded, for classifiers.

Row g is example order_e[g mod n] of epoch e = g // n, in a seeded order that
changes every epoch (or stored order without shuffling), so, as with packed
rows (data/packing.py), any process reads just its own rows, the sequence does
not depend on the number of processes, and resuming needs only the next row's
index. A classification head reads one example per row; an example longer
than a row is cut to it (data preparation's --max_len is the place to
choose the length; this only guards the row).
"""

import numpy as np

from data import shards

_MAX_EPOCHS = 1_000_000  # rows past the first epoch index further epochs; grain wants a finite length


class EpochOrder:
  """Row g -> example index: order_e[g mod n] of epoch e = g // n, a seeded permutation per epoch (or
  stored order without shuffling)."""

  def __init__(self, n: int, seed: int, shuffle: bool):
    self.n, self.seed, self.shuffle = n, seed, shuffle
    self._orders = {}

  def __len__(self):
    return self.n * _MAX_EPOCHS

  def __getitem__(self, g: int) -> int:
    epoch, row = divmod(int(g), self.n)
    if epoch not in self._orders:
      self._orders = {epoch: np.random.default_rng([self.seed, epoch]).permutation(self.n) if self.shuffle
                      else np.arange(self.n)}
    return int(self._orders[epoch][row])


class ExampleRows:
  """Row g -> {"tokens", "segment_ids", "positions", "token_types"} int32 [seq_len], "label", "dataset"."""

  def __init__(self, source, lengths, labels, seq_len: int, seed: int, shuffle: bool, dataset: int = 0):
    if len(labels) != len(lengths):
      raise ValueError(f"{len(labels)} labels for {len(lengths)} examples")
    self.source, self.labels = source, np.asarray(labels, np.int32)
    self.seq_len, self.dataset = seq_len, dataset
    self.rows_per_epoch = len(lengths)
    self.truncated_docs = int((np.asarray(lengths) > seq_len).sum())
    self.order = EpochOrder(self.rows_per_epoch, seed, shuffle)

  def __len__(self):
    return len(self.order)

  def __getitem__(self, g: int) -> dict:
    k = self.order[g]
    ids, types = shards.decode_record(self.source[k], has_mask=True)
    return {**example_row(ids, types, self.seq_len), "label": self.labels[k], "dataset": np.int32(self.dataset)}


def example_row(ids, token_types, seq_len: int) -> dict:
  """One example as a row of `seq_len`: its tokens (cut to the row), then padding (segment 0)."""
  n = min(len(ids), seq_len)
  pad = np.zeros(seq_len - n, np.int32)
  return {"tokens": np.concatenate([np.asarray(ids[:n], np.int32), pad]),
          "segment_ids": np.concatenate([np.ones(n, np.int32), pad]),
          "positions": np.concatenate([np.arange(n, dtype=np.int32), pad]),
          "token_types": np.concatenate([np.asarray(token_types[:n], np.int32), pad])}
