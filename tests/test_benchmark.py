"""trainer/benchmark.py (scripts/benchmark.py) for the objectives with more than one model or sequence per row:
what it counts as tokens and as model FLOPs."""

import pytest

from conftest import small_config, sft_config
from configs.schema import DistillConfig
from model import flops, hf_config
from model.config import ModelConfig
from trainer import benchmark
from trainer.teacher import Teacher

SHORT = {"train.batch_size": 8, "train.seq_len": 32}


def _counted_tokens(result) -> float:
  return result["tokens_per_sec"] * result["step_time_s"]


def test_dpo_counts_both_sides_and_the_reference_forward_pass(tiny_hf_base):
  result = benchmark.benchmark(sft_config(tiny_hf_base, "unused", **SHORT, **{"train.objective": "dpo"}), 1, 0.0, "")
  cfg = ModelConfig.from_config(hf_config.read(tiny_hf_base)[1])
  assert _counted_tokens(result) == pytest.approx(8 * 2 * 32)
  assert result["flops_per_token"] == pytest.approx(4 / 3 * flops.flops_per_token(cfg, 32))  # 8N, not 6N


def test_distillation_adds_the_teacher_forward_pass(dataset_dir, tiny_hf_base):
  from test_distill import STUDENT
  config = small_config(dataset_dir, **SHORT, **STUDENT, **{"train.objective": "distill",
                                                            "train.distill.teacher_hf_dir": tiny_hf_base})
  result = benchmark.benchmark(config, 1, 0.0, "")
  student = ModelConfig.from_config(config.model)
  teacher = Teacher.from_config(DistillConfig(teacher_hf_dir=tiny_hf_base), student).cfg
  assert _counted_tokens(result) == pytest.approx(8 * 32)
  assert result["flops_per_token"] == pytest.approx(flops.flops_per_token(student, 32)
                                                    + flops.flops_per_token(teacher, 32) / 3)


def test_grpo_times_sampling_and_training_apart(tiny_hf_base):
  """The train step on batch_size rows of seq_len, and the sampling phase: prefill of the prompts that fill
  the rest of seq_len, then max_completion_len tokens per row, each at a forward pass's FLOPs."""
  grpo = {"train.objective": "grpo", "train.grpo.num_generations": 4, "train.grpo.max_completion_len": 8,
          "eval.best_metric": "val/reward"}
  result = benchmark.benchmark(sft_config(tiny_hf_base, "unused", **SHORT, **grpo), 1, 1e9, "")
  cfg = ModelConfig.from_config(hf_config.read(tiny_hf_base)[1])
  assert _counted_tokens(result) == pytest.approx(8 * 32)
  assert result["flops_per_token"] == pytest.approx(flops.flops_per_token(cfg, 32))  # beta=0: no reference
  assert result["decode_mfu"] == pytest.approx(
      result["decode_tokens_per_sec"] * flops.forward_flops_per_token(cfg, 24 + 4) / (1e9 * result["num_devices"]))
  assert result["prefill_mfu"] == pytest.approx(
      result["prefill_tokens_per_sec"] * flops.forward_flops_per_token(cfg, 24) / (1e9 * result["num_devices"]))
  assert result["sample_and_train_s"] == pytest.approx(result["sampling_time_s"] + result["step_time_s"])
  assert 2 * flops.forward_flops_per_token(cfg, 32) * 3 == pytest.approx(2 * flops.flops_per_token(cfg, 32))
