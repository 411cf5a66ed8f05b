"""Multiple choice: score every choice's log-likelihood after the prompt.

Data fields: `question` (or whatever the prompt uses), `choices` (strings) and
`answer` (an index or the choice string). `acc` takes the highest summed
log-probability; `acc_norm` divides it by the continuation's UTF-8 byte length
(lm-evaluation-harness's length normalization), which removes the bias toward
short choices.
"""

from evals import tasks as tasks_lib


def continuation(task, choice: str) -> str:
  return task.spec["choice_prefix"] + choice


def _shot(task, example: dict) -> str:
  return tasks_lib.prompt(task, example) + continuation(task, example["choices"][example["answer"]])


def _argmax(values: list[float]) -> int:
  return max(range(len(values)), key=values.__getitem__)  # first wins ties


def run(task, lm, limit: int | None) -> dict:
  """acc and acc_norm over the first `limit` examples."""
  examples = tasks_lib.take(task, task.examples, limit)
  requests = []
  for i, ex in enumerate(examples):
    context = tasks_lib.fewshot_prefix(task, i, lambda s: _shot(task, s)) + tasks_lib.prompt(task, ex)
    for choice in ex["choices"]:
      requests.append(lm.encode_pair(context, continuation(task, choice)))
  scores = [ll for ll, _ in lm.loglikelihood(requests)]
  details, start = [], 0
  for i, ex in enumerate(examples):
    lls = scores[start:start + len(ex["choices"])]
    start += len(ex["choices"])
    lengths = [len(continuation(task, c).encode()) for c in ex["choices"]]
    normalized = [ll / n for ll, n in zip(lls, lengths)]
    details.append({"line": task.lines[i], "answer": ex["answer"], "pred": _argmax(lls),
                    "pred_norm": _argmax(normalized), "loglikelihoods": lls})
  n = max(len(examples), 1)
  return {"examples": len(examples),
          "acc": sum(d["pred"] == d["answer"] for d in details) / n,
          "acc_norm": sum(d["pred_norm"] == d["answer"] for d in details) / n,
          "details": details}
