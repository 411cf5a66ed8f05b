"""Rotary position embeddings (the "rotate half" layout used by Llama and HF)."""

import jax.numpy as jnp


def rope_frequencies(head_dim: int, theta: float):
  """Inverse frequencies, one per pair of channels: shape [head_dim // 2]."""
  return 1.0 / (theta ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim))


def apply_rope(x_BxTxNxH, positions_BxT, theta: float):
  """Rotates channel pairs (i, i + H/2) by angle position * freq_i."""
  head_dim = x_BxTxNxH.shape[-1]
  inv_freq_F = rope_frequencies(head_dim, theta)
  angles_BxTxF = positions_BxT[..., None].astype(jnp.float32) * inv_freq_F
  sin = jnp.sin(angles_BxTxF)[:, :, None, :]
  cos = jnp.cos(angles_BxTxF)[:, :, None, :]
  x = x_BxTxNxH.astype(jnp.float32)
  x1, x2 = jnp.split(x, 2, axis=-1)
  rotated = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return rotated.astype(x_BxTxNxH.dtype)
