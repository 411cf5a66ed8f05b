"""Prepare a dataset for train.py: clean, deduplicate, tokenize, shard.

One machine (a process per CPU):
  python scripts/prepare_data.py --output=datasets/mytext --inputs='corpus/**/*.txt,extra.jsonl.zst'
  python scripts/prepare_data.py --config=configs/data/stdlib.py --output=datasets/stdlib \\
      --config.near_dedup.threshold=0.8 --write_text

On Ray Data (a local Ray, or a cluster: inputs and OUTPUT on storage every node reads):
  python scripts/prepare_data.py --config=C --output=O --runner=ray
  python scripts/prepare_data.py --config=C --output=O --runner=ray --ray_address=HEAD:6379

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
_RUNNER = flags.DEFINE_enum("runner", "local", prepare.RUNNERS, "local: a process pool on this machine; "
                            "ray: Ray Data (--ray_address, else a local Ray with config.num_workers CPUs).")
_RAY_ADDRESS = flags.DEFINE_string("ray_address", "", "Ray cluster to join (HOST:PORT of the head, "
                                   "ray://HOST:PORT, or 'auto' for the one this machine belongs to); "
                                   "'' starts a local Ray.")
_RAY_TIMEOUT = flags.DEFINE_float("ray_timeout_s", 60.0, "Give up if the Ray cluster does not answer in this time.")


def main(argv):
  del argv
  logging.set_verbosity(logging.INFO)
  cfg = _CONFIG.value
  try:
    if _INPUTS.value:
      prepare_config.add_source(cfg, "input", ",".join(_INPUTS.value), _TEXT_FIELD.value)
    if not cfg.sources:
      raise UserError("no sources: give --inputs=... or a --config with sources")
    meta = prepare.prepare(cfg, _OUTPUT.value, _OVERWRITE.value, _WRITE_TEXT.value, _RUNNER.value,
                           _RAY_ADDRESS.value, _RAY_TIMEOUT.value)
  except UserError as e:
    sys.exit(f"error: {e}")
  for split, info in meta["splits"].items():
    print(f"{split}: {info['num_docs']:,} documents, {info['num_tokens']:,} tokens, "
          f"{info['tokens_per_word']:.2f} tokens/word, {info['bytes_per_token']:.2f} bytes/token")
  print(f"report: {os.path.join(_OUTPUT.value, 'report.md')}")


if __name__ == "__main__":
  app.run(main, flags_parser=overrides.parse_flags)
