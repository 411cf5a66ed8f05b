"""Prepare a dataset for train.py: tokenizer + train/val/test ArrayRecord shards.

  python scripts/prepare_data.py --output=datasets/mytext --inputs='corpus/**/*.txt' --vocab_size=8192
  python scripts/prepare_data.py --output=datasets/stdlib --stdlib
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags, logging  # noqa: E402

from data import corpus, prepare  # noqa: E402
from errors import UserError  # noqa: E402

_OUTPUT = flags.DEFINE_string("output", None, "Dataset directory to create.", required=True)
_INPUTS = flags.DEFINE_list("inputs", [], "Text files, directories or globs.")
_STDLIB = flags.DEFINE_bool("stdlib", False, "Use the Python standard library source as the corpus.")
_VOCAB = flags.DEFINE_integer("vocab_size", 4096, "Tokenizer vocabulary size.")
_VAL = flags.DEFINE_float("val_fraction", 0.02, "Fraction of documents in the val split.")
_TEST = flags.DEFINE_float("test_fraction", 0.02, "Fraction of documents in the test split.")
_SEED = flags.DEFINE_integer("seed", 0, "Tokenizer training seed.")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace an existing output directory.")


def main(argv):
  del argv
  logging.set_verbosity(logging.INFO)
  try:
    if _STDLIB.value:
      meta = prepare.prepare_stdlib(_OUTPUT.value, _VOCAB.value, _VAL.value, _TEST.value, _SEED.value)
    else:
      if not _INPUTS.value:
        raise UserError("give --inputs=... or --stdlib")
      meta = prepare.prepare(_OUTPUT.value, corpus.expand_inputs(_INPUTS.value), None, _VOCAB.value,
                             _VAL.value, _TEST.value, _SEED.value, overwrite=_OVERWRITE.value)
  except UserError as e:
    sys.exit(f"error: {e}")
  for split, info in meta["splits"].items():
    print(f"{split}: {info['num_docs']} documents, {info['num_tokens']} tokens")


if __name__ == "__main__":
  app.run(main)
