"""A vector index of document chunks in Qdrant: built by scripts/build_index.py, searched by the
server's retrieval (scripts/serve.py --rag_index) and by `retrieval` evaluation tasks.

An index is a directory:
  index.json   what built it: the encoder, chunking, the collection and where it lives;
  qdrant/      Qdrant's embedded local storage (the default), or nothing when `url` names a server.
The same code serves both: QdrantClient(path=...) runs in this process, QdrantClient(url=...) talks to a
Qdrant server when one machine is not enough. Vectors are unit-length mean-pooled encoder outputs,
compared by cosine similarity. A local index is built in a temporary directory and renamed into
place, so a crash never leaves half an index.
"""

import dataclasses
import json
import os
import re

from data.prep_io import atomic_directory, write_json_atomic
from errors import UserError

INDEX_FILE = "index.json"
UPSERT_BATCH = 256


@dataclasses.dataclass
class Chunk:
  source: str  # the document's id: its file path or the id it was given
  index: int   # position of the chunk in its document
  text: str


def chunk_text(text: str, words: int = 120, overlap: int = 30) -> list[str]:
  """Windows of `words` words, `overlap` shared between neighbours; whitespace collapsed."""
  if not 0 <= overlap < words:
    raise UserError(f"chunk overlap={overlap} must be in [0, words={words})")
  tokens = re.findall(r"\S+", text)
  if not tokens:
    return []
  step = words - overlap
  return [" ".join(tokens[i:i + words]) for i in range(0, max(len(tokens) - overlap, 1), step)]


def chunk_documents(documents: list[tuple[str, str]], words: int = 120, overlap: int = 30) -> list[Chunk]:
  return [Chunk(source, i, piece) for source, text in documents
          for i, piece in enumerate(chunk_text(text, words, overlap))]


def _client(path: str | None = None, url: str | None = None):
  from qdrant_client import QdrantClient
  return QdrantClient(url=url) if url else QdrantClient(path=path)


def build(index_dir: str, embedder, chunks: list[Chunk], url: str | None = None, collection: str = "strata",
          chunking: dict | None = None, overwrite: bool = False) -> dict:
  """Embeds `chunks` and stores them; returns the index's description (index.json)."""
  from qdrant_client import models
  if not chunks:
    raise UserError("no text to index: every input was empty")
  if os.path.exists(index_dir) and not overwrite:
    raise UserError(f"{index_dir} exists; pass --overwrite to replace it")
  with atomic_directory(index_dir) as work:
    client = _client(path=os.path.join(work, "qdrant"), url=url)
    try:
      if client.collection_exists(collection):  # only a server's: a local store starts empty
        if not overwrite:
          raise UserError(f"the Qdrant server at {url} already has a collection {collection!r}; choose another "
                          "--collection or pass --overwrite to replace it")
        client.delete_collection(collection)
      client.create_collection(collection, vectors_config=models.VectorParams(size=embedder.dim,
                                                                              distance=models.Distance.COSINE))
      for start in range(0, len(chunks), UPSERT_BATCH):
        batch = chunks[start:start + UPSERT_BATCH]
        vectors = embedder.embed([c.text for c in batch])
        client.upsert(collection, points=[
            models.PointStruct(id=start + i, vector=v.tolist(),
                               payload={"source": c.source, "chunk": c.index, "text": c.text})
            for i, (c, v) in enumerate(zip(batch, vectors))])
    finally:
      client.close()  # an open local store stays locked
    info = {"encoder": os.path.abspath(embedder.source), "collection": collection, "url": url,
            "dim": embedder.dim, "chunks": len(chunks), "documents": len({c.source for c in chunks}),
            "max_len": embedder.max_len, "chunking": chunking or {}}
    write_json_atomic(os.path.join(work, INDEX_FILE), info)
  return info


class VectorIndex:
  """An opened index: its encoder and its Qdrant collection."""

  def __init__(self, index_dir: str, embedder=None):
    path = os.path.join(index_dir, INDEX_FILE)
    if not os.path.isfile(path):
      raise UserError(f"{index_dir} is not an index (no {INDEX_FILE}); build one with scripts/build_index.py")
    with open(path) as f:
      self.info = json.load(f)
    if embedder is None:
      from evals.embedder import Embedder
      embedder = Embedder.load(self.info["encoder"], max_len=self.info.get("max_len", 256))
    if embedder.dim != self.info["dim"]:
      raise UserError(f"{index_dir} holds {self.info['dim']}-dimensional vectors; the encoder makes {embedder.dim}")
    self.embedder = embedder
    self.client = _client(path=os.path.join(index_dir, "qdrant"), url=self.info.get("url"))

  def search(self, queries: list[str], k: int) -> list[list[dict]]:
    """Per query, the k nearest chunks best first: {source, chunk, text, score}."""
    from qdrant_client import models
    vectors = self.embedder.embed(queries)
    responses = self.client.query_batch_points(self.info["collection"], requests=[
        models.QueryRequest(query=v.tolist(), limit=k, with_payload=True) for v in vectors])
    return [[{**p.payload, "score": float(p.score)} for p in r.points] for r in responses]

  def close(self) -> None:
    self.client.close()
