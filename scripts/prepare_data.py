"""Prepare a dataset for train.py: clean, deduplicate, tokenize, shard.

One machine (a process per CPU):
  python scripts/prepare_data.py --output=datasets/mytext --inputs='corpus/**/*.txt,extra.jsonl.zst'
  python scripts/prepare_data.py --config=configs/data/stdlib.py --output=datasets/stdlib \\
      --config.near_dedup.threshold=0.8 --write_text

Several hosts (OUTPUT on shared storage): each runs its shard, then one merges:
  python scripts/prepare_data.py --config=C --output=O --num_shards=4 --shard_index=$I
  python scripts/prepare_data.py --config=C --output=O --merge

The output holds tokenizer, ArrayRecord shards per split, metadata.json and report.md.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags, logging  # noqa: E402

from configs import overrides  # noqa: E402
from data import prepare, prepare_config  # noqa: E402
from errors import UserError  # noqa: E402

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_CONFIG = overrides.define_config_file_with_default(os.path.join(_REPO, "configs/data/default.py"),
                                                    "Data preparation config (configs/data/*.py).")
_OUTPUT = flags.DEFINE_string("output", None, "Dataset directory to create.", required=True)
_INPUTS = flags.DEFINE_list("inputs", [], "Files, directories or globs, added as a source named 'input'. "
                            "'stdlib' means the Python standard library source.")
_TEXT_FIELD = flags.DEFINE_string("text_field", "text", "JSONL field / Parquet column holding the text.")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace an existing, different dataset at --output.")
_WRITE_TEXT = flags.DEFINE_bool("write_text", False, "Also write the cleaned documents as text/SPLIT.jsonl.gz.")
_NUM_SHARDS = flags.DEFINE_integer("num_shards", 0, "Split the cleaning over this many hosts (map phase only).")
_SHARD_INDEX = flags.DEFINE_integer("shard_index", -1, "This host's shard; defaults to the JAX process index.")
_MERGE = flags.DEFINE_bool("merge", False, "Run the merge phase over the shards' results.")


def main(argv):
  del argv
  logging.set_verbosity(logging.INFO)
  cfg = _CONFIG.value
  try:
    if _INPUTS.value:
      prepare_config.add_source(cfg, "input", ",".join(_INPUTS.value), _TEXT_FIELD.value)
    if not cfg.sources:
      raise UserError("no sources: give --inputs=... or a --config with sources")
    if _NUM_SHARDS.value:
      index = _SHARD_INDEX.value
      if index < 0:
        import jax
        index = jax.process_index()
      n = prepare.run_map(cfg, _OUTPUT.value, _NUM_SHARDS.value, index)
      print(f"shard {index}/{_NUM_SHARDS.value}: cleaned {n} input files into {prepare.work_dir(_OUTPUT.value)}")
      return
    if _MERGE.value:
      meta = prepare.run_merge(cfg, _OUTPUT.value, _WRITE_TEXT.value, _OVERWRITE.value)
    else:
      meta = prepare.prepare(cfg, _OUTPUT.value, _OVERWRITE.value, _WRITE_TEXT.value)
  except UserError as e:
    sys.exit(f"error: {e}")
  for split, info in meta["splits"].items():
    print(f"{split}: {info['num_docs']:,} documents, {info['num_tokens']:,} tokens, "
          f"{info['tokens_per_word']:.2f} tokens/word, {info['bytes_per_token']:.2f} bytes/token")
  print(f"report: {os.path.join(_OUTPUT.value, 'report.md')}")


if __name__ == "__main__":
  app.run(main, flags_parser=overrides.parse_flags)
