"""Raw text -> cleaned, deduplicated, tokenized train/val/test shards.

Two runners apply the same per-document stages (data/prep_stages.py) and the
same global decisions, and hand them to the same writer (data/prep_write.py),
so their datasets are byte-identical:

  local  (the default) a process pool on this machine, in two phases:
         data/prep_map.py, one task per input file (read, normalize, quality
         filter, scrub PII, count lines), then data/prep_merge.py (boilerplate,
         decontamination, exact and near-duplicate removal). Intermediate files
         live in OUTPUT.work/.
  ray    data/prep_ray.py: the stages on Ray Data, on a local Ray or a cluster;
         the line counts, exact keys, LSH bands and connected components are
         distributed group-bys.

The output directory appears atomically, and only if every stage succeeded.
"""

import os
import shutil

from absl import logging

from data import shards
from data import prep_stages, prep_write
from data.prep_io import SPLITS, file_sha256, list_inputs, note, split_of, work_dir  # noqa: F401 (API)
from data.prep_map import run_map
from data.prep_merge import run_merge
from errors import UserError

RUNNERS = ("local", "ray")


def _existing(output: str, cfg, overwrite: bool) -> dict | None:
  """The metadata of `output` if it is this very dataset; an error if it is another one."""
  if not os.path.exists(output) or overwrite:
    return None
  try:
    meta = shards.load_metadata(output)
  except UserError:
    raise UserError(f"output directory {output} exists and is not a prepared dataset; "
                    f"pass --overwrite to replace it") from None
  files = list_inputs(cfg, output)
  if meta.get("inputs_sha256") == prep_write.fingerprint([file_sha256(f.path) for f in files], cfg):
    return meta
  raise UserError(f"output directory {output} already holds a different dataset (other inputs or "
                  f"config); pass --overwrite to replace it")


def prepare(cfg, output: str, overwrite: bool = False, write_text: bool = False, runner: str = "local",
            ray_address: str = "", ray_timeout_s: float = 60.0) -> dict:
  """Prepares the dataset at `output` with the `runner`; returns its metadata."""
  if runner not in RUNNERS:
    raise UserError(f"--runner={runner!r}: expected one of {', '.join(RUNNERS)}")
  existing = _existing(output, cfg, overwrite)
  if existing is not None:
    logging.info("%s is up to date", output)
    return existing
  prep_stages.validate(cfg)
  files = list_inputs(cfg, output)  # listed once: every phase works on the same files
  note(f"preparing {output} ({runner} runner): clean {len(files)} input files, then "
       f"deduplicate, tokenize and write shards")
  if runner == "ray":
    from data import prep_ray  # Ray is imported only by those who run it
    meta = prep_ray.run(cfg, output, files, write_text, ray_address, ray_timeout_s, cfg.num_workers)
  else:
    work = work_dir(output)
    shutil.rmtree(work, ignore_errors=True)
    try:
      run_map(cfg, output, files)
      meta = run_merge(cfg, output, files, write_text)
    finally:
      shutil.rmtree(work, ignore_errors=True)  # nothing half-written survives, and no leftovers
  note(f"wrote {output}: " + ", ".join(f"{s} {v['num_docs']} documents / {v['num_tokens']} tokens"
                                        for s, v in meta["splits"].items()))
  return meta
