"""One trial: an ordinary train.py run in its own workdir, its metric fed to the pruner as it evaluates."""

import ctypes
import dataclasses
import fcntl
import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time

import optuna

from scripts.cluster.job import REPO
from scripts.tuning.space import Sweep, split_metric
from trainer import workdir_lock

LOG = "train.log"
TAIL_LINES = 20
NO_METRIC = "the run wrote no "


@dataclasses.dataclass
class Outcome:
  state: str                        # "complete", "pruned", "failed", or "interrupted" (the sweep stopped)
  value: float | None = None        # the metric's last value
  log_tail: str = ""


def command(sweep: Sweep, params: dict, workdir: str) -> list[str]:
  """The trial's train.py command line (what a user reruns to reproduce it)."""
  return [sys.executable, "train.py", f"--config={sweep.config}", f"--workdir={workdir}", *sweep.overrides,
          *(f"--config.{key}={value}" for key, value in params.items())]


def curve(workdir: str, metric: str) -> list[tuple[int, float]]:
  """(step, value) of `metric` (SPLIT/NAME) in the workdir's metrics.jsonl, in order."""
  split, name = split_metric(metric)
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return []
  points = {}
  with open(path) as f:
    for line in f:
      try:
        row = json.loads(line)
      except ValueError:  # the line being written
        continue
      if row.get("split") == split and name in row:
        points[row["step"]] = float(row[name])  # a resumed run rewrites steps: the later row stands
  return sorted(points.items())


def metric_names(workdir: str) -> list[str]:
  """Every SPLIT/NAME in the workdir's metrics.jsonl: what a sweep's metric can be."""
  path = os.path.join(workdir, "metrics.jsonl")
  names = set()
  if os.path.exists(path):
    with open(path) as f:
      for line in f:
        row = json.loads(line)
        names |= {f"{row['split']}/{k}" for k in row if k not in ("step", "split")}
  return sorted(names)


def log_tail(workdir: str, lines: int = TAIL_LINES) -> str:
  path = os.path.join(workdir, LOG)
  if not os.path.exists(path):
    return ""
  with open(path, errors="replace") as f:
    return "".join(f.readlines()[-lines:])


_LIBC = ctypes.CDLL(None, use_errno=True)  # loaded before any fork: the child only makes the call
_PR_SET_PDEATHSIG = 1


def _die_with(parent: int):
  def in_child() -> None:
    """SIGTERM when the sweep dies, even by SIGKILL, so the run checkpoints and stops. (Linux sends it
    when the forking thread ends; each worker thread waits for its trial, so that is the sweep ending.)
    A parent gone before the call is caught by comparing parent pids."""
    _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:
      os.kill(os.getpid(), signal.SIGTERM)
  return in_child


def _terminate(process: subprocess.Popen) -> None:
  """Stops a trial the sweep is leaving: train.py saves a checkpoint on SIGTERM, which a rerun resumes
  (a SIGTERM SLURM already sent it asks for the same stop)."""
  if process.poll() is None:
    process.send_signal(signal.SIGTERM)
  try:
    process.wait(timeout=300)
  except subprocess.TimeoutExpired:
    process.kill()
    process.wait()


def _wait_for_workdir(workdir: str, timeout_s: float = 300) -> None:
  """A resumed trial's previous train.py may still be saving its checkpoint (a killed sweep's child
  gets SIGTERM): wait until it lets go of the workdir's lock rather than be refused by it."""
  path = os.path.join(workdir, workdir_lock.NAME)
  if not os.path.exists(path):
    return
  deadline = time.time() + timeout_s
  with open(path) as f:
    while True:
      try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(f, fcntl.LOCK_UN)
        return
      except BlockingIOError:
        if time.time() > deadline:
          return  # train.py's own refusal names the holder
        time.sleep(1)


def run(trial: optuna.Trial, sweep: Sweep, argv: list[str], workdir: str, stop: threading.Event,
        extra_env: dict | None = None, heartbeat_s: float = 30, poll_s: float = 1.0) -> Outcome:
  """Runs the trial's process to its end, reporting each new value of the metric to the pruner and
  stamping the trial (user attribute `heartbeat`) so other workers know it is alive."""
  os.makedirs(workdir, exist_ok=True)
  _wait_for_workdir(workdir)
  env = dict(os.environ, PYTHONUNBUFFERED="1", **(extra_env or {}))
  reported = set()
  stamped = time.time()
  with open(os.path.join(workdir, LOG), "a") as log:
    log.write(f"$ {shlex.join(argv)}\n")
    log.flush()
    # Its own session: a Ctrl-C at the sweep's terminal reaches the sweep alone, which stops each trial
    # with a SIGTERM (a Ctrl-C of their own would be a second SIGINT: train.py would stop unsaved).
    process = subprocess.Popen(argv, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                               preexec_fn=_die_with(os.getpid()), start_new_session=True)
    while True:
      finished = process.poll() is not None
      for step, value in curve(workdir, sweep.metric):
        if step in reported:
          continue
        reported.add(step)
        trial.report(value, step)
        if not finished and trial.should_prune():
          process.kill()  # a pruned trial is never resumed: no checkpoint to wait for
          process.wait()
          return Outcome("pruned", value)
      if finished:
        break
      if time.time() - stamped > heartbeat_s:
        trial.set_user_attr("heartbeat", time.time())
        stamped = time.time()
      if stop.wait(poll_s):
        _terminate(process)
        return Outcome("interrupted")
  points = curve(workdir, sweep.metric)
  if process.returncode != 0:
    return Outcome("failed", log_tail=f"exit status {process.returncode}\n{log_tail(workdir)}")
  if not points:
    return Outcome("failed", log_tail=f"{NO_METRIC}{sweep.metric}; its metrics: "
                                      f"{', '.join(metric_names(workdir)) or '(none)'}")
  return Outcome("complete", points[-1][1])
