"""Masked-LM quickstart: a small BERT-style encoder on the Python standard library source.

BERT's architecture (configs/bert_base.py), shrunk to train on a 2-core laptop
CPU in a few minutes. The first run prepares the data (a tokenizer with
[CLS]/[SEP]/[PAD]/[MASK], and train/val/test shards) from the running
interpreter's standard library; no download is needed. Rows are masked on the
fly in the data pipeline (15% of tokens: 80% [MASK], 10% random, 10%
unchanged), seeded per row, so a resumed run sees the same masks; validation
reports masked-token loss and accuracy.

  python train.py --config=configs/mlm_quickstart.py --workdir=runs/mlm
"""

from configs import bert_base


def get_config():
  c = bert_base.get_config()

  c.model.vocab_size = 4096
  c.model.d_model = 256
  c.model.num_layers = 4
  c.model.num_heads = c.model.num_kv_heads = 8
  c.model.head_dim = 32
  c.model.mlp_dim = 1024
  c.model.max_seq_len = 256
  c.model.dtype = "float32"

  c.data.dir = "datasets/stdlib_mlm_sp4096"
  c.data.prepare_config = "configs/data/stdlib_mlm.py"

  c.train.steps = 400
  c.train.batch_size = 16
  c.train.seq_len = 128

  c.optimizer.learning_rate = 1e-3
  c.optimizer.warmup_steps = 40
  c.optimizer.b2 = 0.98
  c.optimizer.eps = 1e-8
  c.optimizer.min_lr_ratio = 0.1

  c.checkpoint.every_steps = 200
  c.eval.every_steps = 100
  c.eval.steps = 8
  c.eval.final_steps = 16
  c.log.every_steps = 20
  return c
