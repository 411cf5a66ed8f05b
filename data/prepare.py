"""Raw text -> cleaned, deduplicated, tokenized train/val/test shards.

The work runs in two phases so it can be spread over processes and hosts:

  map    (data/prep_map.py) one task per input file -- a process pool on one
         machine, or every num_shards-th file per host: read, normalize,
         quality filter, scrub PII, count lines for boilerplate detection.
  merge  (data/prep_merge.py) once: boilerplate, decontamination, exact and
         near-duplicate removal, split, tokenizer, shards and report.

Intermediate files live in OUTPUT.work/, named by input file, so the result
does not depend on how files were spread. The output directory appears
atomically, and only if every stage succeeded.
"""

import os
import shutil

from absl import logging

from data import shards
from data.prep_io import SPLITS, file_sha256, list_inputs, note, split_of, work_dir  # noqa: F401 (API)
from data.prep_map import run_map
from data.prep_merge import _fingerprint, run_merge
from errors import UserError


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
  infos = [{"sha256": file_sha256(f.path)} for f in files]
  if meta.get("inputs_sha256") == _fingerprint(infos, cfg):
    return meta
  raise UserError(f"output directory {output} already holds a different dataset (other inputs or "
                  f"config); pass --overwrite to replace it")


def prepare(cfg, output: str, overwrite: bool = False, write_text: bool = False) -> dict:
  """Both phases on this machine. Returns the dataset's metadata."""
  existing = _existing(output, cfg, overwrite)
  if existing is not None:
    logging.info("%s is up to date", output)
    return existing
  shutil.rmtree(work_dir(output), ignore_errors=True)
  try:
    note(f"preparing {output}: clean {len(list_inputs(cfg, output))} input files, then deduplicate, "
         f"tokenize and write shards")
    run_map(cfg, output)
    meta = run_merge(cfg, output, write_text, overwrite=True)  # _existing() vetted the output
    note(f"wrote {output}: " + ", ".join(f"{s} {v['num_docs']} documents / {v['num_tokens']} tokens"
                                          for s, v in meta["splits"].items()))
    return meta
  except BaseException:
    shutil.rmtree(work_dir(output), ignore_errors=True)  # nothing half-written survives a failure
    raise
