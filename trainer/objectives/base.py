"""What every objective is: the defaults an objective overrides only when it differs."""

from typing import ClassVar

from model import flops


class Objective:
  """An objective (frozen dataclass) maps (apply_fn, variables, batch, rngs) to (loss sum, weight sum,
  metric sums) in `sums` and turns summed evaluation outputs into metrics in `eval_metrics`."""
  families: ClassVar[tuple[str, ...]] = ()          # the model families it trains
  batch_fields: ClassVar[tuple[str, ...]] = ()      # the batch fields it reads
  needs_reference: ClassVar[bool] = False           # a frozen copy of the starting model beside the policy
  sequences_per_row: ClassVar[int] = 1              # sequences a batch row holds (a preference pair: 2)
  teacher = None                                    # a frozen trainer.teacher.Teacher beside the student (distill)

  def masking(self, config, metadata: dict):
    """How the data pipeline corrupts rows for this objective (masked LM); None: rows arrive as read."""
    return None

  def flops_per_token(self, model_cfg, seq_len: int) -> float:
    """Model FLOPs a training step spends per token: 6N + attention (model/flops.py), plus a reference's
    forward pass (8N in all, as DPO counts it) and a teacher's (a third of its own training FLOPs)."""
    total = flops.flops_per_token(model_cfg, seq_len)
    if self.needs_reference:
      total *= 4 / 3
    if self.teacher is not None:
      total += flops.flops_per_token(self.teacher.cfg, seq_len) / 3
    return total
