"""Building blocks shared by every architecture: norms, embeddings, MLPs.

Parameters carry logical axis names (`embed`, `mlp`, `vocab`, ...); the rules
table in `parallel/rules.py` decides how those map onto the device mesh.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from model import lora
from model.config import ModelConfig


def param_init(cfg: ModelConfig, axes: tuple, std: float | None = None):
  """Normal init tagged with logical axis names."""
  return nn.with_logical_partitioning(nn.initializers.normal(std or cfg.init_std), axes)


def zeros_init(axes: tuple):
  return nn.with_logical_partitioning(nn.initializers.zeros, axes)


def ones_init(axes: tuple):
  return nn.with_logical_partitioning(nn.initializers.ones, axes)


class Norm(nn.Module):
  """RMSNorm or LayerNorm over the last axis, computed in float32."""
  cfg: ModelConfig

  @nn.compact
  def __call__(self, x_BxTxD):
    cfg = self.cfg
    x = x_BxTxD.astype(jnp.float32)
    scale = self.param("scale", ones_init(("embed",)), (cfg.d_model,), cfg.weight_dtype)
    if cfg.norm == "rmsnorm":
      y = x * jax.lax.rsqrt(jnp.mean(x * x, axis=-1, keepdims=True) + cfg.norm_eps)
      y = y * scale.astype(jnp.float32)
    else:
      bias = self.param("bias", zeros_init(("embed",)), (cfg.d_model,), cfg.weight_dtype)
      mean = jnp.mean(x, axis=-1, keepdims=True)
      var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
      y = (x - mean) * jax.lax.rsqrt(var + cfg.norm_eps)
      y = y * scale.astype(jnp.float32) + bias.astype(jnp.float32)
    return y.astype(cfg.compute_dtype)


class Embed(nn.Module):
  """Token embedding; `attend` reuses the table as the output head when tied."""
  cfg: ModelConfig

  def setup(self):
    cfg = self.cfg
    self.table_VxD = self.param("table", param_init(cfg, ("vocab", "embed")),
                                (cfg.vocab_size, cfg.d_model), cfg.weight_dtype)

  def __call__(self, tokens_BxT):
    x_BxTxD = jnp.take(self.table_VxD, tokens_BxT, axis=0).astype(self.cfg.compute_dtype)
    return nn.with_logical_constraint(x_BxTxD, ("batch", "length", "act_embed"))

  def attend(self, x_BxTxD):
    table = self.table_VxD.astype(self.cfg.compute_dtype)
    return jnp.einsum("btd,vd->btv", x_BxTxD, table, preferred_element_type=jnp.float32)


class LearnedPositions(nn.Module):
  """GPT-2 absolute position embeddings, indexed by per-document positions.

  `offset` rows come before position 0 (RoBERTa's table starts its positions
  after the padding id), so the table has max_seq_len + offset rows.
  """
  cfg: ModelConfig
  offset: int = 0

  @nn.compact
  def __call__(self, positions_BxT):
    cfg = self.cfg
    table = self.param("table", param_init(cfg, ("positions", "embed"), std=0.01),
                       (cfg.max_seq_len + self.offset, cfg.d_model), cfg.weight_dtype)
    return jnp.take(table, positions_BxT + self.offset, axis=0).astype(cfg.compute_dtype)


class Mlp(nn.Module):
  """SwiGLU (Llama), GELU (GPT-2's tanh approximation; BERT's exact erf form), gated GELU (T5 v1.1) or
  ReLU (original T5) feed-forward block."""
  cfg: ModelConfig

  @nn.compact
  def __call__(self, x_BxTxD):
    cfg = self.cfg
    dt = cfg.compute_dtype
    out_std = cfg.init_std / (2 * cfg.num_layers) ** 0.5  # GPT-2 residual scaling

    def proj_in(name):
      w = self.param(name, param_init(cfg, ("embed", "mlp")), (cfg.d_model, cfg.mlp_dim), cfg.weight_dtype)
      h = jnp.einsum("btd,df->btf", x_BxTxD, w.astype(dt))
      h = h + lora.update(self, cfg.lora, name, x_BxTxD, (cfg.d_model,), ("embed",), (cfg.mlp_dim,), ("mlp",), dt)
      if cfg.use_bias:
        h = h + self.param(name + "_bias", zeros_init(("mlp",)), (cfg.mlp_dim,), cfg.weight_dtype).astype(dt)
      return nn.with_logical_constraint(h, ("batch", "length", "act_mlp"))

    if cfg.mlp == "swiglu":
      h_BxTxF = jax.nn.silu(proj_in("gate")) * proj_in("up")
    elif cfg.mlp == "gated_gelu":
      h_BxTxF = jax.nn.gelu(proj_in("gate"), approximate=True) * proj_in("up")
    elif cfg.mlp == "relu":
      h_BxTxF = jax.nn.relu(proj_in("up"))
    else:
      h_BxTxF = jax.nn.gelu(proj_in("up"), approximate=cfg.mlp == "gelu")
    w_down = self.param("down", param_init(cfg, ("mlp", "embed"), std=out_std),
                        (cfg.mlp_dim, cfg.d_model), cfg.weight_dtype)
    y_BxTxD = jnp.einsum("btf,fd->btd", h_BxTxF, w_down.astype(dt))
    y_BxTxD = y_BxTxD + lora.update(self, cfg.lora, "down", h_BxTxF, (cfg.mlp_dim,), ("mlp",), (cfg.d_model,),
                                    ("embed",), dt)
    if cfg.use_bias:
      y_BxTxD = y_BxTxD + self.param("down_bias", zeros_init(("embed",)), (cfg.d_model,),
                                     cfg.weight_dtype).astype(dt)
    return nn.with_logical_constraint(y_BxTxD, ("batch", "length", "act_embed"))


class Classifier(nn.Module):
  """Logits over `cfg.num_labels` classes from one vector per row: x @ W (+ b), in float32."""
  cfg: ModelConfig
  use_bias: bool = True

  @nn.compact
  def __call__(self, x_BxD):
    cfg = self.cfg
    w = self.param("kernel", param_init(cfg, ("embed", "classes")), (cfg.d_model, cfg.num_labels), cfg.weight_dtype)
    logits_BxC = jnp.einsum("bd,dc->bc", x_BxD, w.astype(cfg.compute_dtype), preferred_element_type=jnp.float32)
    if self.use_bias:
      logits_BxC = logits_BxC + self.param("bias", zeros_init(("classes",)), (cfg.num_labels,),
                                           cfg.weight_dtype).astype(jnp.float32)
    return logits_BxC


def last_token(x_BxTxD, segments_BxT):
  """Each row's vector at its last non-padding position (segment id != 0); a row of padding gives
  position 0."""
  positions_BxT = jnp.arange(segments_BxT.shape[1])[None, :]
  last_B = jnp.max(jnp.where(segments_BxT != 0, positions_BxT, 0), axis=1)
  return jnp.take_along_axis(x_BxTxD, last_B[:, None, None], axis=1)[:, 0]


def mean_of_tokens(x_BxTxD, segments_BxT):
  """Each row's mean over its non-padding positions (sentence-transformers' mean pooling)."""
  mask_BxTx1 = (segments_BxT != 0)[..., None].astype(jnp.float32)
  total_BxD = jnp.sum(x_BxTxD.astype(jnp.float32) * mask_BxTx1, axis=1)
  return (total_BxD / jnp.maximum(jnp.sum(mask_BxTx1, axis=1), 1e-9)).astype(x_BxTxD.dtype)

