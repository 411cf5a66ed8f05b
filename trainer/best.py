"""The best checkpoint by one evaluation metric, and early stopping with patience.

The metric is config.eval.best_metric: "val/loss" (the default), or a task
metric such as "task/sentiment/accuracy", with config.eval.best_mode "min" or
"max". WORKDIR/best holds the train state with the best value so far
(keep_best); WORKDIR/best.json records its step and value and how many
evaluations have passed without improvement, so a resumed run keeps counting.
"""

import json
import math
import os

import jax

from errors import UserError
from parallel.checkpoint import Checkpointer

class BestTracker:

  def __init__(self, workdir: str, keep_best: bool, patience: int, metric: str = "val/loss", mode: str = "min"):
    self.path = os.path.join(workdir, "best.json")
    self.patience, self.metric, self.mode = patience, metric, mode
    self.record = {"step": None, "metric": metric, "value": math.inf if mode == "min" else -math.inf,
                   "evals_since_best": 0}
    if os.path.isfile(self.path):
      with open(self.path) as f:
        saved = json.load(f)
      if saved.get("metric") == metric:  # a changed best_metric starts counting afresh
        self.record = saved
    self.ckpt = Checkpointer(os.path.abspath(os.path.join(workdir, "best")), keep=1,
                             async_save=False) if keep_best else None

  def _better(self, value: float) -> bool:
    return value < self.record["value"] if self.mode == "min" else value > self.record["value"]

  def update(self, step: int, metrics: dict, state) -> bool:
    """Records an evaluation ({"val/loss": ..., "task/x/accuracy": ...}); True when patience has run out."""
    if self.metric not in metrics:
      raise UserError(f"config.eval.best_metric={self.metric!r} is not among the evaluation's metrics "
                      f"{sorted(metrics)}")
    value = float(metrics[self.metric])
    if self._better(value):
      self.record = {"step": step, "metric": self.metric, "value": value, "evals_since_best": 0}
      if self.ckpt is not None:
        self.ckpt.save(step, state)
    else:
      self.record["evals_since_best"] += 1
    if jax.process_index() == 0:
      tmp = self.path + ".tmp"
      with open(tmp, "w") as f:
        json.dump(self.record, f)
      os.replace(tmp, self.path)
    return self.patience > 0 and self.record["evals_since_best"] >= self.patience

  def describe(self) -> str:
    return f"the best {self.metric}, {self.record['value']:.4f}, was at step {self.record['step']}"

  def close(self):
    if self.ckpt is not None:
      self.ckpt.close()
