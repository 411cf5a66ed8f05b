"""Direct preference optimisation of a chat model (train.objective="dpo", trainer/objectives/preference.py).

The defaults start from the SFT model of the README's fine-tuning section, exported to HF format, and
prefer each standard-library question's own answer to its words shuffled:

  python scripts/make_stdlib_chat.py --preferences --output=datasets/stdlib_prefs.jsonl
  python scripts/prepare_preferences.py --input=datasets/stdlib_prefs.jsonl \\
      --model_dir=exports/stdlib-sft --output=datasets/stdlib_prefs --max_len=256
  python train.py --config=configs/dpo.py --workdir=runs/dpo

The reference is a frozen copy of the starting model (with LoRA, --config.lora.rank=16, the base with
the adapters off). --config.train.dpo.loss_type=ipo|hinge|simpo|orpo picks a variant.
"""

from configs import sft


def get_config():
  c = sft.get_config()
  c.init.hf_dir = "exports/stdlib-sft"
  c.data.dir = "datasets/stdlib_prefs"
  c.train.objective = "dpo"
  c.train.dpo.loss_type = "sigmoid"
  c.train.dpo.beta = 0.1
  c.train.steps = 60
  c.train.batch_size = 16
  c.train.vocab_chunk = 1024            # log-probs over the vocabulary in chunks: no [2B, T, V] logits
  c.optimizer.learning_rate = 1e-4
  c.optimizer.warmup_steps = 10
  c.eval.every_steps = 20
  c.eval.steps = 6                       # 96 of the 180 validation pairs
  c.eval.best_metric = "val/rewards/accuracies"
  c.eval.best_mode = "max"
  return c
