"""Numerics of the model options that must not change the maths: bf16 compute and rematerialization.

bf16 compute (float32 parameters) must stay close to float32 and still train;
every remat policy must give the gradients of no remat, scanned or unrolled,
and must really rematerialize (a remat primitive in the traced gradient).
"""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from conftest import tiny_llama_config
from model import families
from model.config import ModelConfig

B, T = 4, 32
# The LLVM backend's optimizations are most of a CPU compile and change no semantics that matter here
# (bf16 rounding happens in the HLO converts, remat in the jaxpr): 4x faster compiles on busy CPUs.
FAST_COMPILE = {"xla_backend_optimization_level": 0}


def _compiled(fn, *args):
  """(the jaxpr of fn at these arguments, as text; fn compiled for them)."""
  traced = jax.jit(fn).trace(*args)
  return str(traced.jaxpr), traced.lower().compile(compiler_options=FAST_COMPILE)


def _cfg(**fields) -> ModelConfig:
  c = tiny_llama_config().model
  c.update({"dtype": "float32", "param_dtype": "float32", **fields})
  return ModelConfig.from_config(c)


def _batch(vocab: int) -> dict:
  """Rows of a learnable pattern (an arithmetic progression mod a prime per row), two documents in row 0."""
  tokens = (np.arange(T)[None, :] * np.array([3, 5, 7, 11])[:, None] + np.arange(B)[:, None] * 17) % 97 + 3
  segments = np.ones((B, T), np.int32)
  segments[0, T // 2:] = 2
  positions = np.where(segments[0] == 2, np.arange(T) - T // 2, np.arange(T))[None].repeat(B, 0)
  positions[1:] = np.arange(T)
  assert tokens.max() < vocab
  return {"tokens": jnp.asarray(tokens, jnp.int32), "segment_ids": jnp.asarray(segments),
          "positions": jnp.asarray(positions, jnp.int32)}


def _init(cfg: ModelConfig, seed: int = 0):
  x = jnp.zeros((1, 8), jnp.int32)
  return nn.meta.unbox(families.build(cfg).init(jax.random.key(seed), x, x, x + 1)["params"])


def _loss_fn(model):
  """Mean next-token NLL within each document (written here, not the trainer's objective)."""
  def loss(params, batch):
    logits = model.apply({"params": params}, batch["tokens"], batch["positions"], batch["segment_ids"])
    logp = jax.nn.log_softmax(logits.astype(jnp.float32)[:, :-1], -1)
    nll = -jnp.take_along_axis(logp, batch["tokens"][:, 1:, None], -1)[..., 0]
    w = (batch["segment_ids"][:, 1:] == batch["segment_ids"][:, :-1]).astype(jnp.float32)
    return jnp.sum(nll * w) / jnp.sum(w)
  return loss


def _train(cfg: ModelConfig, params, batch, steps: int) -> list[float]:
  """Losses before each of `steps` Adam steps on one batch, then after the last."""
  loss = _loss_fn(families.build(cfg))
  tx = optax.adam(1e-2)

  def step(params, opt):
    value, grads = jax.value_and_grad(loss)(params, batch)
    updates, opt = tx.update(grads, opt, params)
    return optax.apply_updates(params, updates), opt, value

  opt, losses = tx.init(params), []
  _, step = _compiled(step, params, opt)
  for _ in range(steps):
    params, opt, value = step(params, opt)
    losses.append(float(value))
  losses.append(float(step(params, opt)[2]))
  return losses


def test_bf16_compute_is_close_to_float32_but_not_equal_and_trains():
  f32, bf16 = _cfg(), _cfg(dtype="bfloat16")
  params = _init(f32)
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(_init(bf16)))  # bf16 compute, float32 storage
  batch = _batch(f32.vocab_size)
  logits = {}
  for name, cfg in (("f32", f32), ("bf16", bf16)):
    model = families.build(cfg)
    _, forward = _compiled(lambda p, b: model.apply({"params": p}, b["tokens"], b["positions"], b["segment_ids"]),
                           params, batch)
    logits[name] = np.asarray(forward(params, batch))
    assert logits[name].dtype == np.float32  # logits come back float32 either way
  diff = np.abs(logits["bf16"] - logits["f32"])
  assert diff.max() > 0, "bf16 compute gave bit-identical logits: bfloat16 was not used"
  rel = np.linalg.norm(logits["bf16"] - logits["f32"]) / np.linalg.norm(logits["f32"])
  assert rel < 2e-2, rel
  # Same argmax almost everywhere (ties aside) on these tiny-scale logits.
  assert (logits["bf16"].argmax(-1) == logits["f32"].argmax(-1)).mean() > 0.9

  steps = 6
  losses_f32, losses_bf16 = _train(f32, params, batch, steps), _train(bf16, params, batch, steps)
  assert losses_f32[-1] < 0.8 * losses_f32[0], losses_f32
  assert losses_bf16[-1] < 0.8 * losses_bf16[0], losses_bf16
  # The same trajectory up to bf16 rounding (Adam amplifies it a little step by step).
  np.testing.assert_allclose(losses_bf16, losses_f32, rtol=0.1)
  np.testing.assert_allclose(losses_bf16[:2], losses_f32[:2], rtol=1e-3)


def _has_remat(jaxpr_text: str) -> bool:
  return "remat" in jaxpr_text or "checkpoint[" in jaxpr_text


@pytest.mark.parametrize("scan", [True, False])
def test_remat_policies_give_the_gradients_of_no_remat(scan):
  base = _cfg(scan_layers=scan, remat="none")
  params = _init(base, seed=1)
  batch = _batch(base.vocab_size)
  grad_of = lambda cfg: _compiled(jax.grad(_loss_fn(families.build(cfg))), params, batch)  # noqa: E731
  jaxpr, grad = grad_of(base)
  assert not _has_remat(jaxpr)
  want = grad(params, batch)
  flat_want = jax.tree_util.tree_flatten_with_path(want)[0]
  assert max(float(jnp.abs(g).max()) for _, g in flat_want) > 1e-4  # the gradients are not trivially zero
  for policy in ("full", "dots", "dots_no_batch"):
    cfg = dataclasses.replace(base, remat=policy)
    jaxpr, grad = grad_of(cfg)
    assert _has_remat(jaxpr), f"remat={policy}: no remat in the traced gradient"
    got = grad(params, batch)
    assert jax.tree.structure(got) == jax.tree.structure(want)
    for (path, w), g in zip(flat_want, jax.tree.leaves(got)):
      np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-6, atol=1e-6,
                                 err_msg=f"remat={policy} scan={scan} {jax.tree_util.keystr(path)}")
