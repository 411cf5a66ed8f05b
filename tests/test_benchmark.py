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


def test_t5_counts_encoder_tokens_and_both_stacks(t5_dataset_dir):
  """Span corruption: tokens are the encoder's (seq_len per row); FLOPs count 6 x the matmul weights each
  token passes (the encoder's for encoder tokens, the decoder's, cross-attention and head included, for
  decoder tokens; cross-attention's keys and values project the encoder's outputs) plus attention: the encoder's S x S, the decoder's T x T and T x S. The weights are
  counted here from the model's own parameter tree."""
  import jax
  import numpy as np
  from model import families
  from test_t5_training import t5_config
  config = t5_config(t5_dataset_dir, dict(data=-1, fsdp=1, tensor=1))
  result = benchmark.benchmark(config, 1, 0.0, "")
  S, T = 32, result["target_len"]
  assert T == 8 and _counted_tokens(result) == pytest.approx(8 * S)  # 32 inputs <- 34 raw tokens: 8 targets
  cfg = ModelConfig.from_config(config.model)
  shapes = jax.eval_shape(families.build(cfg).init, jax.random.key(0), *families.example_inputs(families.build(cfg)))
  sizes = {jax.tree_util.keystr(p): int(np.prod(x.shape)) for p, x in
           jax.tree_util.tree_flatten_with_path(shapes["params"])[0]}
  matmul = lambda prefix: sum(n for k, n in sizes.items() if k.startswith(prefix) and "norm" not in k)  # noqa: E731
  n_enc, n_dec = matmul("['encoder_layers']"), matmul("['decoder_layers']") + matmul("['lm_head']")
  n_kv = sum(n for k, n in sizes.items() if "['cross_attention']['key']" in k or "['cross_attention']['value']" in k)
  assert n_enc and n_kv and n_dec > n_kv  # (scanned layers: stacked under encoder_layers/decoder_layers)
  hq, L = cfg.num_heads * cfg.head_dim, cfg.num_layers
  want = (6 * (n_enc * S + (n_dec - n_kv) * T + n_kv * S) + 12 * hq * L * (S * S + T * T + T * S)) / S
  assert result["flops_per_token"] == pytest.approx(want)
  devices = result["num_devices"]
  assert result["mfu"] == pytest.approx(result["tokens_per_sec"] * want / (devices * result["peak_flops_per_device"]))
