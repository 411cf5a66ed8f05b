"""Sampling by full recompute over a fixed-size buffer (one compile, any prompt length).

Quadratic in length: meant for short previews and correctness checks; fast
decoding with a KV cache lives elsewhere.
"""

import jax
import jax.numpy as jnp
import numpy as np


def _top_p_filter(logits_BxV, top_p: float):
  """Keeps the smallest set of tokens whose probability mass reaches top_p."""
  sorted_logits = jnp.sort(logits_BxV, axis=-1)[:, ::-1]
  cum = jnp.cumsum(jax.nn.softmax(sorted_logits, axis=-1), axis=-1)
  # The cutoff is the smallest logit still inside the nucleus.
  inside = cum - jax.nn.softmax(sorted_logits, axis=-1) < top_p
  cutoff = jnp.min(jnp.where(inside, sorted_logits, jnp.inf), axis=-1, keepdims=True)
  return jnp.where(logits_BxV < cutoff, -jnp.inf, logits_BxV)


def sample(model, params, prompts: list[list[int]], max_new_tokens: int, seq_len: int,
           temperature: float, seed: int, batch_multiple: int = 1, top_p: float = 1.0,
           eos_id: int | None = None) -> list[list[int]]:
  """Continues each prompt; returns only the new tokens (up to and including eos_id).

  Greedy when temperature <= 0. Prompts may differ in length: each row decodes
  at its own position.
  """
  lengths = np.asarray([len(p) for p in prompts], np.int32)
  if lengths.max() >= seq_len:
    raise ValueError(f"a prompt of {lengths.max()} tokens leaves no room in {seq_len} positions")
  batch = -(-len(prompts) // batch_multiple) * batch_multiple
  buf = np.zeros((batch, seq_len), np.int32)
  for i, p in enumerate(prompts):
    buf[i, :len(p)] = p
  pos_np = np.zeros(batch, np.int32)
  pos_np[:len(prompts)] = lengths
  positions = np.broadcast_to(np.arange(seq_len, dtype=np.int32), buf.shape)
  segments = np.ones_like(buf)

  @jax.jit
  def next_token(params, tokens, pos_B, rng):
    logits_BxTxV = model.apply({"params": params}, tokens, positions, segments)
    last_BxV = jnp.take_along_axis(logits_BxTxV, (pos_B - 1)[:, None, None], axis=1)[:, 0]
    if temperature <= 0:
      return jnp.argmax(last_BxV, axis=-1).astype(jnp.int32)
    scaled = last_BxV / temperature
    if top_p < 1.0:
      scaled = _top_p_filter(scaled, top_p)
    return jax.random.categorical(rng, scaled, axis=-1).astype(jnp.int32)

  tokens, pos = jnp.asarray(buf), jnp.asarray(pos_np)
  rng = jax.random.key(seed)
  out = [[] for _ in prompts]
  done = np.zeros(len(prompts), bool)
  for _ in range(max_new_tokens):
    if done.all() or int(pos.max()) >= seq_len:
      break
    rng, step_rng = jax.random.split(rng)
    new = next_token(params, tokens, pos, step_rng)
    tokens = tokens.at[jnp.arange(batch), jnp.minimum(pos, seq_len - 1)].set(new)
    pos = pos + 1
    for i, t in enumerate(np.asarray(new)[:len(prompts)].tolist()):
      if not done[i]:
        out[i].append(t)
        done[i] = eos_id is not None and t == eos_id
  return out
