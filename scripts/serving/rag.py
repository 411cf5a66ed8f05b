"""Retrieval-augmented chat: the top-k chunks of a vector index (scripts/build_index.py) for the user's
last message go into the prompt, and the response lists the sources it was given.

The last user message is rewritten with TEMPLATE (the other messages stay as they are):

    Use the numbered sources below if they help, and cite them as [1], [2], ...

    [1] (SOURCE_ID) CHUNK TEXT
    [2] ...

    Question: THE USER'S MESSAGE

The response (and the final chunk of a stream) carries "sources": [{"id": 1,
"source", "chunk", "score", "text"}, ...] in the same numbering; the request
log keeps them beside the prompt the model saw.
"""

import threading

TEMPLATE = ("Use the numbered sources below if they help, and cite them as [1], [2], ...\n\n{sources}\n\n"
            "Question: {question}")


class Retriever:
  def __init__(self, index, top_k: int = 4):
    self.index, self.top_k = index, top_k
    self._lock = threading.Lock()  # the embedded Qdrant store and the encoder serve one search at a time

  @classmethod
  def open(cls, index_dir: str, top_k: int = 4) -> "Retriever":
    from evals.vector_index import VectorIndex
    return cls(VectorIndex(index_dir), top_k)

  def retrieve(self, query: str) -> list[dict]:
    with self._lock:
      hits = self.index.search([query], self.top_k)[0]
    return [{"id": i + 1, **hit} for i, hit in enumerate(hits)]

  def augment(self, messages: list[dict]) -> tuple[list[dict], list[dict]]:
    """(messages with the sources in the last user turn, the sources); unchanged without a user turn."""
    last = max((i for i, m in enumerate(messages) if m["role"] == "user"), default=None)
    if last is None:
      return messages, []
    sources = self.retrieve(messages[last]["content"])
    listing = "\n".join(f"[{s['id']}] ({s['source']}) {s['text']}" for s in sources)
    augmented = dict(messages[last], content=TEMPLATE.format(sources=listing, question=messages[last]["content"]))
    return messages[:last] + [augmented] + messages[last + 1:], sources

  def close(self) -> None:
    self.index.close()
