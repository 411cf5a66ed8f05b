"""Explaining a bad `--config.a.b=value` override in one line."""

import importlib.util

import ml_collections


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
