"""Quickstart: a small Llama-style model on the Python standard library source.

Runs in about ten minutes on a 2-core laptop CPU. The first run prepares the
data (a sentencepiece tokenizer and train/val/test shards) from the running
interpreter's standard library; no download is needed.

  python train.py --config=configs/quickstart.py --workdir=runs/quickstart
"""

from configs import base


def get_config():
  c = base.base_config()

  c.model.vocab_size = 4096
  c.model.d_model = 256
  c.model.num_layers = 4
  c.model.num_heads = 8
  c.model.num_kv_heads = 4    # grouped-query attention; splits over tensor=4 too
  c.model.head_dim = 32
  c.model.mlp_dim = 768
  c.model.rope_theta = 10_000.0
  c.model.scan_unroll = 0     # stacked layers, unrolled program: faster CPU steps (README, Speed)

  c.data.dir = "datasets/stdlib_sp4096"
  c.data.prepare_config = "configs/data/stdlib.py"

  c.train.steps = 400
  c.train.batch_size = 8
  c.train.seq_len = 256

  c.optimizer.learning_rate = 1e-3
  c.optimizer.warmup_steps = 40
  c.optimizer.weight_decay = 0.1

  c.checkpoint.every_steps = 200
  c.eval.every_steps = 100
  c.eval.steps = 8
  c.eval.final_steps = 32
  c.eval.num_samples = 3
  c.log.every_steps = 20
  return c
