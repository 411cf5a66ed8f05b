"""Hugging Face safetensors <-> our parameter tree, for Llama, GPT-2, BERT, RoBERTa and T5 (model/hf_t5.py).

One table per architecture lists, for every HF tensor, the parameters it
feeds and the reshapes both ways, so import and export cannot drift apart.
Import builds each parameter from its HF tensors on the host, one parameter
at a time, and hands every device only its own shard
(`jax.make_array_from_callback`): the whole model never sits on one device.
"""

import dataclasses
import json
import os
from typing import Callable

import jax
import ml_dtypes  # noqa: F401  (registers bfloat16 with numpy)
import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file

from errors import UserError
from model.config import ModelConfig
from model.lora import HEAD

# Tensors HF checkpoints may carry that hold no weights (buffers).
_BUFFER_SUFFIXES = (".attn.bias", ".attn.masked_bias", "rotary_emb.inv_freq", "embeddings.position_ids",
                    "embeddings.token_type_ids")


@dataclasses.dataclass(frozen=True)
class TensorMap:
  hf_name: str                      # with "{i}" for the layer index in per-layer tensors
  ours: tuple[tuple[str, ...], ...] # parameter paths inside a layer (or the whole tree if global)
  to_ours: Callable                 # hf array -> list of our arrays
  to_hf: Callable                   # *our arrays -> hf array
  per_layer: bool = True
  stack: str = ""                   # an encoder-decoder's "encoder" or "decoder" layers; "": the family's one stack
  fallback: str = ""                # the tensor to read when a checkpoint lacks hf_name (T5's tied head)


def same():
  return dict(to_ours=lambda w: [w], to_hf=lambda x: x)


def transposed():
  return dict(to_ours=lambda w: [w.T], to_hf=lambda x: x.T)




def _llama(c: ModelConfig) -> list[TensorMap]:
  D, N, K, H = c.d_model, c.num_heads, c.num_kv_heads, c.head_dim
  def proj(heads):
    return dict(to_ours=lambda w: [w.T.reshape(D, heads, H)], to_hf=lambda x: x.reshape(D, heads * H).T)
  transposed = dict(to_ours=lambda w: [w.T], to_hf=lambda x: x.T)
  p = "model.layers.{i}."
  maps = [
      TensorMap(p + "self_attn.q_proj.weight", (("attention", "query"),), **proj(N)),
      TensorMap(p + "self_attn.k_proj.weight", (("attention", "key"),), **proj(K)),
      TensorMap(p + "self_attn.v_proj.weight", (("attention", "value"),), **proj(K)),
      TensorMap(p + "self_attn.o_proj.weight", (("attention", "out"),),
                to_ours=lambda w: [w.T.reshape(N, H, D)], to_hf=lambda x: x.reshape(N * H, D).T),
      TensorMap(p + "mlp.gate_proj.weight", (("mlp", "gate"),), **transposed),
      TensorMap(p + "mlp.up_proj.weight", (("mlp", "up"),), **transposed),
      TensorMap(p + "mlp.down_proj.weight", (("mlp", "down"),), **transposed),
      TensorMap(p + "input_layernorm.weight", (("attention_norm", "scale"),), **same()),
      TensorMap(p + "post_attention_layernorm.weight", (("mlp_norm", "scale"),), **same()),
      TensorMap("model.embed_tokens.weight", (("embed", "table"),), per_layer=False, **same()),
      TensorMap("model.norm.weight", (("final_norm", "scale"),), per_layer=False, **same()),
  ]
  if c.num_labels:  # LlamaForSequenceClassification: `score`, no bias, in place of the LM head
    maps.append(TensorMap("score.weight", (("score", "kernel"),), per_layer=False, **transposed))
  elif not c.tie_embeddings:
    maps.append(TensorMap("lm_head.weight", (("lm_head",),), per_layer=False, **transposed))
  return maps


def _gpt2(c: ModelConfig) -> list[TensorMap]:
  D, N, H = c.d_model, c.num_heads, c.head_dim
  qkv = (("attention", "query"), ("attention", "key"), ("attention", "value"))
  p = "transformer.h.{i}."
  maps = [
      TensorMap(p + "attn.c_attn.weight", qkv,
                to_ours=lambda w: [w[:, j * D:(j + 1) * D].reshape(D, N, H) for j in range(3)],
                to_hf=lambda *x: np.concatenate([a.reshape(D, D) for a in x], axis=1)),
      TensorMap(p + "attn.c_attn.bias", (("attention", "query_bias"), ("attention", "key_bias"),
                                         ("attention", "value_bias")),
                to_ours=lambda b: [b[j * D:(j + 1) * D].reshape(N, H) for j in range(3)],
                to_hf=lambda *x: np.concatenate([a.reshape(D) for a in x])),
      TensorMap(p + "attn.c_proj.weight", (("attention", "out"),),
                to_ours=lambda w: [w.reshape(N, H, D)], to_hf=lambda x: x.reshape(N * H, D)),
      TensorMap(p + "attn.c_proj.bias", (("attention", "out_bias"),), **same()),
      TensorMap(p + "ln_1.weight", (("attention_norm", "scale"),), **same()),
      TensorMap(p + "ln_1.bias", (("attention_norm", "bias"),), **same()),
      TensorMap(p + "ln_2.weight", (("mlp_norm", "scale"),), **same()),
      TensorMap(p + "ln_2.bias", (("mlp_norm", "bias"),), **same()),
      TensorMap(p + "mlp.c_fc.weight", (("mlp", "up"),), **same()),
      TensorMap(p + "mlp.c_fc.bias", (("mlp", "up_bias"),), **same()),
      TensorMap(p + "mlp.c_proj.weight", (("mlp", "down"),), **same()),
      TensorMap(p + "mlp.c_proj.bias", (("mlp", "down_bias"),), **same()),
      TensorMap("transformer.wte.weight", (("embed", "table"),), per_layer=False, **same()),
      TensorMap("transformer.wpe.weight", (("positions", "table"),), per_layer=False, **same()),
      TensorMap("transformer.ln_f.weight", (("final_norm", "scale"),), per_layer=False, **same()),
      TensorMap("transformer.ln_f.bias", (("final_norm", "bias"),), per_layer=False, **same()),
  ]
  if c.num_labels:  # a classifier's head, as GPT2ForSequenceClassification names it
    maps.append(TensorMap("score.weight", (("score", "kernel"),), per_layer=False, to_ours=lambda w: [w.T],
                          to_hf=lambda x: x.T))
  return maps


def _bert_names(c: ModelConfig) -> tuple[str, str]:
  """(base model prefix, MLM head prefix): *ForMaskedLM and *ForSequenceClassification nest the base
  model under bert./roberta.; RoBERTa (position_offset > 0) names its MLM head lm_head, BERT
  cls.predictions."""
  roberta = c.position_offset > 0
  if not (c.mlm_head or c.num_labels):
    return "", ""
  return ("roberta." if roberta else "bert."), ("lm_head." if roberta else "cls.predictions.")


def _bert(c: ModelConfig) -> list[TensorMap]:
  D, N, H = c.d_model, c.num_heads, c.head_dim
  base, head = _bert_names(c)
  proj = dict(to_ours=lambda w: [w.T.reshape(D, N, H)], to_hf=lambda x: x.reshape(D, N * H).T)
  proj_bias = dict(to_ours=lambda b: [b.reshape(N, H)], to_hf=lambda x: x.reshape(N * H))
  transposed = dict(to_ours=lambda w: [w.T], to_hf=lambda x: x.T)
  p = base + "encoder.layer.{i}."
  maps = [
      TensorMap(p + "attention.self.query.weight", (("attention", "query"),), **proj),
      TensorMap(p + "attention.self.query.bias", (("attention", "query_bias"),), **proj_bias),
      TensorMap(p + "attention.self.key.weight", (("attention", "key"),), **proj),
      TensorMap(p + "attention.self.key.bias", (("attention", "key_bias"),), **proj_bias),
      TensorMap(p + "attention.self.value.weight", (("attention", "value"),), **proj),
      TensorMap(p + "attention.self.value.bias", (("attention", "value_bias"),), **proj_bias),
      TensorMap(p + "attention.output.dense.weight", (("attention", "out"),),
                to_ours=lambda w: [w.T.reshape(N, H, D)], to_hf=lambda x: x.reshape(N * H, D).T),
      TensorMap(p + "attention.output.dense.bias", (("attention", "out_bias"),), **same()),
      TensorMap(p + "attention.output.LayerNorm.weight", (("attention_norm", "scale"),), **same()),
      TensorMap(p + "attention.output.LayerNorm.bias", (("attention_norm", "bias"),), **same()),
      TensorMap(p + "intermediate.dense.weight", (("mlp", "up"),), **transposed),
      TensorMap(p + "intermediate.dense.bias", (("mlp", "up_bias"),), **same()),
      TensorMap(p + "output.dense.weight", (("mlp", "down"),), **transposed),
      TensorMap(p + "output.dense.bias", (("mlp", "down_bias"),), **same()),
      TensorMap(p + "output.LayerNorm.weight", (("mlp_norm", "scale"),), **same()),
      TensorMap(p + "output.LayerNorm.bias", (("mlp_norm", "bias"),), **same()),
  ]
  e = base + "embeddings."
  maps += [TensorMap(e + hf, (ours,), per_layer=False, **same()) for hf, ours in (
      ("word_embeddings.weight", ("embed", "table")),
      ("position_embeddings.weight", ("positions", "table")),
      ("token_type_embeddings.weight", ("token_types", "table")),
      ("LayerNorm.weight", ("embed_norm", "scale")),
      ("LayerNorm.bias", ("embed_norm", "bias")))]
  if c.mlm_head and not c.num_labels:
    dense, norm = ("dense", "layer_norm") if head == "lm_head." else ("transform.dense", "transform.LayerNorm")
    maps += [
        TensorMap(head + dense + ".weight", (("mlm_head", "dense"),), per_layer=False, **transposed),
        TensorMap(head + dense + ".bias", (("mlm_head", "dense_bias"),), per_layer=False, **same()),
        TensorMap(head + norm + ".weight", (("mlm_head", "norm", "scale"),), per_layer=False, **same()),
        TensorMap(head + norm + ".bias", (("mlm_head", "norm", "bias"),), per_layer=False, **same()),
        TensorMap(head + "bias", (("mlm_head", "bias"),), per_layer=False, **same()),
    ]
  # RoBERTa's classification head holds the pooler's dense layer (its base model has no pooler).
  pooler = "classifier.dense." if c.num_labels and c.position_offset > 0 else base + "pooler.dense."
  if c.pooler:
    maps += [
        TensorMap(pooler + "weight", (("pooler", "dense"),), per_layer=False, **transposed),
        TensorMap(pooler + "bias", (("pooler", "dense_bias"),), per_layer=False, **same()),
    ]
  if c.num_labels:
    out = "classifier.out_proj." if c.position_offset > 0 else "classifier."
    maps += [
        TensorMap(out + "weight", (("classifier", "kernel"),), per_layer=False, **transposed),
        TensorMap(out + "bias", (("classifier", "bias"),), per_layer=False, **same()),
    ]
  return maps


def tied_copies(c: ModelConfig) -> list[tuple[str, str]]:
  """(tensor, the tensor it is tied to): copies transformers ties on load and no longer saves, which
  older checkpoints may still hold. They are read only to check that they are copies."""
  if c.family == "encoder_decoder":
    from model import hf_t5
    return hf_t5.tied_copies(c)
  if c.family != "encoder" or not c.mlm_head or c.num_labels:
    return []
  base, head = _bert_names(c)
  return [(head + "decoder.weight", base + "embeddings.word_embeddings.weight"),
          (head + "decoder.bias", head + "bias")]


def tensor_maps(c: ModelConfig) -> list[TensorMap]:
  if c.family == "encoder_decoder":
    from model import hf_t5
    return hf_t5.tensor_maps(c)
  if c.family == "encoder":
    return _bert(c)
  return _gpt2(c) if c.norm == "layernorm" else _llama(c)


def _layer_prefix(c: ModelConfig, i: int | None, stack: str = "") -> tuple[str, ...]:
  """Where layer i's parameters live: stacked under STACK/layers/block, or STACK/layer_i, where
  STACK is the family's TransformerStack (decoder or encoder); an encoder-decoder's are
  STACK_layers/block or STACK_layers_i (model/t5.py)."""
  if c.family == "encoder_decoder":
    return (f"{stack}_layers", "block") if c.scan_layers else (f"{stack}_layers_{i}",)
  stack = c.family
  return (stack, "layers", "block") if c.scan_layers else (stack, f"layer_{i}")


def _num_layers(c: ModelConfig, stack: str = "") -> int:
  return (c.num_decoder_layers or c.num_layers) if stack == "decoder" else c.num_layers


def open_safetensors(path: str):
  """safe_open(path), with a damaged or missing file reported by name. (bfloat16 decodes because
  ml_dtypes, imported above, registers it with numpy.)"""
  try:
    return safe_open(path, framework="numpy")
  except (SafetensorError, OSError) as e:
    raise UserError(f"{path}: not a readable safetensors file ({e})") from None


def weight_files(hf_dir: str) -> dict[str, str]:
  """{tensor name: file path} from model.safetensors or a sharded index."""
  index = os.path.join(hf_dir, "model.safetensors.index.json")
  single = os.path.join(hf_dir, "model.safetensors")
  if os.path.isfile(index):
    try:
      with open(index) as f:
        weight_map = json.load(f)["weight_map"]
    except (ValueError, KeyError, TypeError) as e:
      raise UserError(f"{index}: not a safetensors index (expected JSON with a weight_map: {e})") from None
    return {name: os.path.join(hf_dir, file) for name, file in weight_map.items()}
  if os.path.isfile(single):
    with open_safetensors(single) as f:
      return {name: single for name in f.keys()}
  raise UserError(f"{hf_dir} has neither model.safetensors nor model.safetensors.index.json")


class _SafetensorsReader:
  """Reads tensors by name, as float32, refusing any that holds NaN or Inf."""

  def __init__(self, hf_dir: str):
    self.files = weight_files(hf_dir)
    self.used: set[str] = set()

  def get(self, name: str) -> np.ndarray:
    if name not in self.files:
      raise UserError(f"HF checkpoint has no tensor {name!r}")
    self.used.add(name)
    path = self.files[name]
    with open_safetensors(path) as f:
      if name not in f.keys():
        raise UserError(f"{path}: has no tensor {name!r}, though the index lists it there")
      w = np.asarray(f.get_tensor(name), np.float32)
    bad = w.size - np.count_nonzero(np.isfinite(w))
    if bad:
      raise UserError(f"{path}: tensor {name!r} holds {bad} non-finite value(s) (NaN or Inf) of {w.size}; "
                      f"the checkpoint is corrupt")
    return w

  def unused(self) -> list[str]:
    return sorted(n for n in set(self.files) - self.used if not n.endswith(_BUFFER_SUFFIXES))


def _set(tree: dict, path: tuple[str, ...], value):
  for key in path[:-1]:
    tree = tree.setdefault(key, {})
  tree[path[-1]] = value


def _get(tree: dict, path: tuple[str, ...]):
  for key in path:
    tree = tree[key]
  return tree


def _expected_hf_shape(m: TensorMap, our_shapes: list[tuple]) -> tuple:
  return m.to_hf(*[np.zeros(s, np.float32) for s in our_shapes]).shape


# A classifier may start without its head (model/lora.py HEAD: with an encoder's pooler), from a
# language model or a bare base model; the LM heads such a checkpoint holds, which the
# classification head replaces, are then left unused.
_LM_HEADS = ("lm_head.", "cls.")
# Heads an encoder checkpoint may carry that no Strata model uses, which transformers also leaves
# unused when it loads one: BERT's next-sentence head, and the pooler of a model that has none.
_UNUSED_ENCODER_HEADS = ("cls.seq_relationship.", "pooler.", "bert.pooler.", "roberta.pooler.")


def _hf_name(reader, name: str, cfg: ModelConfig) -> str | None:
  """`name`, or the name a bare base model (BertModel: no "bert." prefix) saves it under; None if absent."""
  if name in reader.files:
    return name
  base = _bert_names(cfg)[0] if cfg.family == "encoder" else ""
  if base and name.startswith(base) and name[len(base):] in reader.files:
    return name[len(base):]
  return None


def load_params(hf_dir: str, cfg: ModelConfig, abstract_params, shardings, fresh_head=None):
  """Parameters from an HF directory, each placed directly on its shards.

  `abstract_params` and `shardings` are our parameter tree's shapes and
  NamedShardings (from the model's eval_shape), so the result drops into a
  train state on any mesh. A classifier (cfg.num_labels) may start from a
  language model or a bare base model: `fresh_head()` then gives initialized
  parameters (called once, sharded) for the head the checkpoint lacks, and
  the checkpoint's LM head goes unused. Top-level parts `abstract_params` leaves out (a LoRA run's
  head, which its own checkpoint holds) are not read.
  """
  reader = _SafetensorsReader(hf_dir)
  fresh = {}

  def layer_shape(path, stack):
    leaf = _get(abstract_params, _layer_prefix(cfg, 0, stack) + path)
    return leaf.shape[1:] if cfg.scan_layers else leaf.shape

  def place(path, value):
    abstract, sharding = _get(abstract_params, path), _get(shardings, path)
    value = np.asarray(value, abstract.dtype)
    _set(params, path, jax.make_array_from_callback(abstract.shape, sharding, lambda index: value[index]))

  params: dict = {}
  for m in tensor_maps(cfg):  # one HF tensor (all its layers) on the host at a time
    by_path: dict = {}
    if not m.per_layer and m.ours[0][0] not in abstract_params:  # left out on purpose: counts as read
      reader.used.add(_hf_name(reader, m.hf_name, cfg) or m.hf_name)
      continue
    if cfg.num_labels and not m.per_layer and m.ours[0][0] in HEAD and fresh_head is not None \
        and _hf_name(reader, m.hf_name, cfg) is None:
      fresh = fresh or fresh_head()
      for path in m.ours:
        _set(params, path, _get(fresh, path))
      continue
    layers = range(_num_layers(cfg, m.stack))
    for i in (layers if m.per_layer else [None]):
      name = m.hf_name.format(i=i)
      if m.fallback and _hf_name(reader, name, cfg) is None:
        name = m.fallback
      w = reader.get(_hf_name(reader, name, cfg) or name)
      shapes = [layer_shape(p, m.stack) if m.per_layer else _get(abstract_params, p).shape for p in m.ours]
      want = _expected_hf_shape(m, shapes)
      if w.shape != want:
        raise UserError(f"{hf_dir}: tensor {name!r} has shape {tuple(w.shape)} but config.json implies {want}")
      for path, value in zip(m.ours, m.to_ours(w)):
        by_path.setdefault(path, []).append(value)
    for path, values in by_path.items():
      if not m.per_layer:
        place(path, values[0])
      elif cfg.scan_layers:
        place(_layer_prefix(cfg, 0, m.stack) + path, np.stack(values))
      else:
        for i in layers:
          place(_layer_prefix(cfg, i, m.stack) + path, values[i])
  for copy, source in tied_copies(cfg):
    if copy in reader.files and not np.array_equal(reader.get(copy), reader.get(source)):
      raise UserError(f"{hf_dir}: tensor {copy!r} differs from {source!r}, which it is tied to; untied "
                      f"output weights are not supported")
  extra = [n for n in reader.unused() if not ((cfg.num_labels and n.startswith(_LM_HEADS))
                                              or (cfg.family == "encoder" and n.startswith(_UNUSED_ENCODER_HEADS)))]
  if extra:
    what = cfg.norm if cfg.family == "decoder" else cfg.family.replace("_", "-")
    raise UserError(f"{hf_dir}: tensors {extra[:5]} are not used by the {what} model config; "
                    f"refusing to drop weights silently")
  flat_abs = jax.tree_util.tree_flatten_with_path(abstract_params)[0]
  missing = [jax.tree_util.keystr(p) for p, _ in flat_abs if not _has(params, tuple(k.key for k in p))]
  if missing:
    raise UserError(f"{hf_dir}: no HF tensor provides parameters {missing[:5]}")
  return params


def _has(tree, path) -> bool:
  try:
    _get(tree, path)
    return True
  except KeyError:
    return False


def export_params(params, cfg: ModelConfig, dtype=np.float32) -> dict[str, np.ndarray]:
  """Our parameters -> {HF tensor name: host array} (gathered one parameter at a time)."""
  host = lambda x: np.asarray(jax.device_get(x), np.float32)  # noqa: E731
  out = {}
  for m in tensor_maps(cfg):
    for i in (range(_num_layers(cfg, m.stack)) if m.per_layer else [None]):
      ours = []
      for path in m.ours:
        if not m.per_layer:
          ours.append(host(_get(params, path)))
        elif cfg.scan_layers:
          ours.append(host(_get(params, _layer_prefix(cfg, 0, m.stack) + path)[i]))
        else:
          ours.append(host(_get(params, _layer_prefix(cfg, i, m.stack) + path)))
      out[m.hf_name.format(i=i)] = np.ascontiguousarray(m.to_hf(*ours)).astype(dtype)
  return out


def _current_umask() -> int:
  """The process umask, read without setting it where Linux allows (os.umask races other threads)."""
  try:
    with open("/proc/self/status") as f:
      return next(int(line.split()[1], 8) for line in f if line.startswith("Umask:"))
  except (OSError, StopIteration, ValueError):
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


def umask_mode(directory: bool = False) -> int:
  """The mode open() or mkdir() gives a new file or directory: 0666 or 0777 minus the umask."""
  umask = _current_umask()
  return (0o777 if directory else 0o666) & ~umask


def save_safetensors(tensors: dict[str, np.ndarray], path: str) -> None:
  save_file(tensors, path, metadata={"format": "pt"})
  os.chmod(path, umask_mode())  # safetensors writes 0600, unreadable to the group that shares the model


def load(hf_dir: str, mesh, **model_overrides):
  """(ModelConfig, params on `mesh`) from an HF directory; overrides such as dtype or scan_layers.
  A `family` override is checked against the checkpoint's architecture, never applied to it."""
  from model import hf_config
  from model import families
  _, fields = hf_config.read(hf_dir, model_overrides.get("family"))
  cfg = ModelConfig.from_config({**fields, **model_overrides})
  from parallel import sharding
  abstract, shardings = sharding.abstract_variables(families.build(cfg), mesh)
  return cfg, load_params(hf_dir, cfg, abstract, shardings)


def save(params, cfg: ModelConfig, out_dir: str, dtype=np.float32, bos_id=None, eos_id=None,
         labels: list[str] | None = None) -> None:
  """Writes model.safetensors and config.json that transformers loads as-is (`labels`: a classifier's
  class names, for id2label)."""
  from model import hf_config
  config = hf_config.write(cfg, bos_id, eos_id, labels)  # first: it refuses a model with no HF equivalent
  config["dtype"] = np.dtype(dtype).name
  os.makedirs(out_dir, exist_ok=True)
  save_safetensors(export_params(params, cfg, dtype), os.path.join(out_dir, "model.safetensors"))
  with open(os.path.join(out_dir, "config.json"), "w") as f:
    json.dump(config, f, indent=2)
