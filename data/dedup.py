"""Exact and near-duplicate detection.

Exact: documents whose text is equal after case folding and whitespace
collapsing. Near: MinHash (datasketch) over character shingles. Character
shingles tolerate small edits far better than word shingles: a 3% character
edit rate leaves roughly (1 - 0.03)^k of k-character shingles intact.

Near-duplicate clustering, in four steps:
  1. LSH banding: the signature is cut into `bands` bands of `rows` values; two
     documents with an equal band become a candidate pair. A pair with Jaccard
     similarity s becomes a candidate with probability 1 - (1 - s^rows)^bands,
     so the banding is chosen from the threshold (`lsh_params`) to make that
     at least `lsh_recall` (0.95) at the threshold itself.
  2. Verification: a candidate becomes an edge only if its Jaccard similarity
     reaches the threshold. The fraction of equal signature values estimates it
     with standard error sqrt(s(1-s)/num_perm), 0.04 at 128: about one pair in
     ten at Jaccard 0.75 falls below a 0.7 threshold, and pairs at 0.65 rise
     above it. `verify="exact"` (the default) lets the estimate decide only
     pairs more than 4.5 standard errors from the threshold (wrong less than
     once in 10^5), and compares the shingle sets of the rest. Most candidates
     are settled without reading any text: copies of one page are far above,
     banding's chance candidates far below. `verify="minhash"` lets the
     estimate decide every pair.
  3. Connected components over the edges (union-find): A~B and B~C put A, B
     and C in one cluster even when A and C are below the threshold.
  4. The smallest document id of each cluster survives; every other member is
     dropped as a duplicate of it, so the result is the same however documents
     were spread over workers and hosts.
"""

import collections
import hashlib

import numpy as np
from datasketch import MinHash

from errors import UserError


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

  def shingle_set(self, text: str) -> np.ndarray:
    """The shingles as sorted, distinct 64-bit hashes: 8 bytes each, where a Python set of
    bytes takes about 70 (collisions are negligible at 2^-64 per pair)."""
    keys = [int.from_bytes(hashlib.blake2b(s, digest_size=8).digest(), "little") for s in self.shingles(text)]
    return np.unique(np.asarray(keys, np.uint64))


def estimated_jaccard(a: np.ndarray, b: np.ndarray) -> float:
  return float(np.mean(a == b))


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
  """Jaccard similarity of two `shingle_set`s."""
  both = len(np.intersect1d(a, b, assume_unique=True))
  return both / max(1, len(a) + len(b) - both)


# The estimate from 128 values has a standard error of at most 0.045: 4.5 of them around the
# threshold leave a pair decided by it wrong less than once in 10^5.
_CERTAIN = 4.5


def estimate_decides(estimate: float, threshold: float, num_perm: int, exact: bool = True) -> bool | None:
  """Whether the estimate alone settles a pair (True: similar, False: not), or None: too close
  to the threshold to tell, so the shingle sets must (`exact` verification; without it the
  estimate decides every pair)."""
  if not exact:
    return estimate >= threshold
  margin = _CERTAIN * np.sqrt(threshold * (1 - threshold) / num_perm)
  if estimate >= threshold + margin:
    return True
  if estimate < threshold - margin:
    return False
  return None


VERIFY = ("exact", "minhash")


# --- choosing the banding -----------------------------------------------------------------------

def candidate_probability(similarity, bands: int, rows: int):
  """Chance that a pair with this Jaccard similarity shares at least one of `bands` bands."""
  return 1.0 - (1.0 - np.asarray(similarity, float) ** rows) ** bands


def false_candidate_area(threshold: float, bands: int, rows: int, margin: float = 0.1) -> float:
  """Area under the candidate S-curve over [0, threshold - margin]: pairs that are clearly
  below the threshold yet get compared (each costs a verification)."""
  s = np.linspace(0.0, max(0.0, threshold - margin), 201)
  p = candidate_probability(s, bands, rows)
  return float(np.sum((p[1:] + p[:-1]) / 2 * np.diff(s)))


def choose_bands(threshold: float, num_perm: int, recall: float = 0.95) -> tuple[int, int]:
  """(bands, rows) with candidate probability >= `recall` at the threshold and the fewest
  false candidates below it. For each row count the most bands that fit are used (so
  bands * rows == num_perm when rows divides it): more bands only raise recall."""
  best = None
  for rows in range(1, num_perm + 1):
    bands = num_perm // rows
    if candidate_probability(threshold, bands, rows) < recall:
      continue
    cost = false_candidate_area(threshold, bands, rows)
    if best is None or cost < best[0]:
      best = (cost, bands, rows)
  if best is None:
    raise UserError(f"config.near_dedup: no LSH banding of num_perm={num_perm} finds pairs at "
                    f"threshold={threshold} with probability >= lsh_recall={recall}; raise num_perm")
  return best[1], best[2]


def lsh_params(c) -> tuple[int, int]:
  """(bands, rows) for a `near_dedup` config: explicit `bands`/`rows`, or chosen from the threshold."""
  if not 0.0 < c.threshold < 1.0:
    raise UserError(f"config.near_dedup.threshold={c.threshold}: expected a Jaccard similarity "
                    f"strictly between 0 and 1")
  if c.verify not in VERIFY:
    raise UserError(f"config.near_dedup.verify={c.verify!r}: expected one of {', '.join(VERIFY)}")
  if not 0.0 < c.lsh_recall < 1.0:
    raise UserError(f"config.near_dedup.lsh_recall={c.lsh_recall}: expected a probability strictly "
                    f"between 0 and 1")
  if c.bands or c.rows:
    if c.bands <= 0 or c.rows <= 0 or c.bands * c.rows != c.num_perm:
      raise UserError(f"config.near_dedup.bands={c.bands} x rows={c.rows} must be positive and multiply "
                      f"to num_perm={c.num_perm} (or leave both 0 to choose them from the threshold)")
    return c.bands, c.rows
  return choose_bands(c.threshold, c.num_perm, c.lsh_recall)


# --- clustering -----------------------------------------------------------------------------------

def _find(parent: list[int], i: int) -> int:
  while parent[i] != i:
    parent[i] = parent[parent[i]]  # path halving keeps the trees flat
    i = parent[i]
  return i


def candidate_pairs(signatures: np.ndarray, bands: int, rows: int) -> list[tuple[int, int]]:
  """Sorted distinct (i, j), i < j, of rows of `signatures` that share at least one band."""
  pairs = set()
  for b in range(bands):
    buckets = collections.defaultdict(list)
    block = np.ascontiguousarray(signatures[:, b * rows:(b + 1) * rows])
    for i in range(len(block)):
      buckets[block[i].tobytes()].append(i)
    for members in buckets.values():
      for x, i in enumerate(members):
        pairs.update((i, j) for j in members[x + 1:])
  return sorted(pairs)


def near_duplicates(ids: list[str], signatures: np.ndarray, threshold: float, bands: int, rows: int,
                    shingles_of=None) -> tuple[dict[str, str], dict]:
  """({dropped id: smallest id of its cluster}, counts for the report).

  With `shingles_of` (ids -> {id: shingle_set}, asked once, for the documents of the pairs the
  estimate cannot settle), those pairs are verified on their exact Jaccard similarity;
  without it, the estimate decides every pair.
  """
  order = sorted(range(len(ids)), key=ids.__getitem__)  # index = rank by id, so the root is the smallest id
  sorted_ids = [ids[i] for i in order]
  sigs = signatures[order]
  pairs = candidate_pairs(sigs, bands, rows)
  num_perm = signatures.shape[1]
  decided = {}
  for i, j in pairs:
    estimate = estimated_jaccard(sigs[i], sigs[j])
    decided[i, j] = estimate_decides(estimate, threshold, num_perm, exact=shingles_of is not None)
  unsure = [pair for pair, edge in decided.items() if edge is None]
  if unsure:
    sets = shingles_of(sorted({sorted_ids[k] for pair in unsure for k in pair}))
    for i, j in unsure:
      decided[i, j] = jaccard(sets[sorted_ids[i]], sets[sorted_ids[j]]) >= threshold
  parent = list(range(len(ids)))
  edges = 0
  for i, j in pairs:
    if decided[i, j]:
      edges += 1
      ri, rj = _find(parent, i), _find(parent, j)
      if ri != rj:
        parent[max(ri, rj)] = min(ri, rj)
  dropped, sizes = {}, collections.Counter()
  for i in range(len(ids)):
    root = _find(parent, i)
    sizes[root] += 1
    if root != i:
      dropped[sorted_ids[i]] = sorted_ids[root]
  clusters = [n for n in sizes.values() if n > 1]
  histogram = collections.Counter(clusters)
  counts = {"lsh_bands": bands, "lsh_rows": rows, "candidate_pairs": len(pairs), "exact_comparisons": len(unsure),
            "verified_edges": edges,
            "clusters": len(clusters), "max_cluster_size": max(clusters, default=0),
            "documents_removed": len(dropped)}
  return dropped, {"counts": counts, "cluster_sizes": {str(k): histogram[k] for k in sorted(histogram)}}
