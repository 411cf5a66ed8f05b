"""Prepare prompts for online RL (train.objective="grpo").

  python scripts/prepare_prompts.py --input=prompts.jsonl --model_dir=exports/stdlib-sft --output=datasets/prompts

Each JSONL line is {"prompt": "..." | [chat messages], "answer": "..."} (the answer is optional; it is
what the exact-match reward compares against; other fields are kept for custom reward functions).
Prompts are rendered with the model's chat template up to the assistant's turn and tokenized with its
tokenizer. Writes train/val shards, each prompt's record, the tokenizer, metadata.json and report.md.
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

from data import prompts  # noqa: E402
from errors import UserError  # noqa: E402

_DEFAULTS = prompts.PromptOptions()
_INPUT = flags.DEFINE_list("input", None, "JSONL files (.gz/.zst too), directories or globs.", required=True)
_MODEL_DIR = flags.DEFINE_string("model_dir", None, "HF model directory: its tokenizer and chat template.",
                                 required=True)
_OUTPUT = flags.DEFINE_string("output", None, "Dataset directory to create.", required=True)
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace an existing --output.")
_VAL = flags.DEFINE_float("val_fraction", _DEFAULTS.val_fraction, "Share of prompts held out for validation.")
_MAX_LEN = flags.DEFINE_integer("max_len", _DEFAULTS.max_len, "Longest prompt in tokens (chat template included).")
_OVERLONG = flags.DEFINE_enum("overlong", _DEFAULTS.overlong, ["drop", "error"],
                              "A longer prompt is dropped and counted, or stops the run (never cut).")
_BAD = flags.DEFINE_enum("bad_lines", _DEFAULTS.bad_lines, ["error", "skip"],
                         "Invalid lines stop the run (naming the line) or are skipped and counted.")
_TEMPLATE = flags.DEFINE_string("template", _DEFAULTS.template,
                                "'model' (the model's own, else built-in), 'builtin', or a .jinja file.")
_SEED = flags.DEFINE_integer("seed", _DEFAULTS.seed, "Seed of the train/val split.")


def main(argv):
  del argv
  opts = prompts.PromptOptions(val_fraction=_VAL.value, max_len=_MAX_LEN.value, overlong=_OVERLONG.value,
                               bad_lines=_BAD.value, template=_TEMPLATE.value, seed=_SEED.value)
  try:
    meta = prompts.prepare_prompts(_INPUT.value, _MODEL_DIR.value, _OUTPUT.value, opts, _OVERWRITE.value)
  except UserError as e:
    sys.exit(f"error: {e}")
  print(json.dumps({"output": _OUTPUT.value, "template": meta["chat_template_from"], **meta["counts"],
                    **{f"{s}_prompts": v["num_docs"] for s, v in meta["splits"].items()}}))


if __name__ == "__main__":
  app.run(main)
