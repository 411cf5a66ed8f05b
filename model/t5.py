"""The encoder-decoder family: T5 (original: ReLU MLP, tied embeddings) and T5 v1.1 / Flan-T5 (gated
GELU, untied head), on the decoder's pieces (Attention, Mlp, Norm: the same logical axes and rules).

What T5 has that the other families have not: a relative position bias, a learned scalar per head and
bucket of key-minus-query distance added to the attention logits (log-spaced buckets; both directions
in the encoder, only the past in the decoder), computed once per stack and shared by its layers; no
1/sqrt(head_dim) scaling of the logits; cross-attention from each decoder layer to the encoder's
output; RMSNorm without a bias (cfg.norm="rmsnorm"); with tied embeddings the decoder's output is
scaled by d_model^-0.5 before the shared table projects it.

Inputs are packed rows on both sides: per-example positions (from 0) and segment ids (0 marks
padding). An encoder row and its decoder row hold the same examples under the same segment ids, so
cross-attention never looks across examples.

    model.apply(v, enc_tokens, enc_positions, enc_segments, tokens, positions, segments)  # logits [B,T,V] f32
    model.apply(v, enc_tokens, enc_positions, enc_segments, method="encode")             # [B,S,D]
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from model.attention import Attention
from model.config import ModelConfig
from model import kv_cache, lora
from model.layers import Embed, Mlp, Norm, param_init
from model.transformer import REMAT_POLICIES


def relative_bucket(relative_BxTxS, bidirectional: bool, num_buckets: int, max_distance: int):
  """T5's bucket of each key-minus-query distance: exact below half the buckets (of a direction),
  log-spaced up to max_distance, and the last bucket past it. Bidirectional splits the buckets
  between keys after and before the query; otherwise every future key shares bucket 0."""
  bucket = jnp.zeros_like(relative_BxTxS)
  if bidirectional:
    num_buckets //= 2
    bucket = bucket + (relative_BxTxS > 0).astype(relative_BxTxS.dtype) * num_buckets
    distance = jnp.abs(relative_BxTxS)
  else:
    distance = jnp.maximum(-relative_BxTxS, 0)
  exact = num_buckets // 2
  scaled = jnp.log(jnp.maximum(distance, 1).astype(jnp.float32) / exact) / jnp.log(max_distance / exact)
  far = jnp.minimum(exact + (scaled * (num_buckets - exact)).astype(relative_BxTxS.dtype), num_buckets - 1)
  return bucket + jnp.where(distance < exact, distance, far)


class RelativeBias(nn.Module):
  """The bias [B, N, T, S] (float32) of every query-key pair, from the pair's positions."""
  cfg: ModelConfig
  bidirectional: bool

  @nn.compact
  def __call__(self, q_positions_BxT, k_positions_BxS):
    cfg = self.cfg
    table = self.param("table", param_init(cfg, (None, "heads")), (cfg.relative_buckets, cfg.num_heads),
                       cfg.weight_dtype)
    relative_BxTxS = k_positions_BxS[:, None, :] - q_positions_BxT[:, :, None]
    bucket_BxTxS = relative_bucket(relative_BxTxS, self.bidirectional, cfg.relative_buckets,
                                   cfg.relative_max_distance)
    bias_BxTxSxN = jnp.take(table.astype(jnp.float32), bucket_BxTxS, axis=0)
    return bias_BxTxSxN.transpose(0, 3, 1, 2)


class EncoderBlock(nn.Module):
  """Pre-norm: x + self_attention(norm(x)) with the bias, then x + mlp(norm(x))."""
  cfg: ModelConfig

  @nn.compact
  def __call__(self, x_BxSxD, positions_BxS, segments_BxS, bias_BxNxSxS):
    cfg = self.cfg
    h = Attention(cfg, causal=False, name="attention")(
        Norm(cfg, name="attention_norm")(x_BxSxD), positions_BxS, segments_BxS, bias_BxNxTxS=bias_BxNxSxS)
    x_BxSxD = x_BxSxD + h
    x_BxSxD = x_BxSxD + Mlp(cfg, name="mlp")(Norm(cfg, name="mlp_norm")(x_BxSxD))
    return nn.with_logical_constraint(x_BxSxD, ("batch", "length", "act_embed"))


class DecoderBlock(nn.Module):
  """Pre-norm: causal self-attention with the bias, cross-attention to the encoder, then the MLP.

  Decoding passes this layer's `cache`, {"k", "v"} (self-attention, [B, K, slots, H]) and, after the
  first step, {"cross_k", "cross_v"} (the encoder's keys and values, [B, K, S, H], projected on the
  first step from `enc_BxSxD`, which later steps leave None); it returns (x, updated cache).
  """
  cfg: ModelConfig

  @nn.compact
  def __call__(self, x_BxTxD, positions_BxT, segments_BxT, bias_BxNxTxT, enc_BxSxD, enc_positions_BxS,
               enc_segments_BxS, cache=None):
    cfg = self.cfg
    self_cache = cross_cache = None
    if cache is not None:
      self_cache = {"k": cache["k"], "v": cache["v"]}
      cross_cache = {"k": cache["cross_k"], "v": cache["cross_v"]} if "cross_k" in cache else {}
    h = Attention(cfg, causal=True, name="attention")(
        Norm(cfg, name="attention_norm")(x_BxTxD), positions_BxT, segments_BxT, bias_BxNxTxS=bias_BxNxTxT,
        cache=self_cache)
    if cache is not None:
      h, self_cache = h
    x_BxTxD = x_BxTxD + h
    h = Attention(cfg, causal=False, name="cross_attention")(
        Norm(cfg, name="cross_attention_norm")(x_BxTxD), positions_BxT, segments_BxT, kv_x=enc_BxSxD,
        kv_positions=enc_positions_BxS, kv_segments=enc_segments_BxS, cache=cross_cache,
        cross_cached=cache is not None)
    if cache is not None:
      h, cross_cache = h
    x_BxTxD = x_BxTxD + h
    x_BxTxD = x_BxTxD + Mlp(cfg, name="mlp")(Norm(cfg, name="mlp_norm")(x_BxTxD))
    x_BxTxD = nn.with_logical_constraint(x_BxTxD, ("batch", "length", "act_embed"))
    if cache is None:
      return x_BxTxD
    return x_BxTxD, {**self_cache, "cross_k": cross_cache["k"], "cross_v": cross_cache["v"]}


def _maybe_remat(cfg: ModelConfig, block, scanned: bool = False):
  if cfg.remat == "none":
    return block
  return nn.remat(block, policy=REMAT_POLICIES[cfg.remat], prevent_cse=not scanned)


class _EncoderScanBody(nn.Module):
  """EncoderBlock in nn.scan's (carry, x) -> (carry, y) form."""
  cfg: ModelConfig

  @nn.compact
  def __call__(self, x_BxSxD, *args):
    return EncoderBlock(self.cfg, name="block")(x_BxSxD, *args), None


class _DecoderScanBody(nn.Module):
  """DecoderBlock in nn.scan's form (training and scoring: decoding runs unrolled, see unstacked_params)."""
  cfg: ModelConfig

  @nn.compact
  def __call__(self, x_BxTxD, *args):
    return DecoderBlock(self.cfg, name="block")(x_BxTxD, *args), None


def _scanned(cfg: ModelConfig, body, num_layers: int, num_inputs: int):
  """`body` scanned over `num_layers` layers: one compiled layer, parameters stacked on a "layers" axis."""
  return nn.scan(_maybe_remat(cfg, body, scanned=True), variable_axes={"params": 0, lora.COLLECTION: 0},
                 split_rngs={"params": True, "dropout": True}, in_axes=(nn.broadcast,) * num_inputs,
                 length=num_layers, metadata_params={nn.PARTITION_NAME: "layers"})(cfg)


def unstacked_params(params: dict, cfg: ModelConfig) -> dict:
  """Scanned-layer parameters (encoder_layers/block, decoder_layers/block: [layers, ...]) in the unrolled
  layout (encoder_layers_0, ..., decoder_layers_0, ...), which cached decoding runs."""
  out = {k: v for k, v in params.items() if k not in ("encoder_layers", "decoder_layers")}
  for stack, n in (("encoder", cfg.num_layers), ("decoder", cfg.num_decoder_layers or cfg.num_layers)):
    stacked = params[f"{stack}_layers"]["block"]
    for i in range(n):
      out[f"{stack}_layers_{i}"] = jax.tree.map(lambda w, i=i: w[i], stacked)
  return out


class EncoderDecoderModel(nn.Module):
  """T5: `encode` the inputs once, then `decode` target tokens against them; `__call__` does both."""
  cfg: ModelConfig

  def setup(self):
    cfg = self.cfg
    self.embed = Embed(cfg)  # shared by the encoder, the decoder and (tied) the output head
    self.encoder_bias = RelativeBias(cfg, bidirectional=True)
    self.decoder_bias = RelativeBias(cfg, bidirectional=False)
    num_decoder_layers = cfg.num_decoder_layers or cfg.num_layers
    if cfg.scan_layers:  # params encoder_layers/block, decoder_layers/block, stacked over the layers
      self.encoder_layers = _scanned(cfg, _EncoderScanBody, cfg.num_layers, 3)
      self.decoder_layers = _scanned(cfg, _DecoderScanBody, num_decoder_layers, 6)
    else:  # params encoder_layers_0, ..., decoder_layers_0, ...
      encoder_block, decoder_block = _maybe_remat(cfg, EncoderBlock), _maybe_remat(cfg, DecoderBlock)
      self.encoder_layers = [encoder_block(cfg) for _ in range(cfg.num_layers)]
      self.decoder_layers = [decoder_block(cfg) for _ in range(num_decoder_layers)]
    self.encoder_norm = Norm(cfg)
    self.decoder_norm = Norm(cfg)
    if not cfg.tie_embeddings:
      self.lm_head = self.param("lm_head", param_init(cfg, ("embed", "vocab")), (cfg.d_model, cfg.vocab_size),
                                cfg.weight_dtype)

  def encode(self, enc_tokens_BxS, enc_positions_BxS, enc_segments_BxS):
    """The encoder's output [B, S, D] (transformers' encoder last_hidden_state)."""
    x_BxSxD = self.embed(enc_tokens_BxS)
    bias_BxNxSxS = self.encoder_bias(enc_positions_BxS, enc_positions_BxS)
    if self.cfg.scan_layers:
      x_BxSxD, _ = self.encoder_layers(x_BxSxD, enc_positions_BxS, enc_segments_BxS, bias_BxNxSxS)
      return self.encoder_norm(x_BxSxD)
    for layer in self.encoder_layers:
      x_BxSxD = layer(x_BxSxD, enc_positions_BxS, enc_segments_BxS, bias_BxNxSxS)
    return self.encoder_norm(x_BxSxD)

  def decode(self, enc_BxSxD, enc_positions_BxS, enc_segments_BxS, tokens_BxT, positions_BxT, segments_BxT,
             cache=None):
    """Logits [B, T, V] (float32) of the next target token at every decoder position.

    Generation (model/decode_seq2seq.py) passes a `cache` (model/kv_cache.py), per layer {"k", "v"}:
    [B, K, slots, H] and, after the first step, {"cross_k", "cross_v"}: [B, K, S, H], and gets (logits, cache) back; the
    first step computes the cross-attention keys and values from `enc_BxSxD`, later steps pass None.
    """
    cfg = self.cfg
    x_BxTxD = self.embed(tokens_BxT)
    if cache is None:
      bias_BxNxTxT = self.decoder_bias(positions_BxT, positions_BxT)
    else:  # every cache slot is a key position; the slots after a query's position are masked
      slots = kv_cache.slots(cache)
      bias_BxNxTxT = self.decoder_bias(positions_BxT, jnp.arange(slots, dtype=positions_BxT.dtype)[None, :])
    new_cache = []
    if cfg.scan_layers:
      if cache is not None:
        raise ValueError("a KV cache needs unrolled layers; model/decode_seq2seq.py unstacks scanned parameters")
      x_BxTxD, _ = self.decoder_layers(x_BxTxD, positions_BxT, segments_BxT, bias_BxNxTxT, enc_BxSxD,
                                       enc_positions_BxS, enc_segments_BxS)
    for i, layer in enumerate([] if cfg.scan_layers else self.decoder_layers):
      if cache is None:
        x_BxTxD = layer(x_BxTxD, positions_BxT, segments_BxT, bias_BxNxTxT, enc_BxSxD, enc_positions_BxS,
                        enc_segments_BxS)
      else:
        x_BxTxD, layer_cache = layer(x_BxTxD, positions_BxT, segments_BxT, bias_BxNxTxT, enc_BxSxD,
                                     enc_positions_BxS, enc_segments_BxS, cache[i])
        new_cache.append(layer_cache)
    x_BxTxD = self.decoder_norm(x_BxTxD)
    if cfg.tie_embeddings:
      logits_BxTxV = self.embed.attend(x_BxTxD * jnp.asarray(cfg.d_model ** -0.5, x_BxTxD.dtype))
    else:
      logits_BxTxV = jnp.einsum("btd,dv->btv", x_BxTxD, self.lm_head.astype(cfg.compute_dtype),
                                preferred_element_type=jnp.float32)
    logits_BxTxV = nn.with_logical_constraint(logits_BxTxV, ("batch", "length", "act_vocab"))
    if cache is None:
      return logits_BxTxV
    return logits_BxTxV, new_cache

  def __call__(self, enc_tokens_BxS, enc_positions_BxS, enc_segments_BxS, tokens_BxT, positions_BxT,
               segments_BxT):
    enc_BxSxD = self.encode(enc_tokens_BxS, enc_positions_BxS, enc_segments_BxS)
    return self.decode(enc_BxSxD, enc_positions_BxS, enc_segments_BxS, tokens_BxT, positions_BxT,
                       segments_BxT)


