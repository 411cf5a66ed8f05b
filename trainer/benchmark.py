"""Time one config's train step on the devices present (scripts/benchmark.py): compile time, step time,
tokens/s, MFU and memory, on random tokens (no dataset needed).

An encoder-decoder (T5) counts its encoder tokens (seq_len per row) as the tokens, and its encoder's and
decoder's FLOPs per encoder token (model/flops.py). MFU counts the objective's model FLOPs per token (Objective.flops_per_token: 6N + 12·L·H·Q·T, plus a
live reference's or a teacher's forward pass) against the device's peak (trainer/mfu.py). An objective
that samples (GRPO) also times its sampling phase with the KV-cache decoder: prefill and decoding, each
counted at a forward pass per token (2N + 4·L·H·Q·context, model/flops.py).
"""

import dataclasses
import time

import jax
import numpy as np

from configs.schema import RunConfig
from data import teacher_topk as teacher_topk_lib
from model import decode, families, flops
from model.sampling import SamplingConfig
from parallel import mesh as mesh_lib
from parallel import sharding
from trainer import loop, objectives
from trainer import mfu as mfu_lib
from trainer import optimizer as optimizer_lib
from trainer import state as state_lib
from trainer import steps as steps_lib
from trainer.teacher import TEACHER


def _peak_memory(compiled) -> int:
  stats = jax.local_devices()[0].memory_stats()
  if stats and "peak_bytes_in_use" in stats:
    return int(stats["peak_bytes_in_use"])
  m = compiled.memory_analysis()  # CPU: the compiler's per-device estimate
  return int(m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
             - m.alias_size_in_bytes)


def _frozen(objective, state, state_sh, mesh, seq_len: int) -> tuple[dict, dict]:
  """(frozen collections, their shardings) beside the trained parameters: a DPO reference (a copy of
  them), a distillation teacher (random weights of its architecture)."""
  frozen, frozen_sh = {}, {}
  if objective.needs_reference:
    frozen[state_lib.REFERENCE] = jax.tree.map(jax.numpy.copy, state.params)
    frozen_sh[state_lib.REFERENCE] = state_sh.params
  if objective.teacher is not None:
    _, frozen_sh[TEACHER] = objective.teacher.shardings(mesh)
    frozen[TEACHER] = state_lib.init_params(objective.teacher.module, frozen_sh[TEACHER], seq_len, jax.random.key(1))
  return frozen, frozen_sh


def _encoder_decoder_batch(rng, rows: int, inputs_len: int, targets_len: int, vocab_size: int) -> dict:
  """A batch of one example per row: the encoder's inputs, the decoder's inputs and targets."""
  def side(length):
    return (rng.integers(0, vocab_size, (rows, length)).astype(np.int32),
            np.broadcast_to(np.arange(length, dtype=np.int32), (rows, length)).copy(), np.ones((rows, length), np.int32))
  enc_tokens, enc_positions, enc_segments = side(inputs_len)
  tokens, positions, segments = side(targets_len)
  return {"encoder_tokens": enc_tokens, "encoder_positions": enc_positions, "encoder_segment_ids": enc_segments,
          "tokens": tokens, "positions": positions, "segment_ids": segments,
          "targets": rng.integers(0, vocab_size, (rows, targets_len)).astype(np.int32),
          "target_weights": np.ones((rows, targets_len), np.float32)}


def benchmark(config, steps: int, peak_override: float, profile_dir: str) -> dict:
  config = config.copy_and_resolve_references()
  with config.unlocked():
    loop.take_init_architecture(config)  # a config starting from a checkpoint benchmarks its architecture
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
    objective = objectives.build(config)
    state = state_lib.create(model, tx, state_sh, t.seq_len, jax.random.key(0))
    frozen, frozen_sh = _frozen(objective, state, state_sh, mesh, t.seq_len)
    step = steps_lib.make_train_step(model, objective, tx, schedule, state_sh, frozen_sh, batch_sh,
                                     sharding.replicated(mesh), t.grad_accum_steps)
    rng = np.random.default_rng(0)
    shape = (t.batch_size,) + (2,) * (objective.sequences_per_row == 2) + (t.seq_len,)  # pairs: [B, 2, T]
    batch = {"tokens": rng.integers(0, model_cfg.vocab_size, shape).astype(np.int32),
             "positions": np.broadcast_to(np.arange(t.seq_len, dtype=np.int32), shape).copy(),
             "segment_ids": np.ones(shape, np.int32), "loss_mask": np.ones(shape, np.int32)}
    batch["advantages"] = rng.normal(size=t.batch_size).astype(np.float32)  # GRPO
    batch["ref_logps"] = -rng.uniform(10, 100, (t.batch_size, 2)).astype(np.float32)  # DPO, precomputed
    if objective.teacher_topk:  # distillation from a precomputed teacher: its top-k logits per position
      k = teacher_topk_lib.load(objective.teacher_topk)["top_k"]
      batch["teacher_ids"] = rng.integers(0, model_cfg.vocab_size, shape + (k,)).astype(np.int32)
      batch["teacher_logits"] = -np.sort(-rng.normal(size=shape + (k,)), -1).astype(np.float32)
      batch["teacher_lse"] = np.full(shape + (2,), 8.0, np.float32)
    if model_cfg.family == "encoder_decoder":  # seq_len encoder tokens, target_len decoder tokens per row
      batch.update(_encoder_decoder_batch(rng, t.batch_size, t.seq_len, objective.target_len, model_cfg.vocab_size))
    batch = jax.device_put({k: v for k, v in batch.items() if k in objective.batch_fields}, batch_sh)

    start = time.perf_counter()
    compiled = step.lower(state, frozen, batch).compile()
    compile_time = time.perf_counter() - start
    state, metrics = compiled(state, frozen, batch)  # warm-up
    jax.block_until_ready(metrics)
    if profile_dir:
      jax.profiler.start_trace(profile_dir)
    start = time.perf_counter()
    for _ in range(steps):
      state, metrics = compiled(state, frozen, batch)
    jax.block_until_ready(metrics)
    step_time = (time.perf_counter() - start) / steps
    if profile_dir:
      jax.profiler.stop_trace()

  tokens_per_sec = t.batch_size * objective.sequences_per_row * t.seq_len / step_time
  peak = mfu_lib.peak_flops_per_device(jax.devices()[0].device_kind, peak_override)
  fpt = objective.flops_per_token(model_cfg, t.seq_len)
  sampling = _sampling_phase(config, mesh, state.params, peak) if objective.generates else {}
  if sampling:  # a GRPO step samples, then trains
    sampling["sample_and_train_s"] = sampling["sampling_time_s"] + step_time
  return {
      "objective": t.objective,
      "device_kind": jax.devices()[0].device_kind,
      "num_devices": jax.device_count(),
      "mesh": dict(mesh.shape),
      "batch_size": t.batch_size, "seq_len": t.seq_len,
      **({"target_len": objective.target_len} if objective.target_len else {}),
      "params": int(sum(np.prod(x.shape) for x in jax.tree.leaves(abstract.params))),
      "flops_per_token": fpt,
      "peak_flops_per_device": peak,
      "loss": float(metrics["loss"]),
      "tokens_per_sec": tokens_per_sec,
      "step_time_s": step_time,
      "compile_time_s": compile_time,
      "mfu": mfu_lib.mfu(tokens_per_sec, fpt, jax.device_count(), peak),
      "peak_memory_bytes": _peak_memory(compiled),
      **sampling,
  }


def _sampling_phase(config, mesh, params, peak: float) -> dict:
  """GRPO's other phase: batch_size completions of max_completion_len tokens after prompts that fill the
  rest of seq_len, sampled at the configured temperature (no stop token: every row runs to the end).
  Timed warm (a first call compiles); prefill and decoding tokens/s and MFU apart, and the whole step's
  time, sampling plus training."""
  t, g = config.train, config.train.grpo
  cfg = dataclasses.replace(config.model_config(), lora=None)
  prompt_len, new = t.seq_len - g.max_completion_len, g.max_completion_len
  prompts = np.random.default_rng(1).integers(3, cfg.vocab_size, (t.batch_size, prompt_len)).tolist()
  decoder = decode.Decoder(cfg, mesh, chunk=new)
  sampling = SamplingConfig(temperature=g.temperature, top_k=g.top_k, top_p=g.top_p)
  with sharding.activate(mesh):
    decoder.generate(params, prompts, new, sampling)  # compiles
    out = decoder.generate(params, prompts, new, sampling)
  devices = jax.device_count()
  prefill_tps = t.batch_size * prompt_len / out.prefill_s
  decode_tps = out.new_tokens / out.decode_s
  return {
      "prefill_tokens_per_sec": prefill_tps,
      "prefill_mfu": mfu_lib.mfu(prefill_tps, flops.forward_flops_per_token(cfg, prompt_len), devices, peak),
      "decode_tokens_per_sec": decode_tps,
      "decode_mfu": mfu_lib.mfu(decode_tps, flops.forward_flops_per_token(cfg, prompt_len + new / 2), devices, peak),
      "sampling_time_s": out.prefill_s + out.decode_s,
  }
