"""What every objective is: the defaults an objective overrides only when it differs."""

from typing import ClassVar

import jax
import jax.numpy as jnp

from model import flops, lora
from trainer.state import REFERENCE


class Objective:
  """An objective (frozen dataclass) maps (apply_fn, variables, batch, rngs) to (loss sum, weight sum,
  metric sums) in `sums` and turns summed evaluation outputs into metrics in `eval_metrics`."""
  families: ClassVar[tuple[str, ...]] = ()          # the model families it trains
  batch_fields: ClassVar[tuple[str, ...]] = ()      # the batch fields it reads
  needs_reference: ClassVar[bool] = False           # a frozen copy of the starting model beside the policy
  sequences_per_row: ClassVar[int] = 1              # sequences a batch row holds (a preference pair: 2)
  teacher = None                                    # a frozen trainer.teacher.Teacher beside the student (distill)
  teacher_topk: str = ""                            # or its top-k logits, read with the rows (data/teacher_topk.py)
  generates: ClassVar[bool] = False                 # trains on completions it samples (trainer/rollout.py: GRPO)
  rows_per_prompt: int = 1                          # batch rows per prompt (GRPO: a group of completions)
  target_len: int = 0                               # decoder tokens per row (encoder-decoders; 0: none)

  def masking(self, config, metadata: dict):
    """How the data pipeline corrupts rows for this objective (masked LM); None: rows arrive as read."""
    return None

  def train_metrics(self, metrics: dict) -> dict:
    """The train step's metrics (host floats, at log time) as the objective reports them."""
    return metrics

  def flops_per_token(self, model_cfg, seq_len: int) -> float:
    """Model FLOPs a training step spends per token: 6N + attention (model/flops.py), plus a reference's
    forward pass (8N in all, as DPO counts it) and a teacher's (a third of its own training FLOPs)."""
    total = flops.flops_per_token(model_cfg, seq_len)
    if self.needs_reference:
      total *= 4 / 3
    if self.teacher is not None:
      total += flops.flops_per_token(self.teacher.cfg, seq_len) / 3
    return total


def policy_and_reference(variables: dict) -> tuple[dict, dict]:
  """(the policy's variables, the reference policy's): a frozen copy of the starting policy when the run
  holds one (collection REFERENCE), else, under LoRA, the base with the adapters off (zero adapters add
  nothing), at no extra memory; None when there is neither."""
  policy = {k: v for k, v in variables.items() if k != REFERENCE}
  if REFERENCE in variables:
    return policy, {"params": variables[REFERENCE]}
  if lora.COLLECTION not in policy:
    return policy, None
  return policy, {**policy, lora.COLLECTION: jax.tree.map(jnp.zeros_like, policy[lora.COLLECTION])}
