"""Perplexity: token-exact negative log-likelihood of documents, with sliding windows.

Documents come from a .txt file (the whole file, or one per line or per
blank-line-separated paragraph: `documents:`), a .jsonl file's `text` field, or
a prepared dataset split (`dataset: DIR`, `split: val`). Every token is scored
exactly once by `lm.rolling_loglikelihood`, the first conditioned on BOS.
bits_per_byte (NLL in bits per UTF-8 byte of the scored text) compares models
with different tokenizers; loss and perplexity are per token.
"""

import hashlib
import math

from data import shards
from data import tokenizer as tokenizer_lib
from evals import tasks as tasks_lib


def _sha256(path: str) -> str:
  with open(path, "rb") as f:
    return hashlib.sha256(f.read()).hexdigest()


def dataset_documents(task, lm, limit: int | None) -> tuple[list[list[int]], list[str]]:
  """(token ids, text) of the first `limit` documents of a prepared split.

  Records hold token ids without BOS/EOS. If the dataset was tokenized with
  another tokenizer than the model's, its documents are decoded and re-encoded
  with the model's, so the score is still of the same text.
  """
  directory = tasks_lib.dataset_path(task)
  meta = shards.load_metadata(directory)
  source, lengths = shards.open_split(directory, task.spec["split"], meta)
  indices = tasks_lib.take(task, list(range(len(lengths))), limit)
  records = [shards.decode_record(source[i], shards.has_loss_mask(meta))[0].tolist() for i in indices]
  tokenizer_path = f"{directory}/{meta['tokenizer']}"
  if _sha256(tokenizer_path) == _sha256(lm.tokenizer.path):
    return records, [lm.decode(ids) for ids in records]
  task.notes.append(f"{directory} was tokenized with another tokenizer than the model's; "
                    f"its documents were decoded and re-encoded with the model's tokenizer")
  dataset_tokenizer = tokenizer_lib.load(tokenizer_path)
  texts = [dataset_tokenizer.decode(ids) for ids in records]
  return [lm.encode(t) for t in texts], texts


def summarize(loglikelihoods: list[float], token_counts: list[int], byte_counts: list[int]) -> dict:
  """loss (mean NLL per token, nats), perplexity, bits_per_byte, tokens, bytes."""
  nll, tokens, num_bytes = -sum(loglikelihoods), sum(token_counts), sum(byte_counts)
  loss = nll / max(tokens, 1)
  perplexity = math.exp(loss) if loss < 700 else math.inf  # exp overflows a float beyond ~709
  return {"loss": loss, "perplexity": perplexity, "bits_per_byte": nll / math.log(2) / max(num_bytes, 1),
          "tokens": tokens, "bytes": num_bytes}


def run(task, lm, limit: int | None) -> dict:
  """Scores the first `limit` documents; empty documents are skipped (nothing to score)."""
  if task.spec["dataset"]:
    docs, texts = dataset_documents(task, lm, limit)
  else:
    texts = [ex["text"] for ex in tasks_lib.take(task, task.examples, limit)]
    docs = [lm.encode(t) for t in texts]
  kept = [(ids, text) for ids, text in zip(docs, texts) if ids]
  results = lm.rolling_loglikelihood([ids for ids, _ in kept], task.spec["window"], task.spec["stride"])
  byte_counts = [len(text.encode()) for _, text in kept]
  out = summarize([ll for ll, _ in results], [n for _, n in results], byte_counts)
  out["documents"] = len(kept)
  out["details"] = [{"nll": -ll, "tokens": n, "bytes": b} for (ll, n), b in zip(results, byte_counts)]
  return out
