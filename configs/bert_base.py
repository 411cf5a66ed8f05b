"""BERT-base (110M) masked-LM pretraining: 12 post-norm layers, d=768, 12 heads, learned positions.

Point `data.dir` at a dataset whose tokenizer has an encoder's special tokens
(`scripts/prepare_data.py --config=... --config.tokenizer.encoder_specials=True
--config.tokenizer.vocab_size=30522`). Sequence length 128 for most of
pretraining, as BERT did; `--config.train.seq_len=512` (and max_seq_len) for the
long phase. To continue from BERT itself, `--config.init.hf_dir=DIR` takes the
architecture from its config.json (BertForMaskedLM).
"""

from configs import base


def get_config():
  c = base.base_config()

  c.model.family = "encoder"
  c.model.vocab_size = 30_522
  c.model.d_model = 768
  c.model.num_layers = 12
  c.model.num_heads = 12
  c.model.num_kv_heads = 12
  c.model.head_dim = 64
  c.model.mlp_dim = 3072
  c.model.max_seq_len = 512
  c.model.norm = "layernorm"
  c.model.norm_eps = 1e-12
  c.model.norm_position = "post"
  c.model.mlp = "gelu_erf"
  c.model.position = "learned"
  c.model.use_bias = True
  c.model.type_vocab_size = 2
  c.model.mlm_head = True
  c.model.dtype = "bfloat16"

  c.train.objective = "masked_lm"
  c.train.steps = 1_000_000
  c.train.batch_size = 256
  c.train.seq_len = 128

  c.optimizer.learning_rate = 1e-4
  c.optimizer.warmup_steps = 10_000
  c.optimizer.schedule = "cosine"
  c.optimizer.min_lr_ratio = 0.0
  c.optimizer.b2 = 0.999
  c.optimizer.eps = 1e-6
  c.optimizer.weight_decay = 0.01

  c.checkpoint.every_steps = 5000
  c.eval.every_steps = 5000
  c.eval.steps = 50
  c.log.every_steps = 100
  return c
