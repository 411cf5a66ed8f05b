"""The per-document stages of data preparation, shared by the local and the Ray runner.

Each function takes one document and the stage statistics to record into, and
decides alone: so both runners keep and remove exactly the same documents,
whatever the order or the grouping of the work.

  clean   read -> normalize -> quality filters -> PII scrubbing
  strip   boilerplate lines -> decontamination (needs the global boilerplate set)
  keys    exact-duplicate key and MinHash signature
"""

import numpy as np
import ml_collections

from data import boilerplate, decontam, dedup, normalize, pii, quality, sources
from data import stage_stats as st

CLEAN_STAGES = ("read", "normalize", "quality", "pii")
STRIP_STAGES = ("boilerplate", "decontam")


def new_stats(names: tuple[str, ...]) -> dict:
  return {name: st.new_stage() for name in names}


def boilerplate_prefixes(cfg) -> tuple[str, ...]:
  return tuple(p for p in cfg.boilerplate.line_prefixes.split(",") if p)


def line_keys(text: str, cfg) -> set[int]:
  """The document's distinct candidate lines: what it adds to the boilerplate line counts."""
  return boilerplate.distinct_line_keys(text, cfg.boilerplate.min_line_chars, boilerplate_prefixes(cfg))


def boilerplate_threshold(cfg, num_docs: int) -> float:
  return boilerplate.threshold(cfg.boilerplate.min_docs, cfg.boilerplate.min_doc_fraction, num_docs)


def clean(doc: sources.Document, cfg, stats: dict) -> tuple[str | None, dict | None]:
  """(cleaned text, None), or (None, removal record) when a quality filter drops the document."""
  k = cfg.output.examples_per_reason
  text = doc.text
  st.record(stats["read"], text, text)
  if cfg.normalize.enabled:
    new = normalize.normalize(text, cfg.normalize)
    st.record(stats["normalize"], text, new)
    text = new
  reason = "empty" if not text.strip() else (
      quality.quality_reason(text, cfg.quality) if cfg.quality.enabled else None)
  st.record(stats["quality"], text, None if reason else text, reason, doc.id, k)
  if reason:
    return None, {"id": doc.id, "stage": "quality", "reason": reason}
  if cfg.pii.enabled:
    types = tuple(t for t in cfg.pii.types.split(",") if t)
    new, found = pii.scrub(text, types, cfg.pii.phone_regions)
    st.record(stats["pii"], text, new)
    for pii_type, n in found.items():
      st.count(stats["pii"], pii_type, n)
    text = new
  return text, None


def decontam_index(cfg) -> decontam.NgramIndex | None:
  if not cfg.decontam.eval_sets:
    return None
  index = decontam.NgramIndex(cfg.decontam.ngram)
  src = {"eval": {"inputs": cfg.decontam.eval_sets, "text_field": cfg.decontam.text_field}}
  for f in sources.list_inputs(ml_collections.ConfigDict(src)):
    for doc in sources.read_documents(f, "fail", sources.ReadStats()):
      index.add(doc.text)
  return index


def strip(doc_id: str, text: str, cfg, boiler: set[int], contam, stats: dict) -> tuple[str | None, dict | None]:
  """Boilerplate lines out, then decontamination: (text, None) or (None, removal record)."""
  k = cfg.output.examples_per_reason
  if cfg.boilerplate.enabled:
    new, lines_removed = boilerplate.remove_lines(text, boiler, cfg.boilerplate.min_line_chars,
                                                  boilerplate_prefixes(cfg))
    st.count(stats["boilerplate"], "lines_removed", lines_removed)
    st.count(stats["boilerplate"], "docs_changed", int(lines_removed > 0))
    emptied = len(new.strip()) < max(1, cfg.quality.min_chars if cfg.quality.enabled else 1)
    st.record(stats["boilerplate"], text, None if emptied else new, "too_short_after_removal", doc_id, k)
    if emptied:
      return None, {"id": doc_id, "stage": "boilerplate", "reason": "too_short_after_removal"}
    text = new
  if contam is not None:
    hit = contam.contaminated(text)
    st.record(stats["decontam"], text, None if hit else text, "eval_ngram_overlap", doc_id, k)
    if hit:
      return None, {"id": doc_id, "stage": "decontam", "reason": "eval_ngram_overlap"}
  return text, None


def minhasher(cfg) -> dedup.MinHasher:
  c = cfg.near_dedup
  return dedup.MinHasher(c.num_perm, c.shingle_chars, c.seed)


def keys(text: str, cfg, hasher: dedup.MinHasher) -> tuple[bytes, np.ndarray]:
  """(exact-duplicate key, MinHash signature); empty where that dedup is off."""
  key = dedup.exact_key(text) if cfg.exact_dedup.enabled else b""
  sig = hasher.signature(text) if cfg.near_dedup.enabled else np.zeros(0)
  return key, np.asarray(sig, np.uint64)  # datasketch stores 32-bit values; one width everywhere


def validate(cfg) -> None:
  """Config errors that would otherwise surface after the cleaning: before any work."""
  if cfg.near_dedup.enabled:
    dedup.lsh_params(cfg.near_dedup)
  if cfg.pii.enabled:
    pii.phone_regions(cfg.pii.phone_regions)
