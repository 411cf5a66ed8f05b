"""Model FLOPs per token, for tokens/s -> MFU.

Uses the standard estimate (Kaplan et al.; PaLM appendix B):
    flops/token = 6 N + 12 L H Q T
N counts the weights of every matmul, the output head included, but not the
input embedding or position lookups (gathers, no FLOPs). L layers, H heads,
Q head dim, T sequence length; the second term is the attention score and
value matmuls, forward plus backward. An encoder attends both ways over the
same T keys, so the formula holds as it is. The head is the vocabulary
projection of a language model (plus the MLM head's dense layer); a
classifier's head runs once per row, not per token, and is left out.

An encoder-decoder (T5) reads S encoder tokens and T decoder tokens per row:
the encoder's layers see S tokens attending to S, the decoder's T tokens
attending to T (self) and to S (cross), whose keys and values project the S
encoder outputs (N_kv weights), so a row costs
    6 (N_enc S + (N_dec - N_kv) T + N_kv S) + 12 H Q (L_enc S^2 + L_dec (T^2 + T S))
and its FLOPs per token are counted per encoder token (tokens/s counts those).
"""

from model.config import ModelConfig


def _layer_params(cfg: ModelConfig) -> tuple[int, int]:
  """(attention, MLP) matmul weights of one layer."""
  d, h, k, q, f = cfg.d_model, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.mlp_dim
  attention = d * h * q * 2 + d * k * q * 2  # query + out, key + value
  return attention, d * f * (3 if cfg.mlp in ("swiglu", "gated_gelu") else 2)


def encoder_decoder_params(cfg: ModelConfig) -> tuple[int, int]:
  """(encoder, decoder) matmul weights of an encoder-decoder; the decoder's has cross-attention and the head."""
  attention, mlp = _layer_params(cfg)
  decoder_layers = cfg.num_decoder_layers or cfg.num_layers
  return cfg.num_layers * (attention + mlp), decoder_layers * (2 * attention + mlp) + head_params(cfg)


def matmul_params(cfg: ModelConfig) -> int:
  if cfg.family == "encoder_decoder":
    return sum(encoder_decoder_params(cfg))
  attention, mlp = _layer_params(cfg)
  return cfg.num_layers * (attention + mlp) + head_params(cfg)


def head_params(cfg: ModelConfig) -> int:
  """Weights of the per-token output head."""
  d = cfg.d_model
  if cfg.num_labels or (cfg.family == "encoder" and not cfg.mlm_head):
    return 0  # a classifier's head, or an encoder's hidden states: no vocabulary projection
  return d * cfg.vocab_size + (d * d if cfg.family == "encoder" else 0)


def flops_per_token(cfg: ModelConfig, seq_len: int) -> float:
  return 6.0 * matmul_params(cfg) + 12.0 * cfg.num_layers * cfg.num_heads * cfg.head_dim * seq_len


def encoder_decoder_flops_per_token(cfg: ModelConfig, inputs_len: int, targets_len: int) -> float:
  """Training FLOPs of a row of `inputs_len` encoder and `targets_len` decoder tokens, per encoder token.
  Cross-attention's key and value projections read the S encoder outputs, not the T decoder tokens."""
  n_enc, n_dec = encoder_decoder_params(cfg)
  cross_kv = (cfg.num_decoder_layers or cfg.num_layers) * 2 * cfg.d_model * cfg.num_kv_heads * cfg.head_dim
  hq, S, T = cfg.num_heads * cfg.head_dim, inputs_len, targets_len
  per_row = (6.0 * (n_enc * S + (n_dec - cross_kv) * T + cross_kv * S)
             + 12.0 * hq * (cfg.num_layers * S * S + (cfg.num_decoder_layers or cfg.num_layers) * (T * T + T * S)))
  return per_row / S


def forward_flops_per_token(cfg: ModelConfig, context_len: float) -> float:
  """One forward pass of one token attending to `context_len` positions (prefill and decoding):
  2 N + 4 L H Q context, a third of the training formula's."""
  return 2.0 * matmul_params(cfg) + 4.0 * cfg.num_layers * cfg.num_heads * cfg.head_dim * context_len
