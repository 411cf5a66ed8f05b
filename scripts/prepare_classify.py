"""Prepare labelled text for classification fine-tuning (configs/classify.py).

  python scripts/prepare_classify.py --input=train.jsonl [--val_input=val.jsonl] \
      --tokenizer_from=MODEL_OR_DATASET_DIR --output=datasets/NAME

Each JSONL line is {"text", "label"} or {"text", "text_pair", "label"}. The
tokenizer is an HF model directory's (e.g. an encoder's tokenizer.json) or a
dataset's from scripts/prepare_data.py (the quickstart decoder's). Writes
train/val shards, the tokenizer and metadata.json with the label set and the
counts per label (data/labelled.py).
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

from data import labelled  # noqa: E402
from errors import UserError  # noqa: E402

_DEFAULTS = labelled.LabelledOptions()
_INPUT = flags.DEFINE_list("input", None, "Training JSONL files (.gz/.zst too), directories or globs.",
                           required=True)
_VAL_INPUT = flags.DEFINE_list("val_input", [], "Validation JSONL files; default: --val_fraction of --input.")
_TOKENIZER = flags.DEFINE_string("tokenizer_from", None, "HF model directory, or prepared dataset directory.",
                                 required=True)
_OUTPUT = flags.DEFINE_string("output", None, "Dataset directory to create.", required=True)
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace an existing --output.")
_LABELS = flags.DEFINE_list("labels", [], "The label set, in class order; default: the sorted training labels.")
_VAL = flags.DEFINE_float("val_fraction", _DEFAULTS.val_fraction, "Share of --input held out without --val_input.")
_MAX_LEN = flags.DEFINE_integer("max_len", _DEFAULTS.max_len, "Longest example in tokens.")
_OVERLONG = flags.DEFINE_enum("overlong", _DEFAULTS.overlong, ["truncate", "drop"], "Longer examples are...")
_SEED = flags.DEFINE_integer("seed", _DEFAULTS.seed, "Seed of the train/val split.")


def main(argv):
  del argv
  opts = labelled.LabelledOptions(labels=tuple(_LABELS.value), val_fraction=_VAL.value, max_len=_MAX_LEN.value,
                                  overlong=_OVERLONG.value, seed=_SEED.value)
  try:
    meta = labelled.prepare_labelled(_INPUT.value, _VAL_INPUT.value, _TOKENIZER.value, _OUTPUT.value, opts,
                                     _OVERWRITE.value)
  except UserError as e:
    sys.exit(f"error: {e}")
  print(json.dumps({"output": _OUTPUT.value, "labels": meta["labels"], **meta["counts"],
                    **{f"{s}_per_label": v["per_label"] for s, v in meta["splits"].items()}}))


if __name__ == "__main__":
  app.run(main)
