"""Training on a weighted mixture of two prepared datasets."""

import os

import jax
import pytest

from conftest import read_metrics, small_config, stdlib_data_config, train_losses
from data import corpus, prepare
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


def test_mixture_token_shares_and_exact_resume(dataset_dir, second_dataset, tmp_path):
  mixture = f"{dataset_dir}:0.7,{second_dataset}:0.3"
  cfg = small_config("", **TINY_MODEL, **{"data.mixture": mixture, "train.steps": 200, "log.every_steps": 1})
  one = jax.devices()[:1]
  straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")
  # One straight run serves both checks: the token shares and the reference for the resumed run.
  loop.run(cfg, straight, devices=one)
  rows = read_metrics(straight)
  steps = sorted(rows)
  assert steps == list(range(1, 201))
  # Each log line holds the shares of the step before it; all intervals are equal in size.
  share_a = sum(rows[s]["share_stdlib80"] for s in steps) / len(steps)
  share_b = sum(rows[s]["share_other"] for s in steps) / len(steps)
  print(f"token shares over 200 steps: {share_a:.4f} / {share_b:.4f}")
  assert abs(share_a - 0.7) < 0.02 and abs(share_b - 0.3) < 0.02, (share_a, share_b)

  loop.run(cfg, resumed, devices=one, stop_after_step=100)
  loop.run(cfg, resumed, devices=one)
  a, b = train_losses(straight), train_losses(resumed)
  assert sorted(b) == list(range(1, 201))
  for step in range(1, 201):
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
