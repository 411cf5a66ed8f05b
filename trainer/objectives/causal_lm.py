"""Causal language modelling: next-token cross-entropy with loss masking and optional z-loss."""

import dataclasses
import math
from typing import ClassVar

import jax
import jax.numpy as jnp

from trainer.objectives.base import Objective


def next_token_targets(batch: dict):
  """Targets and weights for predicting token t+1 from position t.

  A position gets weight 1 only if token t+1 belongs to the same (non-padding)
  document; `loss_mask`, when present, further selects which target tokens
  count (e.g. assistant turns only).
  """
  tokens_BxT, segments_BxT = batch["tokens"], batch["segment_ids"]
  targets_BxT = jnp.pad(tokens_BxT[:, 1:], ((0, 0), (0, 1)))
  same_doc = (segments_BxT[:, 1:] == segments_BxT[:, :-1]) & (segments_BxT[:, :-1] != 0)
  weights_BxT = jnp.pad(same_doc, ((0, 0), (0, 1))).astype(jnp.float32)
  if "loss_mask" in batch:
    weights_BxT = weights_BxT * jnp.pad(batch["loss_mask"][:, 1:], ((0, 0), (0, 1))).astype(jnp.float32)
  return targets_BxT, weights_BxT


def cross_entropy_sums(logits_BxTxV, targets_BxT, weights_BxT, z_loss: float = 0.0):
  """Returns (weighted sum of NLL, weighted sum of z-loss, sum of weights).

  Sums, not means, so micro-batches and devices combine exactly.
  """
  logits = logits_BxTxV.astype(jnp.float32)
  log_z_BxT = jax.nn.logsumexp(logits, axis=-1)
  target_logit_BxT = jnp.take_along_axis(logits, targets_BxT[..., None], axis=-1)[..., 0]
  nll_sum = jnp.sum((log_z_BxT - target_logit_BxT) * weights_BxT)
  z_sum = z_loss * jnp.sum(jnp.square(log_z_BxT) * weights_BxT)
  return nll_sum, z_sum, jnp.sum(weights_BxT)


@dataclasses.dataclass(frozen=True)
class CausalLM(Objective):
  """Predict every next token of the same document (only `loss_mask` targets, when present)."""
  z_loss: float = 0.0  # weight of the log(Z)^2 penalty, in training only
  families: ClassVar[tuple[str, ...]] = ("decoder",)
  batch_fields: ClassVar[tuple[str, ...]] = ("tokens", "segment_ids", "positions", "loss_mask")

  @classmethod
  def from_config(cls, config) -> "CausalLM":
    return cls(z_loss=config.optimizer.z_loss)

  def sums(self, apply_fn, variables, batch, rngs=None, train: bool = True):
    """(objective sum to differentiate, weight sum, metric sums); `loss_sum` is the reported loss."""
    logits_BxTxV = apply_fn(variables, batch, rngs=rngs)
    targets_BxT, weights_BxT = next_token_targets(batch)
    nll, z, count = cross_entropy_sums(logits_BxTxV, targets_BxT, weights_BxT, self.z_loss if train else 0.0)
    return nll + z, count, {"loss_sum": nll}

  def eval_metrics(self, sums: dict) -> dict:
    """Evaluation metrics from summed eval-step outputs: mean token loss, perplexity, tokens."""
    loss = sums["loss_sum"] / max(sums["count"], 1.0)
    return {"loss": loss, "perplexity": math.exp(min(loss, 50.0)), "tokens": sums["count"]}
