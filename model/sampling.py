"""Choosing the next token from logits: greedy, temperature, top-k and nucleus (top-p)."""

import dataclasses

import jax
import jax.numpy as jnp

from errors import UserError


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
  """temperature <= 0 is greedy; top_k=0 and top_p=1 switch those filters off."""
  temperature: float = 0.0
  top_k: int = 0
  top_p: float = 1.0
  seed: int = 0

  def __post_init__(self):
    if self.top_k < 0:
      raise UserError(f"top_k={self.top_k}; expected 0 (off) or a positive number of tokens")
    if not 0.0 < self.top_p <= 1.0:
      raise UserError(f"top_p={self.top_p}; expected a probability mass in (0, 1]")

  @property
  def greedy(self) -> bool:
    return self.temperature <= 0


def top_k_filter(logits_BxV, k: int):
  """Keeps the k largest logits of each row (ties at the k-th value are kept too)."""
  kth_Bx1 = jax.lax.top_k(logits_BxV, k)[0][:, -1:]
  return jnp.where(logits_BxV < kth_Bx1, -jnp.inf, logits_BxV)


def top_p_filter(logits_BxV, top_p: float):
  """Keeps the smallest set of tokens whose probability mass reaches top_p."""
  sorted_BxV = jnp.sort(logits_BxV, axis=-1)[:, ::-1]
  probs_BxV = jax.nn.softmax(sorted_BxV, axis=-1)
  # A token is inside the nucleus when the mass before it is still short of top_p.
  inside_BxV = jnp.cumsum(probs_BxV, axis=-1) - probs_BxV < top_p
  cutoff_Bx1 = jnp.min(jnp.where(inside_BxV, sorted_BxV, jnp.inf), axis=-1, keepdims=True)
  return jnp.where(logits_BxV < cutoff_Bx1, -jnp.inf, logits_BxV)


def next_token(logits_BxV, rng, sampling: SamplingConfig):
  """One token per row, int32 [B]."""
  if sampling.greedy:
    return jnp.argmax(logits_BxV, axis=-1).astype(jnp.int32)
  scaled_BxV = logits_BxV.astype(jnp.float32) / sampling.temperature
  if sampling.top_k > 0:
    scaled_BxV = top_k_filter(scaled_BxV, min(sampling.top_k, scaled_BxV.shape[-1]))
  if sampling.top_p < 1.0:
    scaled_BxV = top_p_filter(scaled_BxV, sampling.top_p)
  return jax.random.categorical(rng, scaled_BxV, axis=-1).astype(jnp.int32)


def next_token_rows(logits_BxV, temperature_B, top_k_B, top_p_B, keys_B):
  """One token per row, int32 [B], where every row has its own sampling settings and key (a server's
  slots hold different requests). Row-wise equivalent of `next_token`: temperature <= 0 is greedy,
  top_k=0 and top_p=1 switch those filters off. When every row is greedy, nothing is sorted or drawn."""
  logits_BxV = logits_BxV.astype(jnp.float32)
  greedy_B = temperature_B <= 0
  argmax_B = jnp.argmax(logits_BxV, axis=-1).astype(jnp.int32)

  def sample(_):
    vocab = logits_BxV.shape[-1]
    scaled_BxV = logits_BxV / jnp.where(greedy_B, 1.0, temperature_B)[:, None]
    sorted_BxV = jnp.sort(scaled_BxV, axis=-1)[:, ::-1]
    k_B = jnp.where(top_k_B > 0, jnp.minimum(top_k_B, vocab), vocab)
    kth_Bx1 = jnp.take_along_axis(sorted_BxV, (k_B - 1)[:, None], axis=-1)
    scaled_BxV = jnp.where(scaled_BxV < kth_Bx1, -jnp.inf, scaled_BxV)
    nucleus_BxV = top_p_filter(scaled_BxV, top_p_B[:, None])
    scaled_BxV = jnp.where((top_p_B < 1.0)[:, None], nucleus_BxV, scaled_BxV)
    sampled_B = jax.vmap(lambda key, row: jax.random.categorical(key, row))(keys_B, scaled_BxV)
    return jnp.where(greedy_B, argmax_B, sampled_B).astype(jnp.int32)
  return jax.lax.cond(jnp.all(greedy_B), lambda _: argmax_B, sample, None)


def logprobs_of(logits_BxV, tokens_B, top: int):
  """(log-probability of each row's token [B], the `top` likeliest tokens' ids and log-probabilities
  [B, top]) under the model's own distribution (no temperature or filters, as OpenAI reports them)."""
  logp_BxV = jax.nn.log_softmax(logits_BxV.astype(jnp.float32), axis=-1)
  chosen_B = jnp.take_along_axis(logp_BxV, tokens_B[:, None], axis=-1)[:, 0]
  top_logp_BxK, top_ids_BxK = jax.lax.top_k(logp_BxV, top)
  return chosen_B, top_ids_BxK.astype(jnp.int32), top_logp_BxK
