"""What every objective is: the defaults an objective overrides only when it differs."""

from typing import ClassVar


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
