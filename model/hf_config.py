"""Hugging Face `config.json` <-> `config.model`: decoders (LlamaForCausalLM, GPT2LMHeadModel) and
encoders (BertModel, BertForMaskedLM, RobertaModel, RobertaForMaskedLM).

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


def _num_labels(hf: dict, path: str) -> int:
  """Classes of a *ForSequenceClassification config: its id2label (transformers saves no num_labels);
  1 for a reward model's single score (problem_type "regression")."""
  labels = hf.get("id2label") or {}
  n = len(labels) if labels else hf.get("num_labels", 2)
  problem = hf.get("problem_type")
  if problem == "regression" and n == 1:
    return 1
  if problem not in (None, "single_label_classification"):
    raise UserError(f"{path}: problem_type={_show(problem)} is not supported (supported: "
                    f"\"single_label_classification\": one label per example; \"regression\" with one label: "
                    f"a reward model)")
  if not isinstance(n, int) or n < 1:
    raise UserError(f"{path}: {len(labels)} labels in id2label; a classifier needs at least 1")
  return n


def _llama(hf: dict, path: str, arch: str = "LlamaForCausalLM") -> dict:
  _check(hf, {"hidden_act": ("silu",), "attention_bias": (False,), "mlp_bias": (False,),
              "pretraining_tp": (1, None), "attention_dropout": (0.0, None)},
         {"vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
          "num_key_value_heads", "head_dim", "max_position_embeddings", "rms_norm_eps", "tie_word_embeddings",
          "rope_theta", "rope_scaling", "rope_parameters"}, arch, path)
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


# BERT's dropouts act only in training (Strata's model has none), so any value loads.
_BERT_BOOKKEEPING = {"hidden_dropout_prob", "attention_probs_dropout_prob", "classifier_dropout"}
# The encoder architectures: (model_type, MLM head, pooler). transformers' *ForMaskedLM builds its
# base model without a pooler; *Model builds one.
# *ForSequenceClassification: BERT's classifier reads the pooler; RoBERTa's head (dense, tanh, then
# out_proj) is the same computation, its dense and tanh being our pooler.
_ENCODERS = {
    "BertModel": ("bert", False, True),
    "BertForMaskedLM": ("bert", True, False),
    "BertForSequenceClassification": ("bert", False, True),
    "RobertaModel": ("roberta", False, True),
    "RobertaForMaskedLM": ("roberta", True, False),
    "RobertaForSequenceClassification": ("roberta", False, True),
}


def _bert(arch: str, hf: dict, path: str) -> dict:
  """BERT and RoBERTa: post-norm, exact GELU, learned absolute positions, token types. RoBERTa's
  positions start after its padding id (transformers' create_position_ids_from_input_ids)."""
  model_type, mlm_head, pooler = _ENCODERS[arch]
  # The MLM head's projection is the word embedding (tied); a pooler-only model has no output head.
  checked = {"hidden_act": ("gelu",), "position_embedding_type": ("absolute",), "is_decoder": (False,)}
  if mlm_head:
    checked["tie_word_embeddings"] = (True,)
  translated = {"vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                "max_position_embeddings", "type_vocab_size", "layer_norm_eps", "tie_word_embeddings"}
  _check(hf, checked, translated | _BERT_BOOKKEEPING, arch, path)
  d, heads = hf["hidden_size"], hf["num_attention_heads"]
  if d % heads:
    raise UserError(f"{path}: hidden_size={d} is not a multiple of num_attention_heads={heads}")
  type_vocab = hf.get("type_vocab_size", 2)
  if not isinstance(type_vocab, int) or type_vocab < 1:
    raise UserError(f"{path}: type_vocab_size={_show(type_vocab)}; expected 1 or more")
  offset = 0
  if model_type == "roberta":
    pad = hf.get("pad_token_id", 1)
    if not isinstance(pad, int) or pad < 0:
      raise UserError(f"{path}: pad_token_id={_show(pad)}; RoBERTa's positions start after it, so it must be "
                      f"a token id")
    offset = pad + 1
  positions = hf.get("max_position_embeddings", 512)
  if positions <= offset:
    raise UserError(f"{path}: max_position_embeddings={positions} leaves no positions after pad_token_id "
                    f"(RoBERTa's first position is pad_token_id + 1 = {offset})")
  return {
      "family": "encoder", "vocab_size": hf["vocab_size"], "d_model": d, "num_layers": hf["num_hidden_layers"],
      "num_heads": heads, "num_kv_heads": heads, "head_dim": d // heads, "mlp_dim": hf["intermediate_size"],
      "max_seq_len": positions - offset, "position_offset": offset, "type_vocab_size": type_vocab,
      "norm": "layernorm", "norm_eps": hf.get("layer_norm_eps", 1e-12), "norm_position": "post",
      "mlp": "gelu_erf", "position": "learned", "use_bias": True, "tie_embeddings": True,
      "rope_scaling": "none", "mlm_head": mlm_head, "pooler": pooler,
      **({"num_labels": _num_labels(hf, path), "pooling": "cls"} if arch.endswith("SequenceClassification") else {}),
  }


def _t5(hf: dict, path: str) -> dict:
  from model import hf_t5
  return hf_t5.read_config(hf, path, _check)


ARCHITECTURES = {"LlamaForCausalLM": _llama, "GPT2LMHeadModel": _gpt2, "T5ForConditionalGeneration": _t5,
                 "LlamaForSequenceClassification": lambda hf, path: {
                     **_llama(hf, path, "LlamaForSequenceClassification"), "num_labels": _num_labels(hf, path)},
                 **{arch: (lambda hf, path, arch=arch: _bert(arch, hf, path)) for arch in _ENCODERS}}
# The architecture transformers' AutoModel builds for a config with no `architectures`.
_MODEL_TYPES = {"llama": "LlamaForCausalLM", "gpt2": "GPT2LMHeadModel", "bert": "BertModel",
                "roberta": "RobertaModel", "t5": "T5ForConditionalGeneration"}
_ARCH_MODEL_TYPE = {"LlamaForCausalLM": "llama", "GPT2LMHeadModel": "gpt2", "LlamaForSequenceClassification": "llama",
                    "T5ForConditionalGeneration": "t5",
                    **{arch: spec[0] for arch, spec in _ENCODERS.items()}}


def family(arch: str) -> str:
  """The model family (config.model.family) an architecture belongs to."""
  if arch == "T5ForConditionalGeneration":
    return "encoder_decoder"
  return "encoder" if arch in _ENCODERS else "decoder"


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
  if model_type is not None and model_type != _ARCH_MODEL_TYPE[arch]:
    raise UserError(f"{path}: model_type={_show(model_type)} does not match architectures {archs!r}; "
                    f"expected model_type \"{_ARCH_MODEL_TYPE[arch]}\"")
  return arch


def _a(word: str) -> str:
  return ("an " if word[0] in "aeiou" else "a ") + word


def read(hf_dir: str, family_wanted: str | None = None) -> tuple[str, dict]:
  """(architecture, {config.model field: value}) from HF_DIR/config.json. The fields include the
  family; with `family_wanted` (config.model.family), a checkpoint of another family is refused."""
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
  if family_wanted is not None and family_wanted != family(arch):
    raise UserError(f"{path}: architecture {arch} is {_a(family(arch))} model but config.model.family="
                    f"{family_wanted!r}; set config.model.family={family(arch)!r} or use a {family_wanted} "
                    f"checkpoint")
  try:
    fields = ARCHITECTURES[arch](hf, path)
  except KeyError as e:
    raise UserError(f"{path}: field {e.args[0]} is missing; {arch} needs it") from None
  # The decoder's fields say nothing of the encoder-only ones, whose defaults it ignores.
  return arch, {"family": "decoder", "norm_position": "pre", **fields}


def _write_encoder(c, bos_id, eos_id) -> dict:
  """BertModel / BertForMaskedLM, or RobertaModel / RobertaForMaskedLM when positions are offset."""
  if not (c.norm == "layernorm" and c.norm_position == "post" and c.mlp == "gelu_erf" and c.position == "learned"
          and c.use_bias and c.num_kv_heads == c.num_heads and c.head_dim * c.num_heads == c.d_model
          and c.type_vocab_size >= 1):
    raise UserError("this encoder is not BERT shaped (post-norm layernorm, gelu_erf, learned positions, biases, "
                    "token types, head_dim * num_heads == d_model), so it has no HF equivalent")
  roberta = c.position_offset > 0  # RoBERTa's positions start after its padding id
  kind = "Roberta" if roberta else "Bert"
  if c.num_labels:
    if not (c.pooler and c.pooling == "cls"):
      raise UserError(f"an encoder classifier with pooler={c.pooler} and pooling={c.pooling!r} has no HF "
                      f"equivalent ({kind}ForSequenceClassification classifies the pooled first token)")
    arch = kind + "ForSequenceClassification"
  elif c.mlm_head == c.pooler:
    raise UserError(f"an encoder with mlm_head={c.mlm_head} and pooler={c.pooler} has no HF equivalent "
                    f"(*ForMaskedLM has an MLM head, *Model a pooler)")
  else:
    arch = kind + ("ForMaskedLM" if c.mlm_head else "Model")
  positions = c.max_seq_len + c.position_offset
  return {"architectures": [arch], "model_type": kind.lower(), "vocab_size": c.vocab_size,
          "hidden_size": c.d_model, "num_hidden_layers": c.num_layers, "num_attention_heads": c.num_heads,
          "intermediate_size": c.mlp_dim, "hidden_act": "gelu", "max_position_embeddings": positions,
          "type_vocab_size": c.type_vocab_size, "layer_norm_eps": c.norm_eps,
          "pad_token_id": c.position_offset - 1 if roberta else 0, "bos_token_id": bos_id, "eos_token_id": eos_id,
          "is_decoder": False, "tie_word_embeddings": True, "hidden_dropout_prob": 0.0,
          "attention_probs_dropout_prob": 0.0, "dtype": "float32"}


def _label_fields(c, labels) -> dict:
  """id2label/label2id of a classifier (its class names, or transformers' LABEL_i)."""
  names = list(labels) if labels else [f"LABEL_{i}" for i in range(c.num_labels)]
  if len(names) != c.num_labels:
    raise ValueError(f"{len(names)} label names for {c.num_labels} classes")
  # One output is a reward model's score, as TRL's reward models are saved: a regression head.
  problem = "regression" if c.num_labels == 1 else "single_label_classification"
  return {"id2label": {str(i): n for i, n in enumerate(names)}, "label2id": {n: i for i, n in enumerate(names)},
          "problem_type": problem}


def write(model_cfg, bos_id, eos_id, labels: list[str] | None = None) -> dict:
  """The HF config.json for one of our models (the inverse of `read`); `labels` names a classifier's classes."""
  c = model_cfg
  if c.family == "encoder_decoder":
    from model import hf_t5
    return hf_t5.write_config(c, bos_id, eos_id)
  if c.family == "encoder":
    return {**_write_encoder(c, bos_id, eos_id), **(_label_fields(c, labels) if c.num_labels else {})}
  if c.norm_position != "pre":
    raise UserError("this decoder has post-norm blocks, which neither Llama nor GPT-2 has; no HF equivalent")
  common = {"vocab_size": c.vocab_size, "bos_token_id": bos_id, "eos_token_id": eos_id,
            "tie_word_embeddings": c.tie_embeddings, "dtype": "float32"}
  if c.norm == "layernorm":
    if c.num_labels:
      raise UserError("a GPT-2 shaped classifier has no HF export here (LlamaForSequenceClassification only)")
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
  if c.num_labels:
    # transformers finds each row's last token by pad_token_id; rows are padded with 0 here
    # (data/examples.py), which Llama-style tokenizers give to <unk>, a token byte fallback never emits.
    common.update(architectures=["LlamaForSequenceClassification"], pad_token_id=0, **_label_fields(c, labels))
  return {"architectures": ["LlamaForCausalLM"], **common, "model_type": "llama", "hidden_size": c.d_model,
          "intermediate_size": c.mlp_dim, "num_hidden_layers": c.num_layers, "num_attention_heads": c.num_heads,
          "num_key_value_heads": c.num_kv_heads, "head_dim": c.head_dim, "hidden_act": "silu",
          "max_position_embeddings": c.max_seq_len, "rms_norm_eps": c.norm_eps, "rope_parameters": rope,
          "attention_bias": False, "mlp_bias": False}
