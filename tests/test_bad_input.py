"""Bad input gets one clear message naming what is wrong, never a deep traceback."""

import os
import signal
import subprocess
import sys
import time

import jax
import pytest

from conftest import REPO, read_metrics, small_config
from errors import UserError
from trainer import loop


def _train_cli(*args, timeout=120, env=None):
  return subprocess.run([sys.executable, os.path.join(REPO, "train.py"), *args], cwd=REPO, capture_output=True,
                        text=True, timeout=timeout, env=env)


def test_unknown_config_key_lists_valid_keys(tmp_path):
  out = _train_cli("--config=configs/quickstart.py", f"--workdir={tmp_path}", "--config.train.stepz=5")
  assert out.returncode != 0
  assert "stepz" in out.stderr and "steps" in out.stderr and "batch_size" in out.stderr
  assert "Traceback" not in out.stderr


@pytest.mark.parametrize("script,args,message", [
    ("train.py", ["--config=configs/quickstart.py", "--workdir=WORKDIR", "--config.train.steps=abc"],
     "error: --config.train.steps=abc: expected an integer (the default is 400)"),
    ("scripts/prepare_data.py", ["--output=WORKDIR", "--config.near_dedup.threshold=high"],  # the default --config
     "error: --config.near_dedup.threshold=high: expected a number (the default is 0.7)"),
])
def test_override_of_the_wrong_type_names_key_and_type(tmp_path, script, args, message):
  args = [a.replace("WORKDIR", str(tmp_path / "out")) for a in args]
  out = subprocess.run([sys.executable, os.path.join(REPO, script), *args], cwd=REPO, capture_output=True,
                       text=True, timeout=120)
  assert out.returncode == 1
  assert out.stderr.strip().splitlines() == [message]
  assert not os.path.exists(tmp_path / "out")


def test_explain_bad_value_per_type():
  from ml_collections import ConfigDict
  from configs import overrides
  config = ConfigDict(dict(train=dict(steps=5, fast=True, lr=0.1, shape=(1, 2), name="x")))
  explain = lambda arg: overrides.explain_bad_value(config, ["--other=1", arg])  # noqa: E731
  assert explain("--config.train.fast=maybe") == ("--config.train.fast=maybe: expected true or false "
                                                 "(the default is True)")
  assert explain("--config.train.lr=fast") == "--config.train.lr=fast: expected a number (the default is 0.1)"
  assert explain("--config.train.shape=(1,").startswith("--config.train.shape=(1,: expected a tuple")
  assert explain("--config.train=5") == ("--config.train=5: config.train is a group of settings, not a value; "
                                         "set one of its fields: fast, lr, name, shape, steps")
  for fine in ("--config.train.steps=7", "--config.train.fast=false", "--config.train.lr=1e-3",
               "--config.train.shape=(3, 4)", "--config.train.name=abc", "--config.train.stepz=abc"):
    assert explain(fine) is None, fine


def test_cli_reports_user_error_without_traceback(dataset_dir, tmp_path):
  out = _train_cli("--config=configs/quickstart.py", f"--workdir={tmp_path}", f"--config.data.dir={dataset_dir}",
                   "--config.data.prepare_config=", "--config.mesh.data=3", "--config.mesh.fsdp=1")
  assert out.returncode == 1
  assert out.stderr.strip().splitlines()[-1].startswith("error: mesh (mesh.data=3")
  assert "Traceback" not in out.stderr


@pytest.mark.parametrize("overrides,message", [
    ({"mesh.data": 3, "mesh.fsdp": 1}, r"mesh \(mesh.data=3.*but 1 are available"),
    ({"mesh.data": 1, "mesh.fsdp": -1, "mesh.tensor": 3}, "does not divide"),
    ({"train.batch_size": 12}, r"batch_size=12 .* not divisible by the data-parallel size mesh.data\*mesh.fsdp=8"),
    ({"model.vocab_size": 256}, "tokenizer .* 512 tokens but config.model.vocab_size=256"),
    ({"model.norm": "batchnorm"}, "config.model.norm='batchnorm'"),
])
def test_config_errors(dataset_dir, tmp_path, overrides, message):
  devices = jax.devices()[:1] if "mesh.data" in overrides and overrides["mesh.data"] == 3 else None
  with pytest.raises(UserError, match=message):
    loop.run(small_config(dataset_dir, **overrides), str(tmp_path), devices=devices)


def test_missing_and_empty_data_dir(tmp_path):
  with pytest.raises(UserError, match="does not exist"):
    loop.run(small_config(str(tmp_path / "nope")), str(tmp_path / "w1"), devices=jax.devices()[:1])
  (tmp_path / "empty").mkdir()
  with pytest.raises(UserError, match="no metadata.json; it is empty"):
    loop.run(small_config(str(tmp_path / "empty")), str(tmp_path / "w2"), devices=jax.devices()[:1])


def test_checkpoint_from_another_model_shape(dataset_dir, tmp_path):
  one = jax.devices()[:1]
  mesh = {"mesh.data": 1, "mesh.fsdp": 1}
  loop.run(small_config(dataset_dir, **{"train.steps": 1, **mesh}), str(tmp_path), devices=one)
  with pytest.raises(UserError, match=r"mlp/down. with shape \(4, 768, 256\), but the configured model needs \(4, 512, 256\)"):
    loop.run(small_config(dataset_dir, **{"train.steps": 2, "model.mlp_dim": 512, **mesh}), str(tmp_path),
             devices=one)


def test_sigterm_saves_a_checkpoint(dataset_dir, tmp_path):
  args = ["--config=configs/quickstart.py", f"--workdir={tmp_path}", f"--config.data.dir={dataset_dir}",
          "--config.data.prepare_config=", "--config.train.steps=100000", "--config.train.seq_len=64",
          "--config.log.every_steps=1", "--config.eval.at_start=False", "--config.checkpoint.every_steps=100000",
          "--config.mesh.fsdp=1"]
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1")
  proc = subprocess.Popen([sys.executable, os.path.join(REPO, "train.py"), *args], cwd=REPO, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  metrics = tmp_path / "metrics.jsonl"
  deadline = time.time() + 120
  while not (metrics.exists() and metrics.read_text().count('"train"') >= 2) and time.time() < deadline:
    time.sleep(0.2)
  proc.send_signal(signal.SIGTERM)
  out = proc.communicate(timeout=120)[0]
  assert proc.returncode == 130, out[-2000:]
  saved = max(read_metrics(str(tmp_path)))
  assert f"checkpoint saved in {tmp_path}/checkpoints/{saved}" in out
  assert sorted(int(s) for s in os.listdir(tmp_path / "checkpoints") if s.isdigit()) == [saved]
