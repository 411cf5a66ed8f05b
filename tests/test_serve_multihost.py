"""A server over two processes (one CPU device each, gloo): process 0 serves HTTP, process 1 follows its
batches, and concurrent requests get the tokens one process gives."""

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time

import httpx

from conftest import REPO
from serve_util import running_server


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


BODIES = [{"model": "tiny-llama", "prompt": f"def f{i}(x):" + "\n    y = x" * i, "max_tokens": 6 + 3 * i,
           "temperature": 0.0 if i % 2 == 0 else 0.8, "seed": i, "return_token_ids": True} for i in range(6)]


async def _all(url: str) -> list[list[int]]:
  async with httpx.AsyncClient(base_url=url, timeout=120) as http:
    responses = await asyncio.gather(*(http.post("/v1/completions", json=b) for b in BODIES))
  return [r.json()["choices"][0]["token_ids"] for r in responses]


def test_two_processes_serve_what_one_serves(tiny_hf_base):
  with running_server(hf_dir=tiny_hf_base, slots=4) as (url, _):
    want = asyncio.run(_all(url))
  coordinator, http_port = _free_port(), _free_port()
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1", JAX_PLATFORMS="cpu")
  procs = [subprocess.Popen(
      [sys.executable, os.path.join(REPO, "scripts", "serve.py"), f"--hf_dir={tiny_hf_base}", "--slots=4",
       f"--port={http_port}", f"--coordinator_address=127.0.0.1:{coordinator}", "--num_processes=2",
       f"--process_id={i}"], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
      for i in range(2)]
  url = f"http://127.0.0.1:{http_port}"
  try:
    deadline = time.time() + 180
    while True:
      try:
        if httpx.get(url + "/health", timeout=2).status_code == 200:
          break
      except httpx.HTTPError:
        pass
      assert time.time() < deadline and all(p.poll() is None for p in procs), \
          [p.communicate(timeout=5)[0][-2000:] for p in procs if p.poll() is not None]
      time.sleep(0.5)
    time.sleep(2.5)  # idle long enough for heartbeats to pass
    assert asyncio.run(_all(url)) == want
  finally:
    procs[0].send_signal(signal.SIGINT)
    outputs = [p.communicate(timeout=60)[0] for p in procs]
  assert procs[1].returncode == 0, outputs[1][-3000:]  # the follower ended when the leader stopped
