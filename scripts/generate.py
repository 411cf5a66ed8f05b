"""Generate a completion from a training run or a Hugging Face model directory.

  python scripts/generate.py --workdir=runs/quickstart --prompt="def parse(" --max_new_tokens=64
  python scripts/generate.py --hf_dir=/models/my-llama --prompt="Hello" --temperature=0

Greedy when --temperature=0; otherwise temperature and nucleus (--top_p)
sampling, reproducible with --seed. Stops at the tokenizer's end-of-sequence
token. Prints the completion, then one JSON line with the token ids and speed.
"""

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
from absl import app, flags  # noqa: E402
from ml_collections import ConfigDict  # noqa: E402

from data import tokenizer as tokenizer_lib  # noqa: E402
from errors import UserError  # noqa: E402
from model import hf_weights, sampling  # noqa: E402
from model.transformer import DecoderLM  # noqa: E402
from parallel import mesh as mesh_lib  # noqa: E402

_WORKDIR = flags.DEFINE_string("workdir", None, "A train.py --workdir (newest checkpoint).")
_HF_DIR = flags.DEFINE_string("hf_dir", None, "A Hugging Face model directory with its tokenizer.")
_PROMPT = flags.DEFINE_string("prompt", "", "Text to continue.")
_MAX_NEW = flags.DEFINE_integer("max_new_tokens", 64, "Tokens to generate at most.")
_TEMPERATURE = flags.DEFINE_float("temperature", 0.0, "0 = greedy.")
_TOP_P = flags.DEFINE_float("top_p", 1.0, "Nucleus sampling mass.")
_SEED = flags.DEFINE_integer("seed", 0, "Sampling seed.")
_MAX_LEN = flags.DEFINE_integer("max_len", 0, "Context buffer; 0 = prompt + max_new_tokens.")


def _hf_tokenizer(hf_dir: str):
  for name in ("tokenizer.json", "tokenizer.model"):
    if os.path.isfile(os.path.join(hf_dir, name)):
      return tokenizer_lib.load(os.path.join(hf_dir, name))
  raise UserError(f"{hf_dir} has neither tokenizer.json nor tokenizer.model")


def load(workdir: str | None, hf_dir: str | None):
  """(ModelConfig, params, Tokenizer)."""
  if bool(workdir) == bool(hf_dir):
    raise UserError("give exactly one of --workdir and --hf_dir")
  if hf_dir:
    mesh = mesh_lib.make_mesh(ConfigDict(dict(data=1, fsdp=1, tensor=1)), jax.devices()[:1])
    cfg, params = hf_weights.load(hf_dir, mesh)
    return cfg, params, _hf_tokenizer(hf_dir)
  from data import pipeline
  from trainer import export
  config, cfg, params, _ = export.restore_params(workdir)
  return cfg, params, tokenizer_lib.load(pipeline.dataset_metadata(config.data)["tokenizer_path"])


def main(argv):
  del argv
  try:
    cfg, params, tok = load(_WORKDIR.value, _HF_DIR.value)
    prompt_ids = ([tok.bos_id] if tok.bos_id is not None else []) + tok.encode_batch([_PROMPT.value])[0]
    if max(prompt_ids + [0]) >= cfg.vocab_size:
      raise UserError(f"the tokenizer produced id {max(prompt_ids)} >= the model's vocab_size {cfg.vocab_size}")
  except UserError as e:
    sys.exit(f"error: {e}")
  seq_len = _MAX_LEN.value or len(prompt_ids) + _MAX_NEW.value + 1
  start = time.perf_counter()
  new = sampling.sample(DecoderLM(cfg), params, [prompt_ids], _MAX_NEW.value, seq_len, _TEMPERATURE.value,
                        _SEED.value, top_p=_TOP_P.value, eos_id=tok.eos_id)[0]
  elapsed = time.perf_counter() - start
  text = tok.decode([t for t in new if t != tok.eos_id])
  print(_PROMPT.value + text)
  print(json.dumps({"prompt_ids": prompt_ids, "completion_ids": new, "completion": text,
                    "tokens_per_sec": len(new) / elapsed}))


if __name__ == "__main__":
  app.run(main)
