"""Supervised fine-tuning of a Hugging Face model on chat data (all weights).

The defaults fine-tune the quickstart model, exported to HF format, on
questions about the standard library (README, "Fine-tune a pretrained model"):

  python scripts/prepare_sft.py --input=datasets/stdlib_chat.jsonl \\
      --model_dir=exports/quickstart --output=datasets/stdlib_chat --max_len=256
  python train.py --config=configs/sft.py --workdir=runs/sft

For your own model and data, override the two paths:
  --config.init.hf_dir=/models/llama --config.data.dir=datasets/mychats

Loss is on assistant tokens only (as prepared), examples are packed whole,
the validation loss is tracked every `eval.every_steps`, and the run stops
after `eval.patience` evaluations without improvement, keeping the best
state in WORKDIR/best (export it with scripts/export_hf.py --best).
"""

from configs import base


def get_config():
  c = base.base_config()
  c.init.hf_dir = "exports/quickstart"   # the architecture comes from its config.json
  c.data.dir = "datasets/stdlib_chat"    # from scripts/prepare_sft.py
  c.data.packing = "whole"               # never cut a conversation across rows

  c.train.steps = 300
  c.train.batch_size = 16
  c.train.seq_len = 256

  c.optimizer.learning_rate = 2e-4
  c.optimizer.warmup_steps = 20
  c.optimizer.weight_decay = 0.0
  c.optimizer.min_lr_ratio = 0.0

  c.eval.every_steps = 25
  c.eval.steps = 20
  c.eval.patience = 3
  c.eval.final_split = ""                # chat datasets have train and val only
  c.checkpoint.keep_best = True
  c.checkpoint.every_steps = 100
  c.log.every_steps = 10
  return c
