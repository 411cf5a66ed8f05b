"""Hugging Face `config.json` <-> `config.model`, for LlamaForCausalLM and GPT2LMHeadModel.

Every key of the HF config is either translated, checked to hold a value we
reproduce exactly, or known not to affect the forward pass (dropout, ids,
bookkeeping). Anything else is an error naming the key: a model we cannot
reproduce must not load silently.
"""

import json
import os

from errors import UserError

# Keys that do not change the forward pass at inference.
_IGNORED = {
    "architectures", "model_type", "dtype", "torch_dtype", "transformers_version", "use_cache",
    "initializer_range", "bos_token_id", "eos_token_id", "pad_token_id", "_name_or_path",
    "output_attentions", "output_hidden_states", "return_dict", "tokenizer_class", "task_specific_params",
    "generation_config", "chunk_size_feed_forward", "is_encoder_decoder", "id2label", "label2id",
}
_GPT2_IGNORED = {"attn_pdrop", "embd_pdrop", "resid_pdrop", "summary_activation", "summary_first_dropout",
                 "summary_proj_to_labels", "summary_type", "summary_use_proj", "n_ctx"}


def _require(hf: dict, key: str, allowed, path: str):
  if key in hf and hf[key] not in allowed:
    raise UserError(f"{path}: {key}={hf[key]!r} is not supported (supported: {allowed})")


def _check_known(hf: dict, known: set, path: str):
  unknown = sorted(set(hf) - known - _IGNORED)
  if unknown:
    raise UserError(f"{path}: unsupported config fields {unknown}; refusing to load a model we might "
                    f"not reproduce")


def _rope(hf: dict, path: str) -> dict:
  """RoPE settings wherever they are written: top level, rope_parameters or rope_scaling."""
  params = dict(hf.get("rope_scaling") or {})
  params.update(hf.get("rope_parameters") or {})
  theta = params.get("rope_theta", hf.get("rope_theta", 10_000.0))
  kind = params.get("rope_type", params.get("type", "default"))
  out = {"rope_theta": float(theta), "rope_scaling": "none"}
  if kind == "default":
    return out
  if kind == "linear":
    return {**out, "rope_scaling": "linear", "rope_scaling_factor": float(params["factor"])}
  if kind == "llama3":
    return {**out, "rope_scaling": "llama3", "rope_scaling_factor": float(params["factor"]),
            "rope_low_freq_factor": float(params["low_freq_factor"]),
            "rope_high_freq_factor": float(params["high_freq_factor"]),
            "rope_original_max_position": int(params["original_max_position_embeddings"])}
  raise UserError(f"{path}: rope type {kind!r} is not supported (default, linear, llama3)")


def _llama(hf: dict, path: str) -> dict:
  _check_known(hf, {"vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                    "num_attention_heads", "num_key_value_heads", "head_dim", "hidden_act",
                    "max_position_embeddings", "rms_norm_eps", "tie_word_embeddings", "rope_theta",
                    "rope_scaling", "rope_parameters", "attention_bias", "attention_dropout", "mlp_bias",
                    "pretraining_tp"}, path)
  _require(hf, "hidden_act", ("silu",), path)
  _require(hf, "attention_bias", (False,), path)
  _require(hf, "mlp_bias", (False,), path)
  _require(hf, "pretraining_tp", (1,), path)
  heads = hf["num_attention_heads"]
  return {
      "vocab_size": hf["vocab_size"], "d_model": hf["hidden_size"], "num_layers": hf["num_hidden_layers"],
      "num_heads": heads, "num_kv_heads": hf.get("num_key_value_heads") or heads,
      "head_dim": hf.get("head_dim") or hf["hidden_size"] // heads, "mlp_dim": hf["intermediate_size"],
      "max_seq_len": hf.get("max_position_embeddings", 2048), "norm": "rmsnorm",
      "norm_eps": hf.get("rms_norm_eps", 1e-6), "mlp": "swiglu", "position": "rope", "use_bias": False,
      "tie_embeddings": bool(hf.get("tie_word_embeddings", False)), **_rope(hf, path),
  }


def _gpt2(hf: dict, path: str) -> dict:
  _check_known(hf, {"vocab_size", "n_embd", "n_layer", "n_head", "n_inner", "n_positions",
                    "layer_norm_epsilon", "activation_function", "scale_attn_weights",
                    "scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn", "add_cross_attention",
                    "tie_word_embeddings"} | _GPT2_IGNORED, path)
  _require(hf, "activation_function", ("gelu_new", "gelu_pytorch_tanh"), path)
  _require(hf, "scale_attn_weights", (True,), path)
  _require(hf, "scale_attn_by_inverse_layer_idx", (False,), path)
  _require(hf, "add_cross_attention", (False,), path)
  _require(hf, "tie_word_embeddings", (True,), path)
  d, heads = hf["n_embd"], hf["n_head"]
  return {
      "vocab_size": hf["vocab_size"], "d_model": d, "num_layers": hf["n_layer"], "num_heads": heads,
      "num_kv_heads": heads, "head_dim": d // heads, "mlp_dim": hf.get("n_inner") or 4 * d,
      "max_seq_len": hf["n_positions"], "norm": "layernorm", "norm_eps": hf.get("layer_norm_epsilon", 1e-5),
      "mlp": "gelu", "position": "learned", "use_bias": True, "tie_embeddings": True,
      "rope_scaling": "none",
  }


ARCHITECTURES = {"LlamaForCausalLM": _llama, "GPT2LMHeadModel": _gpt2}


def read(hf_dir: str) -> tuple[str, dict]:
  """(architecture, {config.model field: value}) from HF_DIR/config.json."""
  path = os.path.join(hf_dir, "config.json")
  if not os.path.isfile(path):
    raise UserError(f"{hf_dir} has no config.json; expected a Hugging Face model directory")
  with open(path) as f:
    hf = json.load(f)
  archs = hf.get("architectures") or []
  arch = next((a for a in archs if a in ARCHITECTURES), None)
  if arch is None:
    raise UserError(f"{path}: architecture {archs or hf.get('model_type')!r} is not supported; "
                    f"supported: {sorted(ARCHITECTURES)}")
  return arch, ARCHITECTURES[arch](hf, path)


def write(model_cfg, bos_id, eos_id) -> dict:
  """The HF config.json for one of our models (the inverse of `read`)."""
  c = model_cfg
  common = {"vocab_size": c.vocab_size, "bos_token_id": bos_id, "eos_token_id": eos_id,
            "tie_word_embeddings": c.tie_embeddings, "dtype": "float32"}
  if c.norm == "layernorm":
    if not (c.mlp == "gelu" and c.position == "learned" and c.use_bias and c.tie_embeddings
            and c.num_kv_heads == c.num_heads and c.head_dim * c.num_heads == c.d_model):
      raise UserError("this layernorm model is not GPT-2 shaped, so it has no HF equivalent")
    return {**common, "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "n_embd": c.d_model,
            "n_layer": c.num_layers, "n_head": c.num_heads, "n_inner": c.mlp_dim, "n_positions": c.max_seq_len,
            "layer_norm_epsilon": c.norm_eps, "activation_function": "gelu_new",
            "attn_pdrop": 0.0, "embd_pdrop": 0.0, "resid_pdrop": 0.0}
  if not (c.mlp == "swiglu" and c.position == "rope" and not c.use_bias):
    raise UserError("this rmsnorm model is not Llama shaped, so it has no HF equivalent")
  rope = {"rope_type": "default", "rope_theta": c.rope_theta}
  if c.rope_scaling == "linear":
    rope.update(rope_type="linear", factor=c.rope_scaling_factor)
  elif c.rope_scaling == "llama3":
    rope.update(rope_type="llama3", factor=c.rope_scaling_factor, low_freq_factor=c.rope_low_freq_factor,
                high_freq_factor=c.rope_high_freq_factor,
                original_max_position_embeddings=c.rope_original_max_position)
  return {**common, "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": c.d_model,
          "intermediate_size": c.mlp_dim, "num_hidden_layers": c.num_layers, "num_attention_heads": c.num_heads,
          "num_key_value_heads": c.num_kv_heads, "head_dim": c.head_dim, "hidden_act": "silu",
          "max_position_embeddings": c.max_seq_len, "rms_norm_eps": c.norm_eps, "rope_parameters": rope,
          "attention_bias": False, "mlp_bias": False}
