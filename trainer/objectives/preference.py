"""Preference objectives on (chosen, rejected) pairs: a Bradley-Terry reward model, and DPO with its variants.

Batches hold pairs (data/pairs.py): each field is [B, 2, T], chosen then rejected. Both sides go through
the model in one forward pass, as rows [2B, T] (chosen and rejected of a pair side by side, so each
device keeps its own rows). The losses follow TRL's published formulas and its `beta` convention
(trl DPOTrainer, CPOTrainer for SimPO, ORPOTrainer, RewardTrainer); `pair_losses` and `reward_losses`
are those formulas on per-sequence log-probabilities or rewards, pure functions that the tests check
against an independent implementation. Sums over pairs, not means, keep micro-batches and devices exact;
the one place this departs from TRL is the NLL term of RPO and ORPO, averaged per sequence and then over
pairs, where TRL pools the tokens of the whole batch (the two agree when completions have equal length).
"""

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp

from errors import UserError
from trainer.objectives.base import Objective, policy_and_reference
from trainer.objectives.causal_lm import next_token_targets, target_logits_and_log_z

REFERENCE_FREE = ("simpo", "orpo")
PAIR_FIELDS = ("tokens", "segment_ids", "positions", "loss_mask")


def pair_rows(batch: dict) -> dict:
  """[B, 2, T] pair fields -> [2B, T] rows: chosen_0, rejected_0, chosen_1, ..."""
  return {k: v.reshape((-1,) + v.shape[2:]) for k, v in batch.items() if k in PAIR_FIELDS}


def sequence_logps(apply_fn, variables, rows: dict, vocab_chunk: int = 0, rngs=None):
  """(sum of the completion tokens' log-probabilities [N], their count [N]) per row."""
  targets_NxT, weights_NxT = next_token_targets(rows)
  target_NxT, log_z_NxT = target_logits_and_log_z(apply_fn, variables, rows, targets_NxT, vocab_chunk, rngs)
  return jnp.sum((target_NxT - log_z_NxT) * weights_NxT, axis=1), jnp.sum(weights_NxT, axis=1)


def _log1mexp(x):
  """log(1 - exp(x)) for x < 0, stable at both ends."""
  return jnp.where(x > -0.693, jnp.log(-jnp.expm1(x)), jnp.log1p(-jnp.exp(x)))


def pair_losses(chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps, chosen_len, rejected_len,
                loss_type: str, beta: float, label_smoothing: float = 0.0, simpo_gamma: float = 0.5,
                rpo_alpha: float = 0.0):
  """(per-pair loss, chosen rewards, rejected rewards, the log-probabilities TRL logs) for one loss type.

  Log-probabilities are sums over completion tokens; ipo compares per-token averages of the log-ratios,
  and the reference-free simpo and orpo use per-token average log-probabilities (TRL's
  average_log_prob), so their rewards are beta times those averages.
  """
  avg_chosen, avg_rejected = chosen_logps / jnp.maximum(chosen_len, 1), rejected_logps / jnp.maximum(rejected_len, 1)
  if loss_type in REFERENCE_FREE:
    if loss_type == "simpo":
      logits = avg_chosen - avg_rejected - simpo_gamma / beta
      losses = -jax.nn.log_sigmoid(beta * logits) * (1 - label_smoothing) \
          - jax.nn.log_sigmoid(-beta * logits) * label_smoothing
    else:  # orpo: the chosen NLL, minus beta (the paper's lambda) times the log-sigmoid of the log odds ratio
      log_odds = (avg_chosen - avg_rejected) - (_log1mexp(avg_chosen) - _log1mexp(avg_rejected))
      losses = -avg_chosen - beta * jax.nn.log_sigmoid(log_odds)
    chosen_rewards, rejected_rewards = beta * avg_chosen, beta * avg_rejected
    logged = (avg_chosen, avg_rejected)
  else:
    chosen_ratio, rejected_ratio = chosen_logps - ref_chosen_logps, rejected_logps - ref_rejected_logps
    delta = chosen_ratio - rejected_ratio
    if loss_type == "sigmoid":  # label_smoothing > 0: conservative DPO (cDPO)
      losses = -jax.nn.log_sigmoid(beta * delta) * (1 - label_smoothing) \
          - jax.nn.log_sigmoid(-beta * delta) * label_smoothing
    elif loss_type == "hinge":
      losses = jax.nn.relu(1 - beta * delta)
    else:  # ipo, on per-token averages of the log-ratios
      ipo_delta = chosen_ratio / jnp.maximum(chosen_len, 1) - rejected_ratio / jnp.maximum(rejected_len, 1)
      losses = (ipo_delta - 1 / (2 * beta)) ** 2
    chosen_rewards, rejected_rewards = beta * chosen_ratio, beta * rejected_ratio
    logged = (chosen_logps, rejected_logps)
  if rpo_alpha:  # RPO: plus the NLL of the chosen completion, per token
    losses = losses - rpo_alpha * avg_chosen
  return losses, chosen_rewards, rejected_rewards, logged


def reward_losses(chosen_rewards, rejected_rewards, margin=0.0, center_coefficient: float = 0.0):
  """Bradley-Terry: -log sigmoid(r_chosen - r_rejected - margin), plus TRL's reward centring term."""
  losses = -jax.nn.log_sigmoid(chosen_rewards - rejected_rewards - margin)
  if center_coefficient:
    losses = losses + center_coefficient * (chosen_rewards + rejected_rewards) ** 2
  return losses


def _pair_metrics(losses, chosen_rewards, rejected_rewards) -> dict:
  return {"loss_sum": jnp.sum(losses), "rewards/chosen_sum": jnp.sum(chosen_rewards),
          "rewards/rejected_sum": jnp.sum(rejected_rewards),
          "rewards/margins_sum": jnp.sum(chosen_rewards - rejected_rewards),
          "rewards/accuracies_sum": jnp.sum((chosen_rewards > rejected_rewards).astype(jnp.float32))}


def _means(sums: dict) -> dict:
  pairs = max(sums["count"], 1.0)
  return {**{k.removesuffix("_sum"): v / pairs for k, v in sums.items() if k.endswith("_sum")}, "pairs": sums["count"]}


@dataclasses.dataclass(frozen=True)
class DPO(Objective):
  """Direct preference optimisation and its variants (config.train.dpo)."""
  loss_type: str = "sigmoid"
  beta: float = 0.1
  label_smoothing: float = 0.0
  simpo_gamma: float = 0.5
  rpo_alpha: float = 0.0
  vocab_chunk: int = 0
  precomputed: bool = False  # the reference's log-probabilities come with the pairs ("ref_logps")
  families: ClassVar[tuple[str, ...]] = ("decoder",)
  sequences_per_row: ClassVar[int] = 2

  @classmethod
  def from_config(cls, config) -> "DPO":
    d = config.train.dpo
    return cls(d.loss_type, d.beta, d.label_smoothing, d.simpo_gamma, d.rpo_alpha, config.train.vocab_chunk,
               d.reference == "precomputed" and d.loss_type not in REFERENCE_FREE)

  @property
  def batch_fields(self) -> tuple[str, ...]:
    return PAIR_FIELDS + ("ref_logps",) if self.precomputed else PAIR_FIELDS

  @property
  def needs_reference(self) -> bool:
    """A frozen copy beside the policy (or, under LoRA, the base with the adapters off)."""
    return self.loss_type not in REFERENCE_FREE and not self.precomputed

  def sums(self, apply_fn, variables, batch, rngs=None, train: bool = True):
    """(sum of pair losses, pairs, metric sums)."""
    rows = pair_rows(batch)
    policy, reference = policy_and_reference(variables)
    logps, counts = sequence_logps(apply_fn, policy, rows, self.vocab_chunk, rngs)
    ref_chosen = ref_rejected = None
    if self.precomputed:
      ref_chosen, ref_rejected = batch["ref_logps"][:, 0], batch["ref_logps"][:, 1]
    elif self.needs_reference:
      ref_logps = jax.lax.stop_gradient(sequence_logps(apply_fn, reference, rows, self.vocab_chunk)[0])
      ref_chosen, ref_rejected = ref_logps[0::2], ref_logps[1::2]
    losses, chosen_rewards, rejected_rewards, (logp_c, logp_r) = pair_losses(
        logps[0::2], logps[1::2], ref_chosen, ref_rejected, counts[0::2], counts[1::2], self.loss_type,
        self.beta, self.label_smoothing, self.simpo_gamma, self.rpo_alpha)
    metrics = {**_pair_metrics(losses, chosen_rewards, rejected_rewards),
               "logps/chosen_sum": jnp.sum(logp_c), "logps/rejected_sum": jnp.sum(logp_r)}
    return jnp.sum(losses), jnp.asarray(losses.shape[0], jnp.float32), metrics

  def eval_metrics(self, sums: dict) -> dict:
    return _means(sums)


@dataclasses.dataclass(frozen=True)
class RewardModel(Objective):
  """A scalar head (model.num_labels=1) trained to score the chosen side above the rejected one, by the
  pair's margin when the data gives one."""
  center_coefficient: float = 0.0
  families: ClassVar[tuple[str, ...]] = ("decoder", "encoder")
  batch_fields: ClassVar[tuple[str, ...]] = PAIR_FIELDS + ("margin",)
  sequences_per_row: ClassVar[int] = 2

  @classmethod
  def from_config(cls, config) -> "RewardModel":
    if config.model.num_labels != 1:
      raise UserError(f"config.train.objective='reward' needs a scalar head: config.model.num_labels=1, not "
                      f"{config.model.num_labels}")
    return cls(config.train.reward.center_coefficient)

  def sums(self, apply_fn, variables, batch, rngs=None, train: bool = True):
    rows = pair_rows(batch)
    rewards = apply_fn(variables, rows, rngs=rngs)[:, 0].astype(jnp.float32)  # [2B]
    chosen, rejected = rewards[0::2], rewards[1::2]
    losses = reward_losses(chosen, rejected, batch.get("margin", 0.0), self.center_coefficient)
    return jnp.sum(losses), jnp.asarray(losses.shape[0], jnp.float32), _pair_metrics(losses, chosen, rejected)

  def eval_metrics(self, sums: dict) -> dict:
    return _means(sums)
