"""Train state, its shardings, and sharded initialization."""

from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from parallel import sharding


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  opt_state: Any


def _dummy_inputs(seq_len: int):
  tokens = jnp.zeros((1, seq_len), jnp.int32)
  return tokens, jnp.zeros_like(tokens), jnp.ones_like(tokens)


def param_logical_specs(model: nn.Module, seq_len: int):
  boxed = jax.eval_shape(lambda r: model.init(r, *_dummy_inputs(seq_len))["params"], jax.random.key(0))
  return nn.get_partition_spec(boxed)


def init_fn(model: nn.Module, tx: optax.GradientTransformation, seq_len: int):
  def init(rng):
    params = nn.meta.unbox(model.init(rng, *_dummy_inputs(seq_len))["params"])
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))
  return init


def state_shardings(model, tx, mesh, seq_len: int):
  """(abstract TrainState, matching tree of NamedShardings).

  Optimizer moments take their parameter's sharding; scalars are replicated.
  """
  abstract = jax.eval_shape(init_fn(model, tx, seq_len), jax.random.key(0))
  param_sh = sharding.logical_to_sharding(param_logical_specs(model, seq_len), mesh)
  repl = sharding.replicated(mesh)
  opt_sh = optax.tree_map_params(tx, lambda _, s: s, abstract.opt_state, param_sh,
                                 transform_non_params=lambda _: repl)
  return abstract, TrainState(step=repl, params=param_sh, opt_state=opt_sh)


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

