"""Task benchmarks during training (config.eval.tasks), scored with the model's current parameters.

train.py hands `TaskEvaluator` to trainer.loop.run, which builds it when the
run starts and calls `evaluate` with the current parameters at every
evaluation (the trainer itself never imports evals).

Tasks load and validate when the run starts, so a bad task file fails before
any training. Each evaluation logs every scalar metric of task NAME to
metrics.jsonl and TensorBoard under the split "task/NAME"; the flat
{"task/NAME/METRIC": value} form feeds best-checkpoint selection.
"""

import dataclasses

from data import tokenizer as tokenizer_lib
from evals import runner


class TaskEvaluator:

  def __init__(self, eval_cfg, model_cfg, tokenizer_path: str, mesh, seq_len: int):
    self.tasks = runner.load_tasks(eval_cfg.task_names)
    self.limit = eval_cfg.task_limit or None
    self._args = (dataclasses.replace(model_cfg, lora=None), tokenizer_path, mesh, eval_cfg.task_batch_size,
                  seq_len)
    self._lm = None

  def _model(self, params):
    if self._lm is None:  # built on first use: jax compiles its scoring and decoding once
      from evals.lm import LanguageModel
      cfg, tokenizer_path, mesh, batch_size, seq_len = self._args
      self._lm = LanguageModel(cfg, params, tokenizer_lib.load(tokenizer_path), mesh, batch_size=batch_size,
                               max_len=seq_len)
    self._lm.params = params
    return self._lm

  def evaluate(self, params) -> dict[str, dict]:
    """{task name: {metric: value}} of the scalar metrics; `params` are plain (LoRA merged)."""
    for task in self.tasks:
      task.notes.clear()  # notes (e.g. a limit beyond the task) are logged once per evaluation
    results = runner.run_tasks(self._model(params), self.tasks, self.limit)
    return {name: dict(runner.scalar_metrics(task["metrics"])) for name, task in results["tasks"].items()}
