"""Hugging Face `config.json` <-> `config.model`, for LlamaForCausalLM and GPT2LMHeadModel.

Every field of an HF config falls in one of four classes:

- Translated: the architecture's own sizes and settings (hidden_size, rope, ...).
- Checked: fields whose value changes what the model computes, where we
  reproduce one value only (attention_bias false, mlp_bias false,
  pretraining_tp 1, attention_dropout 0, sliding_window null or
  use_sliding_window false, rope_interleaved false, hidden_act silu, ...).
  That value loads; any other is refused.
- Bookkeeping: fields `transformers` writes that never change the logits:
  names and versions, dtypes, token ids, generation defaults, label maps,
  output flags, initializer and fine-tuning-task settings, hub metadata.
  Every field starting with "_" and every `*_token_id(s)` is bookkeeping.
- Unknown: anything else is refused. `transformers` computes only from the
  fields its model class reads, so an unknown field changes nothing there;
  but it may be one a newer `transformers` does read, or a sign that the
  weights expect a different model (quantization_config, auto_map, ...).
  Loading such a model silently could give different logits, so the user
  is told the field and can delete it from config.json if it is harmless.

Every refusal is one line naming the file, the field and its value.
"""

import json
import os

from errors import UserError

# Generation defaults older configs carry (transformers' GenerationConfig parameters).
_GENERATION = {
    "assistant_confidence_threshold", "assistant_lookbehind", "bad_words_ids", "begin_suppress_tokens",
    "diversity_penalty", "do_sample", "early_stopping", "encoder_no_repeat_ngram_size",
    "encoder_repetition_penalty", "epsilon_cutoff", "eta_cutoff", "exponential_decay_length_penalty",
    "forced_decoder_ids", "guidance_scale", "length_penalty", "low_memory", "max_length", "max_new_tokens",
    "min_length", "min_new_tokens", "no_repeat_ngram_size", "num_assistant_tokens",
    "num_assistant_tokens_schedule", "num_beam_groups", "num_beams", "num_return_sequences", "output_logits",
    "output_scores", "penalty_alpha", "remove_invalid_values", "renormalize_logits", "repetition_penalty",
    "return_dict_in_generate", "sequence_bias", "stop_strings", "suppress_tokens", "target_lookbehind",
    "temperature", "top_k", "top_p", "typical_p", "use_cache", "watermarking_config",
}
# PretrainedConfig's own attributes (current and 4.x) and hub metadata: none changes the logits.
_BOOKKEEPING = _GENERATION | {
    "architectures", "model_type", "transformers_version", "dtype", "torch_dtype", "use_bfloat16",
    "torchscript", "initializer_range", "output_attentions", "output_hidden_states", "return_dict",
    "chunk_size_feed_forward", "is_encoder_decoder", "is_decoder", "tie_encoder_decoder",
    "cross_attention_hidden_size", "id2label", "label2id", "num_labels", "problem_type", "finetuning_task",
    "prefix", "task_specific_params", "tokenizer_class", "tf_legacy_loss", "keys_to_ignore_at_inference",
    "gradient_checkpointing", "attn_implementation", "tie_last_hidden_states",
    "is_llama_config", "transformers.js_config",  # SmolLM2's hub metadata
}
# Fields whose value changes the computation, with the values we reproduce (shared by both
# architectures; each adds its own).
_CHECKED = {
    "add_cross_attention": (False,),
    "pruned_heads": ({},),
    "use_sliding_window": (False,),
    "rope_interleaved": (False,),
    "partial_rotary_factor": (1.0, None),
}


def _show(value) -> str:
  text = json.dumps(value)
  return text if len(text) <= 80 else text[:77] + "..."


def _is_bookkeeping(key: str) -> bool:
  return key in _BOOKKEEPING or key.startswith("_") or key.endswith(("_token_id", "_token_ids"))


def _check(hf: dict, checked: dict, translated: set, arch: str, path: str) -> None:
  """Refuses values we do not reproduce, then any field that is neither translated nor bookkeeping."""
  for key, allowed in {**_CHECKED, **checked}.items():
    if key in hf and hf[key] not in allowed:
      raise UserError(f"{path}: {key}={_show(hf[key])} is not supported (supported: "
                      f"{' or '.join(_show(a) for a in allowed)})")
  sliding = hf.get("sliding_window")
  if sliding is not None and hf.get("use_sliding_window") is not False:
    raise UserError(f"{path}: sliding_window={_show(sliding)} is not supported (supported: null, or "
                    f"use_sliding_window=false): Strata attends to the whole context")
  layer_types = hf.get("layer_types")
  if layer_types is not None and set(layer_types) - {"full_attention"}:
    raise UserError(f"{path}: layer_types={_show(layer_types)} is not supported (supported: only "
                    f"\"full_attention\")")
  known = set(_CHECKED) | set(checked) | translated | {"sliding_window", "layer_types"}
  unknown = sorted(k for k in hf if k not in known and not _is_bookkeeping(k))
  if unknown:
    fields = ", ".join(f"{k}={_show(hf[k])}" for k in unknown)
    raise UserError(f"{path}: unknown {arch} config fields {fields}; refusing to load a model Strata "
                    f"might not reproduce (delete a field from config.json if it does not change the model)")


def _rope(hf: dict, path: str) -> dict:
  """RoPE settings as transformers reads them: rope_scaling if set, else rope_parameters, with the
  top-level rope_theta as the default theta."""
  field = "rope_scaling" if hf.get("rope_scaling") else "rope_parameters"
  params = dict(hf.get(field) or {})
  theta = params.get("rope_theta", hf.get("rope_theta", 10_000.0))
  kind_key = "rope_type" if "rope_type" in params else "type"
  kind = params.get(kind_key, "default")
  if params.get("partial_rotary_factor") not in (1.0, None):
    raise UserError(f"{path}: {field}.partial_rotary_factor={_show(params['partial_rotary_factor'])} is not "
                    f"supported (supported: 1.0)")
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
  raise UserError(f"{path}: {field}.{kind_key}={_show(kind)} is not supported (supported: \"default\", "
                  f"\"linear\", \"llama3\")")


def _llama(hf: dict, path: str) -> dict:
  _check(hf, {"hidden_act": ("silu",), "attention_bias": (False,), "mlp_bias": (False,),
              "pretraining_tp": (1, None), "attention_dropout": (0.0, None)},
         {"vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
          "num_key_value_heads", "head_dim", "max_position_embeddings", "rms_norm_eps", "tie_word_embeddings",
          "rope_theta", "rope_scaling", "rope_parameters"}, "LlamaForCausalLM", path)
  heads = hf["num_attention_heads"]
  return {
      "vocab_size": hf["vocab_size"], "d_model": hf["hidden_size"], "num_layers": hf["num_hidden_layers"],
      "num_heads": heads, "num_kv_heads": hf.get("num_key_value_heads") or heads,
      "head_dim": hf.get("head_dim") or hf["hidden_size"] // heads, "mlp_dim": hf["intermediate_size"],
      "max_seq_len": hf.get("max_position_embeddings", 2048), "norm": "rmsnorm",
      "norm_eps": hf.get("rms_norm_eps", 1e-6), "mlp": "swiglu", "position": "rope", "use_bias": False,
      "tie_embeddings": bool(hf.get("tie_word_embeddings", False)), **_rope(hf, path),
  }


# GPT-2's dropouts act only in training, and every GPT-2 checkpoint declares 0.1, so they are
# accepted at any value (Strata's model has no dropout); summary_* configure GPT2DoubleHeadsModel's
# extra head; n_ctx is the old name of n_positions, unused by transformers.
_GPT2_BOOKKEEPING = {"attn_pdrop", "embd_pdrop", "resid_pdrop", "summary_activation", "summary_first_dropout",
                     "summary_proj_to_labels", "summary_type", "summary_use_proj", "n_ctx"}


def _gpt2(hf: dict, path: str) -> dict:
  # reorder_and_upcast_attn only moves a float32 upcast: the same values in float32.
  _check(hf, {"activation_function": ("gelu_new", "gelu_pytorch_tanh"), "scale_attn_weights": (True,),
              "scale_attn_by_inverse_layer_idx": (False,), "tie_word_embeddings": (True,)},
         {"vocab_size", "n_embd", "n_layer", "n_head", "n_inner", "n_positions", "layer_norm_epsilon",
          "reorder_and_upcast_attn"} | _GPT2_BOOKKEEPING, "GPT2LMHeadModel", path)
  d, heads = hf["n_embd"], hf["n_head"]
  return {
      "vocab_size": hf["vocab_size"], "d_model": d, "num_layers": hf["n_layer"], "num_heads": heads,
      "num_kv_heads": heads, "head_dim": d // heads, "mlp_dim": hf.get("n_inner") or 4 * d,
      "max_seq_len": hf["n_positions"], "norm": "layernorm", "norm_eps": hf.get("layer_norm_epsilon", 1e-5),
      "mlp": "gelu", "position": "learned", "use_bias": True, "tie_embeddings": True,
      "rope_scaling": "none",
  }


ARCHITECTURES = {"LlamaForCausalLM": _llama, "GPT2LMHeadModel": _gpt2}
_MODEL_TYPES = {"llama": "LlamaForCausalLM", "gpt2": "GPT2LMHeadModel"}
# Why some near-Llama architectures are refused (their weights need computation we do not have).
_WHY_NOT = {
    "Qwen2ForCausalLM": " (its q/k/v projections have biases, which Strata's Llama has not)",
    "MistralForCausalLM": " (sliding-window attention)",
}


def _architecture(hf: dict, path: str) -> str:
  """The supported class named by `architectures`, or by `model_type` when that is absent (configs
  built from a bare LlamaConfig); the two must agree, since AutoModel picks by model_type."""
  archs = hf.get("architectures") or []
  arch = next((a for a in archs if a in ARCHITECTURES), None)
  if arch is None and not archs:
    arch = _MODEL_TYPES.get(hf.get("model_type"))
  if arch is None:
    named = archs or hf.get("model_type")
    why = next((_WHY_NOT[a] for a in archs if a in _WHY_NOT), "")
    raise UserError(f"{path}: architecture {named!r} is not supported{why}; supported: {sorted(ARCHITECTURES)}")
  model_type = hf.get("model_type")
  if model_type is not None and _MODEL_TYPES.get(model_type) != arch:
    raise UserError(f"{path}: model_type={_show(model_type)} does not match architectures {archs!r}; "
                    f"expected model_type \"{next(t for t, a in _MODEL_TYPES.items() if a == arch)}\"")
  return arch


def read(hf_dir: str) -> tuple[str, dict]:
  """(architecture, {config.model field: value}) from HF_DIR/config.json."""
  path = os.path.join(hf_dir, "config.json")
  if not os.path.isfile(path):
    raise UserError(f"{hf_dir} has no config.json; expected a Hugging Face model directory")
  try:
    with open(path) as f:
      hf = json.load(f)
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise UserError(f"{path}: not valid JSON ({e})") from None
  if not isinstance(hf, dict):
    raise UserError(f"{path}: expected a JSON object, got {type(hf).__name__}")
  arch = _architecture(hf, path)
  try:
    return arch, ARCHITECTURES[arch](hf, path)
  except KeyError as e:
    raise UserError(f"{path}: field {e.args[0]} is missing; {arch} needs it") from None


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
