"""Text-to-text fine-tuning: the T5 quickstart (configs/t5_quickstart.py) learns to summarize standard-library
functions, their code in, the first sentence of their docstring out.

Make the data (no download), prepare it with the pretrained run's tokenizer, then fine-tune from the
pretrained run; ROUGE-L on functions of held-out modules is measured at every evaluation (generation,
greedy) and drives early stopping and the best checkpoint:

  python scripts/make_stdlib_summaries.py --output=datasets/stdlib_summaries
  python scripts/prepare_seq2seq.py --input=datasets/stdlib_summaries.jsonl \\
      --tokenizer_from=datasets/stdlib_t5_sp4096 --output=datasets/stdlib_summaries \\
      --prefix="summarize: " --max_input_len=128 --max_target_len=32
  python train.py --config=configs/t5_summaries.py --workdir=runs/t5_summaries
"""

from configs import t5_quickstart


def get_config():
  c = t5_quickstart.get_config()
  c.init.workdir = "runs/t5"          # the span-corruption pretrained model
  c.data.dir = "datasets/stdlib_summaries"
  c.data.prepare_config = ""

  c.train.objective = "seq2seq"
  c.train.seq_len = 128               # encoder: prepare_seq2seq.py --max_input_len
  c.train.target_len = 64             # decoder: examples pack two-sided, up to 32 target tokens each
  c.train.steps = 600
  c.train.batch_size = 16

  c.optimizer.learning_rate = 1e-3
  c.optimizer.warmup_steps = 30

  c.eval.every_steps = 150
  c.eval.steps = 8
  c.eval.tasks = "datasets/stdlib_summaries_eval.yaml"
  c.eval.task_limit = 100
  c.eval.best_metric = "task/stdlib_summaries_eval/rougeL"
  c.eval.best_mode = "max"
  c.eval.patience = 2
  c.eval.final_split = ""
  c.checkpoint.every_steps = 150
  return c
