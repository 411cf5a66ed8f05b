"""Robust training: non-finite steps stop the run or are skipped, and are never saved; a corrupt
newest checkpoint is reported, moved aside and replaced by the one before it."""

import glob
import math
import os
import re
import shutil

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from conftest import read_metrics, small_config, train_losses
from errors import UserError
from trainer import export, loop

TINY = {"model.d_model": 64, "model.num_layers": 1, "model.num_heads": 2, "model.num_kv_heads": 1,
        "model.head_dim": 32, "model.mlp_dim": 128, "model.vocab_size": 512,
        "mesh.data": 1, "mesh.fsdp": 1, "train.seq_len": 32}
BLOWUP = {"optimizer.learning_rate": 1e6}  # Adam at this rate drives the gradients to NaN within steps


def _run(cfg, workdir):
  return loop.run(cfg, str(workdir), devices=jax.devices()[:1])


def _saved_states(workdir) -> dict[int, dict]:
  """Every checkpoint in WORKDIR/checkpoints, read back by Orbax alone."""
  root = os.path.join(workdir, "checkpoints")
  return {int(s): ocp.StandardCheckpointer().restore(os.path.join(root, s, "state"))
          for s in os.listdir(root) if s.isdigit()}


def _all_finite(tree) -> bool:
  return all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(tree))


def _is_finite_row(row) -> bool:
  return math.isfinite(row["loss"]) and math.isfinite(row["grad_norm"])


def test_nonfinite_run_stops_naming_the_step_and_saves_only_finite_states(dataset_dir, tmp_path):
  cfg = small_config(dataset_dir, **TINY, **BLOWUP, **{"train.steps": 8, "checkpoint.every_steps": 2})
  with pytest.raises(UserError, match=r"went non-finite at step \d+ .*without saving") as e:
    _run(cfg, tmp_path)
  message = str(e.value)
  print(message)
  assert "\n" not in message and "config.train.on_nonfinite=skip" in message
  bad = int(re.search(r"at step (\d+)", message).group(1))
  rows = read_metrics(str(tmp_path))  # logged every step: the steps before the bad one, all finite
  assert sorted(rows) == list(range(1, bad)) and all(_is_finite_row(r) for r in rows.values())
  saved = _saved_states(str(tmp_path))
  assert saved and all(step < bad for step in saved), (sorted(saved), bad)
  assert all(_all_finite(state) for state in saved.values())
  assert f"last finite checkpoint: step {max(saved)} " in message


def test_skip_mode_skips_nonfinite_updates_counts_them_and_stops_past_the_limit(dataset_dir, tmp_path):
  cfg = small_config(dataset_dir, **TINY, **BLOWUP, **{
      "train.steps": 10, "train.on_nonfinite": "skip", "train.max_skipped_steps": 3,
      "checkpoint.every_steps": 2})
  with pytest.raises(UserError, match=r"4 non-finite steps were skipped, more than "
                                      r"config.train.max_skipped_steps=3") as e:
    _run(cfg, tmp_path)
  print(e.value)
  rows = read_metrics(str(tmp_path))
  steps = sorted(rows)
  nonfinite = [s for s in steps if not _is_finite_row(rows[s])]
  assert len(nonfinite) == 3, nonfinite  # the run went on past non-finite steps, up to the limit
  assert [rows[s]["skipped_steps"] for s in steps] == [sum(n <= s for n in nonfinite) for s in steps]
  assert [rows[s]["nonfinite"] for s in steps] == [float(s in nonfinite) for s in steps]
  saved = _saved_states(str(tmp_path))
  assert all(_all_finite(state) for state in saved.values())
  # A skipped step leaves the weights and optimizer state as they were; only the step counts on.
  a, b = nonfinite[0] - 1, nonfinite[1]
  assert a in saved and b in saved and nonfinite[:2] == [a + 1, a + 2], (sorted(saved), nonfinite)
  assert int(saved[b]["step"]) == b
  for x, y in zip(jax.tree.leaves(saved[a]["params"]) + jax.tree.leaves(saved[a]["opt_state"]),
                  jax.tree.leaves(saved[b]["params"]) + jax.tree.leaves(saved[b]["opt_state"])):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def _truncate_arrays(step_dir: str) -> dict[str, int]:
  """Cuts every array data file of a checkpoint in half; returns the new sizes."""
  sizes = {}
  for path in glob.glob(os.path.join(step_dir, "state", "ocdbt.process_*", "d", "*")):
    with open(path, "r+b") as f:
      f.truncate(os.path.getsize(path) // 2)
    sizes[os.path.relpath(path, step_dir)] = os.path.getsize(path)
  assert sizes
  return sizes


def test_corrupt_newest_checkpoint_is_moved_aside_and_the_previous_one_resumes(dataset_dir, tmp_path, capsys):
  workdir = tmp_path / "run"
  ckpts, aside = workdir / "checkpoints", workdir / "checkpoints.corrupt"
  cfg = small_config(dataset_dir, **TINY, **{"train.steps": 4, "checkpoint.every_steps": 2})
  _run(cfg, workdir)
  straight = train_losses(str(workdir))
  truncated = _truncate_arrays(str(ckpts / "4"))

  # Another model shape is the config's error, not corruption: nothing falls back or moves.
  with pytest.raises(UserError, match="different model shape"):
    _run(small_config(dataset_dir, **{**TINY, "model.mlp_dim": 256}), workdir)
  assert sorted(os.listdir(ckpts)) == ["2", "4"] and not aside.exists()

  # Export, evaluation and generation read the step asked for, with no fallback: one line naming it.
  with pytest.raises(UserError, match=rf"^checkpoint {ckpts}/4 does not restore \(.*Requested byte range.*\); "
                                      r"older checkpoints: steps \[2\]") as e:
    export.restore(str(workdir))
  assert "\n" not in str(e.value) and not aside.exists()

  capsys.readouterr()
  _run(small_config(dataset_dir, **TINY, **{"train.steps": 6, "checkpoint.every_steps": 2}), workdir)
  out = capsys.readouterr().out
  print(out)
  report = [line for line in out.splitlines() if "does not restore" in line]
  assert len(report) == 1 and f"{ckpts}/4 does not restore (" in report[0], out
  assert "Requested byte range" in report[0] and f"moved it to {aside}/4" in report[0]
  assert f"resuming from {ckpts}/2" in out
  resumed = train_losses(str(workdir))
  for step in (3, 4):  # steps 3 and 4 retrained from checkpoint 2 exactly as the first run trained them
    assert resumed[step] == pytest.approx(straight[step], rel=1e-6, abs=1e-6), step
  assert max(resumed) == 6
  assert {p: os.path.getsize(aside / "4" / p) for p in truncated} == truncated  # kept, not deleted
  assert sorted(os.listdir(ckpts)) == ["2", "4", "6"]

  # A checkpoint holding NaN (as runs before the non-finite guard saved them) does not restore either;
  # when no checkpoint restores, one clear error lists them all and nothing is moved.
  shutil.copytree(ckpts / "6", ckpts / "8")
  poisoned = ocp.StandardCheckpointer().restore(str(ckpts / "6" / "state"))
  poisoned["params"] = jax.tree.map(lambda x: x * np.nan, poisoned["params"])
  shutil.rmtree(ckpts / "8" / "state")
  with ocp.StandardCheckpointer() as writer:
    writer.save(str(ckpts / "8" / "state"), poisoned)
  for step in ("2", "4", "6"):
    _truncate_arrays(str(ckpts / step))
  with pytest.raises(UserError, match=r"no checkpoint in .* restores \(step 8: it holds NaN or Inf values; "
                                      r"step 6: .*; step 4: .*; step 2: ") as e:
    _run(small_config(dataset_dir, **TINY, **{"train.steps": 8, "checkpoint.every_steps": 2}), workdir)
  assert "\n" not in str(e.value)
  assert sorted(os.listdir(ckpts)) == ["2", "4", "6", "8"] and os.listdir(aside) == ["4"]
