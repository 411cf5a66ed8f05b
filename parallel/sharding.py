"""Logical axes -> NamedShardings, sharded init, and global batch assembly."""

import contextlib

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from errors import UserError
from parallel.rules import LOGICAL_AXIS_RULES


@contextlib.contextmanager
def activate(mesh: Mesh, rules=LOGICAL_AXIS_RULES):
  """Context in which model code's logical constraints resolve onto `mesh`."""
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    yield


def logical_to_sharding(logical_specs, mesh: Mesh, rules=LOGICAL_AXIS_RULES):
  return nn.logical_to_mesh_sharding(logical_specs, mesh, rules)


def abstract_variables(model: nn.Module, mesh: Mesh, collection: str = "params", rules=LOGICAL_AXIS_RULES):
  """(shapes, NamedShardings) of one of the model's variable collections; nothing is allocated."""
  from model import families  # the family says what the model takes
  inputs = families.example_inputs(model)
  boxed = jax.eval_shape(lambda r: model.init(r, *inputs)[collection], jax.random.key(0))
  # .value, not nn.meta.unbox: unboxing applies sharding constraints, which need a trace.
  is_box = lambda x: isinstance(x, nn.meta.AxisMetadata)  # noqa: E731
  shapes = jax.tree.map(lambda x: x.value if is_box(x) else x, boxed, is_leaf=is_box)
  return shapes, nn.logical_to_mesh_sharding(nn.get_partition_spec(boxed), mesh, rules)


def batch_sharding(mesh: Mesh, rules=LOGICAL_AXIS_RULES) -> NamedSharding:
  """Sharding of batch inputs: rows split over the batch axes, each row whole. It names the leading
  axis only, so it fits [batch, length] tokens and [batch] labels alike."""
  return nn.logical_to_mesh_sharding(PartitionSpec("batch"), mesh, rules)


def round_to_batch_axes(mesh: Mesh, rows: int) -> int:
  """`rows` rounded up to a multiple of the devices a batch's rows divide over (data x fsdp), so each
  holds whole rows."""
  split = mesh.shape["data"] * mesh.shape["fsdp"]
  return -(-rows // split) * split


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def check_divisible(abstract_tree, shardings, what: str):
  """Clear error when a dimension does not split evenly over its mesh axes."""
  flat_abs, _ = jax.tree_util.tree_flatten_with_path(abstract_tree)
  flat_sh = jax.tree.leaves(shardings, is_leaf=lambda x: isinstance(x, NamedSharding))
  for (path, leaf), sharding in zip(flat_abs, flat_sh):
    for dim, axes in zip(leaf.shape, sharding.spec):
      if axes is None:
        continue
      axes = axes if isinstance(axes, tuple) else (axes,)
      parts = int(np.prod([sharding.mesh.shape[a] for a in axes]))
      if dim % parts:
        raise UserError(f"{what} {jax.tree_util.keystr(path)} has a dimension of size {dim} that "
                        f"mesh axes {axes} ({parts} devices) cannot split evenly; change config.mesh "
                        f"or the model size")


def process_batch_rows(sharding: NamedSharding, global_shape: tuple[int, ...]) -> tuple[int, int]:
  """The [start, stop) rows of the global batch that this process's devices hold."""
  starts, stops = [], []
  for index in sharding.addressable_devices_indices_map(global_shape).values():
    rows = index[0]
    starts.append(rows.start or 0)
    stops.append(global_shape[0] if rows.stop is None else rows.stop)
  start, stop = min(starts), max(stops)
  return start, stop


def to_global_batch(local_batch: dict, sharding: NamedSharding, global_batch_size: int) -> dict:
  """Assembles each process's rows into one global jax.Array per field."""
  return {
      k: jax.make_array_from_process_local_data(sharding, v, (global_batch_size,) + v.shape[1:])
      for k, v in local_batch.items()
  }


def from_host(array, sharding: NamedSharding) -> jax.Array:
  """A global array from a host array that every process holds in full (eval and decode inputs).

  Works with one process or many, where passing numpy to a multi-process jit would not.
  """
  return jax.make_array_from_callback(array.shape, sharding, lambda index: array[index])


def map_rows(fn, params, row_at, num_rows: int, batch_rows: int, fields, mesh: Mesh):
  """Runs the jitted `fn(params, batch)` over rows row_at(0) .. row_at(num_rows - 1) (dicts of host arrays),
  `batch_rows` at a time (rounded up to whole rows per batch shard) on `mesh`. Yields (start, the batch's
  rows, fn's outputs on the host for those rows); the last batch is padded with copies of its first row,
  whose outputs are dropped."""
  batch_rows = round_to_batch_axes(mesh, batch_rows)
  rows_sh = batch_sharding(mesh)
  with activate(mesh):
    for start in range(0, num_rows, batch_rows):
      count = min(batch_rows, num_rows - start)
      rows = [row_at(i) for i in range(start, start + count)]
      padded = rows + rows[:1] * (batch_rows - count)
      batch = {f: from_host(np.stack([r[f] for r in padded]), rows_sh) for f in fields}
      yield start, rows, jax.tree.map(lambda x: np.asarray(x)[:count], fn(params, batch))
