"""Boilerplate: lines repeated across many documents (license headers, navigation, footers).

Each document contributes the set of its distinct lines (hashed), so a line's
count is the number of documents containing it. Counts from shards add up, and
lines in at least `max(min_docs, min_doc_fraction * num_docs)` documents are
removed everywhere.
"""

import collections
import hashlib

import numpy as np


def line_key(line: str) -> int:
  return int.from_bytes(hashlib.blake2b(line.strip().encode(), digest_size=8).digest(), "little")


def is_candidate(line: str, min_chars: int, prefixes: tuple[str, ...] = ()) -> bool:
  """Long enough, and (for code corpora, where `prefixes` are comment markers) a comment."""
  stripped = line.strip()
  return len(stripped) >= min_chars and (not prefixes or stripped.startswith(prefixes))


def distinct_line_keys(text: str, min_chars: int, prefixes: tuple[str, ...] = ()) -> set[int]:
  return {line_key(l) for l in text.split("\n") if is_candidate(l, min_chars, prefixes)}


class LineCounts:
  """Document frequency of every candidate line."""

  def __init__(self):
    self.counts: collections.Counter = collections.Counter()
    self.num_docs = 0

  def add(self, text: str, min_chars: int, prefixes: tuple[str, ...] = ()) -> None:
    self.counts.update(distinct_line_keys(text, min_chars, prefixes))
    self.num_docs += 1

  def merge(self, other: "LineCounts") -> None:
    self.counts.update(other.counts)
    self.num_docs += other.num_docs

  def save(self, path: str) -> None:
    keys = np.fromiter(self.counts.keys(), np.uint64, len(self.counts))
    counts = np.fromiter(self.counts.values(), np.int64, len(self.counts))
    with open(path, "wb") as f:
      np.savez(f, keys=keys, counts=counts, num_docs=np.int64(self.num_docs))

  @classmethod
  def load(cls, path: str) -> "LineCounts":
    z = np.load(path)
    out = cls()
    out.counts = collections.Counter(dict(zip(z["keys"].tolist(), z["counts"].tolist())))
    out.num_docs = int(z["num_docs"])
    return out

  def boilerplate(self, min_docs: int, min_doc_fraction: float) -> set[int]:
    limit = threshold(min_docs, min_doc_fraction, self.num_docs)
    return {k for k, c in self.counts.items() if c >= limit}


def threshold(min_docs: int, min_doc_fraction: float, num_docs: int) -> float:
  """A line in at least this many of `num_docs` documents is boilerplate."""
  return max(min_docs, min_doc_fraction * num_docs)


def remove_lines(text: str, keys: set[int], min_chars: int, prefixes: tuple[str, ...] = ()) -> tuple[str, int]:
  """Drops boilerplate lines; returns (text, number of lines removed)."""
  kept, removed = [], 0
  for line in text.split("\n"):
    if is_candidate(line, min_chars, prefixes) and line_key(line) in keys:
      removed += 1
    else:
      kept.append(line)
  return ("\n".join(kept).strip("\n") if removed else text), removed
