"""Prepare preference pairs for reward models and DPO (train.objective="reward" | "dpo").

  python scripts/prepare_preferences.py --input=pairs.jsonl --model_dir=exports/quickstart --output=datasets/prefs

Each JSONL line is {"prompt", "chosen", "rejected"} (strings, or lists of chat messages), or
{"chosen", "rejected"} as two whole conversations that share their leading messages (the prompt).
Both sides are rendered with the model's chat template (or the built-in one) and tokenized with its
tokenizer; the loss mask covers the completions. Writes train/val shards (each pair's two sides stay
together), the tokenizer, metadata.json and report.md with the counts and lengths.
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

from data import preferences  # noqa: E402
from errors import UserError  # noqa: E402

_DEFAULTS = preferences.PreferenceOptions()
_INPUT = flags.DEFINE_list("input", None, "JSONL files (.gz/.zst too), directories or globs.", required=True)
_MODEL_DIR = flags.DEFINE_string("model_dir", None, "HF model directory: its tokenizer and chat template.",
                                 required=True)
_OUTPUT = flags.DEFINE_string("output", None, "Dataset directory to create.", required=True)
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace an existing --output.")
_VAL = flags.DEFINE_float("val_fraction", _DEFAULTS.val_fraction, "Share of pairs held out for validation.")
_MAX_LEN = flags.DEFINE_integer("max_len", _DEFAULTS.max_len, "Longest side (prompt + completion) in tokens.")
_OVERLONG = flags.DEFINE_enum("overlong", _DEFAULTS.overlong, ["truncate", "drop"],
                              "A pair with a longer side is cut at the end, or dropped.")
_BAD = flags.DEFINE_enum("bad_lines", _DEFAULTS.bad_lines, ["error", "skip"],
                         "Invalid lines stop the run (naming the line) or are skipped and counted.")
_TEMPLATE = flags.DEFINE_string("template", _DEFAULTS.template,
                                "'model' (the model's own, else built-in), 'builtin', or a .jinja file.")
_SEED = flags.DEFINE_integer("seed", _DEFAULTS.seed, "Seed of the train/val split.")


def main(argv):
  del argv
  opts = preferences.PreferenceOptions(val_fraction=_VAL.value, max_len=_MAX_LEN.value, overlong=_OVERLONG.value,
                                       bad_lines=_BAD.value, template=_TEMPLATE.value, seed=_SEED.value)
  try:
    meta = preferences.prepare_preferences(_INPUT.value, _MODEL_DIR.value, _OUTPUT.value, opts, _OVERWRITE.value)
  except UserError as e:
    sys.exit(f"error: {e}")
  print(json.dumps({"output": _OUTPUT.value, "template": meta["chat_template_from"], **meta["counts"],
                    **{f"{s}_pairs": v["pairs"] for s, v in meta["splits"].items()}}))


if __name__ == "__main__":
  app.run(main)
