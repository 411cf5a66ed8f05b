"""Simple sampling by full recompute over a fixed-size buffer (one compile).

Quadratic in length, fine for short previews of a training run; fast decoding
with a KV cache lives elsewhere.
"""

import jax
import jax.numpy as jnp
import numpy as np


def sample(model, params, prompts: list[list[int]], max_new_tokens: int, seq_len: int,
           temperature: float, seed: int, batch_multiple: int = 1) -> list[list[int]]:
  """Continues equal-length prompts; returns only the new tokens of each."""
  prompt_len = len(prompts[0])
  assert all(len(p) == prompt_len for p in prompts), "prompts must have equal length"
  batch = -(-len(prompts) // batch_multiple) * batch_multiple
  buf = np.zeros((batch, seq_len), np.int32)
  buf[: len(prompts), :prompt_len] = np.asarray(prompts, np.int32)
  positions = np.broadcast_to(np.arange(seq_len, dtype=np.int32), buf.shape)
  segments = np.ones_like(buf)

  @jax.jit
  def next_token(params, tokens, t, rng):
    logits = model.apply({"params": params}, tokens, positions, segments)
    last = jax.lax.dynamic_index_in_dim(logits, t - 1, axis=1, keepdims=False)
    if temperature <= 0:
      return jnp.argmax(last, axis=-1).astype(jnp.int32)
    return jax.random.categorical(rng, last / temperature, axis=-1).astype(jnp.int32)

  tokens = jnp.asarray(buf)
  rng = jax.random.key(seed)
  end = min(seq_len, prompt_len + max_new_tokens)
  for t in range(prompt_len, end):
    rng, step_rng = jax.random.split(rng)
    tokens = tokens.at[:, t].set(next_token(params, tokens, t, step_rng))
  out = np.asarray(jax.device_get(tokens))
  return [out[i, prompt_len:end].tolist() for i in range(len(prompts))]
