"""A run's life in its workdir: one run at a time, prompt stops, resumes and reruns that leave tidy results."""

import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from conftest import REPO, small_config
from errors import UserError
from trainer import loop

# train.py with a probe: a thread reports to stderr each step the *device* has finished, which is
# what a stop has to wait for -- the host may have dispatched many more by then. (Not a callback in
# the jitted step: on CPU that kept the host from running ahead at all.)
_PROBED_TRAIN = r"""
import os, queue, runpy, sys, threading
sys.path.insert(0, os.getcwd())
import jax
from trainer import steps
make = steps.make_train_step
def make_probed(*args, **kwargs):
  step, dispatched = make(*args, **kwargs), queue.Queue()
  def watch():
    n = 0
    while True:
      jax.block_until_ready(dispatched.get())
      n += 1
      os.write(2, f"device ran step {n}\n".encode())
  threading.Thread(target=watch, daemon=True).start()
  def probed(state, frozen, batch):
    state, metrics = step(state, frozen, batch)
    dispatched.put(metrics)
    return state, metrics
  return probed
steps.make_train_step = make_probed
sys.argv = ["train.py"] + sys.argv[1:]
runpy.run_path("train.py", run_name="__main__")
"""

_TINY = {"model.vocab_size": 512, "model.d_model": 32, "model.num_layers": 1, "model.num_heads": 2,
         "model.num_kv_heads": 1, "model.head_dim": 16, "model.mlp_dim": 64}
# Two layers compile quickly; their width makes each step's device time well above the host's
# dispatch time, as on a real accelerator, so the host can run far ahead of the device.
_SMALL = {"model.vocab_size": 512, "model.d_model": 128, "model.num_layers": 2, "model.num_heads": 4,
          "model.num_kv_heads": 2, "model.head_dim": 32, "model.mlp_dim": 512, "train.seq_len": 128}


def _train_command(dataset_dir: str, workdir: str, probed: bool = False, **overrides) -> list[str]:
  keys = {**_SMALL, "data.dir": dataset_dir, "data.prepare_config": "", "train.batch_size": 8,
          "optimizer.warmup_steps": 2, "log.tensorboard": False, "eval.at_start": False,
          "eval.final_split": "", "eval.num_samples": 0, "eval.every_steps": 100_000,
          "checkpoint.every_steps": 100_000, "checkpoint.async_save": False, **overrides}
  head = ["-c", _PROBED_TRAIN] if probed else [os.path.join(REPO, "train.py")]
  return [sys.executable, *head, "--config=" + os.path.join(REPO, "configs/quickstart.py"),
          f"--workdir={workdir}", *(f"--config.{k}={v}" for k, v in keys.items())]


def _env() -> dict:
  return dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1", JAX_PLATFORMS="cpu")


def _hold_lock(workdir: str, pid: int, host: str) -> int:
  """Holds WORKDIR/.lock as a run would (flock, pid and host inside); returns the descriptor."""
  os.makedirs(workdir, exist_ok=True)
  fd = os.open(os.path.join(workdir, ".lock"), os.O_RDWR | os.O_CREAT)
  fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
  os.write(fd, json.dumps({"pid": pid, "host": host}).encode())
  return fd


def _dead_pid() -> int:
  child = subprocess.Popen([sys.executable, "-c", ""])
  child.wait()
  return child.pid


def test_busy_workdir_is_refused_at_once(dataset_dir, tmp_path):
  workdir = str(tmp_path / "run")
  fd = _hold_lock(workdir, os.getpid(), socket.gethostname())
  try:
    with pytest.raises(UserError, match=f"in use by pid {os.getpid()} on host {socket.gethostname()}"):
      loop.run(small_config(dataset_dir), workdir)
  finally:
    os.close(fd)
  assert sorted(os.listdir(workdir)) == [".lock"]  # nothing written by the refused run


class _Lines:
  """A child's output, read by a thread as it comes, with the newest step its device reported."""

  def __init__(self, proc):
    self.lines, self.device_step, self._cv = [], 0, threading.Condition()
    self._thread = threading.Thread(target=self._read, args=(proc.stdout,), daemon=True)
    self._thread.start()

  def _read(self, stream):
    for line in stream:
      with self._cv:
        self.lines.append(line)
        if line.startswith("device ran step "):
          self.device_step = int(line.split()[-1])
        self._cv.notify_all()
    with self._cv:
      self.lines.append(None)  # end of output
      self._cv.notify_all()

  def wait_for_device_step(self, step: int, timeout: float) -> None:
    with self._cv:
      self._cv.wait_for(lambda: self.device_step >= step or self.lines[-1:] == [None], timeout)
    assert self.device_step >= step, self.text()[-3000:]

  def snapshot(self) -> tuple[int, int]:
    with self._cv:
      return len(self.lines), self.device_step

  def text(self, start: int = 0) -> str:
    with self._cv:
      return "".join(line for line in self.lines[start:] if line is not None)

  def wait_for_end(self) -> None:
    self._thread.join(timeout=60)


def test_sigterm_stops_within_a_step_and_a_second_run_is_refused(dataset_dir, tmp_path):
  workdir = str(tmp_path / "run")
  cmd = _train_command(dataset_dir, workdir, probed=True, **{"train.steps": 10_000, "log.every_steps": 100})
  proc = subprocess.Popen(cmd, cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True)
  try:
    out = _Lines(proc)
    out.wait_for_device_step(3, timeout=120)  # compiled and training; the host is free to run ahead

    second = subprocess.run(_train_command(dataset_dir, workdir, **{"train.steps": 10_000}), cwd=REPO,
                            env=_env(), capture_output=True, text=True, timeout=120)
    assert second.returncode != 0
    assert f"in use by pid {proc.pid} on host {socket.gethostname()}" in second.stderr, second.stderr[-2000:]

    seen, device_step = out.snapshot()
    proc.send_signal(signal.SIGTERM)
    signalled = time.perf_counter()
    # A repeated SIGTERM asks for the same stop (a parent's death signals once per exiting thread);
    # only a second Ctrl-C stops unsaved.
    time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=120)
    waited = time.perf_counter() - signalled
    out.wait_for_end()
  finally:
    proc.kill()
  rest = out.text(seen)
  assert proc.returncode == 130, out.text()[-3000:]
  ran = [int(line.split()[-1]) for line in rest.splitlines() if line.startswith("device ran step ")]
  last_run = max(ran, default=device_step)
  assert last_run <= device_step + 3, f"the device ran steps {ran} after the signal at step {device_step}"
  assert f"stopped at step {last_run};" in rest, rest[-3000:]
  assert "SIGTERM after step" in rest.split("stopped at step")[0]  # the acknowledgement came first
  print(f"signal at device step {device_step}; stopped at {last_run}; exit {waited:.1f}s after the signal")


def test_resume_keeps_one_row_per_step_and_a_finished_rerun_does_nothing(dataset_dir, tmp_path, capsys):
  workdir = str(tmp_path / "run")

  def config():
    return small_config(dataset_dir, **_TINY, **{"train.steps": 4, "checkpoint.every_steps": 2})

  loop.run(config(), workdir, stop_after_step=3)
  # As if killed after logging step 3 but before saving it: metrics run ahead of the newest checkpoint.
  shutil.rmtree(os.path.join(workdir, "checkpoints", "3"))
  with open(os.path.join(workdir, ".lock"), "w") as f:  # and left its lock file behind
    json.dump({"pid": _dead_pid(), "host": socket.gethostname()}, f)
  capsys.readouterr()

  summary = loop.run(config(), workdir)
  assert summary["step"] == 4 and not summary["interrupted"]
  assert "took over the stale lock" in capsys.readouterr().out
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    steps = [json.loads(line)["step"] for line in f]
  assert steps == [1, 2, 3, 4]
  assert oct(os.stat(os.path.join(workdir, "config.json")).st_mode & 0o777) == oct(0o666 & ~_umask())

  before = {name: os.stat(os.path.join(workdir, name)).st_mtime_ns for name in ("metrics.jsonl", "config.json")}
  summary = loop.run(config(), workdir)
  assert summary == {"step": 4, "interrupted": False, "early_stopped": False, "already_finished": True}
  out = capsys.readouterr().out
  assert f"run already finished at step 4 ({workdir}); nothing to do" in out
  assert "step 4/4" not in out and "eval" not in out
  assert {name: os.stat(os.path.join(workdir, name)).st_mtime_ns for name in before} == before


def _umask() -> int:
  mask = os.umask(0)
  os.umask(mask)
  return mask
