"""The best checkpoint and its record (trainer/best.py) across a restart.

A run stopped and resumed must end with the same best step, value, count of
evaluations since the best, and best parameters as the same run made in one
go: the record before the restart is kept while it is still the best, and
replaced only by a better evaluation.
"""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import read_metrics, small_config
from parallel.checkpoint import Checkpointer
from trainer import export, loop
from trainer.best import BestTracker

_TINY = {"model.vocab_size": 512, "model.d_model": 32, "model.num_layers": 1, "model.num_heads": 2,
         "model.num_kv_heads": 1, "model.head_dim": 16, "model.mlp_dim": 64}


def _state(step: int) -> dict:
  return {"params": {"w": jnp.full((4, 8), float(step), jnp.float32)}, "step": jnp.int32(step)}


def _best_checkpoint(workdir: str) -> tuple[list[int], dict]:
  """(the steps in WORKDIR/best, the newest one's parameters read back)."""
  ckpt = Checkpointer(os.path.abspath(os.path.join(workdir, "best")), keep=1, async_save=False)
  try:
    steps = ckpt.all_steps()
    target = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=a.sharding),
                          _state(0)["params"])
    params = ckpt.restore_params(steps[-1], target)
  finally:
    ckpt.close()
  return steps, jax.tree.map(np.asarray, params)


# (mode, values of evaluations 1..6): the restart comes after evaluation 3.
_SERIES = {
    # best at 2 before the restart; 3.5 and 3.0 (a tie) after it do not replace it; 2.0 at step 6 does.
    "min": [5.0, 3.0, 4.0, 3.5, 3.0, 2.0],
    # best at 1, never beaten after the restart (a tie at step 5).
    "max": [9.0, 1.0, 8.0, 2.0, 9.0, 3.0],
}
_WANT = {"min": (6, 2.0, 0), "max": (1, 9.0, 5)}  # (best step, value, evaluations since it)


@pytest.mark.parametrize("mode", ["min", "max"])
def test_tracker_resumed_in_a_new_process_equals_one_straight_run(mode, tmp_path):
  values = _SERIES[mode]
  straight, split = str(tmp_path / "straight"), str(tmp_path / "split")
  tracker = BestTracker(straight, keep_best=True, patience=0, mode=mode)
  for step, v in enumerate(values, 1):
    assert not tracker.update(step, {"val/loss": v}, _state(step))
  tracker.close()

  first = BestTracker(split, keep_best=True, patience=0, mode=mode)
  for step, v in enumerate(values[:3], 1):
    first.update(step, {"val/loss": v}, _state(step))
  before = first.record.copy()
  first.close()
  second = BestTracker(split, keep_best=True, patience=0, mode=mode)  # the restart: a fresh tracker
  assert second.record == before  # best.json read back
  for step, v in enumerate(values[3:], 4):
    second.update(step, {"val/loss": v}, _state(step))
  second.close()

  for workdir in (straight, split):
    with open(os.path.join(workdir, "best.json")) as f:
      record = json.load(f)
    assert (record["step"], record["value"], record["evals_since_best"]) == _WANT[mode], (workdir, record)
    steps, params = _best_checkpoint(workdir)
    assert steps == [_WANT[mode][0]], (workdir, steps)  # keep=1: only the best
    np.testing.assert_array_equal(params["w"], np.asarray(_state(_WANT[mode][0])["params"]["w"]))


def test_patience_counts_across_the_restart(tmp_path):
  """Patience 3: two evaluations without improvement before the restart and one after stop the run."""
  workdir = str(tmp_path / "run")
  os.makedirs(workdir)  # the loop makes it before the tracker
  first = BestTracker(workdir, keep_best=False, patience=3)
  assert [first.update(s, {"val/loss": v}, None) for s, v in ((1, 2.0), (2, 2.5), (3, 2.2))] == [False] * 3
  first.close()
  second = BestTracker(workdir, keep_best=False, patience=3)
  assert second.update(4, {"val/loss": 2.0}, None)  # a tie is no improvement: the third in a row
  assert second.record["step"] == 1


def _run_config(dataset_dir: str):
  # At this learning rate the validation loss of the tiny model falls to a minimum and rises again
  # (6.18, 5.86, 5.62, 5.61, 5.64 when written): stops after steps 2 and 4 put a restart before
  # better evaluations, and one right at the best. The checks below hold for any curve.
  return small_config(dataset_dir, **_TINY, **{
      "train.steps": 5, "eval.every_steps": 1, "eval.steps": 1, "checkpoint.keep_best": True,
      "optimizer.learning_rate": 3e-2})


def _record(workdir: str) -> dict:
  with open(os.path.join(workdir, "best.json")) as f:
    return json.load(f)


def _check_record(record: dict, val: dict[int, float], upto: int) -> None:
  """The record is the best of evaluations 1..upto of `val` (step: loss), with the evaluations since."""
  best = min(range(1, upto + 1), key=lambda s: val[s])
  assert record["step"] == best and record["evals_since_best"] == upto - best, (record, val)
  np.testing.assert_allclose(record["value"], val[best], rtol=1e-6)


def test_loop_stopped_and_resumed_keeps_the_best_of_a_straight_run(dataset_dir, tmp_path):
  devices = jax.devices()[:1]  # one device: the fastest compiles
  straight, split = str(tmp_path / "straight"), str(tmp_path / "split")
  loop.run(_run_config(dataset_dir), straight, devices=devices)
  val = {s: r["loss"] for s, r in read_metrics(straight, "val").items()}
  assert sorted(val) == [1, 2, 3, 4, 5]
  print(f"validation losses: {val}")
  for stop in (2, 4):
    summary = loop.run(_run_config(dataset_dir), split, devices=devices, stop_after_step=stop)
    assert summary["interrupted"] and summary["step"] == stop
    _check_record(_record(split), val, stop)
    assert sorted(os.listdir(os.path.join(split, "best"))) == [str(_record(split)["step"])]
  summary = loop.run(_run_config(dataset_dir), split, devices=devices)
  assert not summary["interrupted"] and summary["step"] == 5

  val_split = {s: r["loss"] for s, r in read_metrics(split, "val").items()}
  np.testing.assert_allclose([val_split[s] for s in range(1, 6)], [val[s] for s in range(1, 6)], rtol=1e-6)
  for workdir in (straight, split):
    _check_record(_record(workdir), val, 5)
  assert _record(split) == {**_record(straight), "value": _record(split)["value"]}
  # The best checkpoints: one each, of the best step, with the same parameters.
  best = _record(straight)["step"]
  a, b = export.restore(straight, best=True), export.restore(split, best=True)
  assert a.step == b.step == best
  jax.tree.map(lambda x, y: np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-6, atol=1e-7),
               a.params, b.params)
  assert sorted(os.listdir(os.path.join(split, "best"))) == [str(best)]
