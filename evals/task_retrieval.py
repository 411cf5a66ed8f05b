"""Retrieval: how well a vector index (scripts/build_index.py) finds the documents that answer a query.

    type: retrieval
    index: ../indexes/docs       # relative to this spec file
    data: questions.jsonl        # {"query": "...", "relevant": ["source id", ...]}
    k: [1, 5]

A query's ranking is the distinct sources of its nearest chunks, best first.
Metrics: recall@k for each k and MRR (mean reciprocal rank of the first
relevant source). The model being evaluated plays no part: the index names its encoder.
"""

import os

from evals import metrics
from evals import tasks as tasks_lib


def run(task, lm, limit: int | None) -> dict:
  del lm
  from evals.vector_index import VectorIndex
  examples = tasks_lib.take(task, task.examples, limit)
  index = VectorIndex(os.path.join(os.path.dirname(task.path), task.spec["index"]))
  try:
    # Chunks, not sources, are retrieved: ask for enough that max(k) distinct sources usually appear.
    hits = index.search([tasks_lib.prompt(task, ex) for ex in examples], max(task.spec["k"]) * 4)
  finally:
    index.close()
  rankings = [list(dict.fromkeys(hit["source"] for hit in h)) for h in hits]  # distinct, best first
  details = [{"line": task.lines[i], "ranking": rankings[i][:max(task.spec["k"])], "relevant": ex["relevant"]}
             for i, ex in enumerate(examples)]
  return {"examples": len(examples), **metrics.ranking(rankings, [ex["relevant"] for ex in examples],
                                                       task.spec["k"]), "details": details}
