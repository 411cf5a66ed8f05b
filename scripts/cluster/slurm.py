"""A SLURM batch script for a command, from scripts/cluster/slurm.sbatch, and its submission."""

import dataclasses
import os
import shlex
import shutil
import subprocess

from errors import UserError

TEMPLATE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "slurm.sbatch")


@dataclasses.dataclass(frozen=True)
class Resources:
  """What the job asks SLURM for."""
  nodes: int = 1
  gpus_per_node: int = 0          # 0: CPU processes
  tasks_per_node: int = 1         # 1, or gpus_per_node: a process per GPU
  cpus_per_task: int = 0          # 0: SLURM's default
  time: str = ""                  # the time limit, e.g. 04:00:00; '' the partition's default
  partition: str = ""
  account: str = ""
  array: str = ""                 # e.g. 0-7%2: an array job (sweep workers)
  signal_seconds: int = 300       # USR1 this long before the time limit: the script requeues the job
  extra: tuple[str, ...] = ()     # more sbatch options, verbatim (e.g. --qos=high)

  def check(self) -> None:
    if self.nodes < 1:
      raise UserError(f"--nodes={self.nodes}: expected at least 1")
    if self.gpus_per_node < 0 or self.tasks_per_node < 1:
      raise UserError(f"--gpus_per_node={self.gpus_per_node}, --tasks_per_node={self.tasks_per_node}: "
                      f"expected GPUs >= 0 and tasks >= 1")
    if self.gpus_per_node and self.tasks_per_node not in (1, self.gpus_per_node):
      raise UserError(f"--tasks_per_node={self.tasks_per_node} with --gpus_per_node={self.gpus_per_node}: "
                      f"expected 1 (a process per node) or {self.gpus_per_node} (a process per GPU)")

  @property
  def num_devices(self) -> int:
    """JAX's global device count: every GPU, or one CPU device per process."""
    return self.nodes * (self.gpus_per_node or self.tasks_per_node)

  def describe(self) -> str:
    per_node = f"{self.gpus_per_node} GPU(s)" if self.gpus_per_node else f"{self.tasks_per_node} CPU process(es)"
    return f"--nodes={self.nodes} x {per_node} per node"


def _directives(res: Resources, name: str, log_dir: str, chdir: str) -> list[str]:
  log = os.path.join(log_dir, "slurm-%A_%a.out" if res.array else "slurm-%j.out")
  lines = [f"--job-name={name}", f"--nodes={res.nodes}", f"--ntasks-per-node={res.tasks_per_node}",
           f"--chdir={chdir}", f"--output={log}", "--open-mode=append", "--requeue",
           f"--signal=B:USR1@{res.signal_seconds}"]
  if res.gpus_per_node:
    lines.append(f"--gpus-per-node={res.gpus_per_node}")
  for flag, value in (("cpus-per-task", res.cpus_per_task), ("time", res.time), ("partition", res.partition),
                      ("account", res.account), ("array", res.array)):
    if value:
      lines.append(f"--{flag}={value}")
  return [f"#SBATCH {line}" for line in (*lines, *res.extra)]


def render(command: list[str], res: Resources, name: str, log_dir: str, chdir: str) -> str:
  """slurm.sbatch with its #SBATCH lines replaced by these resources' and `command` as its arguments."""
  res.check()
  with open(TEMPLATE) as f:
    template = f.read()
  body = template[template.index("set -uo pipefail"):]
  header = ["#!/bin/bash",
            "# Written by scripts/launch.py from scripts/cluster/slurm.sbatch (which explains it); submit with sbatch.",
            *_directives(res, name, log_dir, chdir),
            "",
            "# The command every task runs:",
            f"set -- {shlex.join(command)}"]
  return "\n".join(header) + "\n" + body


def write_and_submit(script: str, path: str) -> str:
  """Writes the script to `path` (atomically) and submits it; returns SLURM's job id."""
  if shutil.which("sbatch") is None:
    raise UserError("sbatch is not on PATH: run this on a SLURM login node (or use --dry_run to print the script)")
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    f.write(script)
  os.replace(tmp, path)
  done = subprocess.run(["sbatch", "--parsable", path], capture_output=True, text=True)
  if done.returncode:
    raise UserError(f"sbatch {path} failed: {done.stderr.strip() or done.stdout.strip()}")
  return done.stdout.strip().split(";")[0]
