"""Rotary position embeddings (the "rotate half" layout used by Llama and HF).

Optional frequency scaling for longer contexts:
  linear  every frequency divided by `factor` (position interpolation);
  llama3  low frequencies divided by `factor`, high ones kept, and a smooth
          blend in between (Llama 3.1 and later).
"""

import math

import jax.numpy as jnp
import numpy as np


def rope_frequencies(cfg) -> np.ndarray:
  """Inverse frequencies, one per pair of channels: shape [head_dim // 2] (float32)."""
  dim = cfg.head_dim
  inv_freq = 1.0 / (cfg.rope_theta ** (np.arange(0, dim, 2, dtype=np.float64) / dim))
  if cfg.rope_scaling == "linear":
    inv_freq = inv_freq / cfg.rope_scaling_factor
  elif cfg.rope_scaling == "llama3":
    factor, low, high = cfg.rope_scaling_factor, cfg.rope_low_freq_factor, cfg.rope_high_freq_factor
    context = cfg.rope_original_max_position
    wavelen = 2 * math.pi / inv_freq
    scaled = np.where(wavelen > context / low, inv_freq / factor, inv_freq)
    smooth = (context / wavelen - low) / (high - low)
    blended = (1 - smooth) * scaled / factor + smooth * scaled
    medium = (wavelen >= context / high) & (wavelen <= context / low)
    inv_freq = np.where(medium, blended, scaled)
  return inv_freq.astype(np.float32)


def apply_rope(x_BxTxNxH, positions_BxT, cfg):
  """Rotates channel pairs (i, i + H/2) by angle position * freq_i."""
  inv_freq_F = jnp.asarray(rope_frequencies(cfg))
  angles_BxTxF = positions_BxT[..., None].astype(jnp.float32) * inv_freq_F
  sin = jnp.sin(angles_BxTxF)[:, :, None, :]
  cos = jnp.cos(angles_BxTxF)[:, :, None, :]
  x = x_BxTxNxH.astype(jnp.float32)
  x1, x2 = jnp.split(x, 2, axis=-1)
  rotated = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return rotated.astype(x_BxTxNxH.dtype)
