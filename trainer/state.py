"""Train state, its shardings, and sharded initialization.

The train state holds what trains: the model's "params" for full training;
under LoRA, {"lora": adapters, "params": a classifier's head} (model/lora.py),
while the rest of the base "params" stay frozen outside the state and are
passed to every step beside it.
"""

from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from model import families, lora
from parallel import restore, sharding


# The frozen collection holding a copy of the starting model beside the policy (DPO's reference).
REFERENCE = "reference"


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  opt_state: Any


def uses_lora(model: nn.Module) -> bool:
  return model.cfg.lora is not None


def trainable_of(model: nn.Module, variables: dict):
  """The part of the model's variables (or of a tree shaped like them) that trains."""
  return lora.trainable_of(variables) if uses_lora(model) else variables["params"]


def variables_of(model: nn.Module, trainable, frozen: dict) -> dict:
  """The variables the model applies: the trained part joined with the frozen collections."""
  if uses_lora(model):
    return {**frozen, **lora.variables_of(trainable, frozen["params"])}
  return {**frozen, "params": trainable}  # e.g. a DPO reference beside the policy


def _init_variables(model: nn.Module, seq_len: int, rng):
  return model.init(rng, *families.example_inputs(model, seq_len))


def init_fn(model: nn.Module, tx: optax.GradientTransformation, seq_len: int):
  def init(rng):
    params = trainable_of(model, nn.meta.unbox(_init_variables(model, seq_len, rng)))
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))
  return init


def state_shardings(model, tx, mesh, seq_len: int):
  """(abstract TrainState, matching tree of NamedShardings).

  Optimizer moments take their parameter's sharding; scalars are replicated.
  """
  abstract = jax.eval_shape(init_fn(model, tx, seq_len), jax.random.key(0))
  _, param_sh = restore.trained_shardings(model, mesh)
  repl = sharding.replicated(mesh)
  opt_sh = optax.tree_map_params(tx, lambda _, s: s, abstract.opt_state, param_sh,
                                 transform_non_params=lambda _: repl)
  return abstract, TrainState(step=repl, params=param_sh, opt_state=opt_sh)


def init_params(model, shardings, seq_len: int, rng, only: tuple[str, ...] = ()):
  """Fresh model "params" (`shardings`: theirs), initialized directly on their shards. With `only` (top-level names,
  e.g. a new classifier head), just those: XLA drops the initialization of everything else."""
  def init(r):
    params = nn.meta.unbox(_init_variables(model, seq_len, r)["params"])
    return {k: v for k, v in params.items() if k in only} if only else params
  out = {k: v for k, v in shardings.items() if k in only} if only else shardings
  return jax.jit(init, out_shardings=out)(rng)


def create(model, tx, shardings, seq_len: int, rng):
  """Initializes every array directly on its shards; nothing is built whole on one device."""
  return jax.jit(init_fn(model, tx, seq_len), out_shardings=shardings)(rng)


def with_shardings(abstract, shardings):
  """ShapeDtypeStructs that tell Orbax where each restored array goes."""
  return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings)


def from_params(tx, params, shardings):
  """A fresh train state around given (already sharded) parameters, e.g. imported ones."""
  def build(p):
    return TrainState(step=jnp.zeros((), jnp.int32), params=p, opt_state=tx.init(p))
  return jax.jit(build, out_shardings=shardings)(params)
