"""Model correctness against independent references (numpy attention, known sizes)."""

import dataclasses
import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import gpt2_124m, llama_1b, quickstart
from errors import UserError
from model import families, flops
from model.attention import Attention
from model.config import ModelConfig


def _cfg(base=quickstart, **kw):
  c = base.get_config().model
  for k, v in kw.items():
    c[k] = v
  return ModelConfig.from_config(c)


def _init(cfg, seq_len=16, seed=0):
  model = families.build(cfg)
  x = jnp.zeros((1, seq_len), jnp.int32)
  params = jax.jit(model.init)(jax.random.key(seed), x, x, jnp.ones_like(x))["params"]
  return model, jax.tree.map(lambda p: p.value if hasattr(p, "value") else p, params,
                             is_leaf=lambda p: hasattr(p, "value"))


@functools.lru_cache(maxsize=None)
def _quickstart_params():
  """Seed-0 parameters of the quickstart model, initialised once for the tests below. Remat, the
  init sequence length and (with RoPE) max_seq_len do not change them."""
  return _init(_cfg())[1]


def _numpy_attention(x, params, cfg, positions):
  """Causal GQA with rotate-half RoPE, written independently in numpy (float64)."""
  x = np.asarray(x, np.float64)
  q = np.einsum("btd,dnh->btnh", x, np.asarray(params["query"], np.float64))
  k = np.einsum("btd,dnh->btnh", x, np.asarray(params["key"], np.float64))
  v = np.einsum("btd,dnh->btnh", x, np.asarray(params["value"], np.float64))
  half = cfg.head_dim // 2
  inv = cfg.rope_theta ** (-np.arange(half) * 2.0 / cfg.head_dim)
  ang = positions[..., None, None] * inv  # [B, T, 1, half]

  def rope(z):
    a, b = z[..., :half], z[..., half:]
    return np.concatenate([a * np.cos(ang) - b * np.sin(ang), b * np.cos(ang) + a * np.sin(ang)], -1)

  q, k = rope(q), rope(k)
  group = cfg.num_heads // cfg.num_kv_heads
  k, v = np.repeat(k, group, axis=2), np.repeat(v, group, axis=2)
  scores = np.einsum("btnh,bsnh->bnts", q, k) / np.sqrt(cfg.head_dim)
  t = x.shape[1]
  scores = np.where(np.tril(np.ones((t, t), bool)), scores, -np.inf)
  w = np.exp(scores - scores.max(-1, keepdims=True))
  w /= w.sum(-1, keepdims=True)
  out = np.einsum("bnts,bsnh->btnh", w, v)
  return np.einsum("btnh,nhd->btd", out, np.asarray(params["out"], np.float64))


def test_gqa_rope_attention_matches_numpy_reference():
  cfg = _cfg()
  assert cfg.num_kv_heads < cfg.num_heads  # really grouped
  att = Attention(cfg)
  x = jax.random.normal(jax.random.key(1), (2, 12, cfg.d_model))
  positions = jnp.broadcast_to(jnp.arange(12), (2, 12))
  segments = jnp.ones((2, 12), jnp.int32)
  params = jax.tree.map(lambda p: p.value, jax.jit(att.init)(jax.random.key(2), x, positions, segments)["params"],
                        is_leaf=lambda p: hasattr(p, "value"))
  got = jax.jit(att.apply)({"params": params}, x, positions, segments)
  want = _numpy_attention(x, params, cfg, np.asarray(positions))
  np.testing.assert_allclose(np.asarray(got), want, atol=2e-5)


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_causal_no_future_leakage(family):
  cfg = _cfg() if family == "llama" else _cfg(norm="layernorm", mlp="gelu", position="learned",
                                             use_bias=True, max_seq_len=64)
  model, params = (families.build(cfg), _quickstart_params()) if family == "llama" else _init(cfg)
  apply = jax.jit(model.apply)
  tokens = jax.random.randint(jax.random.key(3), (1, 16), 0, cfg.vocab_size)
  pos, seg = jnp.arange(16)[None], jnp.ones((1, 16), jnp.int32)
  a = apply({"params": params}, tokens, pos, seg)
  b = apply({"params": params}, tokens.at[0, 10].set((tokens[0, 10] + 1) % cfg.vocab_size), pos, seg)
  np.testing.assert_array_equal(np.asarray(a[0, :10]), np.asarray(b[0, :10]))
  assert not np.allclose(np.asarray(a[0, 10:]), np.asarray(b[0, 10:]))


@pytest.mark.parametrize("position", ["rope", "learned"])
def test_packed_documents_do_not_see_each_other(position):
  """Doc B's logits inside a packed row equal its logits when run alone."""
  cfg = _cfg(position=position, max_seq_len=64)
  model, params = (families.build(cfg), _quickstart_params()) if position == "rope" else _init(cfg)
  doc_a = jax.random.randint(jax.random.key(4), (7,), 0, cfg.vocab_size)
  doc_b = jax.random.randint(jax.random.key(5), (9,), 0, cfg.vocab_size)
  packed = jnp.concatenate([doc_a, doc_b])[None]
  positions = jnp.concatenate([jnp.arange(7), jnp.arange(9)])[None]
  segments = jnp.concatenate([jnp.full(7, 1), jnp.full(9, 2)])[None]
  apply = jax.jit(model.apply)
  together = apply({"params": params}, packed, positions, segments)
  alone = apply({"params": params}, doc_b[None], jnp.arange(9)[None], jnp.ones((1, 9), jnp.int32))
  np.testing.assert_allclose(np.asarray(together[0, 7:]), np.asarray(alone[0]), atol=1e-5)


def test_scan_remat_and_unrolled_layers_agree():
  cfg_scan = _cfg(remat="full")
  cfg_loop = _cfg(scan_layers=False)
  model_scan, params = families.build(cfg_scan), _quickstart_params()
  stacked = params["decoder"]["layers"]["block"]
  loop_params = dict(params)
  loop_params["decoder"] = {f"layer_{i}": jax.tree.map(lambda x: x[i], stacked) for i in range(cfg_scan.num_layers)}
  tokens = jax.random.randint(jax.random.key(6), (2, 16), 0, cfg_scan.vocab_size)
  pos, seg = jnp.broadcast_to(jnp.arange(16), (2, 16)), jnp.ones((2, 16), jnp.int32)
  a = jax.jit(model_scan.apply)({"params": params}, tokens, pos, seg)
  b = jax.jit(families.build(cfg_loop).apply)({"params": loop_params}, tokens, pos, seg)
  np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)


def _param_count(config_module):
  cfg = ModelConfig.from_config(config_module.get_config().model)
  x = jnp.zeros((1, 8), jnp.int32)
  shapes = jax.eval_shape(families.build(cfg).init, jax.random.key(0), x, x, jnp.ones_like(x))
  return sum(int(np.prod(p.value.shape if hasattr(p, "value") else p.shape))
             for p in jax.tree.leaves(shapes, is_leaf=lambda p: hasattr(p, "value")))


def test_published_model_sizes():
  # GPT-2 small: 124,439,808 parameters with its 50,257 vocabulary; ours pads to 50,304.
  assert _param_count(gpt2_124m) == 124_439_808 + (50_304 - 50_257) * 768
  # Llama-3.2-1B (tied embeddings): 1,235,814,400 parameters.
  assert _param_count(llama_1b) == 1_235_814_400


def test_flops_formula():
  cfg = ModelConfig.from_config(gpt2_124m.get_config().model)
  n = 12 * (4 * 768 * 768 + 2 * 768 * 3072) + 768 * 50_304
  assert flops.flops_per_token(cfg, 1024) == 6 * n + 12 * 12 * 12 * 64 * 1024


def test_model_family_is_validated():
  c = quickstart.get_config().model
  c.family = "seq2seq"
  with pytest.raises(UserError, match=r"config.model.family='seq2seq'; expected one of "
                                      r"'decoder', 'encoder', 'encoder_decoder'"):
    ModelConfig.from_config(c)
  c.family = "encoder_decoder"  # T5 takes relative positions, and only it does
  with pytest.raises(UserError, match=r"config.model.position='rope'; expected 'relative' exactly when"):
    ModelConfig.from_config(c)


def test_models_are_built_in_one_place():
  """Every model is built by model/families.py, so a new family is one module and one entry there."""
  import glob
  from conftest import REPO
  sources = [p for pattern in ("*.py", "*/*.py") for p in glob.glob(os.path.join(REPO, pattern))
             if "/.venv/" not in p]
  name = "Decoder" + "LM"  # spelled apart so this file does not count itself
  users = sorted(os.path.relpath(p, REPO) for p in sources if name in open(p, encoding="utf-8").read())
  assert users == [os.path.join("model", "families.py"), os.path.join("model", "transformer.py")], users


def test_encoder_and_classifier_flops_count_their_own_heads():
  """BERT-base's MLM head adds its dense layer to the tied vocabulary projection; a classifier has no
  per-token head (its projection runs once per row)."""
  from configs import bert_base
  cfg = ModelConfig.from_config(bert_base.get_config().model)
  layers = 12 * (4 * 768 * 768 + 2 * 768 * 3072)
  assert flops.flops_per_token(cfg, 128) == 6 * (layers + 768 * 30_522 + 768 * 768) + 12 * 12 * 12 * 64 * 128
  classifier = dataclasses.replace(cfg, mlm_head=False, num_labels=2)
  assert flops.flops_per_token(classifier, 128) == 6 * layers + 12 * 12 * 12 * 64 * 128
