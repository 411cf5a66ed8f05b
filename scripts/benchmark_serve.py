"""Serving speed under load: the server in this process, real HTTP clients, streamed requests.

  pip install -e '.[serve]' && python scripts/benchmark_serve.py --workdir=runs/quickstart \\
      [--concurrency=1,16] [--requests=32] [--max_tokens=64] [--slots=16]

For each concurrency level, `--requests` streamed completions (prompts of mixed
lengths cut from the standard library's source, `ignore_eos` so every request
writes max_tokens) are kept `concurrency` at a time in flight. Prints
requests/s, generated tokens/s, and p50/p99 of time to first token and of the
time between tokens, as a table and one JSON line per level, and the
throughput ratio of the highest level over the lowest. Warm-up requests
run the same requests first, untimed, so no compilation is timed.
"""

import asyncio
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import httpx  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

import quiet_logs  # noqa: E402
from data import corpus  # noqa: E402

_WORKDIR = flags.DEFINE_string("workdir", None, "A train.py --workdir to serve.")
_HF_DIR = flags.DEFINE_string("hf_dir", None, "A Hugging Face model directory to serve.")
_CONCURRENCY = flags.DEFINE_list("concurrency", ["1", "16"], "Requests in flight, one level per entry.")
_REQUESTS = flags.DEFINE_integer("requests", 32, "Requests per level.", lower_bound=1)
_MAX_TOKENS = flags.DEFINE_integer("max_tokens", 64, "Tokens each request generates.", lower_bound=1)
_SLOTS = flags.DEFINE_integer("slots", 16, "The server's decode slots.", lower_bound=1)


def prompts(count: int, seed: int = 0) -> list[str]:
  """Mixed-length snippets of real code: 1 to 24 lines from the standard library."""
  rng = np.random.default_rng(seed)
  files = corpus.stdlib_files()[:200]
  out = []
  while len(out) < count:
    with open(files[rng.integers(len(files))], encoding="utf-8", errors="replace") as f:
      lines = f.read().splitlines()
    if len(lines) > 30:
      start = int(rng.integers(len(lines) - 25))
      out.append("\n".join(lines[start:start + int(rng.integers(1, 25))]))
  return out


async def one(http: httpx.AsyncClient, model: str, prompt: str, max_tokens: int) -> dict:
  start = time.perf_counter()
  stamps = []
  body = dict(model=model, prompt=prompt, max_tokens=max_tokens, temperature=0, stream=True, ignore_eos=True,
              return_token_ids=True)
  async with http.stream("POST", "/v1/completions", json=body) as r:
    r.raise_for_status()
    async for line in r.aiter_lines():
      if line.startswith("data: {"):
        n = len(json.loads(line[6:])["choices"][0].get("token_ids", []))
        stamps += [time.perf_counter()] * n
  return dict(start=start, stamps=stamps)


async def level(url: str, model: str, texts: list[str], concurrency: int, max_tokens: int) -> dict:
  gate = asyncio.Semaphore(concurrency)
  async with httpx.AsyncClient(base_url=url, timeout=3600) as http:
    async def gated(text):
      async with gate:
        return await one(http, model, text, max_tokens)
    start = time.perf_counter()
    results = await asyncio.gather(*(gated(t) for t in texts))
    wall = time.perf_counter() - start
  ttft = [r["stamps"][0] - r["start"] for r in results if r["stamps"]]
  gaps = [b - a for r in results for a, b in zip(r["stamps"], r["stamps"][1:]) if b > a]
  # Tokens of one step arrive together; the per-token latency is the time between steps.
  tokens = sum(len(r["stamps"]) for r in results)
  pct = lambda xs, q: float(np.percentile(xs, q)) * 1e3 if xs else float("nan")  # noqa: E731
  return dict(concurrency=concurrency, requests=len(texts), seconds=round(wall, 2),
              requests_per_s=round(len(texts) / wall, 2), tokens_per_s=round(tokens / wall, 1),
              ttft_p50_ms=round(pct(ttft, 50), 1), ttft_p99_ms=round(pct(ttft, 99), 1),
              itl_p50_ms=round(pct(gaps, 50), 2), itl_p99_ms=round(pct(gaps, 99), 2))


def main(argv):
  del argv
  quiet_logs.apply()
  from scripts.serving.load import running_server
  levels = [int(c) for c in _CONCURRENCY.value]
  with running_server(workdir=_WORKDIR.value, hf_dir=_HF_DIR.value, slots=_SLOTS.value,
                      max_queue=max(_REQUESTS.value, 1)) as (url, server):
    model = server.model_name
    texts = prompts(_REQUESTS.value)
    # One untimed pass compiles every prompt bucket and attention span the timed passes meet.
    asyncio.run(level(url, model, texts, max(levels), _MAX_TOKENS.value))
    rows = [asyncio.run(level(url, model, texts, c, _MAX_TOKENS.value)) for c in levels]
  print(f"{'concurrency':>11} {'req/s':>7} {'tok/s':>8} {'TTFT p50':>9} {'TTFT p99':>9} {'ITL p50':>8} "
        f"{'ITL p99':>8}  (ms)")
  for r in rows:
    print(f"{r['concurrency']:>11} {r['requests_per_s']:>7} {r['tokens_per_s']:>8} {r['ttft_p50_ms']:>9} "
          f"{r['ttft_p99_ms']:>9} {r['itl_p50_ms']:>8} {r['itl_p99_ms']:>8}")
  for r in rows:
    print(json.dumps(r))
  if len(rows) > 1:
    print(f"throughput at concurrency {rows[-1]['concurrency']} / {rows[0]['concurrency']}: "
          f"{rows[-1]['tokens_per_s'] / rows[0]['tokens_per_s']:.2f}x")


if __name__ == "__main__":
  app.run(main)
