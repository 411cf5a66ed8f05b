"""Ranking: order each query's candidates by the log-likelihood of their text after the query.

Data fields: `query` (or what the prompt template uses), `candidates` (strings,
whose ids are their indices, or {id, text} objects) and `relevant` (candidate
ids). With `normalize: true` a candidate's score is its mean log-probability
per token, so long candidates are not penalized for their length.
"""

from evals import metrics
from evals import tasks as tasks_lib


def _shot(task, example: dict) -> str:
  first = next(c for c in example["candidates"] if c["id"] in example["relevant"])
  return tasks_lib.prompt(task, example) + first["text"]


def rank(candidates: list[dict], scores: list[float]) -> list:
  """Candidate ids, best score first; equal scores keep data order, so results are deterministic."""
  order = sorted(range(len(candidates)), key=lambda j: -scores[j])
  return [candidates[j]["id"] for j in order]


def run(task, lm, limit: int | None) -> dict:
  """mrr and recall@k (k from the spec) over the first `limit` queries."""
  examples = tasks_lib.take(task, task.examples, limit)
  requests = []
  for i, ex in enumerate(examples):
    context = tasks_lib.fewshot_prefix(task, i, lambda s: _shot(task, s)) + tasks_lib.prompt(task, ex)
    requests += [lm.encode_pair(context, c["text"]) for c in ex["candidates"]]
  results = lm.loglikelihood(requests)
  rankings, details, start = [], [], 0
  for i, ex in enumerate(examples):
    count = len(ex["candidates"])
    lls = [ll for ll, _ in results[start:start + count]]
    if task.spec["normalize"]:
      lls = [ll / max(len(requests[start + j][1]), 1) for j, ll in enumerate(lls)]
    start += count
    rankings.append(rank(ex["candidates"], lls))
    details.append({"line": task.lines[i], "ranking": rankings[-1], "relevant": ex["relevant"], "scores": lls})
  scores = metrics.ranking(rankings, [ex["relevant"] for ex in examples], task.spec["k"])
  return {"examples": len(examples), **scores, "details": details}
