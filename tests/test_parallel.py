"""One device vs a data x FSDP x tensor mesh, exact resume, and resharding a checkpoint.

The runs are shared between tests (module fixtures): one single-device run, one
straight run on data=2 x fsdp=2 x tensor=2 (every kind of parallelism at once),
and one run stopped halfway on that mesh whose checkpoint each resume test
continues in its own copy.
"""

import shutil

import jax
import pytest

from conftest import small_config, train_losses
from trainer import loop

MESH = dict(data=2, fsdp=2, tensor=2)  # batch over data and fsdp, weights over fsdp and tensor
STEPS, STOP = 6, 3  # warmup is 2 steps: the stop falls inside the cosine decay


def _cfg(dataset_dir, sizes):
  c = small_config(dataset_dir, **{"train.steps": STEPS})
  for k, v in sizes.items():
    c.mesh[k] = v
  return c


@pytest.fixture(scope="module")
def single_device_losses(dataset_dir, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("single"))
  loop.run(_cfg(dataset_dir, dict(data=1, fsdp=1, tensor=1)), workdir, devices=jax.devices()[:1])
  return train_losses(workdir)


@pytest.fixture(scope="module")
def straight_losses(dataset_dir, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("straight"))
  loop.run(_cfg(dataset_dir, MESH), workdir)
  return train_losses(workdir)


@pytest.fixture(scope="module")
def stopped_run(dataset_dir, tmp_path_factory):
  """A d2f2t2 run stopped after STOP steps (checkpoint + data iterator), as a SIGTERM would."""
  workdir = str(tmp_path_factory.mktemp("stopped") / "run")
  summary = loop.run(_cfg(dataset_dir, MESH), workdir, stop_after_step=STOP)
  return workdir, summary


def test_mesh_matches_single_device(single_device_losses, straight_losses):
  losses = straight_losses
  assert sorted(losses) == list(range(1, STEPS + 1))
  assert sorted(single_device_losses) == list(range(1, STEPS + 1))
  for step, loss in single_device_losses.items():
    assert loss == pytest.approx(losses[step], rel=1e-4), step
  assert losses[STEPS] < losses[1]  # it is actually training


def test_resume_reproduces_straight_run(dataset_dir, straight_losses, stopped_run, tmp_path):
  """6 steps straight == 3 steps, stop (checkpoint + data iterator), resume to 6."""
  stopped, summary = stopped_run
  assert (summary["step"], summary["interrupted"]) == (STOP, True), summary
  assert sorted(train_losses(stopped)) == list(range(1, STOP + 1))
  resumed = str(tmp_path / "resumed")
  shutil.copytree(stopped, resumed)
  loop.run(_cfg(dataset_dir, MESH), resumed)
  a, b = straight_losses, train_losses(resumed)
  assert sorted(b) == list(range(1, STEPS + 1))
  for step in range(1, STEPS + 1):
    assert a[step] == pytest.approx(b[step], rel=1e-6, abs=1e-6), step


def test_checkpoint_restores_onto_another_mesh(dataset_dir, straight_losses, stopped_run, tmp_path):
  """Saved under data=2 x fsdp=2 x tensor=2, restored under data=2 x tensor=4 (both parameter-sharding
  axes change), continues like the straight run."""
  moved = str(tmp_path / "moved")
  shutil.copytree(stopped_run[0], moved)
  loop.run(_cfg(dataset_dir, dict(data=2, fsdp=1, tensor=4)), moved)
  a, b = straight_losses, train_losses(moved)
  assert sorted(b) == list(range(1, STEPS + 1))
  for step in range(1, STEPS + 1):
    assert a[step] == pytest.approx(b[step], rel=1e-4), step
