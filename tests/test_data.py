"""Packing, per-process slicing and iterator resumption of the grain pipeline."""

import numpy as np
import pytest

from configs import base
from data import pipeline, prepare, shards
from data.packing import PackedRows


class _ListSource:
  def __init__(self, docs):
    self.docs = [np.asarray(d, np.int32).tobytes() for d in docs]

  def __len__(self):
    return len(self.docs)

  def __getitem__(self, i):
    return self.docs[i]


def _docs(n=23, seed=0):
  rng = np.random.default_rng(seed)
  return [rng.integers(10, 1000, rng.integers(1, 40)) for _ in range(n)]


def test_rows_cover_each_epoch_exactly_once_with_bos_eos():
  docs = _docs()
  rows = PackedRows(_ListSource(docs), [len(d) for d in docs], seq_len=16, seed=3, shuffle=True,
                    bos_id=1, eos_id=2)
  order = rows._layout(0)[0]
  stream = np.concatenate([np.concatenate([[1], docs[i], [2]]) for i in order])
  got = np.concatenate([rows[g]["tokens"] for g in range(rows.rows_per_epoch)])
  np.testing.assert_array_equal(got, stream[: rows.rows_per_epoch * 16])
  for g in range(rows.rows_per_epoch):
    row = rows[g]
    seg, pos = row["segment_ids"], row["positions"]
    assert seg[0] == 1 and np.all(np.diff(seg) >= 0)
    starts = np.concatenate([[True], seg[1:] != seg[:-1]])
    # Positions restart at every segment and count up within it.
    for s in np.unique(seg):
      np.testing.assert_array_equal(pos[seg == s], np.arange((seg == s).sum()))
    assert np.all(pos[starts] == 0)


def test_epochs_reshuffle_and_seed_is_deterministic():
  docs = _docs()
  make = lambda seed: PackedRows(_ListSource(docs), [len(d) for d in docs], 16, seed, True, 1, 2)
  a, b, c = make(0), make(0), make(1)
  first_epoch = [a[g]["tokens"] for g in range(a.rows_per_epoch)]
  np.testing.assert_array_equal(first_epoch[3], b[3]["tokens"])
  assert not np.array_equal(a._layout(0)[0], a._layout(1)[0])
  assert not np.array_equal(a._layout(0)[0], c._layout(0)[0])


def _data_cfg(directory, workers=0):
  cfg = base.base_config().data
  cfg.update(dict(dir=directory, worker_count=workers))
  return cfg


def test_process_slices_assemble_the_single_process_batch(dataset_dir):
  cfg = _data_cfg(dataset_dir)
  whole = pipeline.train_iterator(cfg, 32, 8, 0, 8, seed=0)
  halves = [pipeline.train_iterator(cfg, 32, 8, lo, hi, seed=0) for lo, hi in ((0, 4), (4, 8))]
  for _ in range(3):
    full = next(whole)
    parts = [next(h) for h in halves]
    for key in ("tokens", "segment_ids", "positions"):
      np.testing.assert_array_equal(full[key], np.concatenate([p[key] for p in parts]))


@pytest.mark.parametrize("workers", [0, 1])
def test_iterator_state_resumes_exactly(dataset_dir, workers):
  cfg = _data_cfg(dataset_dir, workers)
  it = pipeline.train_iterator(cfg, 32, 4, 0, 4, seed=1)
  for _ in range(3):
    next(it)
  state = it.get_state()
  expected = [next(it)["tokens"] for _ in range(3)]
  fresh = pipeline.train_iterator(cfg, 32, 4, 0, 4, seed=1)
  fresh.set_state(state)
  for want in expected:
    np.testing.assert_array_equal(next(fresh)["tokens"], want)


def test_eval_batches_never_wrap(dataset_dir):
  cfg = _data_cfg(dataset_dir)
  batches = pipeline.eval_batches(cfg, "val", 64, 8, 0, 8, num_batches=10_000)
  rows = pipeline.RowStream(cfg, "val", 64, 0, False)
  assert len(batches) == rows.rows_per_epoch // 8


def test_prepared_dataset_is_consistent(dataset_dir):
  meta = shards.load_metadata(dataset_dir)
  assert meta["vocab_size"] == 512
  for split in prepare.SPLITS:
    source, lengths = shards.open_split(dataset_dir, split)
    assert len(source) == lengths.size == meta["splits"][split]["num_docs"] > 0
    assert int(lengths.sum()) == meta["splits"][split]["num_tokens"]
    assert np.frombuffer(source[0], np.int32).size == lengths[0]


def test_split_assignment_is_stable():
  ids = [f"doc{i}" for i in range(2000)]
  splits = [prepare.split_of(d, 0.1, 0.1) for d in ids]
  assert splits == [prepare.split_of(d, 0.1, 0.1) for d in ids]
  assert 100 < splits.count("val") < 300 and 100 < splits.count("test") < 300
