"""Transformer blocks, the layer stack (scanned or unrolled), and the decoder LM.

`TransformerStack` is architecture-agnostic: a decoder uses it with
`causal=True`; an encoder (masked LM) would use `causal=False`; an
encoder-decoder would add a cross-attention block type next to `Block`.
"""

import flax.linen as nn
import jax

from model import lora
from model.attention import Attention
from model.config import ModelConfig
from model.layers import Embed, LearnedPositions, Mlp, Norm, param_init

REMAT_POLICIES = {
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_no_batch": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


class Block(nn.Module):
  """Pre-norm residual block: x + attn(norm(x)), then x + mlp(norm(x))."""
  cfg: ModelConfig
  causal: bool = True

  @nn.compact
  def __call__(self, x_BxTxD, positions_BxT, segments_BxT):
    h = Attention(self.cfg, causal=self.causal, name="attention")(
        Norm(self.cfg, name="attention_norm")(x_BxTxD), positions_BxT, segments_BxT)
    x_BxTxD = x_BxTxD + h
    x_BxTxD = x_BxTxD + Mlp(self.cfg, name="mlp")(Norm(self.cfg, name="mlp_norm")(x_BxTxD))
    return nn.with_logical_constraint(x_BxTxD, ("batch", "length", "act_embed"))


class _ScanBody(nn.Module):
  """Adapts Block to nn.scan's (carry, x) -> (carry, y) signature."""
  cfg: ModelConfig
  causal: bool = True

  @nn.compact
  def __call__(self, x_BxTxD, positions_BxT, segments_BxT):
    return Block(self.cfg, self.causal, name="block")(x_BxTxD, positions_BxT, segments_BxT), None


class TransformerStack(nn.Module):
  cfg: ModelConfig
  causal: bool = True

  @nn.compact
  def __call__(self, x_BxTxD, positions_BxT, segments_BxT):
    cfg = self.cfg
    if cfg.scan_layers:
      body = _ScanBody
      if cfg.remat != "none":
        body = nn.remat(body, policy=REMAT_POLICIES[cfg.remat], prevent_cse=False)
      stack = nn.scan(
          body,
          variable_axes={"params": 0, lora.COLLECTION: 0},
          split_rngs={"params": True, "dropout": True},
          in_axes=(nn.broadcast, nn.broadcast),
          length=cfg.num_layers,
          metadata_params={nn.PARTITION_NAME: "layers"},
      )(cfg, self.causal, name="layers")
      x_BxTxD, _ = stack(x_BxTxD, positions_BxT, segments_BxT)
      return x_BxTxD
    block = Block
    if cfg.remat != "none":
      block = nn.remat(Block, policy=REMAT_POLICIES[cfg.remat])
    for i in range(cfg.num_layers):
      x_BxTxD = block(cfg, self.causal, name=f"layer_{i}")(x_BxTxD, positions_BxT, segments_BxT)
    return x_BxTxD


class DecoderLM(nn.Module):
  """Decoder-only language model: tokens -> next-token logits (float32).

  `segment_ids` (0 = padding) keep packed documents from attending to each
  other; `positions` restart at 0 for every document.
  """
  cfg: ModelConfig

  @nn.compact
  def __call__(self, tokens_BxT, positions_BxT, segments_BxT):
    cfg = self.cfg
    embed = Embed(cfg, name="embed")
    x_BxTxD = embed(tokens_BxT)
    if cfg.position == "learned":
      x_BxTxD = x_BxTxD + LearnedPositions(cfg, name="positions")(positions_BxT)
    x_BxTxD = TransformerStack(cfg, causal=True, name="decoder")(x_BxTxD, positions_BxT, segments_BxT)
    x_BxTxD = Norm(cfg, name="final_norm")(x_BxTxD)
    if cfg.tie_embeddings:
      logits_BxTxV = embed.attend(x_BxTxD)
    else:
      w = self.param("lm_head", param_init(cfg, ("embed", "vocab")), (cfg.d_model, cfg.vocab_size),
                     cfg.weight_dtype)
      logits_BxTxV = jax.numpy.einsum("btd,dv->btv", x_BxTxD, w.astype(cfg.compute_dtype),
                                      preferred_element_type=jax.numpy.float32)
    return nn.with_logical_constraint(logits_BxTxV, ("batch", "length", "act_vocab"))
