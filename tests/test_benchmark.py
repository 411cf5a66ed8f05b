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
