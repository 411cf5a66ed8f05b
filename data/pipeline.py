"""grain pipelines that feed the train and eval steps.

A global batch is `global_batch` consecutive rows of the packed stream. Each
process reads only rows [row_start, row_stop) of every global batch -- the
rows its devices hold -- so the global batch is the same whatever the number
of processes. With `data.mixture`, the stream interleaves several datasets'
rows in proportion to their weights (grain's MapDataset.mix: a fixed,
random-access pattern, so resumption stays exact).

With a row corruption (`masking`: a MaskSpec for masked LM, data/masking.py; a
SpanSpec for T5's span corruption, data/span_corruption.py), each row is
corrupted before batching, seeded by its global index in the stream: the draws,
like the rows, depend neither on the number of processes nor on resumption. A
corruption may read rows of another length than it writes (`source_len`).
"""

import os

import grain
import numpy as np

from data import shards
from data import seq2seq
from data import teacher_topk as teacher_topk_lib
from data.examples import ExampleRows
from data.pairs import PairRows
from data.prompts import PromptRows
from data.packing import PackedRows
from errors import UserError

# Row fields for the trainer's bookkeeping, not the model: which mixture member a row came from.
BOOKKEEPING = ("dataset",)


def datasets(data_cfg) -> list[tuple[str, float]]:
  """[(directory, weight)] from `data.mixture`, or [(data.dir, 1.0)]."""
  if not data_cfg.mixture:
    return [(data_cfg.dir, 1.0)]
  out = []
  for item in data_cfg.mixture.split(","):
    directory, sep, weight = item.strip().rpartition(":")
    try:
      w = float(weight)
    except ValueError:
      w = -1.0
    if not sep or not directory or w <= 0:
      raise UserError(f"config.data.mixture item {item!r}: expected DIR:WEIGHT with a positive weight")
    out.append((directory, w))
  return out


def _tokenizer_identity(directory: str, tokenizer_file: str) -> tuple:
  """Hashes of a dataset's tokenizer file and of the model config that decides how it tokenizes (if any)."""
  config = os.path.join(directory, "tokenizer_config.json")
  return shards.file_sha256(os.path.join(directory, tokenizer_file)), shards.file_sha256(config) if os.path.isfile(config) else None


def dataset_metadata(data_cfg) -> dict:
  """Metadata of the (first) dataset, after checking all mixture members share its tokenizer (and, for
  labelled data, its label set)."""
  metas = [(d, shards.load_metadata(d)) for d, _ in datasets(data_cfg)]
  first_dir, first = metas[0]
  first["tokenizer_path"] = os.path.join(first_dir, first["tokenizer"])
  want = _tokenizer_identity(first_dir, first["tokenizer"]) if metas[1:] else None
  for d, meta in metas[1:]:
    if _tokenizer_identity(d, meta["tokenizer"]) != want:
      raise UserError(f"config.data.mixture: {d} and {first_dir} were tokenized with different "
                      f"tokenizers; prepare them with the same --config.tokenizer.path")
    if meta.get("labels") != first.get("labels"):
      raise UserError(f"config.data.mixture: {d} has labels {meta.get('labels')}, the first dataset "
                      f"{first.get('labels')}; a classifier's datasets must share one label set")
  return first


def verify(data_cfg, split: str) -> None:
  """Checks the shards of `split` in every dataset of the run against their metadata.json checksums."""
  for directory, _ in datasets(data_cfg):
    shards.verify_split(directory, split)


def rows_per_epoch(data_cfg, split: str, seq_len: int, repeats: int = 1, teacher_topk: str = "",
                   target_len: int = 0) -> int:
  """Packed rows of `seq_len` in one epoch of `split`, as RowStream packs them; 0 if not even one."""
  try:
    return RowStream(data_cfg, split, seq_len, seed=0, shuffle=False, repeats=repeats,
                     teacher_topk=teacher_topk, target_len=target_len).rows_per_epoch
  except ValueError:  # PackedRows: a member's tokens cannot fill a single row
    return 0


class RowStream:
  """Random-access packed rows of one dataset or a weighted mixture."""

  def __init__(self, data_cfg, split: str, seq_len: int, seed: int, shuffle: bool, repeats: int = 1,
               teacher_topk: str = "", target_len: int = 0):
    """`repeats`: rows each prompt of a prompt dataset fills (a GRPO group). `teacher_topk`: a directory of
    a teacher's predictions precomputed over the rows (data/teacher_topk.py), read with them. `target_len`:
    the decoder row of text-to-text examples (0: seq_len)."""
    members = datasets(data_cfg)
    topk_meta = teacher_topk_lib.load(teacher_topk) if teacher_topk else None
    self.rows = []
    for i, (directory, _) in enumerate(members):
      meta = shards.load_metadata(directory)
      source, lengths = shards.open_split(directory, split, meta)
      if meta.get("kind") == "classification":  # labelled examples: one per row, never packed
        self.rows.append(ExampleRows(source, lengths, shards.open_labels(directory, split, meta), seq_len,
                                     seed=seed + i, shuffle=shuffle, dataset=i))
        continue
      if meta.get("kind") == "preference":  # (chosen, rejected) pairs: one per row, never packed
        self.rows.append(PairRows(source, lengths, seq_len, seed=seed + i, shuffle=shuffle, dataset=i,
                                  margins=shards.open_margins(directory, split, meta),
                                  ref_logps=shards.open_ref_logps(directory, split, meta)))
        continue
      if meta.get("kind") == seq2seq.KIND:  # (input, target) examples, packed two-sided
        self.rows.append(seq2seq.Seq2SeqRows(source, lengths, seq_len, target_len or seq_len, seed=seed + i,
                                             shuffle=shuffle, dataset=i))
        continue
      if meta.get("kind") == "prompts":  # prompts to sample from: one per row, `repeats` rows each
        self.rows.append(PromptRows(source, lengths, seq_len, seed=seed + i, shuffle=shuffle, dataset=i,
                                    repeats=repeats))
        continue
      # Chat datasets hold exactly what the chat template rendered, BOS/EOS included.
      templated = meta.get("kind") == "chat"
      # BOS only where the dataset's tokenizer adds one (older datasets: wherever it has one).
      bos = meta.get("bos_id") if data_cfg.add_bos and meta.get("add_bos", True) and not templated else None
      eos = meta.get("eos_id") if data_cfg.add_eos and not templated else None
      packed = PackedRows(source, lengths, seq_len, seed=seed + i, shuffle=shuffle and topk_meta is None,
                          bos_id=bos, eos_id=eos, dataset=i, has_mask=shards.has_loss_mask(meta),
                          packing=data_cfg.packing)
      if topk_meta is not None:  # packed once in stored order; whole rows shuffle instead
        packed = teacher_topk_lib.TopkRows(packed, teacher_topk, topk_meta, split, seed=seed + i, shuffle=shuffle)
      self.rows.append(packed)
    weights = np.asarray([w for _, w in members]) / sum(w for _, w in members)
    self.truncated_docs = sum(r.truncated_docs for r in self.rows)
    self.names = [os.path.basename(os.path.normpath(d)) for d, _ in members]
    if len(self.rows) == 1:
      self.dataset = grain.MapDataset.source(self.rows[0])
    else:
      self.dataset = grain.MapDataset.mix([grain.MapDataset.source(r) for r in self.rows], weights.tolist())
    # Rows available before any member repeats its first epoch.
    self.rows_per_epoch = int(min(r.rows_per_epoch / w for r, w in zip(self.rows, weights)))

  def __len__(self):
    return len(self.dataset)

  def __getitem__(self, g):
    return self.dataset[int(g)]


class _ReadProcessRow(grain.transforms.Map):
  """Local example index -> the global row this process owns (with its global index, for masking)."""

  def __init__(self, rows: RowStream, global_batch: int, row_start: int, row_stop: int, with_index: bool = False):
    self.rows, self.global_batch = rows, global_batch
    self.row_start, self.local_batch = row_start, row_stop - row_start
    self.with_index = with_index

  def map(self, i):
    step, j = divmod(int(i), self.local_batch)
    g = step * self.global_batch + self.row_start + j
    return {**self.rows[g], "row_index": g} if self.with_index else self.rows[g]


def _local_batches(rows: RowStream, global_batch: int, row_start: int, row_stop: int,
                   num_batches: int | None, masking=None,
                   stream: str = "train") -> grain.MapDataset:
  local = row_stop - row_start
  total_steps = len(rows) // global_batch if num_batches is None else num_batches
  ds = grain.MapDataset.range(total_steps * local).map(
      _ReadProcessRow(rows, global_batch, row_start, row_stop, with_index=masking is not None))
  if masking is not None:
    ds = ds.map(masking.rows_map(stream))
  return ds.batch(local, drop_remainder=True)


def train_iterator(data_cfg, seq_len: int, global_batch: int, row_start: int, row_stop: int,
                   seed: int, split: str = "train", masking=None, repeats: int = 1, teacher_topk: str = "",
                   target_len: int = 0):
  """Endless, shuffled (per epoch), checkpointable iterator of this process's batch rows.

  Rows carry what their dataset holds (packed documents: tokens, positions,
  segment ids, loss mask; labelled examples: also token types and a label); with
  `masking`, also the masked-LM targets. The masks are part of the rows, so
  restoring the iterator's state restores them too. The trainer keeps the
  fields its objective reads.
  """
  seq_len = masking.source_len(seq_len) if masking is not None else seq_len
  rows = RowStream(data_cfg, split, seq_len, seed=seed, shuffle=True, repeats=repeats, teacher_topk=teacher_topk,
                   target_len=target_len)
  ds = _local_batches(rows, global_batch, row_start, row_stop, None, masking, "train").to_iter_dataset()
  if data_cfg.worker_count > 0:
    ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=data_cfg.worker_count))
  return iter(ds)


def eval_batches(data_cfg, split: str, seq_len: int, global_batch: int, row_start: int,
                 row_stop: int, num_batches: int, masking=None, repeats: int = 1,
                 teacher_topk: str = "", target_len: int = 0) -> list[dict]:
  """The first `num_batches` batches of a split, in document order (the same every eval).

  Fewer if the split is smaller: never wraps around, so no row counts twice.
  With `masking`, one fixed masking of those rows (the "eval" stream).
  """
  seq_len = masking.source_len(seq_len) if masking is not None else seq_len
  rows = RowStream(data_cfg, split, seq_len, seed=0, shuffle=False, repeats=repeats, teacher_topk=teacher_topk,
                   target_len=target_len)
  available = rows.rows_per_epoch // global_batch
  if available == 0:
    raise UserError(f"split {split!r} of {data_cfg.mixture or data_cfg.dir} has {rows.rows_per_epoch} rows "
                    f"of {seq_len} tokens, fewer than one batch of {global_batch}")
  ds = _local_batches(rows, global_batch, row_start, row_stop, min(num_batches, available), masking, "eval")
  return [{k: v for k, v in ds[i].items() if k not in BOOKKEEPING} for i in range(len(ds))]
