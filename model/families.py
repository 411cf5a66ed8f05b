"""Model families: how each kind of model is built, and what it takes as input.

A family is one entry of `FAMILIES`, chosen by `config.model.family`. It names
the module that implements it, the batch fields it reads (in the order of its
positional inputs), and the example inputs that shape inference and sharding
trace it with (nothing is allocated). Everything that needs a model (training,
export, evaluation, decoding, benchmarks) builds it here and calls it through
`batch_inputs`, so adding a family means one module in model/ and one entry
below.
"""

import dataclasses
from typing import Callable

import flax.linen as nn
import jax.numpy as jnp

from model.config import ModelConfig
from model.encoder import EncoderLM
from model.t5 import EncoderDecoderModel
from model.transformer import DecoderLM


def _token_inputs(seq_len: int) -> tuple:
  """(tokens, positions, segment ids) of one row: one document, no padding."""
  tokens = jnp.zeros((1, seq_len), jnp.int32)
  return tokens, jnp.zeros_like(tokens), jnp.ones_like(tokens)


ENCODER_DECODER_FIELDS = ("encoder_tokens", "encoder_positions", "encoder_segment_ids",
                          "tokens", "positions", "segment_ids")


def _encoder_decoder_inputs(seq_len: int) -> tuple:
  """An encoder row and a decoder row of `seq_len` tokens each."""
  return _token_inputs(seq_len) + _token_inputs(seq_len)


def _encoder_fields(cfg: ModelConfig) -> tuple[str, ...]:
  # Token types (sentence A/B) only where the model has their embeddings; else they default to zeros.
  return ("tokens", "positions", "segment_ids") + (("token_types",) if cfg.type_vocab_size else ())


@dataclasses.dataclass(frozen=True)
class Family:
  module: Callable[[ModelConfig], nn.Module]
  example_inputs: Callable[[int], tuple]         # seq_len -> positional inputs of one row
  fields: Callable[[ModelConfig], tuple[str, ...]]  # the batch fields its positional inputs are


FAMILIES = {
    "decoder": Family(DecoderLM, _token_inputs, lambda cfg: ("tokens", "positions", "segment_ids")),
    # Token types default to zeros, so the encoder traces with the decoder's three inputs.
    "encoder": Family(EncoderLM, _token_inputs, _encoder_fields),
    # The encoder's inputs, then the decoder's (target tokens shifted right: teacher forcing).
    "encoder_decoder": Family(EncoderDecoderModel, _encoder_decoder_inputs, lambda cfg: ENCODER_DECODER_FIELDS),
}


def family(cfg: ModelConfig) -> Family:
  return FAMILIES[cfg.family]


def build(cfg: ModelConfig) -> nn.Module:
  """The model `cfg` describes, as a flax module (parameters come from `init` or a checkpoint)."""
  return family(cfg).module(cfg)


def example_inputs(model: nn.Module, seq_len: int = 8) -> tuple:
  """Inputs to trace `model` with (for `init` under `jax.eval_shape`)."""
  return family(model.cfg).example_inputs(seq_len)


def batch_inputs(model: nn.Module, batch: dict) -> tuple:
  """The model's positional inputs, taken from a batch's fields. Token types come last and are
  optional (a batch of single texts may have none: they default to zeros)."""
  fields = family(model.cfg).fields(model.cfg)
  return tuple(batch[f] for f in fields if f != "token_types" or f in batch)


def batch_apply(model: nn.Module):
  """(variables, batch, rngs=None, **options) -> the model's output: how objectives call a model of any
  family (options, e.g. return_features, go to the module)."""
  def apply(variables, batch, rngs=None, **options):
    return model.apply(variables, *batch_inputs(model, batch), rngs=rngs, **options)
  return apply

