"""Libraries' INFO logs off in the command-line scripts; `--verbose` brings them back.

JAX, Orbax and Grain log at INFO through Python logging (`Unable to initialize
backend 'tpu'`, checkpoint manager set-up, read throughput): two dozen lines
around one line of result, because absl's handler shows INFO by default. The
scripts drop INFO records logged from code outside this repository. Warnings
and errors from every library still show, and so do this repository's own
INFO messages.
"""

import logging
import os

from absl import flags

VERBOSE = flags.DEFINE_bool("verbose", False, "Also show libraries' INFO logs (JAX, Orbax, Grain).")

_REPO = os.path.dirname(os.path.abspath(__file__)) + os.sep
_INSTALLED = (f"{os.sep}site-packages{os.sep}", f"{os.sep}dist-packages{os.sep}")


def logged_by_us(path: str) -> bool:
  """Whether a log record's source file is this repository's code (not a library, even one in .venv/)."""
  return path.startswith(_REPO) and not any(part in path for part in _INSTALLED)


class LibraryInfoFilter(logging.Filter):
  """Passes warnings and errors, and INFO or DEBUG only from this repository's code."""

  def filter(self, record: logging.LogRecord) -> bool:
    return record.levelno >= logging.WARNING or logged_by_us(record.pathname)


def apply() -> None:
  """Silences libraries' INFO logs unless --verbose. Call from main(): app.run has installed
  absl's handler on the root logger by then."""
  if VERBOSE.value:
    return
  for handler in logging.getLogger().handlers:
    if not any(isinstance(f, LibraryInfoFilter) for f in handler.filters):
      handler.addFilter(LibraryInfoFilter())
