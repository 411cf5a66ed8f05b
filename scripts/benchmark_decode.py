"""Generation speed: Strata's KV-cache decoder against transformers' generate on the same Llama weights,
and against the memory-bandwidth limit of the machine.

  pip install -e '.[hf]' && python scripts/benchmark_decode.py --shape=135m [--batch_sizes=1,8] \\
      [--dtypes=float32,bfloat16] [--prompt_len=128] [--new_tokens=128] [--hf_dir=DIR]

--shape builds a Llama with random weights with transformers and saves it to a temporary directory
(nothing is downloaded): "135m" is SmolLM-135M's shape (30 layers, d_model 576, GQA 9/3, MLP 1536,
49,152-token tied vocabulary), "110m" a 12-layer d_model 768 one with a 32k vocabulary. --hf_dir times a
Llama-architecture directory instead. Both sides decode greedily in each of --dtypes (weights and
compute), after one warm-up call each (Strata compiles then), on the same random prompts; prefill is the
prompt's forward pass, decode every later token. Whether the greedy tokens are identical is printed (they
were in float32 in every run measured).

Bandwidth limit: decoding one token per row reads every weight once per step, so a step can be no faster
than weight bytes / memory bandwidth; the bandwidth is that of a large numpy copy (bytes read plus bytes
written per second, one thread: an estimate, which several cores' reads can exceed on larger machines).
The fraction printed is the measured decode tokens/s over the limit's (KV-cache reads are left out of the
limit: they are under 1% of the weights at these lengths).

Agreement: bfloat16 weights against float32 on real prompts: the Python standard library's source,
tokenized with --hf_dir's tokenizer or, for random weights, as UTF-8 bytes. Reported as the fraction of
greedy tokens before the first divergence, and of positions equal.
"""

import glob
import json
import os
import sys
import sysconfig
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

from model import hf_weights  # noqa: E402
from model.decode import Decoder  # noqa: E402
from parallel import mesh as mesh_lib  # noqa: E402

SHAPES = {
    "135m": dict(vocab_size=49_152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                 num_attention_heads=9, num_key_value_heads=3, head_dim=64),
    "110m": dict(vocab_size=32_000, hidden_size=768, intermediate_size=2048, num_hidden_layers=12,
                 num_attention_heads=12, num_key_value_heads=4, head_dim=64),
}
TORCH_DTYPES = {"float32": "float32", "bfloat16": "bfloat16"}

_SHAPE = flags.DEFINE_enum("shape", "135m", list(SHAPES), "Random Llama to build when --hf_dir is not given.")
_HF_DIR = flags.DEFINE_string("hf_dir", None, "A Llama-architecture HF directory to time instead of --shape.")
_BATCH_SIZES = flags.DEFINE_list("batch_sizes", ["1", "8"], "Batch sizes to time.")
_DTYPES = flags.DEFINE_list("dtypes", ["float32", "bfloat16"], "Weight and compute dtypes to time.")
_PROMPT_LEN = flags.DEFINE_integer("prompt_len", 128, "Prompt tokens per row.")
_NEW_TOKENS = flags.DEFINE_integer("new_tokens", 128, "Generated tokens per row (no early stop).")
_REPEATS = flags.DEFINE_integer("repeats", 2, "Timed runs per batch size; the fastest counts.")
_AGREEMENT_PROMPTS = flags.DEFINE_integer("agreement_prompts", 8, "Real-text prompts for the bfloat16 vs "
                                          "float32 greedy agreement; 0 skips it.")
_SKIP_TRANSFORMERS = flags.DEFINE_bool("skip_transformers", False, "Time Strata only.")


def make_random_llama(out_dir: str, shape: str, seed: int = 0) -> int:
  """Saves a random Llama of the given shape (tied embeddings); returns its parameter count."""
  import torch
  from transformers import LlamaConfig, LlamaForCausalLM
  torch.manual_seed(seed)
  cfg = LlamaConfig(**SHAPES[shape], max_position_embeddings=2048, tie_word_embeddings=True, bos_token_id=1,
                    eos_token_id=2)
  model = LlamaForCausalLM(cfg)
  model.save_pretrained(out_dir)
  return sum(p.numel() for p in model.parameters())


def copy_bandwidth(megabytes: int = 512, repeats: int = 5) -> float:
  """Bytes per second that a large numpy copy moves (read + written): the machine's practical memory
  bandwidth for streaming weights."""
  src = np.ones(megabytes * 2**20 // 4, np.float32)
  dst = np.empty_like(src)
  np.copyto(dst, src)
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    np.copyto(dst, src)
    best = min(best, time.perf_counter() - start)
  return 2 * src.nbytes / best


def weight_bytes(params) -> int:
  return int(sum(x.nbytes for x in jax.tree.leaves(params)))


def time_ours(decoder: Decoder, params, prompts: np.ndarray, new_tokens: int) -> tuple[float, float, list]:
  """(prefill_s, decode_s, tokens) of the fastest of the timed runs, after a warm-up."""
  rows = prompts.tolist()
  decoder.generate(params, rows, new_tokens)  # compiles
  runs = [decoder.generate(params, rows, new_tokens) for _ in range(_REPEATS.value)]
  best = min(runs, key=lambda g: g.prefill_s + g.decode_s)
  return best.prefill_s, best.decode_s, best.tokens


def time_transformers(model, prompts: np.ndarray, new_tokens: int) -> tuple[float, float, list]:
  """(prefill_s, decode_s, tokens): prefill is one forward pass with a cache; decode the rest of generate."""
  import torch
  ids = torch.tensor(prompts, dtype=torch.long)
  kwargs = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, pad_token_id=0)
  best = None
  with torch.inference_mode():
    model.generate(ids, **kwargs)  # warm-up
    for _ in range(_REPEATS.value):
      start = time.perf_counter()
      model(ids, use_cache=True)
      prefill_s = time.perf_counter() - start
      start = time.perf_counter()
      out = model.generate(ids, **kwargs)
      total_s = time.perf_counter() - start
      if best is None or total_s < best[0]:
        best = (total_s, prefill_s, out[:, prompts.shape[1]:].tolist())
  total_s, prefill_s, tokens = best
  return prefill_s, max(total_s - prefill_s, 1e-9), tokens


def agreement(ours: list, theirs: list) -> tuple[float, float]:
  """(fraction of tokens before the first divergence, fraction of positions equal), averaged over rows."""
  prefix, equal = [], []
  for a, b in zip(ours, theirs):
    prefix.append(next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), len(b)) / len(b))
    equal.append(float(np.mean([x == y for x, y in zip(a, b)])))
  return float(np.mean(prefix)), float(np.mean(equal))


def real_prompts(hf_dir: str, count: int, length: int, vocab_size: int) -> list[list[int]]:
  """`count` prompts of `length` tokens cut from the standard library's source: tokenized by the
  directory's tokenizer when it has one, else as UTF-8 bytes (ids 3..258) for a random model."""
  files = sorted(glob.glob(os.path.join(sysconfig.get_paths()["stdlib"], "*.py")))
  text = "".join(open(f, encoding="utf-8", errors="replace").read() for f in files[:40])
  encode = None
  if glob.glob(os.path.join(hf_dir, "tokenizer*")):
    from transformers import AutoTokenizer
    try:
      encode = AutoTokenizer.from_pretrained(hf_dir).encode
    except (OSError, ValueError):
      encode = None
  ids = encode(text[:200_000]) if encode else [3 + b for b in text[:200_000].encode()]
  ids = [i for i in ids if i < vocab_size]
  stride = max(length, (len(ids) - length) // max(count, 1))
  return [ids[i * stride:i * stride + length] for i in range(count) if i * stride + length <= len(ids)]


def check_flags() -> None:
  for dtype in _DTYPES.value:
    if dtype not in TORCH_DTYPES:
      sys.exit(f"error: --dtypes: {dtype!r} is not one of {', '.join(TORCH_DTYPES)}")
  for batch in _BATCH_SIZES.value:
    if not batch.isdigit() or int(batch) < 1:
      sys.exit(f"error: --batch_sizes: {batch!r} is not a positive integer")
  if _HF_DIR.value and not os.path.isfile(os.path.join(_HF_DIR.value, "config.json")):
    sys.exit(f"error: --hf_dir={_HF_DIR.value}: no config.json there (expected a Hugging Face model directory)")


def main(argv):
  del argv
  check_flags()
  import torch
  import transformers
  torch.set_num_threads(os.cpu_count())
  bandwidth = copy_bandwidth()
  mesh = mesh_lib.mesh_of_sizes()
  results, greedy = [], {}
  with tempfile.TemporaryDirectory() as tmp:
    hf_dir = _HF_DIR.value or os.path.join(tmp, f"llama-{_SHAPE.value}")
    if not _HF_DIR.value:
      n = make_random_llama(hf_dir, _SHAPE.value)
      print(f"random Llama ({_SHAPE.value}): {n / 1e6:.1f}M parameters")
    print(f"device: {jax.devices()[0].device_kind}, {os.cpu_count()} CPU threads | jax {jax.__version__} | "
          f"torch {torch.__version__} | transformers {transformers.__version__} | numpy copy "
          f"{bandwidth / 1e9:.1f} GB/s")
    print(f"{'dtype':>8} {'batch':>5} {'side':>12} {'prefill tok/s':>14} {'decode tok/s':>13} {'total s':>8} "
          f"{'of bw limit':>11}")
    for dtype in _DTYPES.value:
      cfg, params = hf_weights.load(hf_dir, mesh, dtype=dtype, param_dtype=dtype)
      decoder = Decoder(cfg, mesh)
      hf_model = None if _SKIP_TRANSFORMERS.value else transformers.AutoModelForCausalLM.from_pretrained(
          hf_dir, dtype=getattr(torch, TORCH_DTYPES[dtype])).eval()
      limit_steps_per_s = bandwidth / weight_bytes(params)
      rng = np.random.default_rng(0)
      for batch in map(int, _BATCH_SIZES.value):
        prompts = rng.integers(3, cfg.vocab_size, size=(batch, _PROMPT_LEN.value)).astype(np.int32)
        sides = {"strata": time_ours(decoder, params, prompts, _NEW_TOKENS.value)}
        if hf_model is not None:
          sides["transformers"] = time_transformers(hf_model, prompts, _NEW_TOKENS.value)
        row = {"dtype": dtype, "batch": batch, "prompt_len": _PROMPT_LEN.value, "new_tokens": _NEW_TOKENS.value,
               "weight_bytes": weight_bytes(params), "bandwidth_bytes_per_s": bandwidth,
               "bandwidth_limit_tokens_per_sec": batch * limit_steps_per_s}
        for side, (prefill_s, decode_s, _) in sides.items():
          decode_tps = batch * _NEW_TOKENS.value / decode_s
          row[side] = {"prefill_tokens_per_sec": batch * _PROMPT_LEN.value / prefill_s,
                       "decode_tokens_per_sec": decode_tps, "total_s": prefill_s + decode_s,
                       "fraction_of_bandwidth_limit": decode_tps / (batch * limit_steps_per_s)}
          r = row[side]
          print(f"{dtype:>8} {batch:>5} {side:>12} {r['prefill_tokens_per_sec']:>14.0f} "
                f"{r['decode_tokens_per_sec']:>13.1f} {r['total_s']:>8.2f} {r['fraction_of_bandwidth_limit']:>10.0%}")
        if hf_model is not None:
          ours, theirs = sides["strata"], sides["transformers"]
          row["speedup_total"] = (theirs[0] + theirs[1]) / (ours[0] + ours[1])
          row["speedup_prefill"] = theirs[0] / ours[0]
          row["speedup_decode"] = theirs[1] / ours[1]
          row["greedy_agreement"], row["greedy_equal"] = agreement(ours[2], theirs[2])
          row["greedy_identical"] = ours[2] == theirs[2]
          print(f"{dtype:>8} {batch:>5} {'ratio':>12} {row['speedup_prefill']:>13.2f}x {row['speedup_decode']:>12.2f}x "
                f"{row['speedup_total']:>7.2f}x  (strata / transformers; greedy tokens "
                f"{'identical' if row['greedy_identical'] else 'agree %.0f%%' % (100 * row['greedy_agreement'])})")
        results.append(row)
      if _AGREEMENT_PROMPTS.value:
        prompts = real_prompts(hf_dir, _AGREEMENT_PROMPTS.value, _PROMPT_LEN.value, cfg.vocab_size)
        greedy[dtype] = decoder.generate(params, prompts, _NEW_TOKENS.value).tokens
      del hf_model, params
  if "float32" in greedy and "bfloat16" in greedy:
    prefix, equal = agreement(greedy["bfloat16"], greedy["float32"])
    print(f"bfloat16 vs float32 greedy on {len(greedy['float32'])} real-text prompts: {prefix:.0%} of tokens before "
          f"the first divergence, {equal:.0%} of positions equal")
    results.append({"bf16_vs_fp32_prefix_agreement": prefix, "bf16_vs_fp32_equal": equal,
                    "prompts": len(greedy["float32"])})
  for row in results:
    print(json.dumps(row))


if __name__ == "__main__":
  app.run(main)
