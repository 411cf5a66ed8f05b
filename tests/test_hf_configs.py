"""Real Hugging Face checkpoints: published config.json files, bfloat16 weights, corrupt and NaN weights.

tests/fixtures/hf_configs/*/config.json are the files as published (by the
transformers version each names); transformers itself is the reference for
what they mean.
"""

import json
import os
import shutil

import jax
import numpy as np
import pytest
from ml_collections import ConfigDict

from errors import UserError
from hf_models import PROMPTS, hf_logits
from model import hf_config, hf_weights
from model import families
from parallel import mesh as mesh_lib

HERE = os.path.dirname(__file__)
CONFIGS = os.path.join(HERE, "fixtures", "hf_configs")
LLAMAS = ["llama-3.2-1b-instruct", "llama-3.1-8b-instruct", "smollm2-135m-instruct", "tinyllama-1.1b-chat-v1.0"]


def _published(name: str) -> dict:
  with open(os.path.join(CONFIGS, name, "config.json")) as f:
    return json.load(f)


def _write(tmp_path, hf: dict, name: str = "m") -> str:
  d = tmp_path / name
  d.mkdir(exist_ok=True)
  (d / "config.json").write_text(json.dumps(hf, indent=2))
  return str(d)


def _reference(hf_dir: str) -> dict:
  """What transformers reads from the same file, in our field names."""
  from transformers import AutoConfig
  c = AutoConfig.from_pretrained(hf_dir)
  if c.model_type == "gpt2":
    return {"vocab_size": c.vocab_size, "d_model": c.n_embd, "num_layers": c.n_layer, "num_heads": c.n_head,
            "mlp_dim": c.n_inner or 4 * c.n_embd, "max_seq_len": c.n_positions, "norm_eps": c.layer_norm_epsilon,
            "tie_embeddings": c.tie_word_embeddings}
  rope = c.rope_parameters
  out = {"vocab_size": c.vocab_size, "d_model": c.hidden_size, "num_layers": c.num_hidden_layers,
         "num_heads": c.num_attention_heads, "num_kv_heads": c.num_key_value_heads, "head_dim": c.head_dim,
         "mlp_dim": c.intermediate_size, "max_seq_len": c.max_position_embeddings, "norm_eps": c.rms_norm_eps,
         "tie_embeddings": c.tie_word_embeddings, "rope_theta": rope["rope_theta"],
         "rope_scaling": {"default": "none"}.get(rope["rope_type"], rope["rope_type"])}
  if rope["rope_type"] == "llama3":
    out.update(rope_scaling_factor=rope["factor"], rope_low_freq_factor=rope["low_freq_factor"],
               rope_high_freq_factor=rope["high_freq_factor"],
               rope_original_max_position=rope["original_max_position_embeddings"])
  return out


def _assert_reads_as_transformers(hf_dir: str, arch: str):
  got_arch, fields = hf_config.read(hf_dir)
  assert got_arch == arch
  want = _reference(hf_dir)
  assert {k: fields[k] for k in want} == want


@pytest.mark.parametrize("name", LLAMAS + ["gpt2"])
def test_published_configs_load_as_transformers_reads_them(name):
  _assert_reads_as_transformers(os.path.join(CONFIGS, name), "GPT2LMHeadModel" if name == "gpt2" else
                                "LlamaForCausalLM")


def test_qwen2_is_refused_by_name():
  with pytest.raises(UserError, match=r"architecture \['Qwen2ForCausalLM'\] is not supported \(its q/k/v "
                                      r"projections have biases"):
    hf_config.read(os.path.join(CONFIGS, "qwen2.5-0.5b-instruct"))


def test_bookkeeping_fields_are_accepted(tmp_path):
  """The issue's case: a chat model's config with _model_name_or_path and unk_token_id, and the rest of
  what transformers 4.x wrote with use_diff=False."""
  hf = {**_published("tinyllama-1.1b-chat-v1.0"), "_model_name_or_path": "org/base", "unk_token_id": 0,
        "_name_or_path": "org/chat", "sep_token_id": None, "cls_token_id": None, "decoder_start_token_id": None,
        "output_attentions": False, "output_hidden_states": False, "return_dict": True, "problem_type": None,
        "id2label": {"0": "LABEL_0", "1": "LABEL_1"}, "label2id": {"LABEL_0": 0, "LABEL_1": 1},
        "keys_to_ignore_at_inference": ["past_key_values"], "torchscript": False, "use_bfloat16": False,
        "tie_encoder_decoder": False, "is_decoder": False, "add_cross_attention": False, "pruned_heads": {},
        "chunk_size_feed_forward": 0, "temperature": 0.7, "top_p": 0.9, "max_length": 20, "do_sample": True,
        "finetuning_task": None, "tokenizer_class": None, "prefix": None, "_commit_hash": "abc",
        "attention_dropout": 0.0, "mlp_bias": False, "sliding_window": None, "use_sliding_window": False,
        "layer_types": ["full_attention"] * 22}
  assert hf_config.read(_write(tmp_path, hf)) == hf_config.read(os.path.join(CONFIGS, "tinyllama-1.1b-chat-v1.0"))


def test_configs_written_by_the_installed_transformers_load(tmp_path):
  pytest.importorskip("transformers")
  from transformers import GPT2Config, LlamaConfig
  llama3 = {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192, "rope_theta": 500000.0}
  configs = {
      "llama_default": LlamaConfig(vocab_size=256, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, architectures=["LlamaForCausalLM"]),
      "llama3_tied": LlamaConfig(hidden_size=64, num_attention_heads=4, head_dim=32, rope_parameters=llama3,
                                 tie_word_embeddings=True),
      "llama_linear": LlamaConfig(rope_parameters={"rope_type": "linear", "factor": 4.0, "rope_theta": 1e4}),
      "gpt2": GPT2Config(n_embd=64, n_layer=2, n_head=4),
  }
  for name, c in configs.items():
    c.save_pretrained(str(tmp_path / name))  # the differences from the defaults
    arch = "GPT2LMHeadModel" if name == "gpt2" else "LlamaForCausalLM"
    _assert_reads_as_transformers(str(tmp_path / name), arch)
    full = _write(tmp_path, json.loads(c.to_json_string(use_diff=False)), name + "_full")  # every attribute
    _assert_reads_as_transformers(full, arch)


def _changed(name, **changes):
  return {**_published(name), **changes}


REFUSED = [
    ("hidden_act", _changed("tinyllama-1.1b-chat-v1.0", hidden_act="gelu"), 'hidden_act="gelu"'),
    ("attention_bias", _changed("llama-3.2-1b-instruct", attention_bias=True), "attention_bias=true"),
    ("mlp_bias", _changed("llama-3.2-1b-instruct", mlp_bias=True), "mlp_bias=true"),
    ("pretraining_tp", _changed("tinyllama-1.1b-chat-v1.0", pretraining_tp=2), "pretraining_tp=2"),
    ("attention_dropout", _changed("smollm2-135m-instruct", attention_dropout=0.1), "attention_dropout=0.1"),
    ("sliding_window", _changed("smollm2-135m-instruct", sliding_window=4096, use_sliding_window=True),
     "use_sliding_window=true"),
    ("sliding_window alone", _changed("smollm2-135m-instruct", sliding_window=4096), "sliding_window=4096"),
    ("layer_types", _changed("tinyllama-1.1b-chat-v1.0", layer_types=["sliding_attention"] * 22),
     r'layer_types=\["sliding_attention"'),
    ("rope yarn", _changed("llama-3.1-8b-instruct", rope_scaling={"rope_type": "yarn", "factor": 4.0,
                                                                  "original_max_position_embeddings": 8192}),
     'rope_scaling.rope_type="yarn"'),
    ("rope dynamic (old key)", _changed("tinyllama-1.1b-chat-v1.0", rope_scaling={"type": "dynamic", "factor": 2.0}),
     'rope_scaling.type="dynamic"'),
    ("partial rotary", _changed("tinyllama-1.1b-chat-v1.0", partial_rotary_factor=0.5), "partial_rotary_factor=0.5"),
    ("rope_interleaved", _changed("smollm2-135m-instruct", rope_interleaved=True), "rope_interleaved=true"),
    ("unknown field", _changed("llama-3.2-1b-instruct", quantization_config={"quant_method": "awq", "bits": 4}),
     r'unknown LlamaForCausalLM config fields quantization_config=\{"quant_method": "awq"'),
    ("model_type", _changed("tinyllama-1.1b-chat-v1.0", model_type="mistral"), 'model_type="mistral"'),
    ("gpt2 activation", _changed("gpt2", activation_function="relu"), 'activation_function="relu"'),
    ("gpt2 layer scaling", _changed("gpt2", scale_attn_by_inverse_layer_idx=True),
     "scale_attn_by_inverse_layer_idx=true"),
    ("gpt2 untied", _changed("gpt2", tie_word_embeddings=False), "tie_word_embeddings=false"),
    ("gpt2 cross attention", _changed("gpt2", add_cross_attention=True), "add_cross_attention=true"),
]


@pytest.mark.parametrize("hf, message", [r[1:] for r in REFUSED], ids=[r[0] for r in REFUSED])
def test_unsupported_values_are_refused_by_field_and_value(hf, message, tmp_path):
  with pytest.raises(UserError, match=message) as e:
    hf_config.read(_write(tmp_path, hf))
  assert str(tmp_path / "m" / "config.json") in str(e.value) and "\n" not in str(e.value)


# End to end: tiny random models saved by transformers, each with a published config.json shrunk.
SHRINK = {
    "llama-3.2-1b-instruct": dict(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                  num_attention_heads=4, num_key_value_heads=2, head_dim=16),
    "tinyllama-1.1b-chat-v1.0": dict(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                     num_attention_heads=4, num_key_value_heads=2),
    "gpt2": dict(vocab_size=128, n_embd=64, n_layer=2, n_head=4, n_positions=64, n_ctx=64),
}


def _tiny_checkpoint(name: str, out_dir: str) -> None:
  """A random model in the published dtype (bfloat16 for the Llamas), its config.json the published one
  with smaller sizes, every bookkeeping field kept."""
  import torch
  from transformers import AutoConfig, AutoModelForCausalLM
  torch.manual_seed(0)
  hf = {**_published(name), **SHRINK[name]}
  cfg_dir = out_dir + "-config"
  os.makedirs(cfg_dir)
  with open(os.path.join(cfg_dir, "config.json"), "w") as f:
    json.dump(hf, f)
  model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(cfg_dir))
  with torch.no_grad():  # larger than the default init so the logits are not all near zero
    for p in model.parameters():
      p.normal_(0.0, 0.2 if p.dim() > 1 else 0.05).add_(1.0 if p.dim() == 1 and p.shape[0] == 64 else 0.0)
  model.to(getattr(torch, hf.get("torch_dtype", "float32"))).save_pretrained(out_dir)
  shutil.copyfile(os.path.join(cfg_dir, "config.json"), os.path.join(out_dir, "config.json"))


def _mesh():
  return mesh_lib.make_mesh(ConfigDict(dict(data=1, fsdp=1, tensor=1)), jax.devices()[:1])


def _our_logits(hf_dir: str) -> np.ndarray:
  cfg, params = hf_weights.load(hf_dir, _mesh())
  positions = np.broadcast_to(np.arange(PROMPTS.shape[1], dtype=np.int32), PROMPTS.shape)
  return np.asarray(families.build(cfg).apply({"params": params}, PROMPTS, positions, np.ones_like(PROMPTS)))


@pytest.mark.parametrize("name", sorted(SHRINK))
def test_real_format_checkpoint_matches_transformers(name, tmp_path):
  pytest.importorskip("transformers")
  hf_dir = str(tmp_path / name)
  _tiny_checkpoint(name, hf_dir)
  np.testing.assert_allclose(_our_logits(hf_dir), hf_logits(hf_dir), atol=1e-4, rtol=0)


# Corrupt weights are named.
def _tiny_llama(tmp_path) -> str:
  d = tmp_path / "llama"
  shutil.copytree(os.path.join(HERE, "fixtures", "hf", "llama_tied"), d)
  return str(d)


def _tensor_offset(path: str, name: str) -> int:
  """Where a tensor's bytes start in a safetensors file (8-byte header size, JSON header, data)."""
  with open(path, "rb") as f:
    size = int.from_bytes(f.read(8), "little")
    header = json.loads(f.read(size))
  return 8 + size + header[name]["data_offsets"][0]


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_weights_are_refused_naming_the_tensor(bad, tmp_path):
  hf_dir = _tiny_llama(tmp_path)
  path = os.path.join(hf_dir, "model.safetensors")
  name = "model.layers.1.mlp.up_proj.weight"
  with open(path, "r+b") as f:
    f.seek(_tensor_offset(path, name) + 4 * 37)
    f.write(np.full(3, bad, "<f4").tobytes())
  with pytest.raises(UserError, match=rf"{path}: tensor '{name}' holds 3 non-finite value\(s\)"):
    hf_weights.load(hf_dir, _mesh())


def _corrupt_header(path):
  with open(path, "r+b") as f:
    f.write(b"\xff" * 8)


def _truncate(path):
  with open(path, "r+b") as f:
    f.truncate(os.path.getsize(path) - 100)


def _garble_json(path):
  with open(path, "r+b") as f:
    f.seek(8)
    f.write(b"{garbage")


@pytest.mark.parametrize("damage", [_corrupt_header, _truncate, _garble_json])
def test_corrupt_safetensors_are_named(damage, tmp_path):
  hf_dir = _tiny_llama(tmp_path)
  path = os.path.join(hf_dir, "model.safetensors")
  damage(path)
  with pytest.raises(UserError, match=rf"^{path}: not a readable safetensors file \(.+\)$"):
    hf_weights.load(hf_dir, _mesh())
