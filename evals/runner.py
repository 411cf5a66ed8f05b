"""Runs task benchmarks on a language model and formats the results.

    results = run_tasks(lm, ["sentiment", "path/to/my_task.yaml"], limit=100)
    print(format_table(results))

`results["tasks"][name]` holds the task's type, spec file, metrics, per-example
`details` and `notes` (e.g. a --limit beyond the task's size).
"""

import contextlib
import time

from data import prep_io
from errors import UserError
from evals import (task_classification, task_generation, task_multiple_choice, task_perplexity,
                   task_ranking, task_retrieval)
from evals import tasks as tasks_lib

RUNNERS = {
    "perplexity": task_perplexity.run,
    "classification": task_classification.run,
    "multiple_choice": task_multiple_choice.run,
    "generation": task_generation.run,
    "ranking": task_ranking.run,
    "retrieval": task_retrieval.run,
}
MODEL_FREE = {"retrieval"}  # scored with the index's own encoder: no language model to load


def load_tasks(names_or_paths: list) -> list:
  """Loads and validates every task first, so a bad spec fails before any model work."""
  loaded = [t if isinstance(t, tasks_lib.Task) else tasks_lib.load(t) for t in names_or_paths]
  seen = {}
  for task in loaded:
    if task.name in seen:
      raise UserError(f"two tasks are named {task.name!r} ({seen[task.name]} and {task.path}); "
                      f"give one a different 'name:' in its spec")
    seen[task.name] = task.path
  if not loaded:
    raise UserError(f"no tasks given; shipped tasks: {tasks_lib.available()}")
  return loaded


def _examples(task, limit: int | None) -> str:
  if task.type == "perplexity" and task.spec["dataset"]:
    return f"{task.spec['dataset']}:{task.spec['split']}" + (f", first {limit} documents" if limit else "")
  n = len(task.examples)
  return f"{min(limit, n) if limit else n} examples"


@contextlib.contextmanager
def _progress_bar(lm, desc: str, enabled: bool):
  """A bar on stderr counting the sequences the model scores or generates for one task."""
  if not enabled or lm is None:
    yield
    return
  from tqdm import tqdm
  bar = tqdm(desc=desc, unit="seq", **prep_io.bar_options())
  previous, lm.progress = lm.progress, bar.update
  try:
    yield
  finally:
    lm.progress = previous
    bar.close()


def run_tasks(lm, task_names_or_paths: list, limit: int | None = None, progress: bool = False) -> dict:
  """{"limit", "tasks": {name: {type, spec, num_fewshot, metrics, details, notes, seconds}}}.

  progress: a bar per task on stderr (its examples, then sequences scored or generated).
  """
  if limit is not None and limit < 0:
    raise UserError(f"limit must be >= 0 (0 = all examples), got {limit}")
  results = {"limit": limit or None, "tasks": {}}
  tasks = load_tasks(task_names_or_paths)
  for i, task in enumerate(tasks, 1):
    start = time.perf_counter()
    desc = f"[{i}/{len(tasks)}] {task.name} ({_examples(task, limit)})"
    with _progress_bar(lm, desc, progress):
      task_metrics = dict(RUNNERS[task.type](task, lm, limit))
    details = task_metrics.pop("details", None)
    results["tasks"][task.name] = {
        "type": task.type, "spec": task.path, "num_fewshot": task.spec.get("num_fewshot", 0),
        "metrics": task_metrics, "notes": list(task.notes), "seconds": round(time.perf_counter() - start, 3),
        "details": details}
  return results


def scalar_metrics(metrics: dict) -> list[tuple[str, object]]:
  """(name, value) of the scalar metrics, per-class ones as `f1[label]`; lists stay in the JSON."""
  rows = []
  for key, value in metrics.items():
    if isinstance(value, bool) or key == "examples":
      continue
    if isinstance(value, (int, float)):
      rows.append((key, value))
    elif key == "per_class":
      rows += [(f"{name}[{label}]", v) for label, scores in value.items()
               for name, v in scores.items() if name != "support"]
  return rows


def _format_value(value) -> str:
  return str(value) if isinstance(value, int) else f"{value:.4f}"


def format_table(results: dict) -> str:
  """One row per scalar metric: task | type | n | metric | value."""
  header = ("task", "type", "n", "metric", "value")
  table = []
  for name, task in results["tasks"].items():
    n = task["metrics"].get("examples", task["metrics"].get("documents", ""))
    for i, (metric, value) in enumerate(scalar_metrics(task["metrics"])):
      first = i == 0  # name the task on its first row only, so tasks stand apart
      table.append((name if first else "", task["type"] if first else "", str(n) if first else "",
                    metric, _format_value(value)))
  widths = [max(len(row[c]) for row in [header] + table) for c in range(len(header))]
  line = lambda row: "  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip()  # noqa: E731
  return "\n".join([line(header), line(tuple("-" * w for w in widths))] + [line(r) for r in table])
