"""Raw text sources: the interpreter's standard library, or user text files."""

import glob
import os
import sysconfig
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
