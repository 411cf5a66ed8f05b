"""What every launcher shares: the train.py command of a run, and its mesh checked against the cluster."""

import dataclasses
import os
import re

from configs import overrides
from errors import UserError
from parallel.mesh import MeshConfig, resolve_axis_sizes

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@dataclasses.dataclass(frozen=True)
class Run:
  """One train.py run: its config file and workdir as the cluster's processes see them, and overrides."""
  config: str
  workdir: str
  overrides: tuple[str, ...] = ()

  @property
  def name(self) -> str:
    """A job name from the workdir's last component, as DNS (RFC 1035 labels: Kubernetes Services) and
    schedulers accept it: lower-case letters, digits and '-', starting with a letter."""
    base = re.sub(r"[^a-z0-9-]+", "-", os.path.basename(os.path.normpath(self.workdir)).lower()).strip("-")
    if not base[:1].isalpha():
      base = f"strata-{base}"
    return base[:40].strip("-")

  def train_args(self) -> list[str]:
    return ["train.py", f"--config={self.config}", f"--workdir={self.workdir}", *self.overrides]


def check_mesh(run: Run, num_devices: int, cluster: str) -> tuple[int, ...]:
  """The mesh axis sizes of `run` on `num_devices`; a UserError naming the cluster's shape if they don't fit."""
  config_path = run.config if os.path.isabs(run.config) else os.path.join(REPO, run.config)
  config = overrides.load_with_overrides(config_path, list(run.overrides))
  try:
    return resolve_axis_sizes(MeshConfig.from_config(config.mesh.to_dict()), num_devices)
  except UserError as e:
    raise UserError(f"{cluster} gives {num_devices} devices: {e}") from None


# Cloud TPU accelerator types: (JAX devices per slice, hosts) from the type's number. v2/v3 count
# TensorCores, each one JAX device, 8 per host; v4 and v5p count TensorCores too, but a chip's two
# cores form one (megacore) device, 4 chips per host; v5e (v5litepod) and v6e count chips, 4 per
# host in a multi-host slice (a slice of up to 8 chips is one host).
_TPU_GENERATIONS = {
    "v2": lambda n: (n, max(1, n // 8)),
    "v3": lambda n: (n, max(1, n // 8)),
    "v4": lambda n: (n // 2, max(1, n // 8)),
    "v5p": lambda n: (n // 2, max(1, n // 8)),
    "v5litepod": lambda n: (n, 1 if n <= 8 else n // 4),
    "v6e": lambda n: (n, 1 if n <= 8 else n // 4),
}


def tpu_slice(accelerator_type: str) -> tuple[int, int]:
  """(JAX devices, hosts) of a Cloud TPU accelerator type such as v5p-64 or v5litepod-16."""
  match = re.fullmatch(r"(v2|v3|v4|v5p|v5litepod|v6e)-(\d+)", accelerator_type)
  if not match or int(match.group(2)) < 1:
    raise UserError(f"--accelerator_type={accelerator_type}: expected GENERATION-SIZE with a generation of "
                    f"{', '.join(_TPU_GENERATIONS)} (e.g. v5p-64, v5litepod-16, v6e-8)")
  return _TPU_GENERATIONS[match.group(1)](int(match.group(2)))
