"""GRPO with a verifiable reward on CPU, in minutes (train.objective="grpo", trainer/objectives/grpo.py).

The SFT model of the README's fine-tuning section answers questions about standard-library functions
with docstring-like text. Here it learns, from rewards alone, to open its answer with the verb the
function's documentation opens with ("Return", "Set", "Create"...): each prompt's reference answer is
that first word, and the exact-match reward compares it with the completion's first word.

  python scripts/make_stdlib_chat.py --prompts --output=datasets/stdlib_prompts.jsonl
  python scripts/prepare_prompts.py --input=datasets/stdlib_prompts.jsonl \\
      --model_dir=exports/stdlib-sft --output=datasets/stdlib_prompts --max_len=64
  python train.py --config=configs/grpo_quickstart.py --workdir=runs/grpo

Each step samples 8 completions of 8 prompts with the KV-cache decoder, scores them, and takes one
clipped policy-gradient step on group-normalised advantages. The mean reward on held-out prompts is
evaluated at the start and at the end, with completions printed before and after.
"""

from configs import sft


def get_config():
  c = sft.get_config()
  c.init.hf_dir = "exports/stdlib-sft"
  c.data.dir = "datasets/stdlib_prompts"
  c.train.objective = "grpo"
  c.train.steps = 60
  c.train.batch_size = 64                # completions per step: 8 prompts x 8 generations
  c.train.seq_len = 112                  # prompts of up to 64 tokens, completions of up to 48
  g = c.train.grpo
  g.num_generations = 8
  g.max_completion_len = 48
  g.temperature = 1.0
  g.beta = 0.0                           # TRL's default: no KL term, no reference model held
  g.reward_funcs = "exact_match"
  g.answer_regex = r"^\W*(\w+)"          # the completion's first word
  g.mask_truncated_completions = True    # learn from finished answers only: the model keeps ending them
  c.optimizer.learning_rate = 1e-4
  c.optimizer.warmup_steps = 5
  c.optimizer.schedule = "constant"
  c.eval.every_steps = 30
  c.eval.steps = 4                       # 4 x 8 held-out prompts, 8 completions each
  c.eval.patience = 0
  c.eval.best_metric = "val/reward"
  c.eval.best_mode = "max"
  c.checkpoint.keep_best = False
  c.checkpoint.every_steps = 30
  c.log.every_steps = 5
  return c
