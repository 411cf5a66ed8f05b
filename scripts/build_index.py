"""Build a retrieval index: chunk documents, embed them with an encoder, store them in Qdrant.

  python scripts/build_index.py --encoder=path/to/all-MiniLM-L6-v2 --inputs='docs/**/*.md' --index=indexes/docs
  python scripts/build_index.py --encoder=runs/bert --inputs=kb.jsonl --index=indexes/kb \\
      --qdrant_url=http://qdrant:6333 --collection=kb

--inputs are globs of text files (one document each; its path is its source
id) or JSONL files of {"id": ..., "text": ...} documents. Chunks are windows of
--chunk_words words overlapping by --chunk_overlap. Embeddings are the
encoder's mean-pooled, normalized last hidden states (evals/embedder.py). The
vectors go into Qdrant's embedded local storage inside --index, or into the
Qdrant server at --qdrant_url. Serve with `scripts/serve.py --rag_index=INDEX`;
measure with a `retrieval` task in scripts/evaluate.py.
"""

import glob
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

import quiet_logs  # noqa: E402
from errors import UserError  # noqa: E402

_ENCODER = flags.DEFINE_string("encoder", None, "An encoder: HF directory or train.py workdir.", required=True)
_INPUTS = flags.DEFINE_list("inputs", None, "Globs of text files, or JSONL files of {id, text}.", required=True)
_INDEX = flags.DEFINE_string("index", None, "Directory to write the index to.", required=True)
_WORDS = flags.DEFINE_integer("chunk_words", 120, "Words per chunk.", lower_bound=1)
_OVERLAP = flags.DEFINE_integer("chunk_overlap", 30, "Words shared by neighbouring chunks.", lower_bound=0)
_MAX_LEN = flags.DEFINE_integer("max_len", 256, "Encoder tokens per chunk at most.", lower_bound=8)
_URL = flags.DEFINE_string("qdrant_url", None, "A Qdrant server; default: embedded storage in --index.")
_COLLECTION = flags.DEFINE_string("collection", "strata", "Qdrant collection name.")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace an existing --index.")


def read_documents(patterns: list[str]) -> list[tuple[str, str]]:
  """(source id, text) of every input; JSONL lines need "id" and "text" (named by file:line if not)."""
  docs = []
  for pattern in patterns:
    paths = sorted(glob.glob(pattern, recursive=True))
    if not paths:
      raise UserError(f"--inputs: {pattern!r} matches no file")
    for path in paths:
      if path.endswith(".jsonl"):
        with open(path, encoding="utf-8") as f:
          for n, line in enumerate(f, 1):
            if not line.strip():
              continue
            try:
              record = json.loads(line)
            except json.JSONDecodeError as e:
              raise UserError(f"{path}:{n}: not JSON ({e.msg})") from None
            if not isinstance(record, dict) or not isinstance(record.get("text"), str) or "id" not in record:
              raise UserError(f'{path}:{n}: expected {{"id": ..., "text": "..."}}')
            docs.append((str(record["id"]), record["text"]))
      elif os.path.isfile(path):
        with open(path, encoding="utf-8", errors="replace") as f:
          docs.append((path, f.read()))
  return docs


def main(argv):
  del argv
  quiet_logs.apply()
  from evals import vector_index
  from evals.embedder import Embedder
  try:
    docs = read_documents(_INPUTS.value)
    chunks = vector_index.chunk_documents(docs, _WORDS.value, _OVERLAP.value)
    embedder = Embedder.load(_ENCODER.value, max_len=_MAX_LEN.value)
    info = vector_index.build(_INDEX.value, embedder, chunks, url=_URL.value, collection=_COLLECTION.value,
                              chunking={"words": _WORDS.value, "overlap": _OVERLAP.value},
                              overwrite=_OVERWRITE.value)
  except UserError as e:
    sys.exit(f"error: {e}")
  print(json.dumps(info))


if __name__ == "__main__":
  app.run(main)
