"""Exact and near-duplicate detection.

Exact: documents whose text is equal after case folding and whitespace
collapsing. Near: MinHash (datasketch) over character shingles, with LSH
banding to find candidate pairs; a candidate counts when the signatures'
estimated Jaccard similarity reaches the threshold. Character shingles
tolerate small edits far better than word shingles: a 3% character edit rate
leaves roughly (1 - 0.03)^k of k-character shingles intact.

Which copy survives is decided by document id (the smallest wins), so the
result is the same however documents were spread over workers and hosts.
"""

import hashlib

import numpy as np
from datasketch import LeanMinHash, MinHash, MinHashLSH


def exact_key(text: str) -> bytes:
  return hashlib.blake2b(" ".join(text.casefold().split()).encode(), digest_size=16).digest()


def _shingle_hash(data: bytes) -> int:
  return int.from_bytes(hashlib.blake2b(data, digest_size=4).digest(), "little")


class MinHasher:

  def __init__(self, num_perm: int = 128, shingle_chars: int = 5, seed: int = 1):
    self.num_perm, self.shingle_chars, self.seed = num_perm, shingle_chars, seed
    self._template = MinHash(num_perm=num_perm, seed=seed, hashfunc=_shingle_hash)

  def shingles(self, text: str) -> set[bytes]:
    flat = " ".join(text.lower().split())
    k = self.shingle_chars
    return {flat[i:i + k].encode() for i in range(max(1, len(flat) - k + 1))}

  def signature(self, text: str) -> np.ndarray:
    m = self._template.copy()
    m.update_batch(list(self.shingles(text)))
    return m.hashvalues.copy()


def estimated_jaccard(a: np.ndarray, b: np.ndarray) -> float:
  return float(np.mean(a == b))


def near_duplicates(ids: list[str], signatures: np.ndarray, threshold: float, seed: int = 1,
                    scheme: str | None = None) -> dict[str, str]:
  """{dropped id: id of the kept document it duplicates}, keeping the smallest id of each cluster."""
  num_perm = signatures.shape[1]
  scheme = scheme or MinHash(num_perm=num_perm, seed=seed).scheme
  lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
  kept: dict[str, np.ndarray] = {}
  dropped = {}
  for i in np.argsort(np.asarray(ids, dtype=object), kind="stable"):
    doc_id, sig = ids[i], signatures[i]
    m = LeanMinHash(seed=seed, hashvalues=sig, scheme=scheme)
    match = next((c for c in sorted(lsh.query(m)) if estimated_jaccard(sig, kept[c]) >= threshold), None)
    if match is None:
      lsh.insert(doc_id, m)
      kept[doc_id] = sig
    else:
      dropped[doc_id] = match
  return dropped
