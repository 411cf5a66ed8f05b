"""Llama-3.2-1B shape: 16 layers, d=2048, GQA 32/8 heads, SwiGLU 8192, RoPE theta 500k.

Point `data.dir` at a dataset prepared with a 128k vocabulary.
"""

from configs import base


def get_config():
  c = base.base_config()

  c.model.vocab_size = 128_256
  c.model.d_model = 2048
  c.model.num_layers = 16
  c.model.num_heads = 32
  c.model.num_kv_heads = 8
  c.model.head_dim = 64
  c.model.mlp_dim = 8192
  c.model.rope_theta = 500_000.0
  c.model.rope_scaling = "llama3"
  c.model.rope_scaling_factor = 32.0
  c.model.rope_low_freq_factor = 1.0
  c.model.rope_high_freq_factor = 4.0
  c.model.rope_original_max_position = 8192
  c.model.tie_embeddings = True
  c.model.dtype = "bfloat16"
  c.model.remat = "dots_no_batch"

  c.data.dir = "datasets/llama"

  c.train.steps = 50_000
  c.train.batch_size = 256
  c.train.seq_len = 2048

  c.optimizer.learning_rate = 3e-4
  c.optimizer.warmup_steps = 2000
  c.optimizer.schedule = "wsd"

  c.checkpoint.every_steps = 1000
  c.eval.every_steps = 1000
  c.eval.steps = 20
  c.log.every_steps = 10
  return c
