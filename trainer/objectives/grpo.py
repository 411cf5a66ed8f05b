"""GRPO: group relative policy optimisation on completions the policy sampled (trainer/rollout.py).

A batch row is a prompt followed by one sampled completion; `loss_mask` marks the completion's tokens and
`advantages` [B] holds its group-normalised reward. The loss is TRL's GRPOTrainer formula:
  per token:  -min(r A, clip(r, 1 - eps_low, 1 + eps_high) A) + beta * k3,   r = p / p_old,
  k3 = exp(ref - logp) - (ref - logp) - 1,
on log-probabilities at the sampling temperature, aggregated by `loss_type`. The completions are sampled
by the policy the step starts from and trained on once (TRL's num_iterations=1), so p_old is p itself
without its gradient: r = 1 in value, and its gradient is the policy gradient.

`grpo_token_losses` and `aggregate` are those formulas on fixed log-probabilities, pure functions that the
tests check against an independent implementation.
"""

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp

from trainer.objectives.base import Objective, policy_and_reference
from trainer.objectives.causal_lm import next_token_targets, target_logits_and_log_z

BATCH_FIELDS = ("tokens", "segment_ids", "positions", "loss_mask", "advantages")
# Token-summed metrics: the train step divides every metric by the loss's weight; train_metrics then
# turns these into means over completion tokens, whatever the loss_type.
TOKEN_METRICS = ("kl", "clip_ratio/low", "clip_ratio/high", "clip_ratio/region")


def grpo_token_losses(logps, old_logps, ref_logps, advantages, epsilon_low: float, epsilon_high: float,
                      beta: float):
  """(per-token loss, per-token k3 KL (zeros without a reference), low-clipped, high-clipped), all [B, T];
  `advantages` is [B]."""
  advantages = advantages[:, None]
  ratio = jnp.exp(logps - old_logps)
  clipped = jnp.clip(ratio, 1 - epsilon_low, 1 + epsilon_high)
  losses = -jnp.minimum(ratio * advantages, clipped * advantages)
  kl = jnp.zeros_like(logps)
  if ref_logps is not None:
    kl = jnp.exp(ref_logps - logps) - (ref_logps - logps) - 1
    losses = losses + beta * kl
  low = (ratio < 1 - epsilon_low) & (advantages < 0)
  high = (ratio > 1 + epsilon_high) & (advantages > 0)
  return losses, kl, low.astype(jnp.float32), high.astype(jnp.float32)


def aggregate(losses, mask, loss_type: str, max_completion_len: int):
  """(summed loss, weight): the loss is their ratio, as TRL aggregates it. Sums, so that micro-batches and
  devices add exactly: dapo/bnpo over all completion tokens; grpo, each completion's token mean averaged
  over completions; dr_grpo, over completions x max_completion_len."""
  token_sum = jnp.sum(losses * mask)
  if loss_type == "grpo":
    return jnp.sum(jnp.sum(losses * mask, axis=1) / jnp.maximum(jnp.sum(mask, axis=1), 1.0)), \
        jnp.asarray(mask.shape[0], jnp.float32)
  if loss_type == "dr_grpo":
    return token_sum, jnp.asarray(mask.shape[0] * max_completion_len, jnp.float32)
  return token_sum, jnp.sum(mask)


@dataclasses.dataclass(frozen=True)
class GRPO(Objective):
  """GRPO with verifiable rewards (config.train.grpo)."""
  num_generations: int = 8
  beta: float = 0.0
  epsilon_low: float = 0.2
  epsilon_high: float = 0.2
  loss_type: str = "dapo"
  temperature: float = 1.0
  max_completion_len: int = 64
  vocab_chunk: int = 0
  families: ClassVar[tuple[str, ...]] = ("decoder",)
  batch_fields: ClassVar[tuple[str, ...]] = BATCH_FIELDS
  generates: ClassVar[bool] = True

  @classmethod
  def from_config(cls, config) -> "GRPO":
    g = config.train.grpo
    return cls(g.num_generations, g.beta, g.epsilon, g.clip_high, g.loss_type, g.temperature,
               g.max_completion_len, config.train.vocab_chunk)

  @property
  def rows_per_prompt(self) -> int:
    return self.num_generations

  @property
  def needs_reference(self) -> bool:
    return self.beta > 0

  def token_logps(self, apply_fn, variables, batch, targets_BxT, rngs=None):
    target_BxT, log_z_BxT = target_logits_and_log_z(apply_fn, variables, batch, targets_BxT, self.vocab_chunk,
                                                    rngs, self.temperature)
    return target_BxT - log_z_BxT

  def sums(self, apply_fn, variables, batch, rngs=None, train: bool = True):
    policy, reference = policy_and_reference(variables)
    targets_BxT, mask_BxT = next_token_targets(batch)  # completion tokens only (the loss mask)
    logps_BxT = self.token_logps(apply_fn, policy, batch, targets_BxT, rngs)
    ref_BxT = None
    if self.needs_reference:
      ref_BxT = jax.lax.stop_gradient(self.token_logps(apply_fn, reference, batch, targets_BxT))
    losses, kl, low, high = grpo_token_losses(logps_BxT, jax.lax.stop_gradient(logps_BxT), ref_BxT,
                                              batch["advantages"], self.epsilon_low, self.epsilon_high, self.beta)
    loss_sum, weight = aggregate(losses, mask_BxT, self.loss_type, self.max_completion_len)
    metrics = {"loss_sum": loss_sum, "completion_tokens_sum": jnp.sum(mask_BxT),
               **{f"{name}_sum": jnp.sum(v * mask_BxT) for name, v in
                  zip(TOKEN_METRICS, (kl, low, high, jnp.maximum(low, high)))}}
    if not self.needs_reference:
      del metrics["kl_sum"]
    return loss_sum, weight, metrics

  def train_metrics(self, m: dict) -> dict:
    """Token-summed metrics as means over completion tokens (host side, at log time)."""
    tokens = m.pop("completion_tokens")
    return {k: (v / tokens if k in TOKEN_METRICS and tokens else v) for k, v in m.items()}

