"""Generate a completion from a training run or a Hugging Face model directory.

  python scripts/generate.py --workdir=runs/quickstart --prompt="def parse(" --max_new_tokens=64
  python scripts/generate.py --hf_dir=/models/my-llama --prompt="Hello" --temperature=0
  python scripts/generate.py --hf_dir=exports/sft --chat --prompt="What does json.dumps do?"

Greedy when --temperature=0; otherwise temperature and nucleus (--top_p)
sampling, reproducible with --seed. Stops at the tokenizer's end-of-sequence
token. Prints the completion, then one JSON line with the token ids and speed.

--chat sends the prompt as a user turn through the model's chat template (the
one it was fine-tuned with; the built-in ChatML template if it has none) and
prints the assistant's reply.
"""

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
from absl import app, flags  # noqa: E402
from ml_collections import ConfigDict  # noqa: E402

from data import chat  # noqa: E402
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
_CHAT = flags.DEFINE_bool("chat", False, "Send --prompt as a user turn through the chat template.")


def load(workdir: str | None, hf_dir: str | None):
  """(ModelConfig, params, Tokenizer, chat formatter)."""
  if bool(workdir) == bool(hf_dir):
    raise UserError("give exactly one of --workdir and --hf_dir")
  if hf_dir:
    mesh = mesh_lib.make_mesh(ConfigDict(dict(data=1, fsdp=1, tensor=1)), jax.devices()[:1])
    cfg, params = hf_weights.load(hf_dir, mesh)
    specials = tokenizer_lib.special_token_strings(hf_dir)
    formatter = chat.ChatFormatter(chat.template_from_dir(hf_dir), specials["bos_token"], specials["eos_token"])
    return cfg, params, tokenizer_lib.load_dir(hf_dir), formatter
  from data import pipeline
  from trainer import export
  config, cfg, params, _ = export.restore_params(workdir)
  meta = pipeline.dataset_metadata(config.data)
  base = config.init.hf_dir
  tok = tokenizer_lib.load_dir(base) if base else tokenizer_lib.load(meta["tokenizer_path"])
  template = meta.get("chat_template") or (chat.template_from_dir(base) if base else None)
  specials = tokenizer_lib.special_token_strings(base) if base else {
      k: tok.impl.id_to_piece(i) if tok.kind == "sentencepiece" and i is not None else ""
      for k, i in (("bos_token", tok.bos_id), ("eos_token", tok.eos_id))}
  return cfg, params, tok, chat.ChatFormatter(template, specials["bos_token"], specials["eos_token"])


def prompt_ids(tok, formatter, prompt: str, as_chat: bool) -> list[int]:
  if as_chat:  # the template places BOS itself
    text = formatter.render([{"role": "user", "content": prompt}], add_generation_prompt=True)
    return tok.encode_with_offsets(text)[0]
  return ([tok.bos_id] if tok.bos_id is not None else []) + tok.encode_batch([prompt])[0]


def main(argv):
  del argv
  try:
    cfg, params, tok, formatter = load(_WORKDIR.value, _HF_DIR.value)
    ids = prompt_ids(tok, formatter, _PROMPT.value, _CHAT.value)
    if max(ids + [0]) >= cfg.vocab_size:
      raise UserError(f"the tokenizer produced id {max(ids)} >= the model's vocab_size {cfg.vocab_size}")
  except UserError as e:
    sys.exit(f"error: {e}")
  seq_len = _MAX_LEN.value or len(ids) + _MAX_NEW.value + 1
  start = time.perf_counter()
  new = sampling.sample(DecoderLM(cfg), params, [ids], _MAX_NEW.value, seq_len, _TEMPERATURE.value,
                        _SEED.value, top_p=_TOP_P.value, eos_id=tok.eos_id)[0]
  elapsed = time.perf_counter() - start
  text = tok.decode([t for t in new if t != tok.eos_id])
  if _CHAT.value:  # the built-in template's end of turn is text, not one token
    text = text.split(chat.END_OF_TURN)[0]
  print(text if _CHAT.value else _PROMPT.value + text)
  print(json.dumps({"prompt_ids": ids, "completion_ids": new, "completion": text,
                    "tokens_per_sec": len(new) / elapsed}))


if __name__ == "__main__":
  app.run(main)
