"""LoRA: low-rank adapters on the attention and MLP projections.

A targeted projection W (input dims I, output dims O) computes
    y = x W + (alpha / rank) * dropout(x) A B,    A: [I..., rank], B: [rank, O...]
with B initialised to zero, so training starts from the base model exactly.
Adapters live in their own variable collection, "lora", next to the frozen
"params": the optimizer sees only them, and checkpoints hold only them.
`merge` folds them into the base weights for export and generation.
"""

import dataclasses

import flax.linen as nn
from flax import traverse_util
import jax
import jax.numpy as jnp

from errors import UserError

COLLECTION = "lora"
TARGETS = ("q", "k", "v", "o", "gate", "up", "down")
# Our parameter name of each target's base weight (in model/attention.py, model/layers.py).
WEIGHT_NAMES = {"q": "query", "k": "key", "v": "value", "o": "out", "gate": "gate", "up": "up", "down": "down"}


@dataclasses.dataclass(frozen=True)
class LoraConfig:
  rank: int
  alpha: float
  dropout: float
  targets: tuple[str, ...]

  @property
  def scale(self) -> float:
    return self.alpha / self.rank

  @classmethod
  def from_config(cls, lora_cfg) -> "LoraConfig | None":
    """None when config.lora.rank is 0 (full fine-tuning)."""
    if lora_cfg.rank == 0:
      return None
    targets = tuple(t.strip() for t in lora_cfg.targets.split(",") if t.strip())
    bad = [t for t in targets if t not in TARGETS]
    if lora_cfg.rank < 0 or not targets or bad:
      raise UserError(f"config.lora: rank={lora_cfg.rank}, targets={lora_cfg.targets!r}; expected a positive "
                      f"rank and targets among {','.join(TARGETS)}")
    if not 0 <= lora_cfg.dropout < 1:
      raise UserError(f"config.lora.dropout={lora_cfg.dropout}; expected a probability in [0, 1)")
    return cls(int(lora_cfg.rank), float(lora_cfg.alpha), float(lora_cfg.dropout), targets)


def _dropout(module: nn.Module, x, rate: float):
  """Inverted dropout, active only when the caller supplies a "dropout" rng (training)."""
  if rate == 0 or not module.has_rng("dropout"):
    return x
  keep = jax.random.bernoulli(module.make_rng("dropout"), 1.0 - rate, x.shape)
  return jnp.where(keep, x / (1.0 - rate), 0).astype(x.dtype)


def update(module: nn.Module, lora: "LoraConfig | None", target: str, x, in_shape: tuple, in_axes: tuple,
           out_shape: tuple, out_axes: tuple, dtype):
  """The adapter's addition to the projection `target` of x (0 when it has none).

  x ends in `in_shape`; the result ends in `out_shape`.
  """
  if lora is None or target not in lora.targets:
    return 0
  fan_in = 1
  for d in in_shape:
    fan_in *= d
  init_a = nn.with_logical_partitioning(nn.initializers.normal(fan_in ** -0.5), in_axes + ("lora_rank",))
  init_b = nn.with_logical_partitioning(nn.initializers.zeros, ("lora_rank",) + out_axes)
  a = module.variable(COLLECTION, f"{target}_lora_a", lambda: init_a(module.make_rng("params"),
                                                                     in_shape + (lora.rank,), jnp.float32))
  b = module.variable(COLLECTION, f"{target}_lora_b", lambda: init_b(module.make_rng("params"),
                                                                     (lora.rank,) + out_shape, jnp.float32))
  h = jnp.tensordot(_dropout(module, x, lora.dropout), a.value.astype(dtype), axes=len(in_shape))
  return lora.scale * jnp.tensordot(h, b.value.astype(dtype), axes=1)


def _delta(a, b):
  """A B as a weight of shape [I..., O...]."""
  return jnp.tensordot(a.astype(jnp.float32), b.astype(jnp.float32), axes=1)


def merge(params, adapters, lora: LoraConfig):
  """Base params with every adapter folded in: W + scale * A B.

  Adapted weights come out in float32 whatever the base's dtype: a small
  update added to a bfloat16 weight would be mostly rounded away.

  Adapters sit in the module of the weight they adapt, so `attention/q_lora_a`
  adapts `attention/query`. Works on scanned stacks (a leading layer axis on
  W, A and B) and unrolled ones.
  """
  merged = traverse_util.flatten_dict(params)
  flat = traverse_util.flatten_dict(adapters)
  for path, a in flat.items():
    if not path[-1].endswith("_lora_a"):
      continue
    target = path[-1][:-len("_lora_a")]
    b = flat[path[:-1] + (f"{target}_lora_b",)]
    weight_path = path[:-1] + (WEIGHT_NAMES[target],)
    w = merged[weight_path]
    stacked = a.ndim + b.ndim - 2 == w.ndim + 1
    delta = jax.vmap(_delta)(a, b) if stacked else _delta(a, b)
    merged[weight_path] = w.astype(jnp.float32) + lora.scale * delta
  return traverse_util.unflatten_dict(merged)
