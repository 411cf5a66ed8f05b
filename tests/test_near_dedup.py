"""Near-duplicate clustering: LSH banding from the threshold, verified edges, connected
components, the smallest id surviving; recall on near-copies of real prose."""

import ast
import functools
import os

import numpy as np
import pytest

from data import corpus, dedup, prepare, prepare_config, report
from errors import UserError


def _shingles(text: str, k: int = 5) -> set[str]:
  """Character k-grams of the case-folded, space-collapsed text (independent of data/dedup.py)."""
  flat = " ".join(text.lower().split())
  return {flat[i:i + k] for i in range(max(1, len(flat) - k + 1))}


def _jaccard(a: str, b: str) -> float:
  x, y = _shingles(a), _shingles(b)
  return len(x & y) / len(x | y)


def _near_dedup_config(**kw):
  c = prepare_config.default_config().near_dedup
  with c.unlocked():
    for k, v in kw.items():
      c[k] = v
  return c


@pytest.mark.parametrize("threshold,num_perm", [(0.7, 128), (0.8, 128), (0.5, 64), (0.9, 256), (0.6, 256)])
def test_banding_compares_pairs_at_the_threshold(threshold, num_perm):
  bands, rows = dedup.choose_bands(threshold, num_perm)
  assert bands * rows <= num_perm and bands * rows > num_perm - rows  # as many bands as fit
  p_at_threshold = 1 - (1 - threshold ** rows) ** bands
  assert p_at_threshold >= 0.95, (bands, rows, p_at_threshold)


def test_default_banding_beats_datasketch():
  """datasketch's 14 x 9 for 0.7/128 compares a pair at Jaccard 0.75 about 2/3 of the time."""
  assert 1 - (1 - 0.75 ** 9) ** 14 < 0.7
  bands, rows = dedup.lsh_params(_near_dedup_config())
  assert (bands, rows) == (25, 5)
  assert 1 - (1 - 0.75 ** rows) ** bands > 0.99
  assert dedup.lsh_params(_near_dedup_config(bands=16, rows=8)) == (16, 8)
  assert dedup.lsh_params(_near_dedup_config(lsh_recall=0.5)) != (25, 5)  # the knob matters


@pytest.mark.parametrize("kw,match", [
    (dict(threshold=0.0), "threshold=0.0: expected"), (dict(threshold=1.0), "threshold=1.0: expected"),
    (dict(threshold=1.5), "threshold"), (dict(threshold=-0.2), "threshold"),
    (dict(bands=10, rows=10), "bands=10 x rows=10 must .* num_perm=128"),
    (dict(bands=32, rows=0), "bands=32 x rows=0"),
    (dict(lsh_recall=1.0), "lsh_recall"),
    (dict(threshold=0.01), "no LSH banding"),
    (dict(verify="fuzzy"), "verify='fuzzy': expected one of exact, minhash"),
])
def test_bad_near_dedup_config(kw, match):
  with pytest.raises(UserError, match=match):
    dedup.lsh_params(_near_dedup_config(**kw))


def test_bad_threshold_fails_before_any_work(tmp_path):
  cfg = prepare_config.default_config()
  (tmp_path / "in.txt").write_text("Some text that is long enough to be a document. " * 20)
  prepare_config.add_source(cfg, "in", str(tmp_path / "in.txt"))
  cfg.near_dedup.threshold = 1.5
  with pytest.raises(UserError, match=r"^config.near_dedup.threshold=1.5"):
    prepare.prepare(cfg, str(tmp_path / "out"))
  assert not os.path.exists(tmp_path / "out")


@functools.cache
def _prose(min_chars: int = 1200, count: int = 140) -> tuple[str, ...]:
  """Long docstrings of the standard library: real English prose and technical documentation."""
  found, seen = [], set()
  for path in corpus.stdlib_files():
    if "/encodings/" in path or os.path.getsize(path) < 20_000:
      continue
    with open(path, encoding="utf-8", errors="replace") as f:
      try:
        tree = ast.parse(f.read())
      except SyntaxError:
        continue
    for node in ast.walk(tree):
      if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
        doc = ast.get_docstring(node)
        if doc and len(doc) >= min_chars and doc not in seen:
          seen.add(doc)
          found.append(doc)
    if len(found) >= count:
      break
  return tuple(found)


def _edit_words(text: str, rng, fraction: float, vocabulary: list[str]) -> str:
  """Replaces, deletes or inserts about `fraction` of the words."""
  words = text.split()
  for _ in range(max(1, round(fraction * len(words)))):
    i, op = int(rng.integers(len(words))), int(rng.integers(3))
    if op == 0:
      words[i] = str(rng.choice(vocabulary))
    elif op == 1 and len(words) > 1:
      words.pop(i)
    else:
      words.insert(i, str(rng.choice(vocabulary)))
  return " ".join(words)


def _cluster(texts: dict[str, str], threshold: float = 0.7, verify: str = "exact") -> dict[str, str]:
  c = _near_dedup_config(threshold=threshold)
  hasher = dedup.MinHasher(c.num_perm, c.shingle_chars, c.seed)
  ids = list(texts)
  sigs = np.stack([hasher.signature(texts[i]) for i in ids])
  shingles_of = (lambda needed: {i: hasher.shingle_set(texts[i]) for i in needed}) if verify == "exact" else None
  dropped, report = dedup.near_duplicates(ids, sigs, threshold, *dedup.lsh_params(c), shingles_of)
  assert report["counts"]["documents_removed"] == len(dropped)
  assert report["counts"]["verified_edges"] <= report["counts"]["candidate_pairs"]
  return dropped


def test_chained_near_duplicates_form_one_cluster_with_the_smallest_id_surviving():
  """A~B and B~C while A and C are below the threshold: one cluster, one survivor (the smallest id)."""
  docs = _prose()
  filler = " ".join(" ".join(docs[-10:]).split())
  for doc in docs:  # the first real docstring whose shingles split evenly enough into ten segments
    a = " ".join(doc.split())
    n = len(a) // 10
    b = filler[:n] + a[n:]                           # segment 1 of 10 replaced
    c = filler[:n] + filler[5 * n:6 * n] + a[2 * n:]  # segments 1 and 2 replaced
    if min(_jaccard(a, b), _jaccard(b, c)) >= 0.78 and _jaccard(a, c) <= 0.66:
      break
  else:
    pytest.fail("no docstring gives a chain")
  texts = {"doc-2": a, "doc-3": b, "doc-1": c}  # the middle of the chain is not the smallest id
  hasher = dedup.MinHasher()
  assert dedup.estimated_jaccard(hasher.signature(a), hasher.signature(c)) < 0.7
  assert _cluster(texts) == {"doc-2": "doc-1", "doc-3": "doc-1"}


def test_exact_verification_decides_the_pairs_the_estimate_gets_wrong():
  """Pairs just below and just above the threshold whose MinHash estimate lands on the other side:
  the default exact verification decides them by their shingle sets."""
  docs = _prose()
  filler = " ".join(" ".join(docs[-10:]).split())
  hasher = dedup.MinHasher()
  over = under = None  # (a, b): estimate >= 0.7 > exact; exact >= 0.7 > estimate
  for doc in docs[:60]:
    a = " ".join(doc.split())
    for tenths in range(15, 26):
      cut = len(a) * tenths // 100
      b = filler[:cut] + a[cut:]
      exact, estimate = _jaccard(a, b), dedup.estimated_jaccard(hasher.signature(a), hasher.signature(b))
      if over is None and exact < 0.7 <= estimate:
        over = (a, b)
      if under is None and estimate < 0.7 <= exact:
        under = (a, b)
  assert over is not None and under is not None
  assert _cluster({"a": over[0], "b": over[1]}, verify="minhash") == {"b": "a"}
  assert _cluster({"a": over[0], "b": over[1]}) == {}
  assert _cluster({"a": under[0], "b": under[1]}, verify="minhash") == {}
  assert _cluster({"a": under[0], "b": under[1]}) == {"b": "a"}


def test_original_is_kept_once_with_all_its_copies():
  """The smallest id survives even when it is a copy: the other copies, which differ from it
  more than from the original, go with the original instead of surviving."""
  docs = _prose()
  vocab = " ".join(docs).split()
  for k in range(5):
    rng = np.random.default_rng(k)
    texts = {"b-original": docs[k]}
    texts.update({f"{p}-copy": _edit_words(docs[k], rng, 0.08, vocab) for p in ("a", "c", "d")})
    assert _cluster(texts) == {"b-original": "a-copy", "c-copy": "a-copy", "d-copy": "a-copy"}, k


def test_recall_on_near_copies_of_real_prose():
  """Copies with 3-15% of their words replaced, deleted or inserted; scored on those with
  character-5-gram Jaccard >= 0.75 (datasketch's 14 x 9 banding catches about 0.93 of them)."""
  docs = _prose()
  rng = np.random.default_rng(0)
  vocab = " ".join(docs).split()
  bases, distinct = docs[:70], docs[70:]
  texts = {f"base/{i:03d}": t for i, t in enumerate(bases)}
  texts.update({f"distinct/{i:03d}": t for i, t in enumerate(distinct)})
  pairs = []
  for i, t in enumerate(bases):
    copy = _edit_words(t, rng, float(rng.uniform(0.03, 0.15)), vocab)
    texts[f"copy/{i:03d}"] = copy
    if _jaccard(t, copy) >= 0.75:
      pairs.append((f"base/{i:03d}", f"copy/{i:03d}"))
  dropped = _cluster(texts)
  caught = sum(dropped.get(c) == b or dropped.get(b) == c for b, c in pairs)
  recall = caught / len(pairs)
  # A document counts as wrongly removed unless it truly is a near-duplicate of its survivor.
  wrong = [d for d, kept in dropped.items() if _jaccard(texts[d], texts[kept]) < 0.7 and
           (d.split("/")[1] != kept.split("/")[1] or "distinct" in d + kept)]
  print(f"near-copies (Jaccard >= 0.75): {len(pairs)}; recall {recall:.3f}; wrongly removed {len(wrong)}")
  assert len(pairs) >= 50 and recall >= 0.95, (len(pairs), recall)
  assert not wrong
  assert not any(d.startswith("distinct/") for d in dropped)


def test_report_lists_banding_edges_and_cluster_sizes():
  docs = _prose()
  rng = np.random.default_rng(2)
  vocab = " ".join(docs).split()
  texts = {f"d{i}": docs[i] for i in range(4)}
  texts.update({f"e{i}-{j}": _edit_words(docs[i], rng, 0.03, vocab) for i in range(2) for j in range(i + 1)})
  c = _near_dedup_config()
  hasher = dedup.MinHasher(c.num_perm, c.shingle_chars, c.seed)
  sigs = np.stack([hasher.signature(t) for t in texts.values()])
  dropped, stats = dedup.near_duplicates(list(texts), sigs, c.threshold, 25, 5)
  assert dropped == {"e0-0": "d0", "e1-0": "d1", "e1-1": "d1"}
  counts = stats["counts"]
  assert counts["clusters"] == 2 and counts["max_cluster_size"] == 3 and counts["documents_removed"] == 3
  assert counts["verified_edges"] == 4 and counts["candidate_pairs"] >= 4  # d1, e1-0 and e1-1 pairwise
  assert stats["cluster_sizes"] == {"2": 1, "3": 1}
  text = "\n".join(report._near_dedup_section(stats))
  assert "25 bands x 5 rows" in text and "| 3 | 1 |" in text and "| 2 | 1 |" in text
