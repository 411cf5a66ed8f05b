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
  return (f"step {step}/{total} | loss {m['loss']:.4f} | lr {m['learning_rate']:.2e} | "
          f"grad_norm {m['grad_norm']:.3f} | {m['tokens_per_sec']:,.0f} tok/s | "
          f"MFU {100 * m['mfu']:.2f}% | ETA {_fmt_duration(m['eta_s'])}")


class MetricsLogger:

  def __init__(self, workdir: str, enabled: bool, tensorboard: bool):
    self.enabled = enabled
    self._jsonl = None
    self._tb = None
    if not enabled:
      return
    os.makedirs(workdir, exist_ok=True)
    self._jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a")
    if tensorboard:
      from tensorboardX import SummaryWriter
      self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

  def write(self, step: int, split: str, metrics: dict) -> None:
    if not self.enabled:
      return
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
