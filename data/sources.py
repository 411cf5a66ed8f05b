"""Reading raw documents from text files, JSONL (plain, .gz, .zst) and Parquet.

A source is a named list of inputs (files, directories, globs). Every document
gets a stable id, `SOURCE:relative/path[:line]`, which later decides its split
and which copy survives deduplication -- so results never depend on how the
work was spread over processes or hosts.
"""

import dataclasses
import gzip
import io
import json
import os
from typing import Iterator

from data import corpus
from errors import UserError

TEXT_SUFFIXES = (".txt", ".md", ".rst", ".py", ".text", ".html", ".htm")


@dataclasses.dataclass(frozen=True)
class Document:
  id: str
  source: str
  text: str


@dataclasses.dataclass(frozen=True)
class InputFile:
  source: str
  path: str
  root: str          # ids are relative to this
  text_field: str


class ReadStats:
  """What the reader skipped, by reason."""

  def __init__(self):
    self.skipped: dict[str, int] = {}

  def skip(self, reason: str):
    self.skipped[reason] = self.skipped.get(reason, 0) + 1


def file_format(path: str) -> str:
  p = path.lower()
  if p.endswith((".jsonl", ".jsonl.gz", ".jsonl.zst", ".json.gz", ".ndjson")):
    return "jsonl"
  if p.endswith(".parquet"):
    return "parquet"
  return "text"


def list_inputs(sources_cfg, exclude: tuple[str, ...] = ()) -> list[InputFile]:
  """All input files of all sources, in a deterministic order.

  Paths starting with any of `exclude` (the run's own output, work and
  temporary directories) are skipped, so an output inside an input directory
  never feeds back into the run.
  """
  files = []
  for name in sorted(sources_cfg.keys()):
    src = sources_cfg[name]
    if src.inputs == "stdlib":
      import sysconfig
      root = sysconfig.get_paths()["stdlib"]
      paths = corpus.stdlib_files()
    else:
      patterns = [p for p in src.inputs.split(",") if p]
      if not patterns:
        raise UserError(f"source {name!r} has no inputs")
      paths = corpus.expand_inputs(patterns)
      root = os.path.commonpath([os.path.dirname(os.path.abspath(p)) for p in paths]) if paths else ""
    files += [InputFile(name, os.path.abspath(p), root, src.text_field) for p in paths
              if not os.path.abspath(p).startswith(exclude or ("\0",))]
  if not files:
    raise UserError("no input files")
  return files


def open_text(path: str):
  if path.endswith(".gz"):
    return gzip.open(path, "rt", encoding="utf-8", newline="")
  if path.endswith(".zst"):
    import zstandard
    raw = zstandard.ZstdDecompressor().stream_reader(open(path, "rb"))
    return io.TextIOWrapper(raw, encoding="utf-8", newline="")
  return open(path, encoding="utf-8", newline="")


def jsonl_records(path: str):
  """("FILE:LINE", the parsed record, or the json.JSONDecodeError) for each non-blank line of a JSONL
  file, so each caller decides whether a bad line stops it or is skipped."""
  with open_text(path) as f:
    for n, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        yield f"{path}:{n}", json.loads(line)
      except json.JSONDecodeError as e:
        yield f"{path}:{n}", e


def _decode_error(f: InputFile, where: str, e: UnicodeDecodeError, on_error: str, stats: ReadStats):
  if on_error == "skip":
    stats.skip("not_utf8")
    return
  raise UserError(f"{f.path}{where}: not valid UTF-8 ({e.reason}); set read.on_decode_error='skip' "
                  f"to skip and count such input") from None


def _read_text_file(f: InputFile, doc_id: str, on_error: str, stats: ReadStats):
  try:
    with open_text(f.path) as fh:
      text = fh.read()
  except UnicodeDecodeError as e:
    return _decode_error(f, "", e, on_error, stats)
  except OSError as e:
    raise UserError(f"{f.path}: cannot read ({e.strerror or e})") from None
  yield Document(doc_id, f.source, text)


def _read_jsonl(f: InputFile, doc_id: str, on_error: str, stats: ReadStats):
  try:
    with open_text(f.path) as fh:
      for lineno, line in enumerate(fh, 1):
        if not line.strip():
          continue
        try:
          record = json.loads(line)
        except json.JSONDecodeError as e:
          if on_error == "skip":
            stats.skip("bad_json")
            continue
          raise UserError(f"{f.path}:{lineno}: not valid JSON ({e.msg} at column {e.colno})") from None
        text = record.get(f.text_field) if isinstance(record, dict) else None
        if not isinstance(text, str):
          if on_error == "skip":
            stats.skip("missing_text_field")
            continue
          raise UserError(f"{f.path}:{lineno}: no string field {f.text_field!r} (set the source's "
                          f"text_field); keys: {sorted(record)[:10] if isinstance(record, dict) else type(record).__name__}")
        yield Document(f"{doc_id}:{lineno}", f.source, text)
  except UnicodeDecodeError as e:
    _decode_error(f, "", e, on_error, stats)
  except (OSError, EOFError) as e:
    raise UserError(f"{f.path}: cannot read ({e})") from None


def _read_parquet(f: InputFile, doc_id: str, on_error: str, stats: ReadStats):
  import pyarrow.parquet as pq
  try:
    table = pq.ParquetFile(f.path)
  except Exception as e:  # pyarrow raises several types for a bad file
    raise UserError(f"{f.path}: not a readable Parquet file ({e})") from None
  if f.text_field not in table.schema_arrow.names:
    raise UserError(f"{f.path}: no column {f.text_field!r}; columns: {table.schema_arrow.names}")
  row = 0
  for batch in table.iter_batches(columns=[f.text_field], batch_size=1024):
    for text in batch.column(0).to_pylist():
      row += 1
      if isinstance(text, str):
        yield Document(f"{doc_id}:{row}", f.source, text)
      else:
        stats.skip("missing_text_field")


def read_documents(f: InputFile, on_decode_error: str, stats: ReadStats) -> Iterator[Document]:
  doc_id = f"{f.source}:{os.path.relpath(f.path, f.root) if f.root else f.path}"
  reader = {"text": _read_text_file, "jsonl": _read_jsonl, "parquet": _read_parquet}[file_format(f.path)]
  yield from reader(f, doc_id, on_decode_error, stats)
