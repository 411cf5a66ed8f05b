"""Model families: how each kind of model is built, and what it takes as input.

A family is one entry of `FAMILIES`, chosen by `config.model.family`. It names
the module that implements it and the example inputs that shape inference and
sharding trace it with (nothing is allocated). Everything that needs a model
(training, export, evaluation, decoding, benchmarks) builds it here, so adding
a family means one module in model/ and one entry below.
"""

import dataclasses
from typing import Callable

import flax.linen as nn
import jax.numpy as jnp

from model.config import ModelConfig
from model.transformer import DecoderLM


def _token_inputs(seq_len: int) -> tuple:
  """(tokens, positions, segment ids) of one row: one document, no padding."""
  tokens = jnp.zeros((1, seq_len), jnp.int32)
  return tokens, jnp.zeros_like(tokens), jnp.ones_like(tokens)


@dataclasses.dataclass(frozen=True)
class Family:
  module: Callable[[ModelConfig], nn.Module]
  example_inputs: Callable[[int], tuple]        # seq_len -> positional inputs of one row


FAMILIES = {
    "decoder": Family(DecoderLM, _token_inputs),
}


def family(cfg: ModelConfig) -> Family:
  return FAMILIES[cfg.family]


def build(cfg: ModelConfig) -> nn.Module:
  """The model `cfg` describes, as a flax module (parameters come from `init` or a checkpoint)."""
  return family(cfg).module(cfg)


def example_inputs(model: nn.Module, seq_len: int = 8) -> tuple:
  """Inputs to trace `model` with (for `init` under `jax.eval_shape`)."""
  return family(model.cfg).example_inputs(seq_len)
