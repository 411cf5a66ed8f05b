"""The PyTorch twin (scripts/benchmark_torch.py) is the model and train step Strata runs: from the same
weights and batch it computes the same losses and the same updated parameters, step after step. Only then
is `scripts/benchmark.py --compare_torch` a like-for-like race."""

import dataclasses

import jax
import numpy as np
import pytest
import torch

from configs import quickstart
from configs.schema import RunConfig
from model import families
from model.transformer import unstacked_params
from parallel import mesh as mesh_lib
from parallel import sharding
from scripts import benchmark_torch
from trainer import objectives
from trainer import optimizer as optimizer_lib
from trainer import state as state_lib
from trainer import steps as steps_lib

LLAMA = dict(norm="rmsnorm", mlp="swiglu", position="rope", use_bias=False, tie_embeddings=True)
GPT2 = dict(norm="layernorm", mlp="gelu", position="learned", use_bias=True, tie_embeddings=False)


def tiny_config(**model) -> RunConfig:
  c = quickstart.get_config()
  c.model.update(vocab_size=96, d_model=32, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=8, mlp_dim=64,
                 max_seq_len=32, **model)
  c.train.update(batch_size=8, seq_len=16, steps=10)
  c.optimizer.update(warmup_steps=2, learning_rate=3e-3, weight_decay=0.1, grad_clip_norm=0.5)
  return RunConfig.from_config(c)


def strata_steps(config: RunConfig, tokens: np.ndarray, steps: int):
  """(initial parameters, losses, final parameters) of Strata's own train step."""
  mesh = mesh_lib.make_mesh(config.mesh)
  model = families.build(config.model)
  tx, schedule = optimizer_lib.make_optimizer(config.optimizer, config.train.steps)
  with sharding.activate(mesh):
    _, state_sh = state_lib.state_shardings(model, tx, mesh, config.train.seq_len)
    batch_sh = sharding.batch_sharding(mesh)
    state = state_lib.create(model, tx, state_sh, config.train.seq_len, jax.random.key(0))
    initial = jax.tree.map(np.asarray, state.params)
    step = steps_lib.make_train_step(model, objectives.build(config), tx, schedule, state_sh, {}, batch_sh,
                                     sharding.replicated(mesh), 1)
    batch = {"tokens": tokens, "positions": np.broadcast_to(np.arange(tokens.shape[1], dtype=np.int32), tokens.shape),
             "segment_ids": np.ones_like(tokens), "loss_mask": np.ones_like(tokens)}
    batch = jax.device_put(batch, batch_sh)
    losses = []
    for _ in range(steps):
      state, metrics = step(state, {}, batch)
      losses.append(float(metrics["loss"]))
  return initial, losses, jax.tree.map(np.asarray, state.params)


@pytest.mark.parametrize("arch", [LLAMA, GPT2], ids=["llama", "gpt2"])
def test_twin_trains_like_strata(arch):
  config = tiny_config(**arch)
  tokens = np.random.default_rng(0).integers(0, config.model.vocab_size, (8, 16)).astype(np.int32)
  initial, losses, final = strata_steps(config, tokens, steps=3)

  trainer = benchmark_torch.TwinTrainer(config)
  benchmark_torch.load_strata_params(trainer.model, initial)
  twin_losses = [float(trainer.step(torch.from_numpy(tokens).long())) for _ in range(3)]
  np.testing.assert_allclose(twin_losses, losses, rtol=2e-5)
  assert losses[-1] < losses[0] - 0.01  # the steps moved the weights: the comparison below is not vacuous

  expected = benchmark_torch.TwinLM(config.model)
  benchmark_torch.load_strata_params(expected, final if "layers" not in final["decoder"]
                                     else unstacked_params(final, config.model.num_layers))
  got = dict(trainer.model.named_parameters())
  for name, value in expected.named_parameters():
    if name.endswith("key.bias"):
      continue  # adds the same q.b to every score of a query: its gradient is 0 + rounding, which Adam scales up
    np.testing.assert_allclose(got[name].detach().numpy(), value.detach().numpy(), atol=3e-6, err_msg=name)


def test_twin_refuses_what_it_does_not_model():
  c = tiny_config(**LLAMA)
  with pytest.raises(Exception, match="config.model.dtype='bfloat16'"):
    benchmark_torch.check_supported(dataclasses.replace(c.model, dtype="bfloat16"))
  with pytest.raises(Exception, match="z_loss=0.0001"):
    benchmark_torch.check_step_supported(dataclasses.replace(c, optimizer=dataclasses.replace(c.optimizer, z_loss=1e-4)))
