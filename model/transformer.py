"""Transformer blocks, the layer stack (scanned or unrolled), and the decoder LM.

`TransformerStack` is architecture-agnostic: a decoder uses it with
`causal=True`; the encoder (model/encoder.py, masked LM) uses `causal=False`; an
encoder-decoder would add a cross-attention block type next to `Block`.
"""

import flax.linen as nn
import jax

from model import lora
from model.attention import Attention
from model.config import ModelConfig
from model.layers import Classifier, Embed, LearnedPositions, Mlp, Norm, last_token, param_init

REMAT_POLICIES = {
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_no_batch": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


class Block(nn.Module):
  """Residual block. Pre-norm (Llama, GPT-2): x + attn(norm(x)), then x + mlp(norm(x)).
  Post-norm (`cfg.norm_position="post"`, BERT): norm(x + attn(x)), then norm(x + mlp(x)).

  With a KV `cache` (this layer's {"k", "v"}) it returns (x, updated cache).
  """
  cfg: ModelConfig
  causal: bool = True

  @nn.compact
  def __call__(self, x_BxTxD, positions_BxT, segments_BxT, cache=None):
    post = self.cfg.norm_position == "post"
    attention_norm, mlp_norm = Norm(self.cfg, name="attention_norm"), Norm(self.cfg, name="mlp_norm")
    h = Attention(self.cfg, causal=self.causal, name="attention")(
        x_BxTxD if post else attention_norm(x_BxTxD), positions_BxT, segments_BxT, cache=cache)
    if cache is not None:
      h, cache = h
    x_BxTxD = x_BxTxD + h
    if post:
      x_BxTxD = attention_norm(x_BxTxD)
      x_BxTxD = mlp_norm(x_BxTxD + Mlp(self.cfg, name="mlp")(x_BxTxD))
    else:
      x_BxTxD = x_BxTxD + Mlp(self.cfg, name="mlp")(mlp_norm(x_BxTxD))
    x_BxTxD = nn.with_logical_constraint(x_BxTxD, ("batch", "length", "act_embed"))
    return x_BxTxD if cache is None else (x_BxTxD, cache)


class _ScanBody(nn.Module):
  """Adapts Block to nn.scan's (carry, x) -> (carry, y) signature."""
  cfg: ModelConfig
  causal: bool = True

  @nn.compact
  def __call__(self, x_BxTxD, positions_BxT, segments_BxT):
    return Block(self.cfg, self.causal, name="block")(x_BxTxD, positions_BxT, segments_BxT), None


class TransformerStack(nn.Module):
  """The layers, scanned (one compiled layer: fast compiles) or unrolled.

  A KV cache (model/kv_cache.py: a {"k", "v"} per layer) needs unrolled layers: in a
  scan every layer's cache would pass through the loop on every decoded token
  (model/decode.py runs scanned checkpoints unrolled; see unstacked_params).
  `scan_unroll` unrolls the scan's program but keeps its stacked parameters.
  """
  cfg: ModelConfig
  causal: bool = True

  @nn.compact
  def __call__(self, x_BxTxD, positions_BxT, segments_BxT, cache=None):
    cfg = self.cfg
    if cfg.scan_layers:
      if cache is not None:
        raise ValueError("a KV cache needs scan_layers=False; model/decode.py unrolls scanned parameters")
      body = _ScanBody
      if cfg.remat != "none":
        body = nn.remat(body, policy=REMAT_POLICIES[cfg.remat], prevent_cse=False)
      stack = nn.scan(
          body,
          variable_axes={"params": 0, lora.COLLECTION: 0},
          split_rngs={"params": True, "dropout": True},
          in_axes=(nn.broadcast, nn.broadcast),
          length=cfg.num_layers,
          unroll=cfg.scan_unroll or cfg.num_layers,
          metadata_params={nn.PARTITION_NAME: "layers"},
      )(cfg, self.causal, name="layers")
      x_BxTxD, _ = stack(x_BxTxD, positions_BxT, segments_BxT)
      return x_BxTxD
    block = Block
    if cfg.remat != "none":
      block = nn.remat(Block, policy=REMAT_POLICIES[cfg.remat])
    new_layers = []
    for i in range(cfg.num_layers):
      layer = block(cfg, self.causal, name=f"layer_{i}")
      if cache is None:
        x_BxTxD = layer(x_BxTxD, positions_BxT, segments_BxT)
      else:
        x_BxTxD, layer_cache = layer(x_BxTxD, positions_BxT, segments_BxT, cache[i])
        new_layers.append(layer_cache)
    if cache is None:
      return x_BxTxD
    return x_BxTxD, new_layers


class DecoderLM(nn.Module):
  """Decoder-only language model: tokens -> next-token logits (float32).

  `segment_ids` (0 = padding) keep packed documents from attending to each
  other; `positions` restart at 0 for every document.

  Decoding (model/decode.py) passes a KV `cache` and gets (logits, cache) back;
  `logits_at_BxK` picks the positions whose logits it needs (the last prompt
  token of each row), so prefill skips the vocabulary projection elsewhere.

  A classifier (`cfg.num_labels` > 0) returns logits [B, C] from each row's
  last non-padding token, which has seen the whole example (as
  LlamaForSequenceClassification's `score`, a projection without bias).

  `return_features` returns (final hidden states [B, T, D], the output
  projection [D, V]) instead of logits, for losses that go over the
  vocabulary in chunks and never hold [B, T, V] at once.
  """
  cfg: ModelConfig

  @nn.compact
  def __call__(self, tokens_BxT, positions_BxT, segments_BxT, cache=None, logits_at_BxK=None,
               return_features=False):
    cfg = self.cfg
    embed = Embed(cfg, name="embed")
    x_BxTxD = embed(tokens_BxT)
    if cfg.position == "learned":
      x_BxTxD = x_BxTxD + LearnedPositions(cfg, name="positions")(positions_BxT)
    x_BxTxD = TransformerStack(cfg, causal=True, name="decoder")(x_BxTxD, positions_BxT, segments_BxT, cache)
    if cfg.num_labels:
      x_BxD = Norm(cfg, name="final_norm")(last_token(x_BxTxD, segments_BxT))
      return Classifier(cfg, use_bias=False, name="score")(x_BxD)
    if cache is not None:
      x_BxTxD, cache = x_BxTxD
    if logits_at_BxK is not None:
      x_BxTxD = jax.numpy.take_along_axis(x_BxTxD, logits_at_BxK[:, :, None], axis=1)
    x_BxTxD = Norm(cfg, name="final_norm")(x_BxTxD)
    if cfg.tie_embeddings:
      w_DxV = embed.table_VxD.astype(cfg.compute_dtype).T
    else:
      w_DxV = self.param("lm_head", param_init(cfg, ("embed", "vocab")), (cfg.d_model, cfg.vocab_size),
                         cfg.weight_dtype).astype(cfg.compute_dtype)
    if return_features:
      return x_BxTxD, w_DxV
    logits_BxTxV = jax.numpy.einsum("btd,dv->btv", x_BxTxD, w_DxV, preferred_element_type=jax.numpy.float32)
    logits_BxTxV = nn.with_logical_constraint(logits_BxTxV, ("batch", "length", "act_vocab"))
    return logits_BxTxV if cache is None else (logits_BxTxV, cache)


def unstacked_params(params: dict, num_layers: int) -> dict:
  """Scanned-layer parameters ([layers, ...] under decoder/layers/block) in the unrolled
  layout (decoder/layer_0, layer_1, ...)."""
  decoder = dict(params["decoder"])
  stacked = decoder.pop("layers")["block"]
  for i in range(num_layers):
    decoder[f"layer_{i}"] = jax.tree.map(lambda w, i=i: w[i], stacked)
  return {**params, "decoder": decoder}
