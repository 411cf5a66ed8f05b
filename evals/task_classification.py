"""Classification: pick a label by log-likelihood of its verbalization, or by parsing a generation.

Data fields: `label` plus whatever the prompt template uses (usually `text`).
"""

from errors import UserError
from evals import metrics
from evals import tasks as tasks_lib

UNPARSED = "<unparsed>"


def check_verbalizations(task, lm) -> None:
  """Every verbalization must survive the model's tokenizer, or no label could ever be scored fairly."""
  for label, verbalization in task.spec["labels"].items():
    try:
      lm.check_representable(verbalization)
    except UserError as e:
      raise UserError(f"{task.path}: the verbalization {verbalization!r} of label {label!r} cannot be "
                      f"represented by the model's tokenizer ({e}); choose text the tokenizer knows") from None


def _shot(task, example: dict) -> str:
  return tasks_lib.prompt(task, example) + task.spec["labels"][example["label"]]


def contexts(task, examples: list[dict]) -> list[str]:
  """Few-shot prefix + prompt of each example."""
  return [tasks_lib.fewshot_prefix(task, i, lambda s: _shot(task, s)) + tasks_lib.prompt(task, ex)
          for i, ex in enumerate(examples)]


def parse(output: str, labels: dict[str, str]) -> str:
  """The label whose verbalization (stripped, case-insensitive) starts the output; the longest
  such verbalization wins ("positive" over "pos"); UNPARSED if none does."""
  text = output.lstrip().lower()
  matches = [(len(v.strip()), label) for label, v in labels.items() if text.startswith(v.strip().lower())]
  return max(matches)[1] if matches else UNPARSED


def _predict_loglikelihood(task, lm, context_texts: list[str]) -> tuple[list[str], list[dict]]:
  labels = task.spec["labels"]
  requests = [lm.encode_pair(c, v) for c in context_texts for v in labels.values()]
  scores = [ll for ll, _ in lm.loglikelihood(requests)]
  preds, details = [], []
  for i in range(len(context_texts)):
    row = dict(zip(labels, scores[i * len(labels):(i + 1) * len(labels)]))
    preds.append(max(row, key=row.get))  # ties go to the first label in spec order
    details.append({"loglikelihoods": row})
  return preds, details


def _predict_generate(task, lm, context_texts: list[str]) -> tuple[list[str], list[dict]]:
  prompts = [lm.encode(c, add_bos=True) for c in context_texts]
  outputs = lm.generate(prompts, task.spec["max_new_tokens"], stop=["\n"])
  return [parse(o, task.spec["labels"]) for o in outputs], [{"output": o} for o in outputs]


def run(task, lm, limit: int | None) -> dict:
  """accuracy, macro_f1, per_class precision/recall/F1, confusion_matrix (+ unparsed for generate)."""
  check_verbalizations(task, lm)
  examples = tasks_lib.take(task, task.examples, limit)
  context_texts = contexts(task, examples)
  predict = _predict_generate if task.spec["scoring"] == "generate" else _predict_loglikelihood
  preds, details = predict(task, lm, context_texts)
  gold = [ex["label"] for ex in examples]
  out = {"examples": len(examples), **metrics.classification(gold, preds, list(task.spec["labels"]))}
  if task.spec["scoring"] == "generate":
    out["unparsed"] = sum(p == UNPARSED for p in preds)
  out["details"] = [{"line": task.lines[i], "gold": g, "pred": p, **d}
                    for i, (g, p, d) in enumerate(zip(gold, preds, details))]
  return out
