"""`config.model`: the architecture, as a frozen, validated section that modules can hold as a field."""

import dataclasses
from typing import Literal

import jax.numpy as jnp

from model.lora import LoraConfig
from typed_config import DERIVED, Section


@dataclasses.dataclass(frozen=True)
class ModelConfig(Section):
  PATH = "config.model"
  # model/families.py: causal LM | BERT/RoBERTa | T5 (model/t5.py)
  family: Literal["decoder", "encoder", "encoder_decoder"] = "decoder"
  vocab_size: int = 32_000
  d_model: int = 512
  num_layers: int = 8
  num_heads: int = 8
  num_kv_heads: int = 8           # < num_heads gives grouped-query attention
  head_dim: int = 64
  mlp_dim: int = 2048
  max_seq_len: int = 2048         # size of the learned position table (position="learned")
  norm: Literal["rmsnorm", "layernorm"] = "rmsnorm"  # Llama | GPT-2, BERT
  norm_eps: float = 1e-5
  # "pre": x + f(norm(x)) (Llama, GPT-2; a final norm follows the layers);
  # "post": norm(x + f(x)) (BERT, RoBERTa; no final norm).
  norm_position: Literal["pre", "post"] = "pre"
  # "swiglu" (Llama) | "gelu" (GPT-2, tanh GELU) | "gelu_erf" (BERT, exact GELU) |
  # "gated_gelu" (T5 v1.1, Flan-T5: tanh GELU gate times a linear unit) | "relu" (original T5)
  mlp: Literal["swiglu", "gelu", "gelu_erf", "gated_gelu", "relu"] = "swiglu"
  # Llama | GPT-2, BERT | T5: a learned bias per head and bucket of query-key distance, on the logits
  position: Literal["rope", "learned", "relative"] = "rope"
  relative_buckets: int = 32               # relative only: log-spaced distance buckets
  relative_max_distance: int = 128         # relative only: distances past this share the last bucket
  num_decoder_layers: int = 0              # encoder_decoder only: 0 = num_layers
  decoder_start_id: int = 0                # encoder_decoder only: the decoder's first input (T5: pad, 0)
  rope_theta: float = 10_000.0
  rope_scaling: Literal["none", "linear", "llama3"] = "none"  # llama3: Llama 3.1+ long-context RoPE
  rope_scaling_factor: float = 1.0
  rope_low_freq_factor: float = 1.0        # llama3 only
  rope_high_freq_factor: float = 4.0       # llama3 only
  rope_original_max_position: int = 8192   # llama3 only: the pretraining context
  use_bias: bool = False          # biases in every projection (GPT-2, BERT)
  tie_embeddings: bool = True
  init_std: float = 0.02
  dtype: Literal["float32", "bfloat16", "float16"] = "float32"  # compute dtype
  param_dtype: Literal["float32", "bfloat16"] = "float32"       # storage dtype of parameters
  # jax.nn.dot_product_attention: "auto" takes cuDNN flash attention where it
  # applies (GPU, bf16/fp16) and XLA elsewhere; "xla" | "cudnn" force one.
  attention_impl: Literal["auto", "xla", "cudnn"] = "auto"
  scan_layers: bool = True        # one compiled layer body scanned over depth
  # Layers per iteration of that scan (decoder and encoder stacks); 0 unrolls them all: the stacked
  # parameters stay, the program is unrolled (CPU: 13% faster quickstart steps; compiles grow with depth).
  scan_unroll: int = 1
  remat: Literal["none", "full", "dots", "dots_no_batch"] = "none"
  # Encoder family only (model/encoder.py); the decoder ignores these.
  type_vocab_size: int = 0        # token-type (segment A/B) embeddings: BERT 2, RoBERTa 1; 0 = none
  # Learned positions look up row position + position_offset of a table with max_seq_len +
  # position_offset rows: RoBERTa's positions start after its padding id (pad_token_id + 1 = 2).
  position_offset: int = 0
  mlm_head: bool = True           # masked-LM head (dense, GELU, norm, tied projection + bias)
  pooler: bool = False            # BERT pooler: dense + tanh on the first token (BertModel has one)
  # Classification head (objective "classification"; 1: a reward model's scalar): num_labels > 0
  # replaces the LM head by logits over the labels. A decoder reads its last non-padding token (LlamaForSequenceClassification);
  # an encoder pools "cls" (the first token, through the pooler when it has one: BERT/RoBERTa's
  # heads) or "mean" (the mean of its tokens, as sentence-transformers embed).
  num_labels: int = 0
  pooling: Literal["cls", "mean"] = "cls"
  # Adapters on the projections (model/lora.py), set by the run from config.lora; None: no LoRA.
  lora: LoraConfig | None = dataclasses.field(default=None, metadata=DERIVED)

  @property
  def compute_dtype(self):
    return jnp.dtype(self.dtype)

  @property
  def weight_dtype(self):
    return jnp.dtype(self.param_dtype)

  def check(self) -> None:
    for field in ("vocab_size", "d_model", "num_layers", "num_heads", "num_kv_heads", "head_dim", "mlp_dim",
                  "max_seq_len"):
      self.require(getattr(self, field) > 0, field, "a positive integer")
    self.require(self.num_heads % self.num_kv_heads == 0, "num_heads",
                 f"a multiple of config.model.num_kv_heads={self.num_kv_heads}")
    for field in ("type_vocab_size", "position_offset", "num_labels", "scan_unroll"):
      self.require(getattr(self, field) >= 0, field, "0 or more")
    self.require((self.family == "encoder_decoder") == (self.position == "relative"), "position",
                 "'relative' exactly when config.model.family='encoder_decoder' (T5)")
    self.require(self.num_decoder_layers >= 0, "num_decoder_layers", "0 (= num_layers) or more")
    self.require(self.family != "encoder" or not self.mlm_head or self.tie_embeddings, "tie_embeddings",
                 "True: the encoder's MLM head always projects with the word embeddings (BERT/RoBERTa)")
