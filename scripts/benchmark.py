"""Time one config's train step on the devices present: compile, step time, tokens/s, MFU, memory.

  python scripts/benchmark.py --config=configs/gpt2_124m.py --config.train.batch_size=2 \\
      --config.train.seq_len=256 [--steps=5] [--peak_flops=989e12] [--profile_dir=/tmp/trace]

Uses random tokens, so no dataset is needed. The last line printed is JSON with
tokens_per_sec, step_time_s, compile_time_s, mfu and peak_memory_bytes.
MFU counts 6N + 12·L·H·Q·T model FLOPs per token (model/flops.py) against the
device's peak (trainer/mfu.py; override with --peak_flops). Any objective runs: a
preference objective on random pairs (tokens/s counts both sides; DPO with a live
reference counts 8N per token), distillation with a randomly initialised teacher of
the configured architecture (plus its forward pass, 2N_teacher per token), or from
random top-k logits when train.distill.teacher_topk_dir names precomputed ones (no
teacher pass).

  python scripts/benchmark.py --config=configs/dpo.py --config.init.hf_dir=exports/quickstart

--compare_torch also times the PyTorch twin of the same model and train step on the same config
(scripts/benchmark_torch.py; eager and torch.compile; needs the `hf` extra) right after Strata's
own step, and prints Strata's tokens/s over each of PyTorch's.

  python scripts/benchmark.py --config=configs/quickstart.py --compare_torch
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from errors import UserError  # noqa: E402
from trainer.benchmark import benchmark  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config.", lock_config=True)
_STEPS = flags.DEFINE_integer("steps", 5, "Timed steps (after one warm-up step).")
_PEAK = flags.DEFINE_float("peak_flops", 0.0, "Peak FLOP/s per device; 0 looks it up by device kind "
                           "(H100/H200 989e12, A100 312e12, TPU v4 275e12, v5e 197e12, v5p 459e12, v6e 918e12).")
_PROFILE = flags.DEFINE_string("profile_dir", "", "Write a jax.profiler trace of the timed steps here.")
_COMPARE_TORCH = flags.DEFINE_bool("compare_torch", False, "Also time the PyTorch twin (eager and torch.compile) "
                                   "on this config and print the ratios.")
flags.mark_flags_as_required(["config"])


def main(argv):
  del argv
  try:
    result = benchmark(_CONFIG.value, _STEPS.value, _PEAK.value, _PROFILE.value)
    for k, v in result.items():
      print(f"{k:>22}: {v}")
    if _COMPARE_TORCH.value:
      result["torch"] = compare_torch(result)
  except UserError as e:
    sys.exit(f"error: {e}")
  print(json.dumps(result))


def compare_torch(result: dict) -> dict:
  """The twin's timings on this config, with Strata's speed over each printed as a ratio."""
  from scripts import benchmark_torch
  if result["num_devices"] > 1 and result["device_kind"] == "cpu":
    print("note: the PyTorch twin runs in one process on all CPU threads; Strata ran on "
          f"{result['num_devices']} XLA devices")
  timings = benchmark_torch.run(_CONFIG.value, steps=_STEPS.value)
  print(f"{'':>22}  {'tokens/s':>9}  {'strata / this':>13}")
  print(f"{'strata':>22}  {result['tokens_per_sec']:9.0f}  {1.0:12.2f}x")
  for mode in benchmark_torch.MODES:
    timings[mode]["strata_ratio"] = result["tokens_per_sec"] / timings[mode]["tokens_per_sec"]
    print(f"{'torch ' + mode:>22}  {timings[mode]['tokens_per_sec']:9.0f}  {timings[mode]['strata_ratio']:12.2f}x")
  return timings


if __name__ == "__main__":
  app.run(main)
