"""A run on every worker of a Cloud TPU VM slice, through gcloud: optionally a queued resource made
for it and deleted after it."""

import dataclasses
import importlib.metadata
import os
import shlex
import shutil
import subprocess
import tarfile
import time

from errors import UserError
from scripts.cluster.job import REPO, Run

ARCHIVE = "strata-code.tgz"
# The TPU VM software version of each generation (gcloud compute tpus versions list), unless given.
RUNTIMES = {"v2": "tpu-ubuntu2204-base", "v3": "tpu-ubuntu2204-base", "v4": "tpu-ubuntu2204-base",
            "v5p": "v2-alpha-tpuv5", "v5litepod": "v2-alpha-tpuv5-lite", "v6e": "v2-alpha-tpuv6e"}
REMOTE_DIR = "~/strata"
REMOTE_VENV = "~/strata-venv"


@dataclasses.dataclass(frozen=True)
class Slice:
  name: str
  zone: str
  accelerator_type: str
  project: str = ""
  runtime_version: str = ""       # '' takes the generation's (RUNTIMES)
  create: bool = False            # make a queued resource first (and wait until it is ACTIVE)
  delete: bool = False            # delete the queued resource when the run ends (or fails)
  spot: bool = False


def _gcloud(tpu: Slice, *args: str) -> list[str]:
  project = [f"--project={tpu.project}"] if tpu.project else []
  return ["gcloud", "compute", "tpus", *args, f"--zone={tpu.zone}", *project]


def create_command(tpu: Slice) -> list[str]:
  runtime = tpu.runtime_version or RUNTIMES[tpu.accelerator_type.split("-")[0]]
  return _gcloud(tpu, "queued-resources", "create", tpu.name, f"--node-id={tpu.name}",
                 f"--accelerator-type={tpu.accelerator_type}", f"--runtime-version={runtime}",
                 *(["--spot"] if tpu.spot else []))


def state_command(tpu: Slice) -> list[str]:
  return _gcloud(tpu, "queued-resources", "describe", tpu.name, "--format=value(state.state)")


def copy_command(tpu: Slice) -> list[str]:
  return _gcloud(tpu, "tpu-vm", "scp", ARCHIVE, f"{tpu.name}:{ARCHIVE}", "--worker=all")


def remote_script(run: Run, install: bool) -> str:
  """What every worker runs: unpack the code, install it (JAX for TPU), then train.py.

  STRATA_DISTRIBUTED=1 makes train.py call jax.distributed.initialize(), which finds the slice's
  workers (and worker 0, the coordinator) itself on a Cloud TPU VM.
  """
  jax_version = importlib.metadata.version("jax")
  steps = ["set -e", f"mkdir -p {REMOTE_DIR}", f"tar -xzf {ARCHIVE} -C {REMOTE_DIR}", f"cd {REMOTE_DIR}"]
  if install:
    steps += [f"python3 -m venv {REMOTE_VENV}",
              f"{REMOTE_VENV}/bin/pip install --quiet -e . {shlex.quote(f'jax[tpu]=={jax_version}')}"]
  steps.append(f"STRATA_DISTRIBUTED=1 {REMOTE_VENV}/bin/python {shlex.join(run.train_args())}")
  return "; ".join(steps)


def run_command(tpu: Slice, run: Run, install: bool) -> list[str]:
  return _gcloud(tpu, "tpu-vm", "ssh", tpu.name, "--worker=all", f"--command={remote_script(run, install)}")


def delete_command(tpu: Slice) -> list[str]:
  return _gcloud(tpu, "queued-resources", "delete", tpu.name, "--force", "--quiet")


def plan(tpu: Slice, run: Run, install: bool) -> list[str]:
  """The launch as lines of shell, in order (what --dry_run prints)."""
  lines = []
  if tpu.create:
    lines += [shlex.join(create_command(tpu)),
              f"# then, until it prints ACTIVE: {shlex.join(state_command(tpu))}"]
  lines += [f"# pack the repository's files (git ls-files) into {ARCHIVE}",
            shlex.join(copy_command(tpu)),
            shlex.join(run_command(tpu, run, install))]
  if tpu.delete:
    lines.append(shlex.join(delete_command(tpu)))
  return lines


def pack_repository(path: str) -> int:
  """Writes the repository's tracked and untracked-but-not-ignored files into a tar.gz; returns the count."""
  listed = subprocess.run(["git", "-C", REPO, "ls-files", "-co", "--exclude-standard", "-z"],
                          capture_output=True, text=True, check=True).stdout
  files = [f for f in listed.split("\0") if f and os.path.isfile(os.path.join(REPO, f))]
  with tarfile.open(path, "w:gz") as tar:
    for name in files:
      tar.add(os.path.join(REPO, name), arcname=name)
  return len(files)


def _call(argv: list[str]) -> None:
  print("+", shlex.join(argv), flush=True)
  if subprocess.run(argv).returncode:
    raise UserError(f"failed: {shlex.join(argv)}")


def _wait_active(tpu: Slice, poll_s: float = 30.0) -> None:
  while True:
    done = subprocess.run(state_command(tpu), capture_output=True, text=True)
    if done.returncode:
      raise UserError(f"{shlex.join(state_command(tpu))} failed: {done.stderr.strip()}")
    state = done.stdout.strip()
    print(f"queued resource {tpu.name}: {state or '(no state yet)'}", flush=True)
    if state == "ACTIVE":
      return
    if state in ("FAILED", "SUSPENDED"):
      raise UserError(f"queued resource {tpu.name} is {state}; see gcloud compute tpus queued-resources "
                      f"describe {tpu.name} --zone={tpu.zone}")
    time.sleep(poll_s)


def launch(tpu: Slice, run: Run, install: bool) -> None:
  if shutil.which("gcloud") is None:
    raise UserError("gcloud is not on PATH: install the Google Cloud CLI (or use --dry_run to print the commands)")
  try:  # from the creation on: --delete also deletes a slice that is still queued when the launch stops
    if tpu.create:
      _call(create_command(tpu))
      _wait_active(tpu)
    count = pack_repository(ARCHIVE)
    print(f"packed {count} files into {ARCHIVE}", flush=True)
    _call(copy_command(tpu))
    _call(run_command(tpu, run, install))
  finally:
    if os.path.exists(ARCHIVE):
      os.remove(ARCHIVE)
    if tpu.delete:
      _call(delete_command(tpu))
