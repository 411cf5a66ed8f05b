"""Time one config's train step on the devices present: compile, step time, tokens/s, MFU, memory.

  python scripts/benchmark.py --config=configs/gpt2_124m.py --config.train.batch_size=2 \\
      --config.train.seq_len=256 [--steps=5] [--peak_flops=989e12] [--profile_dir=/tmp/trace]

Uses random tokens, so no dataset is needed. The last line printed is JSON with
tokens_per_sec, step_time_s, compile_time_s, mfu and peak_memory_bytes.
MFU counts 6N + 12·L·H·Q·T model FLOPs per token (model/flops.py) against the
device's peak (trainer/mfu.py; override with --peak_flops).
"""

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from errors import UserError  # noqa: E402
from model import families, flops  # noqa: E402
from configs.schema import RunConfig  # noqa: E402
from parallel import mesh as mesh_lib  # noqa: E402
from parallel import sharding  # noqa: E402
from trainer import mfu as mfu_lib  # noqa: E402
from trainer import objectives  # noqa: E402
from trainer import optimizer as optimizer_lib  # noqa: E402
from trainer import state as state_lib  # noqa: E402
from trainer import steps as steps_lib  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config.", lock_config=True)
_STEPS = flags.DEFINE_integer("steps", 5, "Timed steps (after one warm-up step).")
_PEAK = flags.DEFINE_float("peak_flops", 0.0, "Peak FLOP/s per device; 0 looks it up by device kind "
                           "(H100/H200 989e12, A100 312e12, TPU v4 275e12, v5e 197e12, v5p 459e12, v6e 918e12).")
_PROFILE = flags.DEFINE_string("profile_dir", "", "Write a jax.profiler trace of the timed steps here.")
flags.mark_flags_as_required(["config"])


def _peak_memory(compiled) -> int:
  stats = jax.local_devices()[0].memory_stats()
  if stats and "peak_bytes_in_use" in stats:
    return int(stats["peak_bytes_in_use"])
  m = compiled.memory_analysis()  # CPU: the compiler's per-device estimate
  return int(m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
             - m.alias_size_in_bytes)


def benchmark(config, steps: int, peak_override: float, profile_dir: str) -> dict:
  config = RunConfig.from_config(config)
  t = config.train
  model_cfg = config.model
  mesh = mesh_lib.make_mesh(config.mesh)
  model = families.build(model_cfg)
  tx, schedule = optimizer_lib.make_optimizer(config.optimizer, t.steps)
  with sharding.activate(mesh):
    abstract, state_sh = state_lib.state_shardings(model, tx, mesh, t.seq_len)
    sharding.check_divisible(abstract.params, state_sh.params, "parameter")
    batch_sh = sharding.batch_sharding(mesh)
    step = steps_lib.make_train_step(model, objectives.build(config), tx, schedule, state_sh, {}, batch_sh,
                                     sharding.replicated(mesh), t.grad_accum_steps)
    state = state_lib.create(model, tx, state_sh, t.seq_len, jax.random.key(0))
    rng = np.random.default_rng(0)
    shape = (t.batch_size, t.seq_len)
    batch = {"tokens": rng.integers(0, model_cfg.vocab_size, shape).astype(np.int32),
             "positions": np.broadcast_to(np.arange(t.seq_len, dtype=np.int32), shape).copy(),
             "segment_ids": np.ones(shape, np.int32)}
    batch = jax.device_put(batch, batch_sh)

    start = time.perf_counter()
    compiled = step.lower(state, {}, batch).compile()
    compile_time = time.perf_counter() - start
    state, metrics = compiled(state, {}, batch)  # warm-up
    jax.block_until_ready(metrics)
    if profile_dir:
      jax.profiler.start_trace(profile_dir)
    start = time.perf_counter()
    for _ in range(steps):
      state, metrics = compiled(state, {}, batch)
    jax.block_until_ready(metrics)
    step_time = (time.perf_counter() - start) / steps
    if profile_dir:
      jax.profiler.stop_trace()

  tokens_per_sec = t.batch_size * t.seq_len / step_time
  peak = mfu_lib.peak_flops_per_device(jax.devices()[0].device_kind, peak_override)
  fpt = flops.flops_per_token(model_cfg, t.seq_len)
  return {
      "device_kind": jax.devices()[0].device_kind,
      "num_devices": jax.device_count(),
      "mesh": dict(mesh.shape),
      "batch_size": t.batch_size, "seq_len": t.seq_len,
      "params": int(sum(np.prod(x.shape) for x in jax.tree.leaves(abstract.params))),
      "flops_per_token": fpt,
      "peak_flops_per_device": peak,
      "loss": float(metrics["loss"]),
      "tokens_per_sec": tokens_per_sec,
      "step_time_s": step_time,
      "compile_time_s": compile_time,
      "mfu": mfu_lib.mfu(tokens_per_sec, fpt, jax.device_count(), peak),
      "peak_memory_bytes": _peak_memory(compiled),
  }


def main(argv):
  del argv
  try:
    result = benchmark(_CONFIG.value, _STEPS.value, _PEAK.value, _PROFILE.value)
  except UserError as e:
    sys.exit(f"error: {e}")
  for k, v in result.items():
    print(f"{k:>22}: {v}")
  print(json.dumps(result))


if __name__ == "__main__":
  app.run(main)
