"""The KV cache's layout: one {"k", "v"} pair of [B, K, S, H] buffers per layer, in a list.

Slot s of a layer's buffers holds the key and value of the token at position s
(model/attention.py writes them). Each layer owns its buffers rather than a
slice of one stacked [L, B, K, S, H] array: a decode step then updates every
layer in place, where slicing a layer out of a stacked array and stacking the
layers back copied the whole cache twice per token (a third of a batch-8 step
on CPU, measured with scripts/benchmark_decode.py).
"""

import jax.numpy as jnp
from jax.sharding import PartitionSpec

LAYER_AXES = PartitionSpec("batch", "act_kv_heads", "length", "head_dim")  # one [B, K, S, H] buffer


def empty(cfg, layers: int, batch: int, slots: int, names=("k", "v")) -> list[dict]:
  """Zeroed buffers of `slots` positions for `batch` rows, in the model's compute dtype."""
  shape = (batch, cfg.num_kv_heads, slots, cfg.head_dim)
  return [{name: jnp.zeros(shape, cfg.compute_dtype) for name in names} for _ in range(layers)]


def axes(layers: int, names=("k", "v")) -> list[dict]:
  """The logical axes of a cache of `layers` layers (parallel/sharding maps them onto the mesh)."""
  return [{name: LAYER_AXES for name in names} for _ in range(layers)]


def slots(cache: list[dict]) -> int:
  return cache[0]["k"].shape[2]
