"""Raw text sources: the interpreter's standard library, or user text files."""

import glob
import os
import sysconfig
from typing import Iterator

from errors import UserError

_SKIP_DIRS = {"site-packages", "dist-packages", "test", "tests", "__pycache__", "idle_test"}


def stdlib_files() -> list[str]:
  """The running interpreter's standard library source: real text on every Python install."""
  root = sysconfig.get_paths()["stdlib"]
  found = []
  for dirpath, dirnames, filenames in os.walk(root):
    dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS)
    found += [os.path.join(dirpath, f) for f in sorted(filenames) if f.endswith(".py")]
  if not found:
    raise UserError(f"no .py files found under the standard library at {root}")
  return found


def expand_inputs(patterns: list[str]) -> list[str]:
  """Files, directories (recursively) and globs -> a sorted list of files."""
  files = []
  for pattern in patterns:
    if os.path.isdir(pattern):
      files += [os.path.join(d, f) for d, _, fs in os.walk(pattern) for f in fs]
    else:
      matches = glob.glob(pattern, recursive=True)
      if not matches:
        raise UserError(f"input {pattern!r} matches no file")
      files += [m for m in matches if os.path.isfile(m)]
  return sorted(set(files))


def read_documents(files: list[str], root: str | None = None) -> Iterator[tuple[str, str]]:
  """Yields (doc_id, text), one document per file; doc_id is the path relative to `root`.

  Files that are not UTF-8 raise a UserError naming the file.
  """
  for path in files:
    try:
      with open(path, encoding="utf-8") as f:
        text = f.read()
    except UnicodeDecodeError as e:
      raise UserError(f"{path}: not valid UTF-8 ({e.reason} at byte {e.start})") from None
    except OSError as e:
      raise UserError(f"{path}: cannot read ({e.strerror})") from None
    if text.strip():
      yield (os.path.relpath(path, root) if root else path), text
