"""Masked-LM quickstart: a small BERT-style encoder on the Python standard library source.

Trains on a 2-core laptop CPU in a few minutes. The first run prepares the
data (a tokenizer with [CLS]/[SEP]/[PAD]/[MASK], and train/val/test shards)
from the running interpreter's standard library; no download is needed.
Rows are masked on the fly in the data pipeline (15% of tokens: 80% [MASK],
10% random, 10% unchanged), seeded per row, so a resumed run sees the same
masks; validation reports masked-token loss and accuracy.

  python train.py --config=configs/mlm_quickstart.py --workdir=runs/mlm
"""

from configs import base


def get_config():
  c = base.base_config()

  c.model.family = "encoder"
  c.model.vocab_size = 4096
  c.model.d_model = 256
  c.model.num_layers = 4
  c.model.num_heads = 8
  c.model.num_kv_heads = 8
  c.model.head_dim = 32
  c.model.mlp_dim = 1024
  c.model.max_seq_len = 256
  # BERT's layer: post-norm, exact GELU, biases, learned positions and token types.
  c.model.norm = "layernorm"
  c.model.norm_eps = 1e-12
  c.model.norm_position = "post"
  c.model.mlp = "gelu_erf"
  c.model.position = "learned"
  c.model.use_bias = True
  c.model.type_vocab_size = 2
  c.model.mlm_head = True

  c.data.dir = "datasets/stdlib_mlm_sp4096"
  c.data.prepare_config = "configs/data/stdlib_mlm.py"

  c.train.objective = "masked_lm"
  c.train.steps = 400
  c.train.batch_size = 16
  c.train.seq_len = 128

  c.optimizer.learning_rate = 1e-3
  c.optimizer.warmup_steps = 40
  c.optimizer.b2 = 0.98
  c.optimizer.weight_decay = 0.01

  c.checkpoint.every_steps = 200
  c.eval.every_steps = 100
  c.eval.steps = 8
  c.eval.final_steps = 16
  c.log.every_steps = 20
  return c
