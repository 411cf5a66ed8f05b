"""Orbax checkpoints of the train state together with the grain iterator state.

Saves are asynchronous and atomic (Orbax writes to a temporary directory and
commits by rename), keep the newest `keep`, and restore onto whatever mesh
the abstract target's shardings describe.
"""

import grain
import jax
import orbax.checkpoint as ocp

from errors import UserError


def _flat_shapes(tree) -> dict[str, tuple]:
  def name(k):
    for attr in ("key", "name", "idx"):
      if hasattr(k, attr):
        return str(getattr(k, attr))
    return str(k)
  flat, _ = jax.tree_util.tree_flatten_with_path(tree)
  return {"/".join(name(k) for k in path): tuple(leaf.shape) for path, leaf in flat
          if hasattr(leaf, "shape")}


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

  def restore_state(self, step: int, abstract_state_with_shardings):
    """The train state alone (no data iterator), e.g. for export or evaluation."""
    self.check_compatible(step, abstract_state_with_shardings)
    restored = self._manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state_with_shardings)))
    return restored["state"]

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.close()
