"""Generation: greedy completion of a prompt, compared with one or more references.

Data fields: `prompt` (or the fields the spec's prompt template uses) and
`reference` (a string) or `references` (a list). The completion, stripped of
surrounding whitespace, is scored with SQuAD exact match and token F1 (0-1,
best over references), sacrebleu corpus BLEU (0-100) and ROUGE-1/2/L F-measure (0-1).
"""

from evals import metrics
from evals import tasks as tasks_lib


def _shot(task, example: dict) -> str:
  return tasks_lib.prompt(task, example) + task.spec["target_prefix"] + example["references"][0]


def run(task, lm, limit: int | None) -> dict:
  """exact_match, f1, bleu, rouge1, rouge2, rougeL over the first `limit` examples."""
  examples = tasks_lib.take(task, task.examples, limit)
  prompts = [lm.encode(tasks_lib.fewshot_prefix(task, i, lambda s: _shot(task, s)) + tasks_lib.prompt(task, ex),
                       add_bos=True)
             for i, ex in enumerate(examples)]
  outputs = lm.generate(prompts, task.spec["max_new_tokens"], stop=task.spec["stop"])
  predictions = [o.strip() for o in outputs]
  references = [ex["references"] for ex in examples]
  em = [metrics.exact_match(p, r) for p, r in zip(predictions, references)]
  f1 = [metrics.token_f1(p, r) for p, r in zip(predictions, references)]
  n = max(len(examples), 1)
  return {"examples": len(examples), "exact_match": sum(em) / n, "f1": sum(f1) / n,
          "bleu": metrics.bleu(predictions, references), **metrics.rouge(predictions, references),
          "details": [{"line": task.lines[i], "prediction": p, "references": r, "exact_match": e, "f1": f}
                      for i, (p, r, e, f) in enumerate(zip(predictions, references, em, f1))]}
