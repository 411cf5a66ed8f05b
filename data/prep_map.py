"""Map phase of data preparation: one task per input file.

Reads, normalizes, filters, scrubs PII and counts lines for boilerplate
detection, writing OUTPUT.work/map/NNNNNN.{jsonl.gz,lines.npz,json}. The .json
is written last, so its presence marks the file as done; hosts given
`num_shards`/`shard_index` each take every num_shards-th file.
"""

import json
import os

from data import boilerplate, dedup, normalize, pii, quality, sources
from data import stage_stats as st
from data.prep_io import (file_sha256, gzip_writer, parallel_map, worker_count, write_json_atomic, list_inputs,
                          work_dir)
from errors import UserError


def boilerplate_prefixes(cfg) -> tuple[str, ...]:
  return tuple(p for p in cfg.boilerplate.line_prefixes.split(",") if p)


def _map_task(args) -> None:
  index, f, cfg, work = args
  base = os.path.join(work, "map", f"{index:06d}")
  stats = {name: st.new_stage() for name in ("read", "normalize", "quality", "pii")}
  read = sources.ReadStats()
  lines = boilerplate.LineCounts()
  types = tuple(t for t in cfg.pii.types.split(",") if t)
  k = cfg.output.examples_per_reason
  removed = []
  with gzip_writer(base + ".jsonl.gz.tmp") as out:
    for doc in sources.read_documents(f, cfg.read.on_decode_error, read):
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
        removed.append({"id": doc.id, "stage": "quality", "reason": reason})
        continue
      if cfg.pii.enabled:
        new, found = pii.scrub(text, types, cfg.pii.phone_regions)
        st.record(stats["pii"], text, new)
        for pii_type, n in found.items():
          st.count(stats["pii"], pii_type, n)
        text = new
      if cfg.boilerplate.enabled:
        lines.add(text, cfg.boilerplate.min_line_chars, boilerplate_prefixes(cfg))
      out.write((json.dumps({"id": doc.id, "source": doc.source, "text": text}) + "\n").encode())
  for reason, n in read.skipped.items():
    st.count(stats["read"], "skipped_" + reason, n)
  os.replace(base + ".jsonl.gz.tmp", base + ".jsonl.gz")
  lines.save(base + ".lines.npz")
  # Written last: its presence marks the file as done.
  write_json_atomic(base + ".json", {"path": f.path, "sha256": file_sha256(f.path), "stats": stats,
                                      "removed": removed})


def _check_work_config(work: str, cfg) -> None:
  path = os.path.join(work, "config.json")
  wanted = cfg.to_dict()
  if os.path.exists(path):
    with open(path) as fh:
      if json.load(fh) != json.loads(json.dumps(wanted)):
        raise UserError(f"{work} holds map results made with a different config; delete it or use "
                        f"the same config for every shard")
  else:
    os.makedirs(os.path.join(work, "map"), exist_ok=True)
    write_json_atomic(path, wanted)


def run_map(cfg, output: str, num_shards: int = 1, shard_index: int = 0) -> int:
  """Runs the map phase for this shard's files; returns how many files it processed."""
  if not 0 <= shard_index < num_shards:
    raise UserError(f"--shard_index={shard_index} must be in [0, --num_shards={num_shards})")
  if cfg.near_dedup.enabled:
    dedup.lsh_params(cfg.near_dedup)  # a bad threshold or banding fails before the cleaning, not after
  if cfg.pii.enabled:
    pii.phone_regions(cfg.pii.phone_regions)  # an unknown region code fails before any work
  files = list_inputs(cfg, output)
  work = work_dir(output)
  _check_work_config(work, cfg)
  mine = [(i, f, cfg, work) for i, f in enumerate(files) if i % num_shards == shard_index]
  for _ in parallel_map(_map_task, mine, worker_count(cfg), f"clean (shard {shard_index + 1}/{num_shards})",
                        ordered=False):
    pass
  return len(mine)
