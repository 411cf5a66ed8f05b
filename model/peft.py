"""LoRA adapters in PEFT's format: adapter_config.json + adapter_model.safetensors.

PEFT keeps, per adapted nn.Linear, lora_A.weight [rank, in] and lora_B.weight
[out, rank] with delta W = (alpha / rank) * B A in torch's [out, in] layout.
Our adapters are A [in..., rank] and B [rank, out...] against weights stored
[in..., out...], so each is flattened and transposed. Llama only: GPT-2's
fused c_attn has no per-projection module for q, k and v.
"""

import json
import os

import jax
import numpy as np
from flax import traverse_util

from errors import UserError
from model import hf_weights
from model.config import ModelConfig
from model.lora import LoraConfig

MODULES = {"q": "self_attn.q_proj", "k": "self_attn.k_proj", "v": "self_attn.v_proj", "o": "self_attn.o_proj",
           "gate": "mlp.gate_proj", "up": "mlp.up_proj", "down": "mlp.down_proj"}


def _per_layer(flat: dict, cfg: ModelConfig, module: str, name: str) -> list[np.ndarray]:
  """One adapter matrix of every layer, scanned stack or unrolled."""
  if cfg.scan_layers:
    return list(flat[("decoder", "layers", "block", module, name)])
  return [flat[("decoder", f"layer_{i}", module, name)] for i in range(cfg.num_layers)]


def tensors(adapters, cfg: ModelConfig, lora: LoraConfig, dtype=np.float32) -> dict[str, np.ndarray]:
  if cfg.mlp != "swiglu" or cfg.position != "rope":
    raise UserError("PEFT export supports Llama-family models only; export merged weights instead")
  flat = {k: np.asarray(jax.device_get(v), np.float32) for k, v in traverse_util.flatten_dict(adapters).items()}
  out = {}
  for target in lora.names:
    module = "attention" if target in ("q", "k", "v", "o") else "mlp"
    a_layers = _per_layer(flat, cfg, module, f"{target}_lora_a")
    b_layers = _per_layer(flat, cfg, module, f"{target}_lora_b")
    for i, (a, b) in enumerate(zip(a_layers, b_layers)):
      name = f"base_model.model.model.layers.{i}.{MODULES[target]}"
      out[f"{name}.lora_A.weight"] = np.ascontiguousarray(a.reshape(-1, lora.rank).T).astype(dtype)
      out[f"{name}.lora_B.weight"] = np.ascontiguousarray(b.reshape(lora.rank, -1).T).astype(dtype)
  return out


def save(adapters, cfg: ModelConfig, lora: LoraConfig, base_dir: str, out_dir: str, dtype=np.float32) -> None:
  hf_weights.save_safetensors(tensors(adapters, cfg, lora, dtype), os.path.join(out_dir, "adapter_model.safetensors"))
  config = {
      "peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": os.path.abspath(base_dir),
      "r": lora.rank, "lora_alpha": lora.alpha, "lora_dropout": lora.dropout,
      "target_modules": sorted(MODULES[t].split(".")[-1] for t in lora.names),
      "bias": "none", "fan_in_fan_out": False, "inference_mode": True, "use_rslora": False,
      "init_lora_weights": True, "modules_to_save": None,
  }
  with open(os.path.join(out_dir, "adapter_config.json"), "w") as f:
    json.dump(config, f, indent=2)
