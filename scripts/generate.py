"""Generate text from a training run or a Hugging Face model directory, with a KV cache.

  python scripts/generate.py --workdir=runs/quickstart --prompt="def parse(" --max_new_tokens=64
  python scripts/generate.py --hf_dir=/models/my-llama --prompt="Hello" --temperature=0.8 --top_p=0.95
  python scripts/generate.py --hf_dir=exports/sft --chat --prompt="What does json.dumps do?"
  python scripts/generate.py --hf_dir=exports/sft --chat            # interactive: one turn per line
  python scripts/generate.py --hf_dir=/models/big --prompt=... --mesh=tensor=8   # tensor-parallel

Greedy when --temperature=0; otherwise temperature, top-k and nucleus (top-p)
sampling, reproducible with --seed. Stops at the end-of-sequence token or
before any --stop string. Prints the prompt and its completion, then one JSON
line: prompt_ids, completion_ids, completion, compile_s (tracing and compiling,
once per new shape), and the warm prefill_s, decode_s, prefill_tokens_per_sec
and decode_tokens_per_sec (compilation excluded).

--chat sends the prompt as a user turn through the model's chat template (the
one it was fine-tuned with; the built-in ChatML template if it has none) and
prints only the reply; --stats adds the JSON line on stderr. Without --prompt
it reads turns from stdin until EOF or an empty line, keeping the conversation.

The prompt (or conversation) must leave room in the model's context
(max_position_embeddings, or the run's config.model.max_seq_len): a longer one
is refused, and --max_new_tokens is capped, with a note, to the positions left.
An empty --prompt, or none without --chat, is refused. Libraries' INFO logs
show only with --verbose.
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

import quiet_logs  # noqa: E402
from data import chat  # noqa: E402
from errors import UserError  # noqa: E402
from parallel import mesh as mesh_lib  # noqa: E402

_WORKDIR = flags.DEFINE_string("workdir", None, "A train.py --workdir (newest checkpoint).")
_HF_DIR = flags.DEFINE_string("hf_dir", None, "A Hugging Face model directory with its tokenizer.")
_PROMPT = flags.DEFINE_string("prompt", None, "Text to continue (a user turn with --chat).")
_MAX_NEW = flags.DEFINE_integer("max_new_tokens", 64, "Tokens to generate at most.", lower_bound=1)
_TEMPERATURE = flags.DEFINE_float("temperature", 0.0, "0 = greedy.", lower_bound=0.0)
_TOP_K = flags.DEFINE_integer("top_k", 0, "Sample among the k likeliest tokens; 0 = all.", lower_bound=0)
_TOP_P = flags.DEFINE_float("top_p", 1.0, "Nucleus sampling mass.")
_SEED = flags.DEFINE_integer("seed", 0, "Sampling seed.")
_STOP = flags.DEFINE_multi_string("stop", [], "Stop before this string (repeatable).")
_CHAT = flags.DEFINE_bool("chat", False, "Talk through the chat template; interactive without --prompt.")
_STATS = flags.DEFINE_bool("stats", False, "--chat: also print each turn's JSON line (ids, timings) to stderr.")
_MESH = flags.DEFINE_list("mesh", [], "Mesh sizes as AXIS=N (data, fsdp, tensor), e.g. tensor=8; default one device.")


def check_prompt_flag(prompt: str | None, chat_mode: bool) -> None:
  """Refuses a missing or empty --prompt before the model loads (--chat alone reads turns from stdin)."""
  if prompt is None and not chat_mode:
    raise UserError("no --prompt: give --prompt=TEXT to continue, or --chat to talk turn by turn")
  if prompt == "":
    raise UserError("--prompt is empty: give the text to " + ("send as the user turn" if chat_mode else "continue"))


def context_source(lm) -> str:
  """Where the model's context length comes from, for messages."""
  if _HF_DIR.value:
    field = "n_positions" if lm.cfg.position == "learned" else "max_position_embeddings"
    return f"{field} in {os.path.join(_HF_DIR.value, 'config.json')}"
  return f"config.model.max_seq_len of {_WORKDIR.value}"


def new_tokens_that_fit(lm, prompt_tokens: int, what: str = "prompt") -> int:
  """--max_new_tokens, capped (with a note) to the positions the prompt leaves in the context.

  A prompt that fills the context alone is refused: generating from it would
  silently drop its beginning.
  """
  context = lm.max_len
  if prompt_tokens >= context:
    raise UserError(f"the {what} is {prompt_tokens} tokens, but the model's context is {context} tokens "
                    f"({context_source(lm)}); shorten it to at most {context - 1} tokens")
  room = context - prompt_tokens
  if _MAX_NEW.value > room:
    print(f"note: --max_new_tokens={_MAX_NEW.value} capped to {room}: the {what}'s {prompt_tokens} tokens leave "
          f"{room} of the model's {context} positions", file=sys.stderr)
  return min(_MAX_NEW.value, room)


def report(lm, prompt_ids: list[int], generation, text: str) -> str:
  new = generation.tokens[0]
  return json.dumps({"prompt_ids": prompt_ids, "completion_ids": new, "completion": text,
                     "compile_s": round(generation.compile_s, 3),
                     "prefill_s": round(generation.prefill_s, 4), "decode_s": round(generation.decode_s, 4),
                     "prefill_tokens_per_sec": round(len(prompt_ids) / max(generation.prefill_s, 1e-9), 1),
                     "decode_tokens_per_sec": round(len(new) / max(generation.decode_s, 1e-9), 1)})


def complete(lm, ids: list[int], stop: list[str], what: str = "prompt"):
  max_new = new_tokens_that_fit(lm, len(ids), what)
  generation = lm.generate_ids([ids], max_new, stop, _TEMPERATURE.value, _TOP_K.value, _TOP_P.value, _SEED.value)
  return generation, lm.text(generation.tokens[0], stop)


def chat_loop(lm, stop: list[str]) -> None:
  """Reads user turns from stdin; each reply joins the conversation the next turn sees."""
  messages = []
  print("chat: type a message and press enter; an empty line or EOF ends it", file=sys.stderr)
  for line in sys.stdin:
    if not line.strip():
      break
    messages.append({"role": "user", "content": line.rstrip("\n")})
    ids = lm.chat_prompt(messages)
    generation, reply = complete(lm, ids, stop, "conversation")
    messages.append({"role": "assistant", "content": reply})
    print(reply, flush=True)
    if _STATS.value:
      print(report(lm, ids, generation, reply), file=sys.stderr, flush=True)


def main(argv):
  del argv
  quiet_logs.apply()
  try:
    check_prompt_flag(_PROMPT.value, _CHAT.value)
    from evals.lm import LanguageModel
    lm = LanguageModel.load(workdir=_WORKDIR.value, hf_dir=_HF_DIR.value, batch_size=1,
                            mesh_config=mesh_lib.sizes_from_flag(_MESH.value))
    # The built-in chat template ends a turn with text, not one token.
    stop = _STOP.value + ([chat.END_OF_TURN] if _CHAT.value else [])
    if _CHAT.value and _PROMPT.value is None:
      chat_loop(lm, stop)
      return
    prompt = _PROMPT.value
    ids = lm.chat_prompt([{"role": "user", "content": prompt}]) if _CHAT.value else lm.encode(prompt, add_bos=True)
    generation, text = complete(lm, ids, stop)
  except UserError as e:
    sys.exit(f"error: {e}")
  if _CHAT.value:
    print(text)
    if _STATS.value:
      print(report(lm, ids, generation, text), file=sys.stderr)
  else:
    print(prompt + text)
    print(report(lm, ids, generation, text))


if __name__ == "__main__":
  app.run(main)
