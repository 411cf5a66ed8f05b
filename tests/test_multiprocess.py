"""Two local processes (4 CPU devices each, gloo) reproduce one 8-device process."""

import os
import socket
import subprocess
import sys

import pytest

from conftest import REPO, small_config, train_losses
from trainer import loop

OVERRIDES = ["--config.train.steps=4", "--config.train.batch_size=8", "--config.train.seq_len=64",
             "--config.optimizer.warmup_steps=2", "--config.log.every_steps=1", "--config.log.tensorboard=False",
             "--config.eval.at_start=False", "--config.eval.final_split=", "--config.eval.num_samples=0",
             "--config.data.prepare_config=", "--config.mesh.data=2", "--config.mesh.fsdp=4",
             "--config.checkpoint.async_save=False"]


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_two_processes_match_one(dataset_dir, tmp_path):
  single = str(tmp_path / "single")
  cfg = small_config(dataset_dir, **{"train.steps": 4, "mesh.data": 2, "mesh.fsdp": 4})
  loop.run(cfg, single)

  multi = str(tmp_path / "multi")
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
  port = _free_port()
  procs = [subprocess.Popen(
      [sys.executable, os.path.join(REPO, "train.py"), "--config=" + os.path.join(REPO, "configs/quickstart.py"),
       f"--workdir={multi}", f"--config.data.dir={dataset_dir}", *OVERRIDES,
       f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2", f"--process_id={i}"],
      cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(2)]
  outputs = [p.communicate(timeout=300)[0] for p in procs]
  for p, out in zip(procs, outputs):
    assert p.returncode == 0, out[-3000:]
  assert "2 process(es), 8 devices" in outputs[0]
  a, b = train_losses(single), train_losses(multi)
  assert sorted(b) == [1, 2, 3, 4]
  for step in a:
    assert a[step] == pytest.approx(b[step], rel=1e-5), step
