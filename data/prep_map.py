"""Local runner, first phase: one task per input file in a process pool.

Reads, cleans (data/prep_stages.py `clean`) and counts lines for boilerplate
detection, writing OUTPUT.work/map/NNNNNN.{jsonl.gz,lines.npz,json}: the kept
documents, the line counts, and the file's statistics and removals.
"""

import json
import os

from data import boilerplate, prep_stages, sources
from data import stage_stats as st
from data.prep_io import (file_sha256, gzip_writer, parallel_map, work_dir, worker_count,
                          write_json_atomic)


def _map_task(args) -> None:
  index, f, cfg, work = args
  base = os.path.join(work, "map", f"{index:06d}")
  stats = prep_stages.new_stats(prep_stages.CLEAN_STAGES)
  read = sources.ReadStats()
  lines = boilerplate.LineCounts()
  removed = []
  with gzip_writer(base + ".jsonl.gz.tmp") as out:
    for doc in sources.read_documents(f, cfg.read.on_decode_error, read):
      text, removal = prep_stages.clean(doc, cfg, stats)
      if removal:
        removed.append(removal)
        continue
      if cfg.boilerplate.enabled:
        lines.add(text, cfg.boilerplate.min_line_chars, prep_stages.boilerplate_prefixes(cfg))
      out.write((json.dumps({"id": doc.id, "source": doc.source, "text": text}) + "\n").encode())
  for reason, n in read.skipped.items():
    st.count(stats["read"], "skipped_" + reason, n)
  os.replace(base + ".jsonl.gz.tmp", base + ".jsonl.gz")
  lines.save(base + ".lines.npz")
  write_json_atomic(base + ".json", {"path": f.path, "sha256": file_sha256(f.path), "stats": stats,
                                      "removed": removed})


def run_map(cfg, output: str, files: list) -> int:
  """Cleans every input file into OUTPUT.work/map/; returns how many files it processed."""
  work = work_dir(output)
  os.makedirs(os.path.join(work, "map"), exist_ok=True)
  tasks = [(i, f, cfg, work) for i, f in enumerate(files)]
  for _ in parallel_map(_map_task, tasks, worker_count(cfg), "clean", ordered=False):
    pass
  return len(tasks)
