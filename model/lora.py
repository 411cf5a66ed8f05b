"""LoRA: low-rank adapters on the attention and MLP projections.

A targeted projection W (input dims I, output dims O) computes
    y = x W + (alpha / rank) * dropout(x) A B,    A: [I..., rank], B: [rank, O...]
with B initialised to zero, so training starts from the base model exactly.
Adapters live in their own variable collection, "lora", next to the frozen
"params": the optimizer sees only them, and checkpoints hold only them.
`merge` folds them into the base weights for export and generation.
"""

import dataclasses
from typing import Literal

import flax.linen as nn
from flax import traverse_util
import jax
import jax.numpy as jnp

from typed_config import Section

COLLECTION = "lora"
TARGETS = ("q", "k", "v", "o", "gate", "up", "down")
# Our parameter name of each target's base weight (in model/attention.py, model/layers.py).
WEIGHT_NAMES = {"q": "query", "k": "key", "v": "value", "o": "out", "gate": "gate", "up": "up", "down": "down"}


@dataclasses.dataclass(frozen=True)
class LoraConfig(Section):
  """`config.lora`: rank > 0 trains low-rank adapters on a frozen base (config.init) instead of all
  weights; checkpoints then hold only the adapters (and a classifier's head, which always trains)."""
  PATH = "config.lora"
  rank: int = 0
  alpha: float = 16.0             # adapters are scaled by alpha / rank
  dropout: float = 0.0            # on the adapters' input
  targets: str = "q,k,v,o,gate,up,down"  # projections to adapt; a family without one (gate) skips it
  base_dtype: Literal["float32", "bfloat16"] = "bfloat16"  # storage dtype of the frozen base weights

  @property
  def enabled(self) -> bool:
    return self.rank > 0

  @property
  def names(self) -> tuple[str, ...]:
    return tuple(t.strip() for t in self.targets.split(",") if t.strip())

  @property
  def scale(self) -> float:
    return self.alpha / self.rank

  def check(self) -> None:
    self.require(self.rank >= 0, "rank", "0 (no adapters) or a positive rank")
    self.require(bool(self.names) and all(t in TARGETS for t in self.names), "targets",
                 f"a comma-separated list among {','.join(TARGETS)}")
    self.require(0 <= self.dropout < 1, "dropout", "a probability in [0, 1)")


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
  if lora is None or target not in lora.names:
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


# A classifier's head: new weights for the task, so under LoRA they train in full beside the
# adapters (as PEFT's modules_to_save); the pooler goes with them, since a RoBERTa checkpoint has
# none and a fresh one must learn.
HEAD = ("classifier", "score", "pooler")


def trainable_of(variables) -> dict:
  """What a LoRA run trains, from the model's variables: {"lora": adapters, "params": head} (no
  "params" when the model has no head)."""
  head = {k: v for k, v in variables["params"].items() if k in HEAD}
  return {COLLECTION: variables[COLLECTION], **({"params": head} if head else {})}


def frozen_of(params) -> dict:
  """The base parameters a LoRA run keeps frozen: all but the head."""
  return {k: v for k, v in params.items() if k not in HEAD}


def variables_of(trainable: dict, frozen_params: dict) -> dict:
  """The model's variables for apply: the frozen base with the trained head, and the adapters."""
  return {"params": {**frozen_params, **trainable.get("params", {})}, COLLECTION: trainable[COLLECTION]}


def merged_params(trainable: dict, frozen_params: dict, lora: LoraConfig) -> dict:
  """Plain model parameters: the adapters folded into the base, with the trained head."""
  variables = variables_of(trainable, frozen_params)
  return merge(variables["params"], variables[COLLECTION], lora)
