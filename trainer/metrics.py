"""Metrics sinks: stdout, WORKDIR/metrics.jsonl and TensorBoard (process 0 only)."""

import json
import os

from absl import logging


def _fmt_duration(seconds: float) -> str:
  seconds = int(max(0, seconds))
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


def format_train_line(step: int, total: int, m: dict) -> str:
  sampled = ""
  if "reward" in m:  # GRPO: the sampled completions' reward and where the time went
    sampled = (f"reward {m['reward']:.3f} | length {m['completions/mean_length']:.1f} | sampling "
               f"{m['time/sample_s']:.2f}s + training {m['time/train_s']:.2f}s per step | ")
  return (f"step {step}/{total} | loss {m['loss']:.4f} | {sampled}lr {m['learning_rate']:.2e} | "
          f"grad_norm {m['grad_norm']:.3f} | {m['tokens_per_sec']:,.0f} tok/s | "
          f"MFU {100 * m['mfu']:.2f}% | ETA {_fmt_duration(m['eta_s'])}")


def _keep_rows_through(path: str, last_step: int) -> None:
  """Drops the rows of `path` past `last_step` (and any torn line), by rewrite and rename; if any.

  They were written by a run that died after its last checkpoint: the run
  resuming from that checkpoint logs those steps again.
  """
  if not os.path.exists(path):
    return
  with open(path) as f:
    lines = f.readlines()
  kept = []
  for line in lines:
    try:
      row = json.loads(line)
    except ValueError:
      continue
    if isinstance(row, dict) and isinstance(row.get("step"), int) and row["step"] <= last_step:
      kept.append(line if line.endswith("\n") else line + "\n")
  if kept == lines:
    return
  tmp = path + ".tmp"
  with open(tmp, "w") as f:  # created with the umask, like the file it replaces
    f.writelines(kept)
  os.replace(tmp, path)


class MetricsLogger:
  """Prints on process 0; `start(step)` then opens the files, which only process 0 writes."""

  def __init__(self, workdir: str, enabled: bool, tensorboard: bool):
    self.workdir, self.enabled, self.tensorboard = workdir, enabled, tensorboard
    self._jsonl = None
    self._tb = None

  def start(self, step: int) -> None:
    """Opens the sinks for a run that trains on from `step` (0: from scratch).

    Rows and TensorBoard events of later steps -- left by an earlier run that
    died past its last checkpoint -- are dropped first, so each step is logged
    once. A run from scratch keeps none: it evaluates step 0 again.
    """
    if not self.enabled:
      return
    os.makedirs(self.workdir, exist_ok=True)
    path = os.path.join(self.workdir, "metrics.jsonl")
    _keep_rows_through(path, step if step > 0 else -1)
    self._jsonl = open(path, "a")
    if self.tensorboard:
      from tensorboardX import SummaryWriter
      self._tb = SummaryWriter(os.path.join(self.workdir, "tensorboard"), purge_step=step + 1 if step else 0)

  def write(self, step: int, split: str, metrics: dict) -> None:
    if not self.enabled:
      return
    assert self._jsonl is not None, "MetricsLogger.start() first"
    values = {k: float(v) for k, v in metrics.items()}
    self._jsonl.write(json.dumps({"step": int(step), "split": split, **values}) + "\n")
    self._jsonl.flush()
    if self._tb is not None:
      for k, v in values.items():
        self._tb.add_scalar(f"{split}/{k}", v, step)

  def info(self, message: str) -> None:
    if self.enabled:
      logging.info(message)
      print(message, flush=True)

  def close(self) -> None:
    if self._jsonl:
      self._jsonl.close()
    if self._tb:
      self._tb.close()
