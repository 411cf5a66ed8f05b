"""T5 span-corruption training: one device vs data x FSDP x tensor, and exact resume.

A tiny T5 trains on one device and straight on data=2 x fsdp=2 x tensor=2,
saving a checkpoint (state and data iterator) halfway; a copy of the straight
run resumes from it. Losses agree across meshes within 1e-4 and the resumed run
repeats the straight one within 1e-6, the span-corruption draws included (the
pipeline makes them per row).
"""

import os
import shutil

import jax
import pytest

from configs import base
from conftest import apply_overrides, read_metrics, train_losses
from trainer import loop

MESH = dict(data=2, fsdp=2, tensor=2)
STEPS, STOP = 4, 2
TINY_T5 = {"model.family": "encoder_decoder", "model.vocab_size": 512, "model.d_model": 32, "model.num_layers": 2,
           "model.num_decoder_layers": 2, "model.num_heads": 4, "model.num_kv_heads": 4, "model.head_dim": 8,
           "model.mlp_dim": 48, "model.mlp": "gated_gelu", "model.position": "relative", "model.norm_eps": 1e-6,
           "model.relative_buckets": 8, "model.relative_max_distance": 16, "model.tie_embeddings": False,
           "model.scan_layers": True}


def t5_config(data_dir, sizes: dict, **overrides):
  c = base.base_config()
  apply_overrides(c, {**TINY_T5, "data.dir": data_dir, "data.add_bos": False, "train.objective": "span_corruption",
                      "train.steps": STEPS, "train.batch_size": 8, "train.seq_len": 32,
                      "optimizer.learning_rate": 3e-3, "optimizer.warmup_steps": 1, "log.every_steps": 1,
                      "log.tensorboard": False, "eval.at_start": False, "eval.every_steps": STEPS, "eval.steps": 2,
                      "eval.final_split": "", "checkpoint.every_steps": STOP, "checkpoint.async_save": False,
                      **{f"mesh.{k}": v for k, v in sizes.items()}, **overrides})
  return c


@pytest.fixture(scope="module")
def runs(t5_dataset_dir, tmp_path_factory):
  root = tmp_path_factory.mktemp("t5runs")
  out = {name: str(root / name) for name in ("single", "straight")}
  loop.run(t5_config(t5_dataset_dir, dict(data=1, fsdp=1, tensor=1)), out["single"], devices=jax.devices()[:1])
  loop.run(t5_config(t5_dataset_dir, MESH), out["straight"])
  return out


def test_mesh_matches_one_device_and_the_model_learns(runs):
  single, straight = train_losses(runs["single"]), train_losses(runs["straight"])
  assert sorted(single) == sorted(straight) == list(range(1, STEPS + 1))
  for step in single:
    assert straight[step] == pytest.approx(single[step], rel=1e-4), (step, single, straight)
  assert single[STEPS] < single[1]
  val, single_val = read_metrics(runs["straight"], "val")[STEPS], read_metrics(runs["single"], "val")[STEPS]
  assert {"loss", "accuracy", "perplexity", "tokens"} <= set(val) and val["tokens"] > 0
  for name in ("loss", "accuracy", "tokens"):
    assert val[name] == pytest.approx(single_val[name], rel=1e-4, abs=1e-6), name


def test_resume_repeats_the_straight_run(runs, t5_dataset_dir, tmp_path, capsys):
  resumed = str(tmp_path / "resumed")
  shutil.copytree(runs["straight"], resumed)
  checkpoints = os.path.join(resumed, "checkpoints")
  assert sorted(map(int, os.listdir(checkpoints))) == [STOP, STEPS]
  shutil.rmtree(os.path.join(checkpoints, str(STEPS)))  # as if the run had stopped at STOP
  capsys.readouterr()
  loop.run(t5_config(t5_dataset_dir, MESH), resumed)
  assert f"resuming from {checkpoints}/{STOP}" in capsys.readouterr().out
  straight, again = train_losses(runs["straight"]), train_losses(resumed)
  assert sorted(again) == list(range(1, STEPS + 1))
  for step in straight:
    assert again[step] == pytest.approx(straight[step], rel=1e-6, abs=1e-6), step
