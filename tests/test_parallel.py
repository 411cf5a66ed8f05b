"""One device vs data/FSDP/tensor meshes, exact resume, and resharding a checkpoint."""

import jax
import pytest

from conftest import small_config, train_losses
from trainer import loop

MESHES = {
    "data8": dict(data=8, fsdp=1, tensor=1),
    "fsdp8": dict(data=1, fsdp=8, tensor=1),
    "d2f2t2": dict(data=2, fsdp=2, tensor=2),
}


def _mesh(c, sizes):
  for k, v in sizes.items():
    c.mesh[k] = v
  return c


@pytest.fixture(scope="module")
def single_device_losses(dataset_dir, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("single"))
  loop.run(_mesh(small_config(dataset_dir), dict(data=1, fsdp=1, tensor=1)), workdir,
           devices=jax.devices()[:1])
  return train_losses(workdir)


@pytest.mark.parametrize("mesh", list(MESHES))
def test_meshes_match_single_device(mesh, dataset_dir, single_device_losses, tmp_path):
  loop.run(_mesh(small_config(dataset_dir), MESHES[mesh]), str(tmp_path))
  losses = train_losses(str(tmp_path))
  assert sorted(losses) == [1, 2, 3, 4, 5]
  for step, loss in single_device_losses.items():
    assert loss == pytest.approx(losses[step], rel=1e-4), (mesh, step)
  assert losses[5] < losses[1]  # it is actually training


def test_resume_reproduces_straight_run(dataset_dir, tmp_path):
  """20 steps straight == 10 steps, stop (checkpoint + data iterator), resume to 20."""
  cfg = _mesh(small_config(dataset_dir, **{"train.steps": 20}), MESHES["d2f2t2"])
  straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")
  loop.run(cfg, straight)
  summary = loop.run(cfg, resumed, stop_after_step=10)
  assert summary == {"step": 10, "interrupted": True}
  assert sorted(train_losses(resumed)) == list(range(1, 11))
  loop.run(cfg, resumed)
  a, b = train_losses(straight), train_losses(resumed)
  assert sorted(b) == list(range(1, 21))
  for step in range(1, 21):
    assert a[step] == pytest.approx(b[step], rel=1e-6, abs=1e-6), step


def test_checkpoint_restores_onto_another_mesh(dataset_dir, tmp_path):
  """Saved under fsdp=8, restored under data=2 x tensor=4, continues like the straight run."""
  straight, moved = str(tmp_path / "straight"), str(tmp_path / "moved")
  fsdp = _mesh(small_config(dataset_dir, **{"train.steps": 6}), MESHES["fsdp8"])
  loop.run(fsdp, straight)
  loop.run(fsdp, moved, stop_after_step=3)
  loop.run(_mesh(small_config(dataset_dir, **{"train.steps": 6}), dict(data=2, fsdp=1, tensor=4)), moved)
  a, b = train_losses(straight), train_losses(moved)
  assert sorted(b) == list(range(1, 7))
  for step in range(1, 7):
    assert a[step] == pytest.approx(b[step], rel=1e-4), step
