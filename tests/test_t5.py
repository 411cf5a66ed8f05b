"""The encoder-decoder family (model/t5.py) against transformers' T5ForConditionalGeneration: random
T5 v1.1 (gated GELU, untied) and original T5 (ReLU, tied) models import with the same logits; the
relative-position buckets match transformers' own; packed rows see only their own example."""

import tempfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from transformers import T5Config, T5ForConditionalGeneration
from transformers.models.t5.modeling_t5 import T5Attention

from model import families, hf_t5, hf_weights, t5
from parallel import mesh as mesh_lib

VARIANTS = {
    "v1.1": dict(feed_forward_proj="gated-gelu", tie_word_embeddings=False),
    "original": dict(feed_forward_proj="relu", tie_word_embeddings=True),
}


def _hf_model(variant: str) -> T5ForConditionalGeneration:
  torch.manual_seed(0)
  config = T5Config(vocab_size=96, d_model=32, d_kv=8, d_ff=48, num_layers=2, num_decoder_layers=3, num_heads=4,
                    relative_attention_num_buckets=8, relative_attention_max_distance=20, dropout_rate=0.0,
                    decoder_start_token_id=0, pad_token_id=0, **VARIANTS[variant])
  model = T5ForConditionalGeneration(config).eval()
  with torch.no_grad():  # transformers' init leaves some weights tiny; spread them so differences show
    for p in model.parameters():
      p.normal_(0.0, 0.3)
  return model


def _ours(hf: T5ForConditionalGeneration, tmp_path=None):
  """(our model, its variables) imported from `hf` saved by transformers, as config.init.hf_dir reads it."""
  directory = tempfile.mkdtemp(dir=tmp_path)
  hf.save_pretrained(directory)
  cfg, params = hf_weights.load(directory, mesh_lib.mesh_of_sizes())
  return families.build(cfg), {"params": params}


def _positions(x):
  return np.broadcast_to(np.arange(x.shape[1]), x.shape)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_logits_match_transformers(variant):
  hf = _hf_model(variant)
  model, variables = _ours(hf)
  rng = np.random.default_rng(0)
  enc_tokens = rng.integers(1, 96, (2, 11))
  dec_tokens = rng.integers(1, 96, (2, 7))
  with torch.no_grad():
    want = hf(input_ids=torch.tensor(enc_tokens), decoder_input_ids=torch.tensor(dec_tokens)).logits.numpy()
  positions = lambda x: np.broadcast_to(np.arange(x.shape[1]), x.shape)  # noqa: E731
  got = model.apply(variables, enc_tokens, positions(enc_tokens), np.ones_like(enc_tokens),
                    dec_tokens, positions(dec_tokens), np.ones_like(dec_tokens))
  np.testing.assert_allclose(np.asarray(got), want, atol=1e-4, rtol=1e-4)
  assert np.abs(want).std() > 0.01  # logits that differ across tokens: a real comparison


@pytest.mark.parametrize("bidirectional", [True, False])
def test_buckets_match_transformers(bidirectional):
  relative = np.arange(-300, 301)[None, :]
  want = T5Attention._relative_position_bucket(torch.tensor(relative), bidirectional=bidirectional,
                                               num_buckets=32, max_distance=128).numpy()
  got = t5.relative_bucket(jnp.asarray(relative), bidirectional, 32, 128)
  np.testing.assert_array_equal(np.asarray(got), want)


def test_packed_rows_match_separate_examples():
  """Two examples packed in one row (segment ids 1, 2; positions restart) give each example's own logits."""
  hf = _hf_model("v1.1")
  model, variables = _ours(hf)
  rng = np.random.default_rng(1)
  enc = [rng.integers(1, 96, n) for n in (5, 6)]
  dec = [rng.integers(1, 96, n) for n in (3, 4)]
  one = lambda parts: np.concatenate(parts)[None]  # noqa: E731
  seg = lambda parts: one([np.full(len(p), i + 1) for i, p in enumerate(parts)])  # noqa: E731
  pos = lambda parts: one([np.arange(len(p)) for p in parts])  # noqa: E731
  packed = model.apply(variables, one(enc), pos(enc), seg(enc), one(dec), pos(dec), seg(dec))
  start = 0
  for e, d in zip(enc, dec):
    alone = model.apply(variables, e[None], np.arange(len(e))[None], np.ones((1, len(e)), int),
                        d[None], np.arange(len(d))[None], np.ones((1, len(d)), int))
    np.testing.assert_allclose(np.asarray(packed[0, start:start + len(d)]), np.asarray(alone[0]), atol=1e-5)
    start += len(d)


def test_unsupported_variant_is_named():
  fields = T5Config(feed_forward_proj="gated-silu").to_dict()
  with pytest.raises(Exception, match="feed_forward_proj='gated-silu'"):
    hf_t5.config_fields(fields)


def test_jit_on_a_sharded_mesh_matches_one_device():
  """The same logical-axis rules shard it: (data=2, fsdp=2, tensor=2) over 8 CPU devices."""
  from parallel import mesh as mesh_lib, sharding
  hf = _hf_model("v1.1")
  model, variables = _ours(hf)
  rng = np.random.default_rng(2)
  enc, dec = rng.integers(1, 96, (4, 8)), rng.integers(1, 96, (4, 6))
  args = (enc, np.broadcast_to(np.arange(8), enc.shape), np.ones_like(enc),
          dec, np.broadcast_to(np.arange(6), dec.shape), np.ones_like(dec))
  want = model.apply(variables, *args)
  mesh = mesh_lib.mesh_of_sizes({"data": 2, "fsdp": 2, "tensor": 2})
  shapes, shardings = sharding.abstract_variables(model, mesh)
  assert jax.tree.map(np.shape, shapes) == jax.tree.map(np.shape, variables["params"])  # init makes these
  params = jax.device_put(variables["params"], shardings)
  assert any(len(x.sharding.device_set) == 8 and not x.sharding.is_fully_replicated
             for x in jax.tree.leaves(params))  # the rules shard it
  with sharding.activate(mesh):
    got = jax.jit(model.apply)({"params": params}, *args)
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5)
  # Generation, greedy and sampled (seeded per token), emits the same tokens on the mesh as on one device.
  from model import decode
  from model.sampling import SamplingConfig
  prompts = [rng.integers(2, 96, n).tolist() for n in (3, 7, 5)]
  single = decode.make_decoder(model.cfg, mesh_lib.mesh_of_sizes())
  sharded = decode.make_decoder(model.cfg, mesh)
  for sampling in (SamplingConfig(), SamplingConfig(temperature=1.0, top_k=20, seed=3)):
    want_tokens = single.generate(jax.device_put(variables["params"]), prompts, 9, sampling).tokens
    assert sharded.generate(params, prompts, 9, sampling).tokens == want_tokens


def _hf_greedy(hf, inputs: list[list[int]], max_new: int) -> list[list[int]]:
  out = []
  for ids in inputs:  # one by one: no padding on transformers' side
    with torch.no_grad():
      gen = hf.generate(torch.tensor([ids]), max_new_tokens=max_new, min_new_tokens=max_new, do_sample=False,
                        num_beams=1, use_cache=False)  # transformers 5 sizes its cache by the encoder layers
    out.append(gen[0, 1:].tolist())  # drop the decoder start token
  return out


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_greedy_generation_matches_transformers(variant):
  """Cached generation (the encoder once, a self-attention KV cache, cross keys and values once) emits
  transformers' greedy tokens, for prompts of different lengths in one right-padded batch."""
  from model import decode
  from parallel import mesh as mesh_lib
  hf = _hf_model(variant)
  model, variables = _ours(hf)
  rng = np.random.default_rng(2)
  inputs = [rng.integers(2, 96, n).tolist() for n in (5, 13, 9)]
  want = _hf_greedy(hf, inputs, 12)
  decoder = decode.make_decoder(model.cfg, mesh_lib.mesh_of_sizes())
  got = decoder.generate(jax.device_put(variables["params"]), inputs, 12).tokens
  assert got == want
  assert len({tuple(w) for w in want}) == 3  # rows that differ: the batch's padding did not leak


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_export_round_trips_through_transformers(variant, tmp_path):
  """Imported, then exported by hf_weights.save: transformers loads the export with the original's logits
  (1e-5), and the export's config.json reads back as the same model."""
  hf = _hf_model(variant)
  model, variables = _ours(hf, tmp_path)
  out = str(tmp_path / "export")
  hf_weights.save(variables["params"], model.cfg, out, bos_id=None, eos_id=1)
  again = T5ForConditionalGeneration.from_pretrained(out).eval()
  rng = np.random.default_rng(3)
  enc, dec = torch.tensor(rng.integers(1, 96, (2, 9))), torch.tensor(rng.integers(1, 96, (2, 6)))
  with torch.no_grad():
    want = hf(input_ids=enc, decoder_input_ids=dec).logits.numpy()
    got = again(input_ids=enc, decoder_input_ids=dec).logits.numpy()
  np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)
  cfg, _ = hf_weights.load(out, mesh_lib.mesh_of_sizes())
  assert cfg == model.cfg


def test_scanned_layers_match_unrolled(tmp_path):
  """scan_layers=True (one compiled layer per stack, weights stacked on a "layers" axis), with remat: the same
  logits as the unrolled layers; exported and generated from (unstacked for the KV cache) alike."""
  from model import decode
  hf = _hf_model("v1.1")
  model, variables = _ours(hf, tmp_path)
  directory = str(tmp_path / "hf")
  hf.save_pretrained(directory)
  cfg, params = hf_weights.load(directory, mesh_lib.mesh_of_sizes(), scan_layers=True, remat="full")
  scanned = families.build(cfg)
  assert params["encoder_layers"]["block"]["attention"]["query"].shape[0] == 2
  assert params["decoder_layers"]["block"]["mlp"]["gate"].shape[0] == 3
  rng = np.random.default_rng(4)
  enc, dec = rng.integers(1, 96, (2, 10)), rng.integers(1, 96, (2, 7))
  args = (enc, _positions(enc), np.ones_like(enc), dec, _positions(dec), np.ones_like(dec))
  np.testing.assert_allclose(np.asarray(jax.jit(scanned.apply)({"params": params}, *args)),
                             np.asarray(model.apply(variables, *args)), atol=1e-5)
  grads = jax.grad(lambda p: scanned.apply({"params": p}, *args).sum())(params)  # remat under scan
  assert np.isfinite(np.asarray(grads["decoder_layers"]["block"]["cross_attention"]["key"])).all()
  exported = hf_weights.export_params(params, cfg)
  np.testing.assert_array_equal(exported["decoder.block.2.layer.1.EncDecAttention.k.weight"],
                                hf.state_dict()["decoder.block.2.layer.1.EncDecAttention.k.weight"].numpy())
  inputs = [rng.integers(2, 96, n).tolist() for n in (4, 8)]
  got = decode.make_decoder(cfg, mesh_lib.mesh_of_sizes()).generate(params, inputs, 6).tokens
  assert got == _hf_greedy(hf, inputs, 6)
