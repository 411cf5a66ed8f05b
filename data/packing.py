"""Random-access packing of documents into fixed-length rows.

Two layouts, both computed per epoch from the document lengths alone, in a
seeded order that changes every epoch:

  "split"  (pretraining) concatenates the documents (wrapped in BOS/EOS) and
           cuts the stream into rows of `seq_len` tokens. A document cut at a
           row boundary continues in the next row with positions restarting
           at 0 (a row is the model's whole context). No padding.
  "whole"  (fine-tuning) never cuts an example: examples fill a row until the
           next one does not fit, and the rest is padding (segment 0). An
           example longer than a row is truncated to it.

Row g is computed from g alone, so:
  * every process can read exactly its own rows of each global batch,
  * the row sequence does not depend on the number of processes or workers,
  * resuming only needs the index of the next row.
Documents of any layout attend only within themselves (segment ids).
"""

import functools

import numpy as np

from data import shards

# Rows past the first epoch are indexed as further epochs; the length is
# finite only because grain wants one.
_MAX_EPOCHS = 1_000_000
PACKINGS = ("split", "whole")


class _Documents:
  """Stored documents with optional BOS/EOS and their per-token loss mask (1 where not stored)."""

  def __init__(self, source, lengths, has_mask: bool, bos_id: int | None, eos_id: int | None):
    self.source, self.has_mask = source, has_mask
    self.bos_id, self.eos_id = bos_id, eos_id
    self.lengths = np.asarray(lengths, np.int64) + (bos_id is not None) + (eos_id is not None)

  def __call__(self, doc: int) -> tuple[np.ndarray, np.ndarray]:
    ids, mask = shards.decode_record(self.source[int(doc)], self.has_mask)
    mask = np.ones(ids.size, np.int32) if mask is None else mask.astype(np.int32)
    if self.bos_id is not None:
      ids, mask = np.concatenate([[self.bos_id], ids]), np.concatenate([[1], mask])
    if self.eos_id is not None:
      ids, mask = np.concatenate([ids, [self.eos_id]]), np.concatenate([mask, [1]])
    return ids.astype(np.int32), mask.astype(np.int32)


def _order(n: int, seed: int, epoch: int, shuffle: bool) -> np.ndarray:
  return np.random.default_rng([seed, epoch]).permutation(n) if shuffle else np.arange(n)


def _row(pieces: list[tuple[np.ndarray, np.ndarray]], seq_len: int, dataset: int) -> dict:
  """Concatenates (tokens, mask) pieces, one segment each, and pads to seq_len."""
  tokens, masks, segments, positions = [], [], [], []
  for segment, (ids, mask) in enumerate(pieces, 1):
    tokens.append(ids)
    masks.append(mask)
    segments.append(np.full(ids.size, segment, np.int32))
    positions.append(np.arange(ids.size, dtype=np.int32))
  pad = seq_len - sum(p.size for p in tokens)
  zeros = np.zeros(pad, np.int32)
  return {"tokens": np.concatenate(tokens + [zeros]), "segment_ids": np.concatenate(segments + [zeros]),
          "positions": np.concatenate(positions + [zeros]), "loss_mask": np.concatenate(masks + [zeros]),
          "dataset": np.int32(dataset)}


class PackedRows:
  """Row g -> {"tokens", "segment_ids", "positions", "loss_mask"}, each int32 [seq_len], and "dataset".

  `dataset` is the index of this dataset within a mixture (a scalar), so the
  trainer can measure what share of tokens each dataset contributed.
  """

  def __init__(self, source, lengths, seq_len: int, seed: int, shuffle: bool,
               bos_id: int | None, eos_id: int | None, dataset: int = 0, has_mask: bool = False,
               packing: str = "split"):
    if packing not in PACKINGS:
      raise ValueError(f"packing={packing!r}; expected one of {PACKINGS}")
    self.docs = _Documents(source, lengths, has_mask, bos_id, eos_id)
    self.seq_len, self.seed, self.shuffle = seq_len, seed, shuffle
    self.dataset, self.packing = dataset, packing
    self.truncated_docs = int((self.docs.lengths > seq_len).sum()) if packing == "whole" else 0
    self.rows_per_epoch = self._rows_in_epoch(0)
    if self.rows_per_epoch == 0:
      raise ValueError(f"{self.docs.lengths.sum()} tokens cannot fill one row of {seq_len}")
    self._epoch_starts = [0, self.rows_per_epoch]  # first global row of each epoch, grown lazily

  def __len__(self):
    return self.rows_per_epoch * _MAX_EPOCHS

  @functools.lru_cache(maxsize=2)
  def _layout(self, epoch: int):
    """split: (order, stream offset of each ordered document); whole: (order, first document of each row)."""
    order = _order(self.docs.lengths.size, self.seed, epoch, self.shuffle)
    if self.packing == "split":
      return order, np.concatenate([[0], np.cumsum(self.docs.lengths[order])])
    lengths = np.minimum(self.docs.lengths[order], self.seq_len).tolist()
    firsts, used = [0], 0
    for k, n in enumerate(lengths):
      if used + n > self.seq_len:
        firsts.append(k)
        used = 0
      used += n
    firsts.append(len(lengths))
    return order, np.asarray(firsts)

  def _rows_in_epoch(self, epoch: int) -> int:
    if self.packing == "split":
      return int(self.docs.lengths.sum()) // self.seq_len
    return self._layout(epoch)[1].size - 1

  def _locate(self, g: int) -> tuple[int, int]:
    """(epoch, row within it); "whole" epochs differ in row count, so they are counted."""
    if self.packing == "split":
      return divmod(g, self.rows_per_epoch)
    while self._epoch_starts[-1] <= g:
      self._epoch_starts.append(self._epoch_starts[-1] + self._rows_in_epoch(len(self._epoch_starts) - 1))
    epoch = int(np.searchsorted(self._epoch_starts, g, side="right")) - 1
    return epoch, g - self._epoch_starts[epoch]

  def __getitem__(self, g: int) -> dict:
    epoch, row = self._locate(int(g))
    order, bounds = self._layout(epoch)
    if self.packing == "whole":
      pieces = [self.docs(order[k]) for k in range(bounds[row], bounds[row + 1])]
      return _row([(ids[:self.seq_len], mask[:self.seq_len]) for ids, mask in pieces], self.seq_len, self.dataset)
    begin, end = row * self.seq_len, (row + 1) * self.seq_len
    k = int(np.searchsorted(bounds, begin, side="right")) - 1
    pieces = []
    while begin < end:
      ids, mask = self.docs(order[k])
      lo, hi = begin - bounds[k], end - bounds[k]
      pieces.append((ids[lo:hi], mask[lo:hi]))
      begin += pieces[-1][0].size
      k += 1
    return _row(pieces, self.seq_len, self.dataset)
