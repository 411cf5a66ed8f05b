"""Causal language modelling: next-token cross-entropy with loss masking and optional z-loss."""

import dataclasses
import math
from typing import ClassVar

import flax.linen as nn
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


def chunked_target_and_log_z(x_NxTxD, w_DxV, targets_NxT, chunk: int):
  """(target logit, logsumexp over the vocabulary) of x @ w, both [N, T], `chunk` vocabulary columns at a time.

  A running (max, sum of exponentials) pair goes across the chunks, and each chunk's logits are
  recomputed in the backward pass (jax.checkpoint), so neither pass holds more than [N, T, chunk].
  Chunk c holds the strided columns c, c + C, c + 2C, ... (C chunks): splitting the vocabulary axis
  as [chunk, C] keeps its sharding on the chunk's own columns, so under tensor parallelism every
  device computes its share of each chunk. The target's logit is read from the chunk that holds it.
  """
  dim, vocab = w_DxV.shape
  n_chunks = -(-vocab // chunk)
  w_DxKxC = jnp.pad(w_DxV, ((0, 0), (0, n_chunks * chunk - vocab))).reshape(dim, chunk, n_chunks)
  column_K = jnp.arange(chunk) * n_chunks  # column k of chunk c is vocabulary entry k * C + c
  target_chunk_NxT, target_k_NxT = targets_NxT % n_chunks, targets_NxT // n_chunks

  @jax.checkpoint
  def add_chunk(carry, c):
    max_NxT, sum_NxT, target_NxT = carry
    w_DxK = jax.lax.dynamic_index_in_dim(w_DxKxC, c, axis=2, keepdims=False)
    logits_NxTxK = jnp.einsum("ntd,dk->ntk", x_NxTxD, w_DxK, preferred_element_type=jnp.float32)
    logits_NxTxK = nn.with_logical_constraint(logits_NxTxK, ("batch", "length", "act_vocab"))
    logits_NxTxK = jnp.where(column_K + c < vocab, logits_NxTxK, -jnp.inf)
    new_max_NxT = jnp.maximum(max_NxT, jnp.max(logits_NxTxK, axis=-1))
    sum_NxT = sum_NxT * jnp.exp(max_NxT - new_max_NxT) + jnp.sum(jnp.exp(logits_NxTxK - new_max_NxT[..., None]), -1)
    picked_NxT = jnp.sum(jnp.where(jnp.arange(chunk) == target_k_NxT[..., None], logits_NxTxK, 0.0), axis=-1)
    return (new_max_NxT, sum_NxT, jnp.where(target_chunk_NxT == c, picked_NxT, target_NxT)), None

  shape = x_NxTxD.shape[:-1]
  start = (jnp.full(shape, jnp.finfo(jnp.float32).min), jnp.zeros(shape, jnp.float32), jnp.zeros(shape, jnp.float32))
  (max_NxT, sum_NxT, target_NxT), _ = jax.lax.scan(add_chunk, start, jnp.arange(n_chunks))
  return target_NxT, max_NxT + jnp.log(sum_NxT)


def target_logits_and_log_z(apply_fn, variables, batch: dict, targets_BxT, vocab_chunk: int = 0, rngs=None,
                            temperature: float = 1.0):
  """(logit of each target token [B, T], logsumexp over the vocabulary [B, T]), in float32, of the logits
  divided by `temperature` (the distribution a sampler at that temperature draws from).

  vocab_chunk=0 computes the full logits [B, T, V]; a positive chunk goes over the vocabulary
  `vocab_chunk` columns at a time (chunked_target_and_log_z), so memory never grows with batch x vocabulary.
  """
  if not vocab_chunk:
    logits_BxTxV = apply_fn(variables, batch, rngs=rngs)
    if temperature != 1.0:
      logits_BxTxV = logits_BxTxV.astype(jnp.float32) / temperature
    return target_and_log_z(logits_BxTxV, targets_BxT)
  x_BxTxD, w_DxV = apply_fn(variables, batch, rngs=rngs, return_features=True)
  if temperature != 1.0:  # (x / t) @ w = (x @ w) / t
    x_BxTxD = x_BxTxD / temperature
  return chunked_target_and_log_z(x_BxTxD, w_DxV, targets_BxT, vocab_chunk)


def nll_sums(target_BxT, log_z_BxT, weights_BxT, z_loss: float = 0.0):
  """(weighted sum of NLL, weighted sum of z-loss, sum of weights) from target logits and log Z.

  Sums, not means, so micro-batches and devices combine exactly.
  """
  nll_sum = jnp.sum((log_z_BxT - target_BxT) * weights_BxT)
  z_sum = z_loss * jnp.sum(jnp.square(log_z_BxT) * weights_BxT)
  return nll_sum, z_sum, jnp.sum(weights_BxT)


def target_and_log_z(logits_BxTxV, targets_BxT):
  """(logit of each target token, logsumexp over the vocabulary), [B, T] in float32, from full logits."""
  logits = logits_BxTxV.astype(jnp.float32)
  return jnp.take_along_axis(logits, targets_BxT[..., None], axis=-1)[..., 0], jax.nn.logsumexp(logits, axis=-1)


def cross_entropy_sums(logits_BxTxV, targets_BxT, weights_BxT, z_loss: float = 0.0):
  """nll_sums of full logits [B, T, V]."""
  return nll_sums(*target_and_log_z(logits_BxTxV, targets_BxT), weights_BxT, z_loss)


@dataclasses.dataclass(frozen=True)
class CausalLM(Objective):
  """Predict every next token of the same document (only `loss_mask` targets, when present)."""
  z_loss: float = 0.0  # weight of the log(Z)^2 penalty, in training only
  vocab_chunk: int = 0  # >0: the loss goes over the vocabulary this many columns at a time
  families: ClassVar[tuple[str, ...]] = ("decoder",)
  batch_fields: ClassVar[tuple[str, ...]] = ("tokens", "segment_ids", "positions", "loss_mask")

  @classmethod
  def from_config(cls, config) -> "CausalLM":
    return cls(z_loss=config.optimizer.z_loss, vocab_chunk=config.train.vocab_chunk)

  def sums(self, apply_fn, variables, batch, rngs=None, train: bool = True):
    """(objective sum to differentiate, weight sum, metric sums); `loss_sum` is the reported loss."""
    targets_BxT, weights_BxT = next_token_targets(batch)
    target_BxT, log_z_BxT = target_logits_and_log_z(apply_fn, variables, batch, targets_BxT, self.vocab_chunk, rngs)
    nll, z, count = nll_sums(target_BxT, log_z_BxT, weights_BxT, self.z_loss if train else 0.0)
    return nll + z, count, {"loss_sum": nll}

  def eval_metrics(self, sums: dict) -> dict:
    """Evaluation metrics from summed eval-step outputs: mean token loss, perplexity, tokens."""
    loss = sums["loss_sum"] / max(sums["count"], 1.0)
    return {"loss": loss, "perplexity": math.exp(min(loss, 50.0)), "tokens": sums["count"]}
