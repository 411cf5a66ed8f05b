"""Multi-head attention with grouped-query heads, RoPE and packed-document masks.

One module serves every architecture: `causal=False` gives an encoder
(BERT-style) layer, and passing `kv_x` with its own segment ids gives T5-style
cross-attention.

Decoding passes this layer's KV cache, `{"k", "v"}: [B, K, S, H]`, where slot s
holds the key/value of the token at position s. New keys/values are written at
their positions and each query attends to every slot at or before its own
position, so rows of a batch can sit at different positions (prompts of
different lengths, right-padded): a padded slot is overwritten before any query
reaches it.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from model.config import ModelConfig
from model import lora
from model.layers import param_init, zeros_init
from model.rope import apply_rope


def attention_implementation(cfg: ModelConfig) -> str:
  """"auto": cuDNN flash attention on GPU in bf16/fp16 (Ampere or newer), else XLA.

  jax's own default (implementation=None) keeps XLA whenever a mask is given,
  which halves GPT-2 training throughput on an H100.
  """
  if cfg.attention_impl != "auto":
    return cfg.attention_impl
  half = cfg.compute_dtype in (jnp.bfloat16, jnp.float16)
  return "cudnn" if half and jax.default_backend() == "gpu" else "xla"


def segment_mask(q_segments_BxT, kv_segments_BxS):
  """True where a query may look at a key: same document. Shape [B, 1, T, S]."""
  return (q_segments_BxT[:, None, :, None] == kv_segments_BxS[:, None, None, :])


class Attention(nn.Module):
  cfg: ModelConfig
  causal: bool = True

  def _project(self, name, target, x_BxTxD, heads, axes):
    cfg = self.cfg
    w = self.param(name, param_init(cfg, ("embed", axes, "head_dim")),
                   (cfg.d_model, heads, cfg.head_dim), cfg.weight_dtype)
    y = jnp.einsum("btd,dnh->btnh", x_BxTxD, w.astype(cfg.compute_dtype))
    y = y + lora.update(self, cfg.lora, target, x_BxTxD, (cfg.d_model,), ("embed",), (heads, cfg.head_dim),
                        (axes, "head_dim"), cfg.compute_dtype)
    if cfg.use_bias:
      b = self.param(name + "_bias", zeros_init((axes, "head_dim")), (heads, cfg.head_dim), cfg.weight_dtype)
      y = y + b.astype(cfg.compute_dtype)
    return nn.with_logical_constraint(y, ("batch", "length", "act_" + axes, "head_dim"))

  @nn.compact
  def __call__(self, x_BxTxD, positions_BxT, segments_BxT, kv_x=None, kv_positions=None, kv_segments=None,
               cache=None, bias_BxNxTxS=None, cross_cached: bool = False):
    """Attention output [B, T, D]; with `cache`, (output, updated cache). `bias_BxNxTxS` is added to
    the logits (T5's relative position bias; its batch axis may be 1). T5 does not scale the logits
    by 1/sqrt(head_dim): its initialisation folds that into the query weights."""
    cfg = self.cfg
    self_attention = kv_x is None and not cross_cached
    kv_x_BxSxD = x_BxTxD if self_attention else kv_x
    kv_positions_BxS = positions_BxT if self_attention else kv_positions
    kv_segments_BxS = segments_BxT if self_attention else kv_segments

    q_BxTxNxH = self._project("query", "q", x_BxTxD, cfg.num_heads, "heads")
    if not (cross_cached and kv_x is None):  # cached cross-attention after its first step: keys in `cache`
      k_BxSxKxH = self._project("key", "k", kv_x_BxSxD, cfg.num_kv_heads, "kv_heads")
      v_BxSxKxH = self._project("value", "v", kv_x_BxSxD, cfg.num_kv_heads, "kv_heads")
    if cfg.position == "rope":
      q_BxTxNxH = apply_rope(q_BxTxNxH, positions_BxT, cfg)
      k_BxSxKxH = apply_rope(k_BxSxKxH, kv_positions_BxS, cfg)
    scale = 1.0 if cfg.position == "relative" else None

    if cache is None:
      out_BxTxNxH = jax.nn.dot_product_attention(
          q_BxTxNxH, k_BxSxKxH, v_BxSxKxH,
          bias=None if bias_BxNxTxS is None else bias_BxNxTxS.astype(q_BxTxNxH.dtype),
          mask=segment_mask(segments_BxT, kv_segments_BxS),
          scale=scale,
          is_causal=self.causal and self_attention,
          implementation=attention_implementation(cfg),
      )
    elif not cross_cached:  # this token's key and value go into its slot; it sees slots 0..position
      cache = write_cache(cache, k_BxSxKxH, v_BxSxKxH, positions_BxT)
      slots = cache["k"].shape[2]
      visible_BxTxS = jnp.arange(slots)[None, None, :] <= positions_BxT[:, :, None]
      out_BxTxNxH = cached_attention(q_BxTxNxH, cache["k"], cache["v"], visible_BxTxS, bias_BxNxTxS, scale)
    else:  # cross-attention: the encoder's keys and values, projected once (kv_x given) and then reused
      if kv_x is not None:
        axes = ("batch", "act_kv_heads", "length", "head_dim")
        cache = {name: nn.with_logical_constraint(x.transpose(0, 2, 1, 3), axes)
                 for name, x in (("k", k_BxSxKxH), ("v", v_BxSxKxH))}
      visible_BxTxS = jnp.broadcast_to((kv_segments_BxS != 0)[:, None, :],
                                       (q_BxTxNxH.shape[0], q_BxTxNxH.shape[1], kv_segments_BxS.shape[1]))
      out_BxTxNxH = cached_attention(q_BxTxNxH, cache["k"], cache["v"], visible_BxTxS, None, scale)
    out_BxTxNxH = nn.with_logical_constraint(out_BxTxNxH, ("batch", "length", "act_heads", "head_dim"))

    out_std = cfg.init_std / (2 * cfg.num_layers) ** 0.5  # GPT-2 residual scaling
    w_out = self.param("out", param_init(cfg, ("heads", "head_dim", "embed"), std=out_std),
                       (cfg.num_heads, cfg.head_dim, cfg.d_model), cfg.weight_dtype)
    if cache is None:
      y_BxTxD = jnp.einsum("btnh,nhd->btd", out_BxTxNxH, w_out.astype(cfg.compute_dtype))
    else:  # decoding: one [B, T, N*H] x [N*H, D] matmul. Contracting two axes at once let XLA:CPU pick a
      # layout that transposed the weight on every token (scripts/benchmark_decode.py: 15% of a step);
      # training keeps the einsum, whose numerics the reference/precomputed equivalence tests pin.
      batch, length = out_BxTxNxH.shape[:2]
      y_BxTxD = jnp.einsum("btf,fd->btd", out_BxTxNxH.reshape(batch, length, -1),
                           w_out.astype(cfg.compute_dtype).reshape(-1, cfg.d_model))
    y_BxTxD = y_BxTxD + lora.update(self, cfg.lora, "o", out_BxTxNxH, (cfg.num_heads, cfg.head_dim),
                                    ("heads", "head_dim"), (cfg.d_model,), ("embed",), cfg.compute_dtype)
    if cfg.use_bias:
      y_BxTxD = y_BxTxD + self.param("out_bias", zeros_init(("embed",)), (cfg.d_model,),
                                     cfg.weight_dtype).astype(cfg.compute_dtype)
    y_BxTxD = nn.with_logical_constraint(y_BxTxD, ("batch", "length", "act_embed"))
    return y_BxTxD if cache is None else (y_BxTxD, cache)


def write_cache(cache, k_BxTxKxH, v_BxTxKxH, positions_BxT):
  """Stores each new key/value in the slot of its position (rows may differ) of the [B, K, S, H] cache."""
  rows_Bx1 = jnp.arange(positions_BxT.shape[0])[:, None]
  axes = ("batch", "act_kv_heads", "length", "head_dim")
  return {name: nn.with_logical_constraint(
              cache[name].at[rows_Bx1, :, positions_BxT].set(new.astype(cache[name].dtype), mode="drop"), axes)
          for name, new in (("k", k_BxTxKxH), ("v", v_BxTxKxH))}


def cached_attention(q_BxTxNxH, k_BxKxSxH, v_BxKxSxH, visible_BxTxS, bias_BxNxTxS=None, scale=None):
  """Grouped-query attention of new tokens over a KV cache, where `visible_BxTxS` allows; `bias` (T5's
  relative positions) is added to the logits, which are scaled by `scale` (None: 1/sqrt(head_dim)).

  The cache is [B, K, S, H], batch and head dims leading, so both matmuls
  read it in place: with [B, S, K, H] XLA copies a transposed cache on every
  decoded token.
  """
  batch, length, heads, head_dim = q_BxTxNxH.shape
  kv_heads, slots = k_BxKxSxH.shape[1], k_BxKxSxH.shape[2]
  groups = heads // kv_heads
  scale = 1.0 / jnp.sqrt(jnp.float32(head_dim)) if scale is None else scale
  q_BxKxGxTxH = q_BxTxNxH.reshape(batch, length, kv_heads, groups, head_dim).transpose(0, 2, 3, 1, 4)
  scores_BxKxGxTxS = jnp.einsum("bkgth,bksh->bkgts", q_BxKxGxTxH, k_BxKxSxH.astype(q_BxTxNxH.dtype),
                                preferred_element_type=jnp.float32) * scale
  if bias_BxNxTxS is not None:
    scores_BxKxGxTxS = scores_BxKxGxTxS + bias_BxNxTxS.astype(jnp.float32).reshape(
        bias_BxNxTxS.shape[0], kv_heads, groups, length, slots)
  scores_BxKxGxTxS = jnp.where(visible_BxTxS[:, None, None], scores_BxKxGxTxS, jnp.finfo(jnp.float32).min)
  probs_BxKxGxTxS = jax.nn.softmax(scores_BxKxGxTxS, axis=-1).astype(q_BxTxNxH.dtype)
  out_BxKxGxTxH = jnp.einsum("bkgts,bksh->bkgth", probs_BxKxGxTxS, v_BxKxSxH.astype(q_BxTxNxH.dtype))
  return out_BxKxGxTxH.transpose(0, 3, 1, 2, 4).reshape(batch, length, heads, head_dim)
