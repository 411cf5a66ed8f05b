"""KV-cache decoding (model/decode.py) against full recompute, on one device and sharded."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ml_collections import ConfigDict

from conftest import tiny_llama_config
from errors import UserError
from model import sampling
from model.config import ModelConfig
from model.decode import Decoder
from model.sampling import SamplingConfig
from model import families
from parallel import mesh as mesh_lib
from parallel import sharding

# Different lengths in one batch, one longer than the smallest prompt bucket (16).
PROMPTS = [[1, 5, 9, 33, 7], [1, 100], list(range(1, 19)), [1, 400, 300]]
NEW = 12


def _setup(scan: bool, fsdp: int = 1, tensor: int = 1):
  c = tiny_llama_config().model
  c.update(dict(scan_layers=scan, dtype="float32"))
  cfg = ModelConfig.from_config(c)
  model = families.build(cfg)
  mesh = mesh_lib.make_mesh(ConfigDict(dict(data=1, fsdp=fsdp, tensor=tensor)), jax.devices()[:fsdp * tensor])
  _, shardings = sharding.abstract_variables(model, mesh)
  x = jnp.zeros((1, 8), jnp.int32)
  with sharding.activate(mesh):
    params = jax.jit(lambda r: nn.meta.unbox(model.init(r, x, x, x + 1)["params"]),
                     out_shardings=shardings)(jax.random.key(3))
  return cfg, model, mesh, params


def _recompute_greedy(model, params, prompts: list[list[int]], new: int) -> list[list[int]]:
  """Greedy decoding with no cache: every sequence whole through the model for every token.

  Rows are right-padded to one length (causal attention never looks right),
  so this compiles once.
  """
  forward = jax.jit(lambda p, t: model.apply({"params": p}, t, jnp.broadcast_to(jnp.arange(t.shape[1]), t.shape),
                                             jnp.ones_like(t)))
  seqs = [list(p) for p in prompts]
  for _ in range(new):
    logits = np.asarray(forward(params, jnp.asarray([s + [0] * (32 - len(s)) for s in seqs])))
    for row, seq in enumerate(seqs):
      seq.append(int(np.argmax(logits[row, len(seq) - 1])))
  return [seq[len(p):] for seq, p in zip(seqs, prompts)]


@pytest.mark.parametrize("scan,fsdp,tensor", [(False, 1, 2), (True, 2, 2)])
def test_cached_greedy_equals_recompute(scan, fsdp, tensor):
  cfg, model, mesh, params = _setup(scan, fsdp, tensor)
  generation = Decoder(cfg, mesh, chunk=5).generate(params, PROMPTS, NEW)  # chunks end mid-generation
  with sharding.activate(mesh):
    assert generation.tokens == _recompute_greedy(model, params, PROMPTS, NEW)
  assert generation.prompt_tokens == sum(map(len, PROMPTS)) and generation.new_tokens == NEW * len(PROMPTS)


def test_sampling_is_seeded_and_stops():
  cfg, _, mesh, params = _setup(scan=True)
  spec = SamplingConfig(temperature=1.0, top_k=50, top_p=0.9, seed=4)
  by_8, by_3 = Decoder(cfg, mesh, chunk=8), Decoder(cfg, mesh, chunk=3)
  a = by_8.generate(params, PROMPTS, NEW, spec).tokens
  assert by_3.generate(params, PROMPTS, NEW, spec).tokens == a  # whatever the chunking
  assert by_8.generate(params, PROMPTS, NEW, SamplingConfig(temperature=1.0, top_k=50, top_p=0.9, seed=5)).tokens != a
  # A stop id ends its row right after it; should_stop (stop strings) ends rows between chunks.
  stop = a[0][3]
  stopped = by_3.generate(params, PROMPTS, NEW, spec, stop_ids=(stop,)).tokens
  assert stopped[0] == a[0][:4]
  for row, tokens in zip(stopped, a):
    assert row == (tokens[:tokens.index(stop) + 1] if stop in tokens else tokens)
  cut = by_3.generate(params, PROMPTS, NEW, spec, should_stop=lambda i, ids: i == 1 and len(ids) >= 2).tokens
  assert cut[1] == a[1][:3] and cut[0] == a[0]  # row 1 stops at the end of the first 3-token chunk


def test_top_k_and_top_p_filters():
  logits = jnp.log(jnp.array([[0.05, 0.5, 0.15, 0.3]]))
  kept = lambda x: np.isfinite(np.asarray(x))  # noqa: E731
  np.testing.assert_array_equal(kept(sampling.top_p_filter(logits, 0.7)), [[False, True, False, True]])
  np.testing.assert_array_equal(kept(sampling.top_p_filter(logits, 0.85)), [[False, True, True, True]])
  np.testing.assert_array_equal(kept(sampling.top_k_filter(logits, 2)), [[False, True, False, True]])
  with pytest.raises(UserError, match="top_p"):
    SamplingConfig(temperature=1.0, top_p=0.0)


def test_bad_requests_are_clear_errors():
  cfg, _, mesh, params = _setup(scan=True)
  with pytest.raises(UserError, match="at least one token"):
    Decoder(cfg, mesh).generate(params, [[1, 2], []], 4)
  with pytest.raises(UserError, match="max_new_tokens"):
    Decoder(cfg, mesh).generate(params, [[1, 2]], 0)


# GPT-2-like: learned positions, LayerNorm, GELU, biases. A table of 40 positions caps the cache below
# the 64-slot bucket (decode.py clips it), which the prompts plus new tokens (at most 26) still fit.
@pytest.mark.parametrize("scan,max_seq_len", [(False, 64), (True, 40)])
def test_cached_greedy_equals_recompute_with_learned_positions(scan, max_seq_len):
  c = tiny_llama_config().model
  c.update(dict(scan_layers=scan, dtype="float32", position="learned", norm="layernorm", mlp="gelu",
                use_bias=True, num_kv_heads=4, tie_embeddings=True, max_seq_len=max_seq_len))
  cfg = ModelConfig.from_config(c)
  model = families.build(cfg)
  mesh = mesh_lib.make_mesh(ConfigDict(dict(data=1, fsdp=1, tensor=1)), jax.devices()[:1])
  x = jnp.zeros((1, 8), jnp.int32)
  params = jax.jit(lambda r: nn.meta.unbox(model.init(r, x, x, x + 1)["params"]))(jax.random.key(11))
  assert "positions" in params and "bias" in params["final_norm"]  # really the GPT-2 layout
  # Position embeddings large enough that a wrong position changes the argmax.
  params["positions"]["table"] = params["positions"]["table"] * 50.0
  new = 8
  generation = Decoder(cfg, mesh, chunk=3).generate(params, PROMPTS, new)
  with sharding.activate(mesh):
    want = _recompute_greedy(model, params, PROMPTS, new)
  assert generation.tokens == want
  # The positions matter: the same prompts one position later decode differently somewhere.
  shifted = {**params, "positions": {"table": jnp.roll(params["positions"]["table"], 1, axis=0)}}
  with sharding.activate(mesh):
    assert _recompute_greedy(model, shifted, PROMPTS, new) != want
