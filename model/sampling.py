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
