"""Orbax checkpoints of the train state together with the grain iterator state.

Saves are asynchronous and atomic (Orbax writes to a temporary directory and
commits by rename), keep the newest `keep`, and restore onto whatever mesh
the abstract target's shardings describe.

A resume takes the newest checkpoint that restores: one that fails to read
(missing or truncated files) or holds NaN/Inf is moved to DIRECTORY.corrupt/
(never deleted; Orbax no longer lists it) once an older one has restored.
"""

import contextlib
import dataclasses
import gc
import os
import sys

import grain
import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp
from absl import logging
from jax.experimental import multihost_utils

from errors import UserError
from typed_config import Section


@dataclasses.dataclass(frozen=True)
class CheckpointConfig(Section):
  """`config.checkpoint`: when train state and data iterator are saved together."""
  PATH = "config.checkpoint"
  every_steps: int = 500
  keep: int = 3                   # the newest checkpoints kept
  async_save: bool = True         # write in the background while training goes on
  # Also keep the state with the best config.eval.best_metric in WORKDIR/best
  # (scripts/export_hf.py --best exports it).
  keep_best: bool = False

  def check(self) -> None:
    self.require(self.every_steps > 0, "every_steps", "a positive number of steps")
    self.require(self.keep > 0, "keep", "at least 1 checkpoint")


def all_finite(tree) -> jax.Array:
  """A scalar bool: every floating-point value in `tree` is finite."""
  leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.inexact)]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def _flat_shapes(tree) -> dict[str, tuple]:
  def name(k):
    for attr in ("key", "name", "idx"):
      if hasattr(k, attr):
        return str(getattr(k, attr))
    return str(k)
  flat, _ = jax.tree_util.tree_flatten_with_path(tree)
  return {"/".join(name(k) for k in path): tuple(leaf.shape) for path, leaf in flat
          if hasattr(leaf, "shape")}


def _one_line(error: Exception, limit: int = 300) -> str:
  """The root cause of `error` (Orbax wraps the informative TensorStore error), on one line."""
  while (error.__cause__ or error.__context__) is not None:
    error = error.__cause__ or error.__context__
  text = " ".join(str(error).split()) or "no message"
  text = text if len(text) <= limit else text[:limit] + "..."
  return f"{type(error).__name__}: {text}"


def _abandoned_read(unraisable) -> bool:
  code = getattr(unraisable.object, "cr_code", None)
  return ((code is not None and "orbax" in code.co_filename)
          or _closed_loop_echo(unraisable.exc_type, unraisable.exc_value))


@contextlib.contextmanager
def _quiet_abandoned_reads():
  """Drops the echoes of a failed restore.

  When one array fails to read, Orbax abandons the others; their coroutines
  raise again when garbage-collected, and Python would print each as a long
  "Exception ignored" traceback. The failure itself is reported in one line.
  """
  previous = sys.unraisablehook
  sys.unraisablehook = lambda u: None if _abandoned_read(u) else previous(u)
  try:
    yield
  finally:
    gc.collect()
    sys.unraisablehook = previous


def _closed_loop_echo(exc_type, exc_value) -> bool:
  return exc_type is RuntimeError and "Event loop is closed" in str(exc_value)


_ECHOES_DROPPED = False


def _drop_abandoned_read_echoes() -> None:
  """After a failed restore, drops its echoes for the rest of the process.

  The reads Orbax abandons can outlive the restore and fail again in its
  threads as late as interpreter exit, after `_quiet_abandoned_reads` has
  ended: as unraisable coroutines, or as "Event loop is closed" tracebacks
  that TensorStore's callbacks print through sys.excepthook. The failure
  was already reported in one line.
  """
  global _ECHOES_DROPPED
  if _ECHOES_DROPPED:
    return
  _ECHOES_DROPPED = True
  unraisable, excepthook = sys.unraisablehook, sys.excepthook
  sys.unraisablehook = lambda u: None if _abandoned_read(u) else unraisable(u)
  sys.excepthook = lambda t, v, tb: None if _closed_loop_echo(t, v) else excepthook(t, v, tb)


def _free_path(path: str) -> str:
  """`path`, or `path.1`, `path.2`, ...: the first that does not exist yet."""
  candidate, n = path, 0
  while os.path.exists(candidate):
    n += 1
    candidate = f"{path}.{n}"
  return candidate


class Checkpointer:

  def __init__(self, directory: str, keep: int, async_save: bool = True):
    self.directory = directory
    self._manager = ocp.CheckpointManager(
        directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=async_save,
                                             create=True),
        item_handlers={"state": ocp.StandardCheckpointHandler(),
                       "data": grain.checkpoint.CheckpointHandler()})

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def save(self, step: int, state, data_iterator=None) -> None:
    """The state, and the data iterator's position when given (needed to resume training)."""
    items = {"state": ocp.args.StandardSave(state)}
    if data_iterator is not None:
      items["data"] = grain.checkpoint.CheckpointSave(data_iterator)
    self._manager.save(step, args=ocp.args.Composite(**items), force=True)

  def check_compatible(self, step: int, abstract_state) -> None:
    """Clear error if the checkpoint was written by a model of another shape."""
    saved = _flat_shapes(self._manager.item_metadata(step)["state"].tree)
    wanted = _flat_shapes(abstract_state)
    where = f"{self.directory}/{step}"
    for path, shape in wanted.items():
      if path not in saved:
        raise UserError(f"checkpoint {where} has no array {path!r}: it was saved by a different model "
                        f"(e.g. another architecture or scan_layers setting); use a new --workdir")
      if saved[path] != shape:
        raise UserError(f"checkpoint {where} holds {path!r} with shape {saved[path]}, but the configured "
                        f"model needs {shape}; it was saved by a different model shape -- use a new "
                        f"--workdir or restore the original config.model")

  def restore(self, step: int, abstract_state_with_shardings, data_iterator):
    self.check_compatible(step, abstract_state_with_shardings)
    restored = self._manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state_with_shardings),
        data=grain.checkpoint.CheckpointRestore(data_iterator)))
    return restored["state"]

  def restore_newest(self, abstract_state_with_shardings, data_iterator, report=logging.warning):
    """(step, state) of the newest checkpoint that restores, falling back past corrupt ones; None if none.

    Each unreadable or non-finite checkpoint is reported in one line through
    `report` and moved aside once an older one restored. When none restores,
    nothing is moved (the cause may be the environment, not the files) and
    the UserError lists why. A checkpoint of another model shape is the
    config's problem, not corruption: its UserError is raised at once.
    """
    failed = []  # (step, why), newest first
    for step in sorted(self.all_steps(), reverse=True):
      try:
        with _quiet_abandoned_reads():
          state = self.restore(step, abstract_state_with_shardings, data_iterator)
        finite = bool(jax.jit(all_finite)(state))
      except UserError:
        raise
      except Exception as e:  # noqa: BLE001 -- any failure to read the files counts as corruption
        failed.append((step, _one_line(e)))
        _drop_abandoned_read_echoes()
        continue
      if not finite:
        failed.append((step, "it holds NaN or Inf values"))
        continue
      for bad, why in failed:
        moved = self._move_aside(bad)
        report(f"checkpoint {self.directory}/{bad} does not restore ({why}); moved it to {moved} and "
               f"resumed from step {step}")
      return step, state
    if failed:
      listed = "; ".join(f"step {step}: {why}" for step, why in failed)
      raise UserError(f"no checkpoint in {self.directory} restores ({listed}); move them aside or use a "
                      f"new --workdir")
    return None

  def _move_aside(self, step: int) -> str:
    """Moves DIRECTORY/STEP to DIRECTORY.corrupt/STEP (process 0) and forgets it; returns where."""
    source = os.path.join(self.directory, str(step))
    target = _free_path(os.path.join(self.directory + ".corrupt", str(step)))
    if jax.process_index() == 0:
      os.makedirs(os.path.dirname(target), exist_ok=True)
      os.rename(source, target)
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices(f"checkpoint {step} moved aside")
    self._manager.reload()
    return target

  def restore_params(self, step: int, abstract_params_with_shardings):
    """The parameters alone (the state's `params`), each read straight onto its shards.

    Orbax reads just these arrays (a partial restore): no optimizer state, no
    data iterator, and no copy on one device first, so a model restores onto
    whatever mesh its caller evaluates, exports or decodes on. No fallback: the
    caller asked for this step. One that fails to read is a one-line UserError
    naming it and the older steps there are.
    """
    target = {"params": abstract_params_with_shardings}
    # A second manager over the same directory: partial restores need the PyTree handler's arguments.
    reader = ocp.CheckpointManager(self.directory, item_handlers={"state": ocp.PyTreeCheckpointHandler()})
    failure = None
    try:
      with _quiet_abandoned_reads():  # handled inside, so the abandoned reads are collected under it
        try:
          self.check_compatible(step, target)
          restored = reader.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
              item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target),
              partial_restore=True)))
        except UserError:
          raise
        except Exception as e:  # noqa: BLE001 -- any failure to read the files: name the checkpoint
          failure = _one_line(e)
    finally:
      reader.close()
    if failure is not None:
      _drop_abandoned_read_echoes()
      older = sorted((s for s in self.all_steps() if s < step), reverse=True)
      hint = (f"; older checkpoints: steps {older} (export_hf.py --step=N takes one; train.py on this workdir "
              f"moves the corrupt one aside and resumes from the newest that restores)" if older else "")
      raise UserError(f"checkpoint {self.directory}/{step} does not restore ({failure}){hint}")
    return restored["state"]["params"]

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.close()
