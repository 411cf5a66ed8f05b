"""Generation from an encoder-decoder (T5): the encoder reads each prompt once, the decoder writes.

The prefill encodes the (right-padded) prompts, projects every decoder layer's
cross-attention keys and values from the encoder's output once, and runs the
decoder's first step on the start token (config.model.decoder_start_id). Each
later step feeds one token through the decoder alone: its self-attention over a
KV cache, its cross-attention over the stored encoder keys and values (padding
masked by the prompts' lengths). The batching, bucketing, chunked decode loop,
seeding and stop handling are model/decode.py's Decoder's.

The cache is {"k", "v"}: [L, B, K, slots, H] (decoder self-attention),
{"cross_k", "cross_v"}: [L, B, K, S, H] and "enc_segments": [B, S] (which
encoder positions hold prompt tokens).
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec

from errors import UserError
from model import families, t5
from model.decode import CACHE_AXES, DONE, Decoder, bucket
from model.sampling import SamplingConfig, next_token
from parallel import sharding


class Seq2SeqDecoder(Decoder):
  """Decoder's interface for an encoder-decoder: `prompts` are the encoder's inputs."""

  def __init__(self, cfg, mesh, chunk: int = 64):
    self.cfg, self.mesh, self.chunk = cfg, mesh, chunk
    self.model = families.build(dataclasses.replace(cfg, scan_layers=False))
    self._unstack = None
    if cfg.scan_layers:  # one unrolled copy of the weights per generate call, made before the first token
      _, unrolled_sh = sharding.abstract_variables(self.model, mesh)
      self._unstack = jax.jit(lambda p: t5.unstacked_params(p, cfg), out_shardings=unrolled_sh)
    self._batch_multiple = mesh.shape["data"] * mesh.shape["fsdp"]
    self._jitted, self._compiled = {}, {}

  def _shardings(self):
    named = lambda spec: sharding.logical_to_sharding(spec, self.mesh)  # noqa: E731
    cache = {name: CACHE_AXES for name in ("k", "v", "cross_k", "cross_v")}
    return dict(cache=named({**cache, "enc_segments": PartitionSpec("batch", "length")}),
                rows=named(PartitionSpec("batch")), tokens=sharding.batch_sharding(self.mesh),
                replicated=sharding.replicated(self.mesh))

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

  def _compile(self, sampling: SamplingConfig, stop_ids: tuple[int, ...], param_sh):
    cfg, model = self.cfg, self.model
    sh = self._shardings()
    stop_S = jnp.asarray(stop_ids or (-2,), jnp.int32)

    def step(params, cache, token_Bx1, position_Bx1, enc_BxSxD=None, enc_positions_BxS=None):
      """One decoder step: (logits [B, V], the cache with this token's keys and values)."""
      enc_segments_BxS = cache["enc_segments"]
      layers = {k: v for k, v in cache.items() if k != "enc_segments"}
      logits_Bx1xV, layers = model.apply({"params": params}, enc_BxSxD, enc_positions_BxS, enc_segments_BxS,
                                         token_Bx1, position_Bx1, jnp.ones_like(token_Bx1), cache=layers,
                                         method="decode")
      return logits_Bx1xV[:, 0], {**layers, "enc_segments": enc_segments_BxS}

    def prefill(params, tokens_BxS, lengths_B, seed, cache_len):
      batch, length = tokens_BxS.shape
      positions_BxS = jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32), tokens_BxS.shape)
      segments_BxS = (positions_BxS < lengths_B[:, None]).astype(jnp.int32)
      enc_BxSxD = model.apply({"params": params}, tokens_BxS, positions_BxS, segments_BxS, method="encode")
      shape = (cfg.num_decoder_layers or cfg.num_layers, batch, cfg.num_kv_heads, cache_len, cfg.head_dim)
      cache = {name: jnp.zeros(shape, cfg.compute_dtype) for name in ("k", "v")}
      start_Bx1 = jnp.full((batch, 1), cfg.decoder_start_id, jnp.int32)
      logits_BxV, cache = step(params, {**cache, "enc_segments": segments_BxS}, start_Bx1,
                               jnp.zeros_like(start_Bx1), enc_BxSxD, positions_BxS)
      return cache, next_token(logits_BxV, jax.random.fold_in(jax.random.key(seed), 0), sampling)

    def decode_chunk(params, cache, token_B, position_B, done_B, first_index, limit, seed):
      """Emits up to `limit` tokens (fewer once every row is done); returns them [B, chunk]."""
      out_BxC = jnp.full((token_B.shape[0], self.chunk), DONE, jnp.int32)

      def body(carry):
        cache, token_B, position_B, done_B, out_BxC, i = carry
        out_BxC = out_BxC.at[:, i].set(jnp.where(done_B, DONE, token_B))
        done_B = done_B | jnp.isin(token_B, stop_S)
        logits_BxV, cache = step(params, cache, token_B[:, None], position_B[:, None])
        token_B = next_token(logits_BxV, jax.random.fold_in(jax.random.key(seed), first_index + i + 1), sampling)
        return cache, token_B, position_B + 1, done_B, out_BxC, i + 1

      def keep_going(carry):
        return (carry[-1] < limit) & ~jnp.all(carry[3])

      return jax.lax.while_loop(keep_going, body, (cache, token_B, position_B, done_B, out_BxC, jnp.int32(0)))

    rows, rep = sh["rows"], sh["replicated"]
    return dict(
        prefill=jax.jit(prefill, static_argnums=(4,), in_shardings=(param_sh, sh["tokens"], rows, rep),
                        out_shardings=(sh["cache"], rep)),
        decode=jax.jit(decode_chunk, in_shardings=(param_sh, sh["cache"], rows, rows, rows, rep, rep, rep),
                       out_shardings=(sh["cache"], rep, rep, rep, rep, rep), donate_argnums=(1,)),
    )
