"""Local runner, second phase: global decisions over the map results, then the dataset.

Sums the files' line counts into a boilerplate set; per file (pool) strips
boilerplate, decontaminates and computes exact keys and MinHash signatures
(data/prep_stages.py); globally removes exact and near duplicates (LSH
candidates, verified, then connected components; the smallest id of a cluster
survives); then data/prep_write.py tokenizes and writes the dataset.
"""

import json
import os

import numpy as np

from data import boilerplate, dedup, prep_stages, prep_write
from data import stage_stats as st
from data.prep_io import gzip_writer, parallel_map, read_jsonl_gz, work_dir, worker_count
from data import tokenizer as tokenizer_lib
from errors import UserError


_DEDUP_STATE = {}


def _dedup_task(args) -> dict:
  index, cfg, work = args
  if not _DEDUP_STATE:
    _DEDUP_STATE["boiler"] = set(np.load(os.path.join(work, "boilerplate.npy")).tolist())
    _DEDUP_STATE["decontam"] = prep_stages.decontam_index(cfg)
    _DEDUP_STATE["hasher"] = prep_stages.minhasher(cfg)
  boiler, contam, hasher = _DEDUP_STATE["boiler"], _DEDUP_STATE["decontam"], _DEDUP_STATE["hasher"]
  base = os.path.join(work, "dedup", f"{index:06d}")
  stats = prep_stages.new_stats(prep_stages.STRIP_STAGES)
  ids, keys, sigs, lengths, removed = [], [], [], [], []
  with gzip_writer(base + ".jsonl.gz.tmp") as out:
    for doc in read_jsonl_gz(os.path.join(work, "map", f"{index:06d}.jsonl.gz")):
      text, removal = prep_stages.strip(doc["id"], doc["text"], cfg, boiler, contam, stats)
      if removal:
        removed.append(removal)
        continue
      doc["text"] = text
      out.write((json.dumps(doc) + "\n").encode())
      key, sig = prep_stages.keys(text, cfg, hasher)
      ids.append(doc["id"])
      keys.append(key)
      sigs.append(sig)
      lengths.append(len(text))
  os.replace(base + ".jsonl.gz.tmp", base + ".jsonl.gz")
  num_perm = cfg.near_dedup.num_perm if cfg.near_dedup.enabled else 0
  with open(base + ".npz", "wb") as fh:
    np.savez(fh, ids=np.asarray(ids, dtype=object).astype(str), keys=np.asarray(keys, dtype="S16"),
             sigs=np.asarray(sigs, np.uint64).reshape(len(ids), num_perm),
             lengths=np.asarray(lengths, np.int64))
  return {"stats": stats, "removed": removed}


def _stage_from_masks(lengths, alive_after, alive_before, reason) -> dict:
  return prep_write.dedup_stage(int(alive_before.sum()), int(alive_after.sum()), int(lengths[alive_before].sum()),
                     int(lengths[alive_after].sum()), reason)


def _global_dedup(cfg, work: str, num_files: int) -> tuple[dict, dict]:
  """{dropped id: (reason, kept id)} and stage stats for exact and near dedup."""
  parts = [np.load(os.path.join(work, "dedup", f"{i:06d}.npz")) for i in range(num_files)]
  ids = [x for p in parts for x in p["ids"].tolist()]
  if not ids:
    raise UserError("no documents left after boilerplate removal and decontamination")
  keys = np.concatenate([p["keys"] for p in parts])
  lengths = np.concatenate([p["lengths"] for p in parts])
  drops, stats = {}, {}
  alive = np.ones(len(ids), bool)
  if cfg.exact_dedup.enabled:
    first = {}
    for i in sorted(range(len(ids)), key=ids.__getitem__):
      kept = first.setdefault(keys[i], ids[i])
      if kept != ids[i]:
        drops[ids[i]] = ("exact_duplicate", kept)
        alive[i] = False
    stats["exact_dedup"] = _stage_from_masks(lengths, alive, np.ones(len(ids), bool), "exact_duplicate")
  if cfg.near_dedup.enabled:
    before = alive.copy()
    sigs = np.concatenate([p["sigs"] for p in parts])
    live = np.flatnonzero(alive)
    bands, rows = dedup.lsh_params(cfg.near_dedup)
    shingles_of = (lambda needed: _shingles(cfg, work, num_files, set(needed))) \
        if cfg.near_dedup.verify == "exact" else None
    found, clustering = dedup.near_duplicates([ids[i] for i in live], sigs[live], cfg.near_dedup.threshold,
                                              bands, rows, shingles_of)
    for i in live:
      if ids[i] in found:
        drops[ids[i]] = ("near_duplicate", found[ids[i]])
        alive[i] = False
    stats["near_dedup"] = _stage_from_masks(lengths, alive, before, "near_duplicate")
    stats["near_dedup"]["counts"].update(clustering["counts"])
    stats["near_dedup"]["cluster_sizes"] = clustering["cluster_sizes"]
  return drops, stats


def _shingles(cfg, work: str, num_files: int, needed: set[str]) -> dict[str, np.ndarray]:
  """Shingle sets of the `needed` documents (in pairs the estimate cannot settle), from the work files."""
  hasher, out = prep_stages.minhasher(cfg), {}
  for i in range(num_files if needed else 0):
    for doc in read_jsonl_gz(os.path.join(work, "dedup", f"{i:06d}.jsonl.gz")):
      if doc["id"] in needed:
        out[doc["id"]] = hasher.shingle_set(doc["text"])
  return out


_TOKENIZE_STATE = {}


def _tokenize_task(args) -> list[tuple]:
  index, work, tokenizer_path = args
  if not _TOKENIZE_STATE:
    _TOKENIZE_STATE["tok"] = tokenizer_lib.load(tokenizer_path)
    with open(os.path.join(work, "drops.json")) as f:
      _TOKENIZE_STATE["drops"] = json.load(f)
  tok, drops = _TOKENIZE_STATE["tok"], _TOKENIZE_STATE["drops"]
  docs = list(read_jsonl_gz(os.path.join(work, "dedup", f"{index:06d}.jsonl.gz")))
  kept = [d for d in docs if d["id"] not in drops]
  ids = iter(tok.encode_batch([d["text"] for d in kept]) if kept else [])
  return [(d, tuple(drops[d["id"]]), None) if d["id"] in drops else (d, None, next(ids)) for d in docs]


def run_merge(cfg, output: str, files: list, write_text: bool = False) -> dict:
  # Worker caches outlive a run when tasks run in this process (one worker): start clean.
  _DEDUP_STATE.clear()
  _TOKENIZE_STATE.clear()
  work = work_dir(output)
  infos = []
  for i in range(len(files)):
    with open(os.path.join(work, "map", f"{i:06d}.json")) as fh:
      infos.append(json.load(fh))
  stats = st.merge([info["stats"] for info in infos], cfg.output.examples_per_reason)
  if stats["quality"]["docs_out"] == 0:
    raise UserError(f"no documents left after the quality filters ({stats['quality']['removed']}); "
                    f"relax config.quality")

  counts = boilerplate.LineCounts()
  if cfg.boilerplate.enabled:
    for i in range(len(files)):
      counts.merge(boilerplate.LineCounts.load(os.path.join(work, "map", f"{i:06d}.lines.npz")))
  boiler = counts.boilerplate(cfg.boilerplate.min_docs, cfg.boilerplate.min_doc_fraction)
  np.save(os.path.join(work, "boilerplate.npy"), np.asarray(sorted(boiler), np.uint64))
  os.makedirs(os.path.join(work, "dedup"), exist_ok=True)
  per_file = list(parallel_map(_dedup_task, [(i, cfg, work) for i in range(len(files))], worker_count(cfg),
                               "dedup"))
  stats.update(st.merge([r["stats"] for r in per_file], cfg.output.examples_per_reason))
  stats["boilerplate"]["counts"]["boilerplate_lines"] = len(boiler)
  drops, dedup_stats = _global_dedup(cfg, work, len(files))
  stats.update(dedup_stats)
  with open(os.path.join(work, "drops.json"), "w") as f:
    json.dump({k: list(v) for k, v in drops.items()}, f)

  def kept_train_docs():
    for i in range(len(files)):
      for doc in read_jsonl_gz(os.path.join(work, "dedup", f"{i:06d}.jsonl.gz")):
        if doc["id"] not in drops and prep_write.is_train(doc["id"], cfg):
          yield doc

  def documents(tokenizer_path):
    tasks = [(i, work, tokenizer_path) for i in range(len(files))]
    for result in parallel_map(_tokenize_task, tasks, worker_count(cfg), "tokenize"):
      yield from result

  def removals():
    for info, dd in zip(infos, per_file):
      yield from info["removed"] + dd["removed"]
    yield from prep_write.dedup_removals(drops)

  return prep_write.write_dataset(cfg, output, stats, prep_write.fingerprint([i["sha256"] for i in infos], cfg),
                                  len(files), kept_train_docs, documents, removals, write_text)
