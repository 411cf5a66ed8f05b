"""Generation from an encoder-decoder (T5): the encoder reads each prompt once, the decoder writes.

The prefill encodes the (right-padded) prompts, projects every decoder layer's
cross-attention keys and values from the encoder's output once, and runs the
decoder's first step on the start token (config.model.decoder_start_id). Each
later step feeds one token through the decoder alone: its self-attention over a
KV cache, its cross-attention over the stored encoder keys and values (padding
masked by the prompts' lengths). The batching, bucketing, chunked decode loop,
seeding and stop handling are model/decode.py's Decoder's.

The cache is {"layers": per decoder layer (model/kv_cache.py) {"k", "v"}: [B, K,
slots, H] (self-attention) and {"cross_k", "cross_v"}: [B, K, S, H], "enc_segments":
[B, S] (which encoder positions hold prompt tokens)}.
"""

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec

from errors import UserError
from model import t5
from model import kv_cache
from model.decode import Decoder, bucket
from model.sampling import SamplingConfig, next_token
from parallel import sharding


class Seq2SeqDecoder(Decoder):
  """Decoder's interface for an encoder-decoder: `prompts` are the encoder's inputs."""

  def _unstacked(self, params: dict) -> dict:
    return t5.unstacked_params(params, self.cfg)

  def _shardings(self):
    named = lambda spec: sharding.logical_to_sharding(spec, self.mesh)  # noqa: E731
    layers = kv_cache.axes(self.cfg.num_decoder_layers or self.cfg.num_layers, ("k", "v", "cross_k", "cross_v"))
    return {**super()._shardings(), "cache": named({"layers": layers, "enc_segments": PartitionSpec("batch", "length")})}

  def _check_lengths(self, prompts, max_new_tokens: int) -> None:
    if not prompts or any(len(p) == 0 for p in prompts):
      raise UserError("every input needs at least one token (an EOS token will do)")
    if max_new_tokens <= 0:
      raise UserError(f"max_new_tokens={max_new_tokens}; expected a positive number")

  def _layout(self, longest: int, max_new_tokens: int) -> tuple[int, int]:
    """(encoder length, decoder cache slots): the start token and the new tokens but the last one fed."""
    return bucket(longest, 16), bucket(max_new_tokens, 16)

  def _first_position(self, lengths: np.ndarray) -> np.ndarray:
    return np.ones_like(lengths)  # the start token is position 0

  def _step(self, params, cache, token_B, position_B, enc_BxSxD=None, enc_positions_BxS=None):
    """One decoder step: (logits [B, V], the cache with this token's keys and values). The first step
    passes the encoder's output, whose cross-attention keys and values it adds to the cache."""
    enc_segments_BxS, layers = cache["enc_segments"], cache["layers"]
    token_Bx1 = token_B[:, None]
    logits_Bx1xV, layers = self.model.apply({"params": params}, enc_BxSxD, enc_positions_BxS, enc_segments_BxS,
                                            token_Bx1, position_B[:, None], jnp.ones_like(token_Bx1), cache=layers,
                                            method="decode")
    return logits_Bx1xV[:, 0], {"layers": layers, "enc_segments": enc_segments_BxS}

  def _prefill_fn(self, sampling: SamplingConfig):
    """The encoder over the prompts (right-padded: `lengths` mark their tokens), then the decoder's first
    step on the start token."""
    cfg, model = self.cfg, self.model

    def prefill(params, tokens_BxS, lengths_B, seed, cache_len):
      batch, length = tokens_BxS.shape
      positions_BxS = jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32), tokens_BxS.shape)
      segments_BxS = (positions_BxS < lengths_B[:, None]).astype(jnp.int32)
      enc_BxSxD = model.apply({"params": params}, tokens_BxS, positions_BxS, segments_BxS, method="encode")
      cache = kv_cache.empty(cfg, cfg.num_decoder_layers or cfg.num_layers, batch, cache_len)
      start_B = jnp.full((batch,), cfg.decoder_start_id, jnp.int32)
      logits_BxV, cache = self._step(params, {"layers": cache, "enc_segments": segments_BxS}, start_B,
                                     jnp.zeros_like(start_B), enc_BxSxD, positions_BxS)
      return cache, next_token(logits_BxV, jax.random.fold_in(jax.random.key(seed), 0), sampling)
    return prefill
