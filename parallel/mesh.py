"""Device mesh from `config.mesh`."""

import dataclasses
import math

import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import AxisType, Mesh

from errors import UserError
from parallel.rules import MESH_AXES
from typed_config import Section


@dataclasses.dataclass(frozen=True)
class MeshConfig(Section):
  """`config.mesh`: devices per mesh axis (parallel/rules.py maps the model's logical axes onto them)."""
  PATH = "config.mesh"
  data: int = 1                   # data parallelism: replicas of the parameters
  fsdp: int = -1                  # -1 takes the devices the other axes leave; parameters shard over it
  tensor: int = 1                 # tensor parallelism within each layer

  def check(self) -> None:
    sizes = [getattr(self, name) for name in MESH_AXES]
    for name, size in zip(MESH_AXES, sizes):
      self.require(size > 0 or size == -1, name, "a positive size, or -1 for the devices the others leave")
    if sizes.count(-1) > 1:
      raise UserError(f"config.mesh: {', '.join(f'{n}=-1' for n, s in zip(MESH_AXES, sizes) if s == -1)}; "
                      f"expected at most one axis of size -1 (the devices the others leave)")


def resolve_axis_sizes(mesh_cfg: MeshConfig, num_devices: int) -> tuple[int, ...]:
  """Fills in the one axis given as -1 and checks the product is the device count."""
  sizes = [getattr(mesh_cfg, name) for name in MESH_AXES]
  described = ", ".join(f"mesh.{n}={s}" for n, s in zip(MESH_AXES, sizes))
  if -1 in sizes:
    known = math.prod(s for s in sizes if s != -1)
    if num_devices % known:
      raise UserError(f"mesh ({described}) does not divide the {num_devices} available devices")
    sizes[sizes.index(-1)] = num_devices // known
  if math.prod(sizes) != num_devices:
    raise UserError(f"mesh ({described}) has {math.prod(sizes)} devices but {num_devices} are "
                    f"available; make the sizes multiply to {num_devices} or set one to -1")
  return tuple(sizes)


def make_mesh(mesh_cfg: MeshConfig, devices=None) -> Mesh:
  devices = list(devices if devices is not None else jax.devices())
  sizes = resolve_axis_sizes(mesh_cfg, len(devices))
  try:
    grid = mesh_utils.create_device_mesh(sizes, devices=devices)
  except (ValueError, NotImplementedError, AssertionError):
    grid = np.array(devices).reshape(sizes)  # topology-unaware fallback (e.g. CPU subsets)
  return Mesh(grid, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES))


SINGLE_DEVICE = dict(data=1, fsdp=1, tensor=1)


def mesh_of_sizes(sizes: dict | None = None) -> Mesh:
  """A mesh of {"data", "fsdp", "tensor"} sizes (one may be -1: all devices); default one device.

  Sizes without a -1 take the first devices they need, so tensor=2 works on an 8-device host.
  """
  sizes = dict(sizes or SINGLE_DEVICE)
  wanted = math.prod(sizes.values())
  devices = jax.devices() if wanted < 0 or wanted > jax.device_count() else jax.devices()[:wanted]
  return make_mesh(MeshConfig.from_config(sizes), devices)


def sizes_from_flag(entries: list[str]) -> dict | None:
  """{"data": 1, "fsdp": 1, "tensor": 8} from a --mesh=tensor=8 flag's entries; None for one device."""
  if not entries:
    return None
  sizes = dict(data=1, fsdp=1, tensor=1)
  for entry in entries:
    axis, _, size = entry.partition("=")
    if axis not in sizes or not size.lstrip("-").isdigit():
      raise UserError(f"--mesh entry {entry!r}: expected AXIS=N with AXIS one of {list(sizes)}")
    sizes[axis] = int(size)
  return sizes
