"""A reward model (train.objective="reward"): a scalar head on a decoder, trained Bradley-Terry on pairs.

  python scripts/make_stdlib_chat.py --preferences --output=datasets/stdlib_prefs.jsonl
  python scripts/prepare_preferences.py --input=datasets/stdlib_prefs.jsonl \\
      --model_dir=exports/quickstart --output=datasets/stdlib_prefs_qs --max_len=256
  python train.py --config=configs/reward.py --workdir=runs/reward

It reads each side's last non-padding token, as LlamaForSequenceClassification with num_labels=1, the
form scripts/export_hf.py writes it in.
"""

from configs import sft


def get_config():
  c = sft.get_config()
  c.init.hf_dir = "exports/quickstart"
  c.data.dir = "datasets/stdlib_prefs_qs"
  c.model.num_labels = 1
  c.train.objective = "reward"
  c.train.steps = 150
  c.train.batch_size = 16
  c.optimizer.learning_rate = 1e-4
  c.optimizer.warmup_steps = 10
  c.eval.every_steps = 25
  c.eval.steps = 6                       # 96 of the 180 validation pairs
  c.eval.best_metric = "val/rewards/accuracies"
  c.eval.best_mode = "max"
  return c
