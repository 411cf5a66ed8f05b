"""Random-access packing of documents into fixed-length rows.

Each epoch concatenates the documents (wrapped in BOS/EOS) in a seeded order
that changes every epoch, and cuts the stream into rows of `seq_len` tokens.
Row g is computed from g alone, so:
  * every process can read exactly its own rows of each global batch,
  * the row sequence does not depend on the number of processes or workers,
  * resuming only needs the index of the next row.
A document cut at a row boundary continues in the next row with positions
restarting at 0 (a row is the model's whole context).
"""

import functools

import numpy as np

# Rows past the first epoch are indexed as further epochs; the length is
# finite only because grain wants one.
_MAX_EPOCHS = 1_000_000


class PackedRows:
  """Row g -> {"tokens", "segment_ids", "positions"}, each int32 [seq_len], and "dataset".

  `dataset` is the index of this dataset within a mixture (a scalar), so the
  trainer can measure what share of tokens each dataset contributed.
  """

  def __init__(self, source, lengths, seq_len: int, seed: int, shuffle: bool,
               bos_id: int | None, eos_id: int | None, dataset: int = 0):
    self.source, self.seq_len, self.seed, self.shuffle = source, seq_len, seed, shuffle
    self.dataset = dataset
    self.bos_id, self.eos_id = bos_id, eos_id
    self.doc_lengths = np.asarray(lengths, np.int64) + (bos_id is not None) + (eos_id is not None)
    self.rows_per_epoch = int(self.doc_lengths.sum()) // seq_len
    if self.rows_per_epoch == 0:
      raise ValueError(f"{self.doc_lengths.sum()} tokens cannot fill one row of {seq_len}")

  def __len__(self):
    return self.rows_per_epoch * _MAX_EPOCHS

  @functools.lru_cache(maxsize=2)
  def _epoch_layout(self, epoch: int):
    """(document order, start offset of each ordered document in the stream)."""
    n = self.doc_lengths.size
    order = (np.random.default_rng([self.seed, epoch]).permutation(n) if self.shuffle
             else np.arange(n))
    starts = np.concatenate([[0], np.cumsum(self.doc_lengths[order])])
    return order, starts

  def _document(self, doc: int) -> np.ndarray:
    ids = np.frombuffer(self.source[int(doc)], dtype=np.int32)
    parts = ([[self.bos_id]] if self.bos_id is not None else []) + [ids] + (
        [[self.eos_id]] if self.eos_id is not None else [])
    return np.concatenate(parts).astype(np.int32)

  def __getitem__(self, g: int) -> dict:
    epoch, row = divmod(int(g), self.rows_per_epoch)
    order, starts = self._epoch_layout(epoch)
    begin, end = row * self.seq_len, (row + 1) * self.seq_len
    k = int(np.searchsorted(starts, begin, side="right")) - 1
    tokens, segments, positions = [], [], []
    segment = 0
    while begin < end:
      doc = self._document(order[k])
      piece = doc[begin - starts[k]: end - starts[k]]
      segment += 1
      tokens.append(piece)
      segments.append(np.full(piece.size, segment, np.int32))
      positions.append(np.arange(piece.size, dtype=np.int32))
      begin += piece.size
      k += 1
    return {"tokens": np.concatenate(tokens), "segment_ids": np.concatenate(segments),
            "positions": np.concatenate(positions), "dataset": np.int32(self.dataset)}
