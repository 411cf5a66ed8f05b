"""Loss masking, z-loss, gradient accumulation and the weight-decay mask."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import quickstart
from model.config import ModelConfig
from model import families
from trainer import optimizer as optimizer_lib
from trainer import state as state_lib
from trainer import steps as steps_lib
from trainer.objectives import causal_lm as objectives
from trainer.objectives import cross_entropy_sums, next_token_targets


def test_targets_stop_at_document_and_padding_boundaries():
  batch = {"tokens": jnp.array([[5, 6, 7, 8, 9, 3]]), "segment_ids": jnp.array([[1, 1, 1, 2, 2, 0]])}
  targets, weights = next_token_targets(batch)
  np.testing.assert_array_equal(targets, [[6, 7, 8, 9, 3, 0]])
  # 7->8 crosses documents, 9->pad and pad->end are not targets.
  np.testing.assert_array_equal(weights, [[1, 1, 0, 1, 0, 0]])
  batch["loss_mask"] = jnp.array([[0, 0, 1, 1, 1, 0]])
  _, weights = next_token_targets(batch)
  np.testing.assert_array_equal(weights, [[0, 1, 0, 1, 0, 0]])


def test_cross_entropy_and_z_loss_values():
  logits = jnp.log(jnp.array([[[0.5, 0.25, 0.25], [0.1, 0.1, 0.8]]]))
  nll, z, count = cross_entropy_sums(logits * 1.0, jnp.array([[0, 2]]), jnp.array([[1.0, 0.0]]), z_loss=0.1)
  np.testing.assert_allclose(nll, -np.log(0.5), rtol=1e-6)
  np.testing.assert_allclose(z, 0.0, atol=1e-6)  # logsumexp of probabilities' logs is 0
  assert count == 1.0
  _, z, _ = cross_entropy_sums(logits + 2.0, jnp.array([[0, 2]]), jnp.array([[1.0, 1.0]]), z_loss=0.1)
  np.testing.assert_allclose(z, 0.1 * 2 * 4.0, rtol=1e-5)


def test_masked_tokens_get_zero_gradient():
  """The logit gradient vanishes exactly where the weight is 0."""
  logits = jax.random.normal(jax.random.key(0), (1, 4, 11))
  targets = jnp.array([[1, 2, 3, 4]])
  weights = jnp.array([[1.0, 0.0, 1.0, 0.0]])
  g = jax.grad(lambda l: cross_entropy_sums(l, targets, weights, 1e-3)[0])(logits)
  assert np.all(np.asarray(g[0, 1]) == 0) and np.all(np.asarray(g[0, 3]) == 0)
  assert np.any(np.asarray(g[0, 0]) != 0)


def test_chunked_vocabulary_gives_the_full_logits_target_log_z_and_gradients():
  """Over chunks of 7 columns of a 30-token vocabulary (the last chunk padded), the target logit and
  logsumexp equal the full logits', and so do their gradients for the hidden states and the projection."""
  x = jax.random.normal(jax.random.key(1), (2, 5, 8))
  w = jax.random.normal(jax.random.key(2), (8, 30))
  targets = jax.random.randint(jax.random.key(4), (2, 5), 0, 30).at[0, 0].set(29)  # in the padded chunk

  def full(x, w):
    logits = jnp.einsum("ntd,dv->ntv", x, w)
    return jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0], jax.nn.logsumexp(logits, -1)

  chunked = lambda x, w: objectives.chunked_target_and_log_z(x, w, targets, 7)  # noqa: E731
  for got, want in zip(chunked(x, w), full(x, w)):
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
  c1, c2 = jax.random.normal(jax.random.key(3), (2, 2, 5))
  loss = lambda f: lambda x, w: jnp.sum(f(x, w)[0] * c1 + f(x, w)[1] * c2)  # noqa: E731
  grads = [jax.grad(loss(f), argnums=(0, 1))(x, w) for f in (full, chunked)]
  for g_full, g_chunked in zip(*grads):
    np.testing.assert_allclose(g_chunked, g_full, rtol=1e-5, atol=1e-6)


def test_weight_decay_mask_spares_norms_and_biases():
  params = {"mlp": {"up": 1.0, "up_bias": 1.0}, "attention_norm": {"scale": 1.0, "bias": 1.0}}
  assert optimizer_lib.decay_mask(params) == {"mlp": {"up": True, "up_bias": False},
                                              "attention_norm": {"scale": False, "bias": False}}


def test_schedules():
  opt = quickstart.get_config().optimizer
  opt.learning_rate, opt.warmup_steps, opt.min_lr_ratio = 1.0, 10, 0.1
  cosine = optimizer_lib.learning_rate_schedule(opt, 110)
  assert abs(cosine(9) - 1.0) < 1e-6 and abs(cosine(110) - 0.1) < 1e-6
  opt.schedule, opt.wsd_decay_fraction = "wsd", 0.2
  wsd = optimizer_lib.learning_rate_schedule(opt, 110)
  assert abs(wsd(60) - 1.0) < 1e-6 and abs(wsd(110) - 0.1) < 1e-6 and 0.1 < wsd(100) < 1.0


def test_gradient_accumulation_equals_full_batch():
  cfg = quickstart.get_config()
  # A small vocabulary: the logits, not the layers, dominate this test's compile and run time.
  cfg.model.update(dict(d_model=64, num_layers=2, num_heads=2, num_kv_heads=1, head_dim=32, mlp_dim=128,
                        vocab_size=256))
  model = families.build(ModelConfig.from_config(cfg.model))
  tx, schedule = optimizer_lib.make_optimizer(cfg.optimizer, 10)
  init = jax.jit(state_lib.init_fn(model, tx, 32))
  rng = np.random.default_rng(0)
  batch = {"tokens": jnp.asarray(rng.integers(0, 256, (4, 32)), jnp.int32),
           "positions": jnp.broadcast_to(jnp.arange(32, dtype=jnp.int32), (4, 32)),
           "segment_ids": jnp.asarray(np.repeat([[1] * 20 + [2] * 12], 4, 0), jnp.int32)}
  batch["segment_ids"] = batch["segment_ids"].at[3, 25:].set(0)  # uneven token counts per row
  results = []
  for accum in (1, 2, 4):
    step = steps_lib.make_train_step(model, objectives.CausalLM(z_loss=1e-4), tx, schedule, None, None, None, None,
                                     accum)
    state, metrics = step(init(jax.random.key(0)), {}, batch)
    results.append((metrics, state.params))
  for metrics, params in results[1:]:
    np.testing.assert_allclose(metrics["loss"], results[0][0]["loss"], rtol=1e-6)
    np.testing.assert_allclose(metrics["grad_norm"], results[0][0]["grad_norm"], rtol=1e-5)
    # Adam's first update is ~lr * sign(g); rounding flips only near-zero gradients.
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(results[0][1])):
      np.testing.assert_allclose(a, b, atol=1e-5)


def test_objective_is_validated_against_the_family():
  from configs import quickstart as qs
  from errors import UserError
  from trainer.objectives import build
  cfg = qs.get_config()
  assert build(cfg) == objectives.CausalLM(z_loss=cfg.optimizer.z_loss)
  cfg.train.objective = "no_such_objective"
  with pytest.raises(UserError, match=r"config.train.objective='no_such_objective'; expected one of \[.*'causal_lm'"):
    build(cfg)
  cfg.train.objective = "causal_lm"
  with cfg.model.unlocked():
    cfg.model.family = "encoder"
  with pytest.raises(UserError, match=r"objective='causal_lm' does not fit config.model.family='encoder'; "
                                      r"it trains decoder models"):
    build(cfg)
