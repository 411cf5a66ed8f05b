"""Merge phase of data preparation: global decisions, then the dataset.

Sums the shards' line counts into a boilerplate set; per file (pool) strips
boilerplate, decontaminates, and computes exact keys and MinHash signatures;
globally removes exact and near duplicates (LSH candidates, verified, then
connected components; the smallest id of a cluster survives); then trains or
loads the tokenizer, tokenizes (pool) and writes shards, metadata.json,
report.md, stats.json and removed.jsonl.gz into a temporary directory that is
renamed into place only when all of it succeeded.
"""

import contextlib
import hashlib
import json
import os
import shutil
import tempfile

import numpy as np

from data import boilerplate, decontam, dedup, report, shards, sources
from data import stage_stats as st
from data import tokenizer as tokenizer_lib
from data.prep_io import (SPLITS, gzip_writer, list_inputs, note, parallel_map, read_jsonl_gz, split_of,
                          work_dir, worker_count, write_json_atomic)
from data.prep_map import boilerplate_prefixes
from errors import UserError


_DEDUP_STATE = {}


def _dedup_init(cfg, work: str):
  _DEDUP_STATE["boiler"] = set(np.load(os.path.join(work, "boilerplate.npy")).tolist())
  index = None
  if cfg.decontam.eval_sets:
    index = decontam.NgramIndex(cfg.decontam.ngram)
    src = {"eval": {"inputs": cfg.decontam.eval_sets, "text_field": cfg.decontam.text_field}}
    import ml_collections
    for f in sources.list_inputs(ml_collections.ConfigDict(src)):
      for doc in sources.read_documents(f, "fail", sources.ReadStats()):
        index.add(doc.text)
  _DEDUP_STATE["decontam"] = index
  _DEDUP_STATE["hasher"] = dedup.MinHasher(cfg.near_dedup.num_perm, cfg.near_dedup.shingle_chars,
                                           cfg.near_dedup.seed)


def _dedup_task(args) -> dict:
  index, cfg, work = args
  if not _DEDUP_STATE:
    _dedup_init(cfg, work)
  boiler, contam, hasher = _DEDUP_STATE["boiler"], _DEDUP_STATE["decontam"], _DEDUP_STATE["hasher"]
  src = os.path.join(work, "map", f"{index:06d}.jsonl.gz")
  base = os.path.join(work, "dedup", f"{index:06d}")
  stats = {"boilerplate": st.new_stage(), "decontam": st.new_stage()}
  k = cfg.output.examples_per_reason
  ids, keys, sigs, lengths, removed = [], [], [], [], []
  with gzip_writer(base + ".jsonl.gz.tmp") as out:
    for doc in read_jsonl_gz(src):
      text = doc["text"]
      if cfg.boilerplate.enabled:
        new, lines_removed = boilerplate.remove_lines(text, boiler, cfg.boilerplate.min_line_chars,
                                                      boilerplate_prefixes(cfg))
        st.count(stats["boilerplate"], "lines_removed", lines_removed)
        st.count(stats["boilerplate"], "docs_changed", int(lines_removed > 0))
        emptied = len(new.strip()) < max(1, cfg.quality.min_chars if cfg.quality.enabled else 1)
        st.record(stats["boilerplate"], text, None if emptied else new, "too_short_after_removal", doc["id"], k)
        if emptied:
          removed.append({"id": doc["id"], "stage": "boilerplate", "reason": "too_short_after_removal"})
          continue
        text = new
      if contam is not None:
        hit = contam.contaminated(text)
        st.record(stats["decontam"], text, None if hit else text, "eval_ngram_overlap", doc["id"], k)
        if hit:
          removed.append({"id": doc["id"], "stage": "decontam", "reason": "eval_ngram_overlap"})
          continue
      doc["text"] = text
      out.write((json.dumps(doc) + "\n").encode())
      ids.append(doc["id"])
      keys.append(dedup.exact_key(text) if cfg.exact_dedup.enabled else b"")
      sigs.append(hasher.signature(text) if cfg.near_dedup.enabled else np.zeros(0, np.uint64))
      lengths.append(len(text))
  os.replace(base + ".jsonl.gz.tmp", base + ".jsonl.gz")
  num_perm = cfg.near_dedup.num_perm if cfg.near_dedup.enabled else 0
  with open(base + ".npz", "wb") as fh:
    np.savez(fh, ids=np.asarray(ids, dtype=object).astype(str), keys=np.asarray(keys, dtype="S16"),
             sigs=np.asarray(sigs, np.uint64).reshape(len(ids), num_perm),
             lengths=np.asarray(lengths, np.int64))
  return {"stats": stats, "removed": removed}


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
    stats["exact_dedup"] = _dedup_stage(lengths, alive, np.ones(len(ids), bool), "exact_duplicate")
  if cfg.near_dedup.enabled:
    before = alive.copy()
    sigs = np.concatenate([p["sigs"] for p in parts])
    live = np.flatnonzero(alive)
    bands, rows = dedup.lsh_params(cfg.near_dedup)
    found, clustering = dedup.near_duplicates([ids[i] for i in live], sigs[live], cfg.near_dedup.threshold,
                                              bands, rows)
    for i in live:
      if ids[i] in found:
        drops[ids[i]] = ("near_duplicate", found[ids[i]])
        alive[i] = False
    stats["near_dedup"] = _dedup_stage(lengths, alive, before, "near_duplicate")
    stats["near_dedup"]["counts"].update(clustering["counts"])
    stats["near_dedup"]["cluster_sizes"] = clustering["cluster_sizes"]
  return drops, stats


def _dedup_stage(lengths, alive_after, alive_before, reason) -> dict:
  s = st.new_stage()
  s["docs_in"], s["docs_out"] = int(alive_before.sum()), int(alive_after.sum())
  s["chars_in"], s["chars_out"] = int(lengths[alive_before].sum()), int(lengths[alive_after].sum())
  if s["docs_in"] != s["docs_out"]:
    s["removed"][reason] = s["docs_in"] - s["docs_out"]
  return s


def _kept_docs(work: str, num_files: int, drops: dict):
  for i in range(num_files):
    for doc in read_jsonl_gz(os.path.join(work, "dedup", f"{i:06d}.jsonl.gz")):
      if doc["id"] not in drops:
        yield doc


def _tokenizer_for(cfg, work: str, num_files: int, drops: dict, out_dir: str) -> tokenizer_lib.Tokenizer:
  t = cfg.tokenizer
  if t.path:
    tok = tokenizer_lib.load(t.path)
    name = "tokenizer.json" if tok.kind == "hf" else "tokenizer.model"
    shutil.copyfile(t.path, os.path.join(out_dir, name))
    # The model directory's config goes with it, so the dataset's tokenizer (and everything
    # that later loads it by path) tokenizes exactly as the model's does in transformers.
    config = os.path.join(os.path.dirname(t.path), "tokenizer_config.json")
    if os.path.isfile(config):
      shutil.copyfile(config, os.path.join(out_dir, "tokenizer_config.json"))
    return tokenizer_lib.load(os.path.join(out_dir, name))
  sample = os.path.join(work, "tokenizer_sample.txt")
  chars = 0
  with open(sample, "w", encoding="utf-8") as f:
    for doc in _kept_docs(work, num_files, drops):
      if split_of(doc["id"], cfg.split.val_fraction, cfg.split.test_fraction) != "train":
        continue
      for line in doc["text"].splitlines():
        if line.strip():
          f.write(line + "\n")
      chars += len(doc["text"])
      if chars >= t.sample_chars:
        break
  symbols = tuple(s for s in t.user_defined_symbols.split(",") if s)
  note(f"training a {t.vocab_size}-piece {t.model_type} tokenizer on {chars} characters")
  path = tokenizer_lib.train_sentencepiece(sample, os.path.join(out_dir, "tokenizer"), t.vocab_size, t.seed,
                                           t.model_type, t.byte_fallback, symbols)
  os.remove(os.path.join(out_dir, "tokenizer.vocab"))
  return tokenizer_lib.load(path)


_TOKENIZE_STATE = {}


def _tokenize_task(args) -> dict:
  index, cfg, work, tokenizer_path = args
  if not _TOKENIZE_STATE:
    _TOKENIZE_STATE["tok"] = tokenizer_lib.load(tokenizer_path)
    with open(os.path.join(work, "drops.json")) as f:
      _TOKENIZE_STATE["drops"] = json.load(f)
  tok, drops = _TOKENIZE_STATE["tok"], _TOKENIZE_STATE["drops"]
  docs = [d for d in read_jsonl_gz(os.path.join(work, "dedup", f"{index:06d}.jsonl.gz"))]
  by_split = {s: [] for s in SPLITS}
  examples = []
  for d in docs:
    if d["id"] in drops:
      examples.append((drops[d["id"]], d))
    else:
      by_split[split_of(d["id"], cfg.split.val_fraction, cfg.split.test_fraction)].append(d)
  out = {"examples": examples}
  for s, ds in by_split.items():
    out[s] = list(zip(ds, tok.encode_batch([d["text"] for d in ds]))) if ds else []
  return out


def _write_outputs(cfg, work: str, num_files: int, tok, tmp: str, drops: dict, write_text: bool,
                   dedup_stats: dict) -> dict:
  with open(os.path.join(work, "drops.json"), "w") as f:
    json.dump({k: list(v) for k, v in drops.items()}, f)
  writers = {s: shards.SplitWriter(tmp, s, cfg.output.docs_per_shard) for s in SPLITS}
  texts = {}
  if write_text:
    os.makedirs(os.path.join(tmp, "text"), exist_ok=True)
    texts = {s: gzip_writer(os.path.join(tmp, "text", f"{s}.jsonl.gz")) for s in SPLITS}
  measures = {s: {"docs": 0, "chars": 0, "bytes": 0, "words": 0, "tokens": 0} for s in SPLITS}
  k = cfg.output.examples_per_reason
  tasks = [(i, cfg, work, tok.path) for i in range(num_files)]
  with contextlib.ExitStack() as stack:
    for w in texts.values():
      stack.enter_context(w)
    for result in parallel_map(_tokenize_task, tasks, worker_count(cfg), "tokenize"):
      for (reason, kept), doc in result["examples"]:
        stage = dedup_stats["exact_dedup" if reason == "exact_duplicate" else "near_dedup"]
        slot = stage["examples"].setdefault(reason, [])
        if len(slot) < k:
          slot.append({"id": doc["id"], "text": doc["text"][:400], "duplicate_of": kept})
      for s in SPLITS:
        for doc, ids in result[s]:
          writers[s].write(ids)
          m = measures[s]
          m["docs"] += 1
          m["chars"] += len(doc["text"])
          m["bytes"] += len(doc["text"].encode())
          m["words"] += len(doc["text"].split())
          m["tokens"] += len(ids)
          if write_text:
            texts[s].write((json.dumps({"id": doc["id"], "source": doc["source"], "text": doc["text"]}) + "\n").encode())
  splits = {s: writers[s].close() for s in SPLITS}
  for s in SPLITS:
    m = measures[s]
    splits[s].update(chars=m["chars"], bytes=m["bytes"], words=m["words"],
                     tokens_per_word=m["tokens"] / max(1, m["words"]),
                     bytes_per_token=m["bytes"] / max(1, m["tokens"]))
  return splits


def _write_removal_log(path: str, infos: list[dict], per_file: list[dict], drops: dict) -> None:
  """Every removed document, in input order: {"id", "stage", "reason"[, "duplicate_of"]}."""
  with gzip_writer(path) as f:
    for info, dd in zip(infos, per_file):
      for record in info["removed"] + dd["removed"]:
        f.write((json.dumps(record) + "\n").encode())
    for doc_id in sorted(drops):
      reason, kept = drops[doc_id]
      stage = "exact_dedup" if reason == "exact_duplicate" else "near_dedup"
      f.write((json.dumps({"id": doc_id, "stage": stage, "reason": reason, "duplicate_of": kept}) + "\n").encode())


def _fingerprint(map_infos: list[dict], cfg) -> str:
  h = hashlib.sha256(json.dumps(cfg.to_dict(), sort_keys=True).encode())
  for info in map_infos:
    h.update(info["sha256"].encode())
  return h.hexdigest()


def run_merge(cfg, output: str, write_text: bool = False, overwrite: bool = False) -> dict:
  # Worker caches outlive a run when tasks run in this process (one worker): start clean.
  _DEDUP_STATE.clear()
  _TOKENIZE_STATE.clear()
  if os.path.exists(output) and not overwrite:
    raise UserError(f"output directory {output} already exists; pass --overwrite to replace it")
  if cfg.near_dedup.enabled:
    dedup.lsh_params(cfg.near_dedup)  # a bad threshold or banding fails before any work
  files = list_inputs(cfg, output)
  work = work_dir(output)
  infos = []
  for i, f in enumerate(files):
    path = os.path.join(work, "map", f"{i:06d}.json")
    if not os.path.exists(path):
      raise UserError(f"map results for input {f.path} are missing from {work}; run every "
                      f"--shard_index before --merge")
    with open(path) as fh:
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

  parent = os.path.dirname(os.path.abspath(output))
  tmp = tempfile.mkdtemp(prefix=".tmp-" + os.path.basename(os.path.abspath(output)) + "-", dir=parent)
  os.chmod(tmp, 0o755)
  try:
    tok = _tokenizer_for(cfg, work, len(files), drops, tmp)
    splits = _write_outputs(cfg, work, len(files), tok, tmp, drops, write_text, stats)
    for s in SPLITS:
      if splits[s]["num_docs"] == 0:
        raise UserError(f"split {s!r} received no documents; use more input or larger split fractions")
    meta = {
        "format": shards.FORMAT,
        "sources": {name: cfg.sources[name].inputs for name in cfg.sources},
        "tokenizer": os.path.basename(tok.path),
        "tokenizer_kind": tok.kind,
        "vocab_size": tok.vocab_size,
        "bos_id": tok.bos_id,
        "add_bos": tok.add_bos,  # whether the tokenizer itself starts a text with BOS
        "eos_id": tok.eos_id,
        "splits": splits,
        "chars_per_token_train": splits["train"]["chars"] / max(1, splits["train"]["num_tokens"]),
        "inputs_sha256": _fingerprint(infos, cfg),
        "num_input_files": len(files),
        "config": cfg.to_dict(),
    }
    write_json_atomic(os.path.join(tmp, shards.METADATA), meta)
    report.write(os.path.join(tmp, "report.md"), meta, stats)
    _write_removal_log(os.path.join(tmp, "removed.jsonl.gz"), infos, per_file, drops)
    with open(os.path.join(tmp, "stats.json"), "w") as f:
      json.dump(stats, f, indent=1)
    if os.path.exists(output):
      shutil.rmtree(output)
    os.rename(tmp, output)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  shutil.rmtree(work, ignore_errors=True)
  return meta
