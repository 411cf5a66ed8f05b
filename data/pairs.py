"""Random-access rows of preference pairs: one (chosen, rejected) pair per row, for reward models and DPO.

Pair k of a split is its records 2k (chosen) and 2k+1 (rejected) (data/preferences.py). Row g is pair
order_e[g mod n] of epoch e = g // n, in a seeded order that changes every epoch, as for labelled
examples (data/examples.py): any process reads just its own rows, and resuming needs only the next
row's index. Each field has a leading axis of 2, chosen then rejected.
"""

import numpy as np

from data import shards
from data.examples import EpochOrder, example_row


class PairRows:
  """Row g -> {"tokens", "loss_mask", "segment_ids", "positions"} int32 [2, seq_len], "dataset", the
  pair's float32 "margin" when the split has margins, and its sides' reference log-probabilities
  "ref_logps" float32 [2] when they were precomputed."""

  def __init__(self, source, lengths, seq_len: int, seed: int, shuffle: bool, dataset: int = 0, margins=None,
               ref_logps=None):
    if len(lengths) % 2:
      raise ValueError(f"{len(lengths)} records cannot be (chosen, rejected) pairs")
    self.source, self.seq_len, self.dataset, self.margins = source, seq_len, dataset, margins
    self.ref_logps = ref_logps
    self.rows_per_epoch = len(lengths) // 2
    self.truncated_docs = int((np.asarray(lengths) > seq_len).sum())
    self.order = EpochOrder(self.rows_per_epoch, seed, shuffle)

  def __len__(self):
    return len(self.order)

  def _side(self, record: int) -> dict:
    ids, mask = shards.decode_record(self.source[record], has_mask=True)
    row = example_row(ids, mask, self.seq_len)  # the mask rides, padded alike, where token types go
    row["loss_mask"] = row.pop("token_types")
    return row

  def __getitem__(self, g: int) -> dict:
    k = self.order[int(g)]
    chosen, rejected = self._side(2 * k), self._side(2 * k + 1)
    row = {**{f: np.stack([chosen[f], rejected[f]]) for f in chosen}, "dataset": np.int32(self.dataset)}
    if self.margins is not None:
      row["margin"] = self.margins[2 * k]
    if self.ref_logps is not None:
      row["ref_logps"] = self.ref_logps[2 * k:2 * k + 2]
    return row
