"""Evaluate a model on task benchmarks: perplexity, classification, multiple choice, generation, ranking,
and a vector index on retrieval tasks.

  python scripts/evaluate.py --workdir=runs/quickstart --tasks=sentiment,stdlib_docs_ppl
  python scripts/evaluate.py --hf_dir=exports/quickstart --tasks=sentiment,my/task.yaml --limit=50
  python scripts/evaluate.py --workdir=runs/spam --labelled=datasets/spam_jsonl/test.jsonl
  python scripts/evaluate.py --tasks=my/retrieval.yaml        # recall@k and MRR of an index; no model needed

--labelled scores a classifier run (configs/classify.py) on labelled JSONL
({"text"[, "text_pair"], "label"} lines): accuracy, macro-F1 and per-class
precision/recall/F1 (scikit-learn's), with each example's prediction in --output.

A task is `evals/tasks/NAME.yaml` (or .json), or a path to a spec file of your
own (see evals/tasks.py for the format). Prints a table of the metrics and
writes them, with per-example details, to --output as JSON.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

import quiet_logs  # noqa: E402
from data import prep_io  # noqa: E402
from errors import UserError  # noqa: E402
from evals import runner  # noqa: E402

_WORKDIR = flags.DEFINE_string("workdir", None, "A train.py --workdir (newest checkpoint).")
_HF_DIR = flags.DEFINE_string("hf_dir", None, "A Hugging Face model directory with its tokenizer.")
_TASKS = flags.DEFINE_list("tasks", [], "Task names (evals/tasks/NAME.yaml) or spec file paths.")
_LABELLED = flags.DEFINE_list("labelled", [], "Labelled JSONL files to score a classifier run on.")
_BEST = flags.DEFINE_bool("best", False, "--labelled: the best checkpoint (config.eval.best_metric), not the newest.")
_LIMIT = flags.DEFINE_integer("limit", None, "Score only the first N examples of each task.", lower_bound=0)
_OUTPUT = flags.DEFINE_string("output", "results.json", "JSON file to write; empty: do not write one.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 8, "Sequences per model call.", lower_bound=1)


def main(argv):
  del argv
  quiet_logs.apply()  # libraries' INFO logs only with --verbose
  try:
    if bool(_TASKS.value) == bool(_LABELLED.value):
      raise UserError("give exactly one of --tasks and --labelled")
    if _LABELLED.value:
      return _score_classifier()
    tasks = runner.load_tasks(_TASKS.value)  # a bad spec fails before the model loads
    lm = None
    if any(t.type not in runner.MODEL_FREE for t in tasks):
      if bool(_WORKDIR.value) == bool(_HF_DIR.value):
        raise UserError("give exactly one of --workdir and --hf_dir")
      from evals.lm import LanguageModel
      lm = LanguageModel.load(workdir=_WORKDIR.value, hf_dir=_HF_DIR.value, batch_size=_BATCH_SIZE.value)
    results = runner.run_tasks(lm, tasks, _LIMIT.value, progress=True)  # a bar per task on stderr
  except UserError as e:
    sys.exit(f"error: {e}")
  results["model"] = {"workdir": _WORKDIR.value, "hf_dir": _HF_DIR.value}
  for task in results["tasks"].values():
    for note in task["notes"]:
      print(f"note: {note}")
  print(runner.format_table(results))
  if _OUTPUT.value:
    os.makedirs(os.path.dirname(os.path.abspath(_OUTPUT.value)), exist_ok=True)
    prep_io.write_json_atomic(_OUTPUT.value, results)  # a temp file renamed: never half-written
    print(f"wrote {_OUTPUT.value}")


def _score_classifier():
  if not _WORKDIR.value:
    raise UserError("--labelled scores a classifier run: give its --workdir")
  from trainer.classifier import Classifier
  classifier = Classifier.load(_WORKDIR.value, best=_BEST.value, batch_size=_BATCH_SIZE.value)
  metrics, details = classifier.evaluate(_LABELLED.value)
  print(f"{metrics['examples']} examples of {','.join(_LABELLED.value)}")
  for name, value in metrics.items():
    print(f"  {name:24s} {value:.4f}" if isinstance(value, float) else f"  {name:24s} {value}")
  if _OUTPUT.value:
    os.makedirs(os.path.dirname(os.path.abspath(_OUTPUT.value)), exist_ok=True)
    prep_io.write_json_atomic(_OUTPUT.value, {"model": {"workdir": _WORKDIR.value}, "files": _LABELLED.value,
                                              "metrics": metrics, "examples": details})
    print(f"wrote {_OUTPUT.value}")


if __name__ == "__main__":
  app.run(main)
