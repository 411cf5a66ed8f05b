"""T5 v1.1-base (248M) span-corruption pretraining: 12+12 pre-norm layers, d=768, 12 heads, gated GELU.

T5 v1.1's recipe (Raffel et al. 2020; t5.1.1 gin configs): relative position
bias (32 buckets, distances to 128), untied input and output embeddings, RMSNorm
without bias, inputs of 512 tokens and span corruption at noise density 0.15
with mean span 3 (targets of 114 tokens), batch 256 (about 2^17 tokens). T5
trained with Adafactor at 1e-2; AdamW at 1e-3 is the modern substitute. Point
`data.dir` at a dataset whose tokenizer has the sentinels
(`scripts/prepare_data.py ... --config.tokenizer.sentinels=100
--config.tokenizer.vocab_size=32100`). To continue from a T5 checkpoint,
`--config.init.hf_dir=DIR` takes the architecture from its config.json
(T5ForConditionalGeneration).
"""

from configs import base


def get_config():
  c = base.base_config()

  c.model.family = "encoder_decoder"
  c.model.vocab_size = 32_128
  c.model.d_model = 768
  c.model.num_layers = 12
  c.model.num_decoder_layers = 12
  c.model.num_heads = 12
  c.model.num_kv_heads = 12
  c.model.head_dim = 64
  c.model.mlp_dim = 2048
  c.model.norm = "rmsnorm"
  c.model.norm_eps = 1e-6
  c.model.mlp = "gated_gelu"
  c.model.position = "relative"
  c.model.relative_buckets = 32
  c.model.relative_max_distance = 128
  c.model.tie_embeddings = False
  c.model.init_std = 0.02
  c.model.dtype = "bfloat16"

  c.data.add_bos = False  # documents are separated by EOS only, as T5's are

  c.train.objective = "span_corruption"
  c.train.span_corruption.noise_density = 0.15
  c.train.span_corruption.mean_span_length = 3.0
  c.train.steps = 524_288
  c.train.batch_size = 256
  c.train.seq_len = 512

  c.optimizer.learning_rate = 1e-3
  c.optimizer.warmup_steps = 10_000
  c.optimizer.schedule = "cosine"
  c.optimizer.min_lr_ratio = 0.0
  c.optimizer.weight_decay = 0.0

  c.checkpoint.every_steps = 5000
  c.eval.every_steps = 5000
  c.eval.steps = 50
  c.log.every_steps = 100
  return c
