"""Training on a weighted mixture of two prepared datasets."""

import os

import jax
import numpy as np
import pytest

from conftest import read_metrics, small_config, stdlib_data_config, train_losses
from data import corpus, pipeline, prepare
from errors import UserError
from trainer import loop

TINY_MODEL = {"model.d_model": 64, "model.num_layers": 1, "model.num_heads": 2, "model.num_kv_heads": 1,
              "model.head_dim": 32, "model.mlp_dim": 128, "model.vocab_size": 512,
              "mesh.data": 1, "mesh.fsdp": 1, "train.seq_len": 32}


@pytest.fixture(scope="module")
def second_dataset(dataset_dir, tmp_path_factory):
  """Other standard-library modules, tokenized with the first dataset's tokenizer."""
  cfg = stdlib_data_config()
  cfg.sources.stdlib.inputs = ",".join(corpus.stdlib_files()[200:260])
  cfg.tokenizer.path = os.path.join(dataset_dir, "tokenizer.model")
  out = str(tmp_path_factory.mktemp("data") / "other")
  prepare.prepare(cfg, out)
  return out


def test_mixture_token_shares(dataset_dir, second_dataset):
  """Counted on the pipeline's batches (as the loop counts them), without training."""
  cfg = small_config("", **TINY_MODEL, **{"data.mixture": f"{dataset_dir}:0.7,{second_dataset}:0.3"})
  t = cfg.train
  batches = pipeline.train_iterator(cfg.data, t.seq_len, t.batch_size, 0, t.batch_size, seed=t.seed)
  tokens = np.zeros(2)
  for _ in range(200):
    b = next(batches)
    tokens += np.bincount(b["dataset"], weights=(b["segment_ids"] != 0).sum(1), minlength=2)
  shares = tokens / tokens.sum()
  print(f"token shares over 200 batches: {shares[0]:.4f} / {shares[1]:.4f}")
  assert abs(shares[0] - 0.7) < 0.02 and abs(shares[1] - 0.3) < 0.02, shares


def test_mixture_run_logs_shares_and_resumes_exactly(dataset_dir, second_dataset, tmp_path):
  mixture = f"{dataset_dir}:0.7,{second_dataset}:0.3"
  cfg = small_config("", **TINY_MODEL, **{"data.mixture": mixture, "train.steps": 40, "log.every_steps": 1})
  one = jax.devices()[:1]
  straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")
  loop.run(cfg, straight, devices=one)
  rows = read_metrics(straight)
  assert sorted(rows) == list(range(1, 41))
  for s in rows:  # each line holds the shares of the step before it
    assert rows[s]["share_stdlib80"] + rows[s]["share_other"] == pytest.approx(1.0)
  loop.run(cfg, resumed, devices=one, stop_after_step=20)
  loop.run(cfg, resumed, devices=one)
  a, b = train_losses(straight), train_losses(resumed)
  assert sorted(b) == list(range(1, 41))
  for step in range(1, 41):
    assert a[step] == pytest.approx(b[step], rel=1e-6, abs=1e-6), step


def test_mixture_needs_one_tokenizer(dataset_dir, tmp_path):
  cfg = stdlib_data_config(40)
  cfg.tokenizer.vocab_size = 400
  other = str(tmp_path / "own_tokenizer")
  prepare.prepare(cfg, other)
  bad = small_config("", **TINY_MODEL, **{"data.mixture": f"{dataset_dir}:1,{other}:1"})
  with pytest.raises(UserError, match="different tokenizers"):
    loop.run(bad, str(tmp_path / "w"), devices=jax.devices()[:1])
  with pytest.raises(UserError, match="expected DIR:WEIGHT"):
    loop.run(small_config("", **TINY_MODEL, **{"data.mixture": f"{dataset_dir}:zero"}), str(tmp_path / "w2"),
             devices=jax.devices()[:1])
