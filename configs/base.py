"""Every config key Strata knows, with its default.

Experiment configs start from `base_config()`, which is locked: assigning a key
that does not exist here (in a config file or as `--config.x.y=...`) fails and
lists the valid keys, so a typo can never be silently ignored.
"""

import ml_collections


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()

  c.model = ml_collections.ConfigDict(dict(
      family="decoder",       # model/families.py: "decoder" (causal LM) | "encoder" (BERT/RoBERTa)
      vocab_size=32_000,
      d_model=512,
      num_layers=8,
      num_heads=8,
      num_kv_heads=8,         # < num_heads gives grouped-query attention
      head_dim=64,
      mlp_dim=2048,
      max_seq_len=2048,       # size of the learned position table (position="learned")
      norm="rmsnorm",         # "rmsnorm" (Llama) | "layernorm" (GPT-2)
      norm_eps=1e-5,
      # "pre": x + f(norm(x)) (Llama, GPT-2; a final norm follows the layers);
      # "post": norm(x + f(x)) (BERT, RoBERTa; no final norm).
      norm_position="pre",
      mlp="swiglu",           # "swiglu" (Llama) | "gelu" (GPT-2, tanh GELU) | "gelu_erf" (BERT, exact GELU)
      position="rope",        # "rope" (Llama) | "learned" (GPT-2)
      rope_theta=10_000.0,
      rope_scaling="none",    # "none" | "linear" | "llama3" (Llama 3.1+ long-context RoPE)
      rope_scaling_factor=1.0,
      rope_low_freq_factor=1.0,           # llama3 only
      rope_high_freq_factor=4.0,          # llama3 only
      rope_original_max_position=8192,    # llama3 only: the pretraining context
      use_bias=False,         # biases in every projection (GPT-2)
      tie_embeddings=True,
      init_std=0.02,
      dtype="float32",        # compute dtype, e.g. "bfloat16"
      param_dtype="float32",  # storage dtype of parameters
      # jax.nn.dot_product_attention: "auto" takes cuDNN flash attention where it
      # applies (GPU, bf16/fp16) and XLA elsewhere; "xla" | "cudnn" force one.
      attention_impl="auto",
      scan_layers=True,       # one compiled layer body scanned over depth
      remat="none",           # "none" | "full" | "dots" | "dots_no_batch"
      # Encoder family only (model/encoder.py); the decoder ignores these.
      type_vocab_size=0,      # token-type (segment A/B) embeddings: BERT 2, RoBERTa 1; 0 = none
      # Learned positions look up row position + position_offset of a table with max_seq_len +
      # position_offset rows: RoBERTa's positions start after its padding id (pad_token_id + 1 = 2).
      position_offset=0,
      mlm_head=True,          # masked-LM head (dense, GELU, norm, tied projection + bias)
      pooler=False,           # BERT pooler: dense + tanh on the first token (BertModel has one)
      # Classification head (objective "classification"): num_labels > 0 replaces the LM head by
      # logits over the labels. A decoder reads its last non-padding token (LlamaForSequenceClassification);
      # an encoder pools "cls" (the first token, through the pooler when it has one: BERT/RoBERTa's
      # heads) or "mean" (the mean of its tokens, as sentence-transformers embed).
      num_labels=0,
      pooling="cls",
  ))

  c.init = ml_collections.ConfigDict(dict(
      # Start from a Hugging Face model directory (LlamaForCausalLM, GPT2LMHeadModel):
      # config.model's architecture fields are taken from its config.json.
      hf_dir="",
  ))

  c.lora = ml_collections.ConfigDict(dict(
      # rank > 0 trains low-rank adapters on a frozen base (config.init.hf_dir)
      # instead of all weights; checkpoints then hold only the adapters.
      rank=0,
      alpha=16.0,             # adapters are scaled by alpha / rank
      dropout=0.0,            # on the adapters' input
      targets="q,k,v,o,gate,up,down",
      base_dtype="bfloat16",  # storage dtype of the frozen base weights
  ))

  c.data = ml_collections.ConfigDict(dict(
      dir="",                 # a prepared dataset (scripts/prepare_data.py)
      # Several prepared datasets sampled by weight, "DIR:WEIGHT,DIR:WEIGHT"
      # (they must share one tokenizer); replaces `dir` when set.
      mixture="",
      worker_count=0,         # grain worker processes; 0 reads in the main process
      # Wrap documents in BOS/EOS: BOS only where the dataset's tokenizer adds one itself
      # (as transformers tokenizes); chat datasets keep their template's.
      add_bos=True,
      add_eos=True,
      # "split": concatenate documents and cut rows (pretraining, no padding);
      # "whole": never cut an example, pad rows instead (fine-tuning).
      packing="split",
      # When set, `dir` is prepared on first use with this data config
      # (configs/data/*.py), e.g. the quickstart's standard-library corpus.
      prepare_config="",
  ))

  c.train = ml_collections.ConfigDict(dict(
      objective="causal_lm",  # trainer/objectives: what the loss is (it must fit config.model.family)
      steps=1000,
      batch_size=32,          # global sequences per optimizer step
      seq_len=512,
      seed=0,
      grad_accum_steps=1,     # micro-batches per step; batch_size must divide evenly
      # A step whose loss, gradient norm or updated weights are NaN/Inf is never
      # applied. "stop": the run then stops with an error, saving nothing more;
      # "skip": it goes on, and stops once more than max_skipped_steps were skipped.
      on_nonfinite="stop",
      max_skipped_steps=10,
      # objective="masked_lm" (data/masking.py): per row, `rate` of the maskable tokens are chosen
      # (whole words with whole_word); of those, mask_fraction become [MASK], random_fraction a
      # random token, the rest stay. Seeded by train.seed and the row, so resumption is exact.
      mlm=ml_collections.ConfigDict(dict(rate=0.15, whole_word=False, mask_fraction=0.8, random_fraction=0.1)),
  ))

  c.optimizer = ml_collections.ConfigDict(dict(
      learning_rate=3e-4,
      schedule="cosine",      # "cosine" | "wsd" | "constant" (all after linear warmup)
      warmup_steps=100,
      min_lr_ratio=0.1,       # final lr as a fraction of the peak
      wsd_decay_fraction=0.2, # "wsd": fraction of steps spent decaying at the end
      b1=0.9,
      b2=0.95,
      eps=1e-8,
      weight_decay=0.1,       # applied to matrices only, not norms or biases
      grad_clip_norm=1.0,     # 0 disables clipping
      z_loss=0.0,             # weight of the log(Z)^2 penalty (causal_lm)
  ))

  c.mesh = ml_collections.ConfigDict(dict(
      data=1,
      fsdp=-1,                # -1 takes the devices the other axes leave
      tensor=1,
  ))

  c.checkpoint = ml_collections.ConfigDict(dict(
      every_steps=500,
      keep=3,
      async_save=True,
      # Also keep the state with the lowest validation loss in WORKDIR/best
      # (scripts/export_hf.py --best exports it).
      keep_best=False,
  ))

  c.eval = ml_collections.ConfigDict(dict(
      every_steps=500,
      steps=10,               # validation batches per evaluation
      at_start=True,          # evaluate the initial model, the baseline of the curve
      patience=0,             # stop after this many evaluations without a new best best_metric; 0: never
      # Task benchmarks (evals/tasks/NAME.yaml or spec paths, comma-separated)
      # run at every evaluation; metrics log under the split "task/NAME".
      tasks="",
      task_limit=0,           # examples per task; 0: all
      task_batch_size=8,
      best_metric="val/loss",  # or e.g. "task/sentiment/accuracy": drives keep_best and patience
      best_mode="min",        # "max" for accuracy-like metrics
      final_split="test",     # held-out perplexity at the end; "" to skip
      final_steps=20,
      num_samples=0,          # sampled continuations printed at the end
      sample_tokens=64,
      sample_temperature=0.8,
  ))

  c.log = ml_collections.ConfigDict(dict(
      every_steps=10,
      tensorboard=True,
      peak_flops_per_device=0.0,  # 0: look it up from the device kind (for MFU)
  ))

  c.lock()
  return c
