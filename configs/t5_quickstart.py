"""T5 quickstart: a small T5 v1.1 (configs/t5_base.py) pretrained by span corruption on the standard library.

T5 v1.1's architecture, shrunk to train on a 2-core laptop CPU in minutes. The
first run prepares the data (a tokenizer with 100 sentinels at the end of its
vocabulary, and train/val/test shards) from the running interpreter's standard
library; no download is needed. Span corruption happens on the fly in the data
pipeline, seeded per row, so a resumed run sees the same spans; validation
reports target-token loss and accuracy.

  python train.py --config=configs/t5_quickstart.py --workdir=runs/t5
"""

from configs import t5_base


def get_config():
  c = t5_base.get_config()

  c.model.vocab_size = 4096
  c.model.d_model = 256
  c.model.num_layers = c.model.num_decoder_layers = 3
  c.model.num_heads = c.model.num_kv_heads = 4
  c.model.head_dim = 64
  c.model.mlp_dim = 640
  c.model.dtype = "float32"

  c.data.dir = "datasets/stdlib_t5_sp4096"
  c.data.prepare_config = "configs/data/stdlib_t5.py"
  c.data.add_bos = False  # documents are separated by EOS only, as T5's are

  c.train.steps = 400
  c.train.batch_size = 16
  c.train.seq_len = 128

  c.optimizer.learning_rate = 2e-3
  c.optimizer.warmup_steps = 40
  c.optimizer.min_lr_ratio = 0.1

  c.checkpoint.every_steps = 200
  c.eval.every_steps = 100
  c.eval.steps = 8
  c.eval.final_steps = 16
  c.log.every_steps = 20
  return c
