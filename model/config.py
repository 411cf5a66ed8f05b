"""A frozen, validated view of `config.model` that modules can hold as a field."""

import dataclasses

import jax.numpy as jnp

from errors import UserError
from model.lora import LoraConfig

_CHOICES = {
    "family": ("decoder",),  # model/families.py FAMILIES
    "norm": ("rmsnorm", "layernorm"),
    "mlp": ("swiglu", "gelu"),
    "position": ("rope", "learned"),
    "rope_scaling": ("none", "linear", "llama3"),
    "attention_impl": ("auto", "xla", "cudnn"),
    "remat": ("none", "full", "dots", "dots_no_batch"),
    "dtype": ("float32", "bfloat16", "float16"),
    "param_dtype": ("float32", "bfloat16"),
}


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  family: str
  vocab_size: int
  d_model: int
  num_layers: int
  num_heads: int
  num_kv_heads: int
  head_dim: int
  mlp_dim: int
  max_seq_len: int
  norm: str
  norm_eps: float
  mlp: str
  position: str
  rope_theta: float
  rope_scaling: str
  rope_scaling_factor: float
  rope_low_freq_factor: float
  rope_high_freq_factor: float
  rope_original_max_position: int
  use_bias: bool
  tie_embeddings: bool
  init_std: float
  dtype: str
  param_dtype: str
  attention_impl: str
  scan_layers: bool
  remat: str
  lora: LoraConfig | None = None  # adapters on the projections (model/lora.py); from config.lora

  @property
  def compute_dtype(self):
    return jnp.dtype(self.dtype)

  @property
  def weight_dtype(self):
    return jnp.dtype(self.param_dtype)

  @classmethod
  def from_config(cls, model_cfg) -> "ModelConfig":
    cfg = cls(**model_cfg.to_dict())
    for field, allowed in _CHOICES.items():
      if getattr(cfg, field) not in allowed:
        raise UserError(f"config.model.{field}={getattr(cfg, field)!r}; expected one of {allowed}")
    if cfg.num_heads % cfg.num_kv_heads:
      raise UserError(f"config.model.num_heads={cfg.num_heads} must be a multiple of "
                      f"config.model.num_kv_heads={cfg.num_kv_heads}")
    return cfg
