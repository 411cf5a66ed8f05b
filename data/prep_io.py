"""Shared pieces of the data preparation phases: paths, splits, files, worker pools."""

import contextlib
import gzip
import hashlib
import json
import multiprocessing
import os
import shutil
import sys
import tempfile
import uuid

from data import sources
from data.shards import file_sha256  # noqa: F401 (part of this module's API)

SPLITS = ("train", "val", "test")


def split_of(doc_id: str, val_fraction: float, test_fraction: float) -> str:
  """Deterministic split from the document id alone: a document never lands in two splits."""
  u = int.from_bytes(hashlib.sha256(doc_id.encode()).digest()[:8], "big") / 2.0**64
  if u < test_fraction:
    return "test"
  return "val" if u < test_fraction + val_fraction else "train"


def work_dir(output: str) -> str:
  return os.path.abspath(output).rstrip("/") + ".work"


def list_inputs(cfg, output: str):
  """The inputs, minus this run's own output, work and temporary directories."""
  out = os.path.abspath(output).rstrip("/")
  tmp = os.path.join(os.path.dirname(out), ".tmp-" + os.path.basename(out) + "-")
  return sources.list_inputs(cfg.sources, exclude=(out + os.sep, work_dir(output) + os.sep, tmp))


def write_text_atomic(path: str, text: str) -> None:
  """Writes a temporary file beside `path`, then renames it over `path`: never half-written.

  The temporary name is unique (concurrent writers don't collide) and, unlike
  tempfile.mkstemp's 0600, the file gets the usual 0666 minus the umask.
  """
  tmp = f"{path}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
  fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
  try:
    with os.fdopen(fd, "w") as f:
      f.write(text)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def write_json_atomic(path: str, obj) -> None:
  """`obj` as indented JSON, written atomically (write_text_atomic)."""
  write_text_atomic(path, json.dumps(obj, indent=1, sort_keys=True))


@contextlib.contextmanager
def atomic_directory(output: str):
  """Yields a new directory beside `output` that replaces `output` when the block succeeds and
  vanishes when it fails: a dataset is whole or absent, never half-written."""
  parent = os.path.dirname(os.path.abspath(output))
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=".tmp-" + os.path.basename(os.path.abspath(output)) + "-", dir=parent)
  try:
    os.chmod(tmp, 0o755)
    yield tmp
    if os.path.exists(output):
      shutil.rmtree(output)
    os.rename(tmp, output)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise


def read_jsonl_gz(path: str):
  with gzip.open(path, "rt", encoding="utf-8") as f:
    for line in f:
      yield json.loads(line)


def gzip_writer(path: str):
  """Deterministic gzip (no timestamp in the header), so reruns are byte-identical."""
  return gzip.GzipFile(path, "wb", mtime=0)


def _pool(num_workers: int):
  # JAX's threads don't survive fork: after JAX started (train.py preparing the
  # quickstart data), start clean worker processes instead.
  method = "spawn" if "jax" in sys.modules else "fork"
  return multiprocessing.get_context(method).Pool(num_workers)


def worker_count(cfg) -> int:
  return cfg.num_workers or os.cpu_count() or 1


def bar_options() -> dict:
  """tqdm settings for progress on stderr: live on a terminal; in a log file (CI), where every
  redraw is a line, at most one line a minute."""
  return dict(file=sys.stderr, mininterval=0.2 if sys.stderr.isatty() else 60.0, dynamic_ncols=True)


def note(message: str) -> None:
  """A progress line on stderr (between bars), shown whatever the logging verbosity."""
  from tqdm import tqdm
  tqdm.write(message, file=sys.stderr)


def parallel_map(fn, items, num_workers: int, desc: str, ordered: bool = True):
  """Yields fn(x) for each item as it completes, in a pool unless one worker; a progress bar on stderr.

  A generator, so a caller that streams results (the tokenizer pass) holds one
  file's output at a time rather than the whole corpus.
  """
  from tqdm import tqdm
  bar = dict(total=len(items), desc=desc, unit="file", disable=len(items) < 2, **bar_options())
  if num_workers <= 1 or len(items) <= 1:
    yield from (fn(x) for x in tqdm(items, **bar))
    return
  with _pool(min(num_workers, len(items))) as pool:
    it = pool.imap(fn, items) if ordered else pool.imap_unordered(fn, items)
    yield from tqdm(it, **bar)
