"""Explaining a bad `--config.a.b=value` override in one line."""

import importlib.util
import sys

import ml_collections
from absl import flags
from ml_collections import config_flags


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


def parse_flags(argv):
  """absl flag parsing for scripts with a `--config` file flag.

  A bad config file or `--config.*` override becomes one line on stderr, not a traceback.
  """
  try:
    remaining = flags.FLAGS(argv)
    flags.FLAGS.config.to_dict()  # config_flags defers a broken config file's error to first use
    return remaining
  except flags.Error as e:
    sys.exit(f"error: {e}")
  except Exception as e:  # raised from inside ml_collections while applying --config.* overrides
    config_path = next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), None)
    if config_path is None and "config" in flags.FLAGS:  # the flag's default file
      config_path = flags.FLAGS["config"].config_filename
    message = None
    if config_path:
      try:
        message = explain_bad_override(load_config_file(config_path), argv)
      except Exception as load_error:  # the config file itself is missing or broken
        message = f"cannot load config file {config_path}: {type(load_error).__name__}: {load_error}"
    sys.exit(f"error: {message or f'{type(e).__name__}: {e}'}")


def define_config_file_with_default(default_path: str, help_text: str):
  """config_flags.DEFINE_config_file("config", default_path), which applies `--config.*`
  overrides at definition time when it has a default: report a bad one in one line there too."""
  try:
    return config_flags.DEFINE_config_file("config", default_path, help_text, lock_config=True)
  except Exception:  # noqa: BLE001 -- ml_collections raises several types for a bad override
    message = explain_bad_override(load_config_file(default_path), sys.argv)
    sys.exit(f"error: {message or 'invalid --config override'}")

