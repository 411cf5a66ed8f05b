"""Explaining a bad `--config.a.b=value` override in one line: an unknown key, or a value of the wrong type."""

import importlib.util
import sys

import ml_collections
from absl import flags
from ml_collections import config_flags
from ml_collections.config_flags import tuple_parser

from errors import UserError

# What an override of a field with this default's type must be: the parser
# ml_collections applies to it, and words for the message.
_VALUE_TYPES = {
    bool: (flags.BooleanParser(), "true or false"),
    int: (flags.IntegerParser(), "an integer"),
    float: (flags.FloatParser(), "a number"),
    tuple: (tuple_parser.TupleParser(), "a tuple such as (1, 2)"),
}


def load_config_file(path: str) -> ml_collections.ConfigDict:
  spec = importlib.util.spec_from_file_location("_experiment_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def explain_bad_override(config: ml_collections.ConfigDict, argv: list[str]) -> str | None:
  """Names the first override whose key does not exist, with the valid keys at that level."""
  for arg in argv:
    if not arg.startswith("--config."):
      continue
    path = arg[len("--config."):].split("=", 1)[0].split(".")
    node, walked = config, "config"
    for key in path:
      if not isinstance(node, ml_collections.ConfigDict) or key not in node:
        valid = ", ".join(sorted(node.keys())) if isinstance(node, ml_collections.ConfigDict) else "(none)"
        return f"unknown config key {walked}.{key} in {arg.split('=', 1)[0]}; valid keys of {walked}: {valid}"
      node, walked = node[key], f"{walked}.{key}"
  return None


def _overrides(argv: list[str]):
  """(dotted key, value) of each `--config.KEY=VALUE` argument."""
  for arg in argv:
    if arg.startswith("--config.") and "=" in arg:
      key, value = arg[len("--config."):].split("=", 1)
      yield key, value


def explain_bad_value(config: ml_collections.ConfigDict, argv: list[str]) -> str | None:
  """Names the first override whose value does not parse as its field's type, and that type."""
  for key, value in _overrides(argv):
    node = config
    for part in key.split("."):
      if not isinstance(node, ml_collections.ConfigDict) or part not in node:
        break  # an unknown key: explain_bad_override's to report
      node = node[part]
    else:
      if isinstance(node, ml_collections.ConfigDict):
        return (f"--config.{key}={value}: config.{key} is a group of settings, not a value; "
                f"set one of its fields: {', '.join(sorted(node.keys()))}")
      parser, expected = _VALUE_TYPES.get(type(node), (None, None))
      if parser is None:
        continue
      try:
        parser.parse(value)
      except (ValueError, TypeError, SyntaxError):
        return f"--config.{key}={value}: expected {expected} (the default is {node!r})"
  return None


def _config_path(argv: list[str]) -> str | None:
  """The --config file named on the command line, or the flag's default file."""
  path = next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), None)
  if path is None and "config" in flags.FLAGS:
    path = flags.FLAGS["config"].config_filename
  return path


def parse_flags(argv):
  """absl flag parsing for scripts with a `--config` file flag.

  A bad config file or `--config.*` override becomes one line on stderr, not a traceback.
  """
  try:
    remaining = flags.FLAGS(argv)
    flags.FLAGS.config.to_dict()  # config_flags defers a broken config file's error to first use
    return remaining
  except flags.Error as e:  # among them a --config.* value that does not parse as its field's type
    message = None
    config_path = _config_path(argv)
    if config_path and next(_overrides(argv), None) is not None:
      try:
        message = explain_bad_value(load_config_file(config_path), argv)
      except Exception:  # noqa: BLE001 -- absl's own message is the fallback
        pass
    sys.exit(f"error: {message or e}")
  except Exception as e:  # raised from inside ml_collections while applying --config.* overrides
    config_path = _config_path(argv)
    message = None
    if config_path:
      try:
        config = load_config_file(config_path)
        message = explain_bad_override(config, argv) or explain_bad_value(config, argv)
      except Exception as load_error:  # the config file itself is missing or broken
        message = f"cannot load config file {config_path}: {type(load_error).__name__}: {load_error}"
    sys.exit(f"error: {message or f'{type(e).__name__}: {e}'}")


def define_config_file_with_default(default_path: str, help_text: str):
  """config_flags.DEFINE_config_file("config", default_path), which applies `--config.*`
  overrides at definition time when it has a default: report a bad one in one line there too."""
  try:
    return config_flags.DEFINE_config_file("config", default_path, help_text, lock_config=True)
  except Exception:  # noqa: BLE001 -- ml_collections raises several types for a bad override
    config = load_config_file(default_path)
    message = explain_bad_override(config, sys.argv) or explain_bad_value(config, sys.argv)
    sys.exit(f"error: {message or 'invalid --config override'}")



def load_with_overrides(path: str, argv: list[str]) -> ml_collections.ConfigDict:
  """The config file `path` with `--config.KEY=VALUE` arguments applied, each value parsed as its
  field's type (as train.py's flags parse it).

  For tools that check or plan a run before launching it (scripts/launch.py, scripts/sweep.py);
  an unknown key or a value of the wrong type is a UserError naming the argument.
  """
  try:
    config = load_config_file(path)
  except Exception as e:  # noqa: BLE001 -- any failure to load is the file's problem
    raise UserError(f"cannot load config file {path}: {type(e).__name__}: {e}") from e
  bad = [a for a in argv if not (a.startswith("--config.") and "=" in a)]
  if bad:
    raise UserError(f"expected --config.KEY=VALUE overrides after the config, got {bad[0]!r}")
  message = explain_bad_override(config, argv) or explain_bad_value(config, argv)
  if message:
    raise UserError(message)
  for key, value in _overrides(argv):
    *parents, field = key.split(".")
    node = config
    for part in parents:
      node = node[part]
    parser, _ = _VALUE_TYPES.get(type(node[field]), (None, None))
    with node.unlocked():
      node[field] = value if parser is None else parser.parse(value)
  return config
