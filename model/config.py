"""A frozen, validated view of `config.model` that modules can hold as a field."""

import dataclasses

import jax.numpy as jnp

from errors import UserError
from model.lora import LoraConfig

_CHOICES = {
    "family": ("decoder", "encoder"),  # model/families.py FAMILIES
    "norm": ("rmsnorm", "layernorm"),
    "norm_position": ("pre", "post"),
    "pooling": ("cls", "mean"),
    "mlp": ("swiglu", "gelu", "gelu_erf"),
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
  # Encoder (BERT/RoBERTa) fields; the defaults are the decoder's (configs/base.py explains each).
  norm_position: str = "pre"
  type_vocab_size: int = 0
  position_offset: int = 0
  mlm_head: bool = True
  pooler: bool = False
  num_labels: int = 0     # > 0: a classification head instead of the LM head
  pooling: str = "cls"    # the encoder's classification input: "cls" | "mean"
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
    for field in ("type_vocab_size", "position_offset", "num_labels"):
      if getattr(cfg, field) < 0:
        raise UserError(f"config.model.{field}={getattr(cfg, field)}; expected 0 or more")
    if cfg.num_labels == 1:
      raise UserError("config.model.num_labels=1; a classifier needs at least 2 labels (0: no classifier)")
    if cfg.family == "encoder" and cfg.mlm_head and not cfg.tie_embeddings:
      raise UserError("config.model.tie_embeddings=False: the encoder's MLM head always projects with the "
                      "word embeddings (BERT/RoBERTa); set it to True")
    return cfg
