"""The best checkpoint by validation loss, and early stopping with patience.

WORKDIR/best holds the train state with the lowest validation loss so far
(keep_best); WORKDIR/best.json records its step and loss and how many
evaluations have passed without improvement, so a resumed run keeps counting.
"""

import json
import os

import jax

from trainer.checkpoint import Checkpointer


class BestTracker:

  def __init__(self, workdir: str, keep_best: bool, patience: int):
    self.path = os.path.join(workdir, "best.json")
    self.patience = patience
    self.record = {"step": None, "loss": float("inf"), "evals_since_best": 0}
    if os.path.isfile(self.path):
      with open(self.path) as f:
        self.record = json.load(f)
    self.ckpt = Checkpointer(os.path.abspath(os.path.join(workdir, "best")), keep=1,
                             async_save=False) if keep_best else None

  def update(self, step: int, loss: float, state) -> bool:
    """Records an evaluation; True when patience has run out."""
    if loss < self.record["loss"]:
      self.record = {"step": step, "loss": loss, "evals_since_best": 0}
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

  def close(self):
    if self.ckpt is not None:
      self.ckpt.close()
