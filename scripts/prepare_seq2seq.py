"""Prepare text-to-text examples for sequence-to-sequence fine-tuning (train.objective="seq2seq").

  python scripts/prepare_seq2seq.py --input=pairs.jsonl --tokenizer_from=datasets/stdlib_t5_sp4096 \
      --output=datasets/pairs --prefix="summarize: "

Each JSONL line is {"input": ..., "target": ...} (--input_field/--target_field
rename them). The input, after --prefix, and the target are tokenized with the
tokenizer of an HF model directory or of a dataset prepared by
scripts/prepare_data.py, each ending with EOS. A side longer than
--max_input_len / --max_target_len is truncated and counted, or stops the run
naming its line (--overlong=error). Writes train/val shards, the tokenizer and
metadata.json with the counts.
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

from data import seq2seq  # noqa: E402
from errors import UserError  # noqa: E402

_D = seq2seq.Seq2SeqOptions()
_INPUT = flags.DEFINE_list("input", None, "JSONL files (.gz/.zst too), directories or globs.", required=True)
_TOKENIZER = flags.DEFINE_string("tokenizer_from", None, "HF model directory or prepared dataset.", required=True)
_OUTPUT = flags.DEFINE_string("output", None, "Dataset directory to create.", required=True)
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace an existing --output.")
_PREFIX = flags.DEFINE_string("prefix", _D.prefix, "Task prefix put before every input, e.g. 'summarize: '.")
_INPUT_FIELD = flags.DEFINE_string("input_field", _D.input_field, "JSON field of the input text.")
_TARGET_FIELD = flags.DEFINE_string("target_field", _D.target_field, "JSON field of the target text.")
_MAX_IN = flags.DEFINE_integer("max_input_len", _D.max_input_len, "Longest input in tokens, EOS included.")
_MAX_OUT = flags.DEFINE_integer("max_target_len", _D.max_target_len, "Longest target in tokens, EOS included.")
_OVERLONG = flags.DEFINE_enum("overlong", _D.overlong, ["truncate", "error"], "Longer sides are...")
_BAD = flags.DEFINE_enum("bad_lines", _D.bad_lines, ["error", "skip"],
                         "Invalid lines stop the run (naming the line) or are skipped and counted.")
_VAL = flags.DEFINE_float("val_fraction", _D.val_fraction, "Share of examples held out for validation.")
_SEED = flags.DEFINE_integer("seed", _D.seed, "Seed of the train/val split.")


def main(argv):
  del argv
  opts = seq2seq.Seq2SeqOptions(prefix=_PREFIX.value, input_field=_INPUT_FIELD.value,
                                target_field=_TARGET_FIELD.value, max_input_len=_MAX_IN.value,
                                max_target_len=_MAX_OUT.value, overlong=_OVERLONG.value, bad_lines=_BAD.value,
                                val_fraction=_VAL.value, seed=_SEED.value)
  try:
    meta = seq2seq.prepare_seq2seq(_INPUT.value, _TOKENIZER.value, _OUTPUT.value, opts, _OVERWRITE.value)
  except UserError as e:
    sys.exit(f"error: {e}")
  print(json.dumps({"output": _OUTPUT.value, "counts": meta["counts"],
                    "splits": {s: v["num_docs"] // 2 for s, v in meta["splits"].items()},
                    "max_input_len": meta["max_input_len"], "max_target_len": meta["max_target_len"]}))


if __name__ == "__main__":
  app.run(main)
