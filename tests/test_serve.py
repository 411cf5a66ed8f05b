"""scripts/serve.py: the OpenAI-compatible server, checked against independent references.

The official `openai` client talks to it; its greedy tokens equal
scripts/generate.py's; lm-evaluation-harness's `local-completions` model scores
through it as the in-process harness does; 64 concurrent mixed requests (half
streamed) each get exactly what they get alone; every bad input is a 4xx
naming its field, and the next request is served.
"""

import asyncio
import json
import os
import subprocess
import sys
import time

import httpx
import jax
import openai
import pytest

from conftest import REPO
from serve_util import running_server

MODEL = "tiny-llama"


@pytest.fixture(scope="module")
def served(tiny_hf_base, tmp_path_factory):
  with running_server(hf_dir=tiny_hf_base, slots=4, max_queue=96, max_n=4,
                      request_log=str(tmp_path_factory.mktemp("serve_log"))) as (url, server):
    yield url, server


@pytest.fixture(scope="module")
def client(served):
  return openai.OpenAI(base_url=served[0] + "/v1", api_key="unused", max_retries=0)


def generate_py(hf_dir: str, prompt: str, max_new_tokens: int, *extra) -> dict:
  out = subprocess.run([sys.executable, os.path.join(REPO, "scripts", "generate.py"), f"--hf_dir={hf_dir}",
                        f"--prompt={prompt}", f"--max_new_tokens={max_new_tokens}", *extra],
                       capture_output=True, text=True, check=True, cwd=REPO)
  return json.loads(out.stdout.strip().splitlines()[-1])


def test_greedy_completion_equals_generate_py(client, tiny_hf_base):
  prompt = "def parse(line):\n    return"
  reference = generate_py(tiny_hf_base, prompt, 24)
  response = client.completions.create(model=MODEL, prompt=prompt, max_tokens=24, temperature=0,
                                       extra_body={"return_token_ids": True})
  choice = response.choices[0]
  assert choice.model_extra["token_ids"] == reference["completion_ids"]
  assert len(set(reference["completion_ids"])) > 3, "a degenerate reference proves little"
  assert choice.text == reference["completion"]
  assert response.usage.completion_tokens == len(reference["completion_ids"])
  assert response.usage.prompt_tokens == len(reference["prompt_ids"])


def test_streamed_chat_equals_the_whole_answer(client):
  messages = [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "What does os do?"}]
  whole = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=20, temperature=0)
  chunks = list(client.chat.completions.create(model=MODEL, messages=messages, max_tokens=20, temperature=0,
                                               stream=True, stream_options={"include_usage": True}))
  text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
  assert text == whole.choices[0].message.content
  assert chunks[0].choices[0].delta.role == "assistant"
  finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
  assert finishes == [whole.choices[0].finish_reason]
  assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
  assert all(c.id == chunks[0].id for c in chunks)


def test_sampling_is_seeded_and_n_choices_differ(client):
  kwargs = dict(model=MODEL, prompt="import", max_tokens=12, temperature=1.0, top_p=0.9, seed=11, n=3)
  first, second = client.completions.create(**kwargs), client.completions.create(**kwargs)
  texts = [c.text for c in sorted(first.choices, key=lambda c: c.index)]
  assert texts == [c.text for c in sorted(second.choices, key=lambda c: c.index)]
  assert len(set(texts)) > 1


def test_stop_strings_cut_the_text_streamed_or_not(client):
  base = client.completions.create(model=MODEL, prompt="class Config:", max_tokens=16, temperature=0).choices[0].text
  stop = base[len(base) // 2:len(base) // 2 + 2]
  assert stop.strip(), base
  cut = base[:base.find(stop)]
  whole = client.completions.create(model=MODEL, prompt="class Config:", max_tokens=16, temperature=0, stop=[stop])
  streamed = "".join(c.choices[0].text for c in client.completions.create(
      model=MODEL, prompt="class Config:", max_tokens=16, temperature=0, stop=[stop], stream=True))
  assert whole.choices[0].text == streamed == cut
  assert whole.choices[0].finish_reason == "stop"


def test_echo_logprobs_score_the_prompt_like_the_harness(client, tiny_hf_base):
  from evals.lm import LanguageModel
  lm = LanguageModel.load(hf_dir=tiny_hf_base)
  context, continuation = lm.encode_pair("def add(a, b):", " return a + b")
  response = client.completions.create(model=MODEL, prompt=context + continuation, max_tokens=1, temperature=0,
                                       echo=True, logprobs=1)
  lp = response.choices[0].logprobs
  assert lp.token_logprobs[0] is None and len(lp.token_logprobs) == len(context) + len(continuation) + 1
  total = sum(lp.token_logprobs[len(context):-1])
  (reference, greedy), = lm.loglikelihood([(context, continuation)])
  assert total == pytest.approx(reference, abs=1e-4)
  is_greedy = all(t == max(top.values()) for t, top in zip(lp.token_logprobs[len(context):-1],
                                                           lp.top_logprobs[len(context):-1]))
  assert is_greedy == greedy


def test_lm_eval_local_completions_scores_like_the_in_process_harness(served, tiny_hf_base, tmp_path):
  import lm_eval
  from lm_eval.tasks import TaskManager
  from evals import harness
  from evals.lm import LanguageModel
  from test_harness import MC_DOCS, write_task
  write_task(tmp_path, "strata_mc", MC_DOCS, output_type="multiple_choice", doc_to_text="{{question}}",
             doc_to_choice="choices", doc_to_target="label", metric_list=[{"metric": "acc"}])
  manager = TaskManager(include_path=str(tmp_path), include_defaults=False)
  # lm_eval discovers the remote tokenizer (/tokenizer_info, /tokenize) and sends token ids.
  remote = lm_eval.simple_evaluate(
      model="local-completions", model_args=f"base_url={served[0]}/v1/completions,model={MODEL},"
      "num_concurrent=1,max_retries=1,tokenized_requests=True,add_bos_token=True",
      tasks=["strata_mc"], task_manager=manager, bootstrap_iters=0, torch_random_seed=None, log_samples=True)
  local = lm_eval.simple_evaluate(model=harness.StrataLM(LanguageModel.load(hf_dir=tiny_hf_base)),
                                  tasks=["strata_mc"], task_manager=manager, bootstrap_iters=0,
                                  torch_random_seed=None, log_samples=True)

  def scores(results):
    return [[r[0] for r in s["resps"]] for s in sorted(results["samples"]["strata_mc"], key=lambda s: s["doc_id"])]
  got, want = scores(remote), scores(local)
  assert len(got) == len(MC_DOCS)
  for g, w in zip(got, want):
    assert [x[0] for x in g] == pytest.approx([x[0] for x in w], abs=1e-4)
    assert [x[1] for x in g] == [x[1] for x in w]


# ---------------------------------------------------------------- load

def _request(i: int) -> dict:
  """Mixed lengths and settings; odd ones sample (seeded), every other pair streams."""
  prompt = ("import os\n" * (1 + i % 5)) + f"def f{i}(x):"
  body = dict(model=MODEL, prompt=prompt, max_tokens=4 + (i * 7) % 29, temperature=0.0 if i % 2 == 0 else 0.9,
              seed=i, return_token_ids=True)
  return body | {"stream": i % 4 < 2}


async def _send(http: httpx.AsyncClient, body: dict) -> list[int]:
  if not body["stream"]:
    r = await http.post("/v1/completions", json=body)
    r.raise_for_status()
    return r.json()["choices"][0]["token_ids"]
  tokens, done = [], False
  async with http.stream("POST", "/v1/completions", json=body) as r:
    r.raise_for_status()
    async for line in r.aiter_lines():
      if line == "data: [DONE]":
        done = True
      elif line.startswith("data: "):
        tokens += json.loads(line[6:])["choices"][0].get("token_ids", [])
  assert done, "a stream ended without data: [DONE]"
  return tokens


def test_64_concurrent_mixed_requests_each_equal_the_request_alone(served):
  url, server = served
  bodies = [_request(i) for i in range(64)]

  async def run(concurrent: bool):
    async with httpx.AsyncClient(base_url=url, timeout=300) as http:
      if concurrent:
        return await asyncio.gather(*(_send(http, b) for b in bodies))
      return [await _send(http, b) for b in bodies]
  alone = asyncio.run(run(False))
  together = asyncio.run(run(True))
  assert together == alone
  assert all(len(t) == b["max_tokens"] or t[-1] == 2 for t, b in zip(alone, bodies))
  assert server.engine.occupied == 0 and server.engine.queue_depth == 0


def test_metrics_count_requests_tokens_and_latencies(served, client):
  client.completions.create(model=MODEL, prompt="x = 1", max_tokens=3, temperature=0)
  text = httpx.get(served[0] + "/metrics").text
  for name in ("strata_requests_total", "strata_prompt_tokens_total", "strata_generation_tokens_total",
               "strata_time_to_first_token_seconds_count", "strata_inter_token_latency_seconds_count",
               "strata_queue_depth", "strata_batch_occupancy"):
    assert name in text, name
  value = lambda name: float(next(line.split()[-1] for line in text.splitlines()  # noqa: E731
                                  if line.startswith(name)))
  assert value("strata_generation_tokens_total") >= 3
  assert value("strata_time_to_first_token_seconds_count") >= 1


def test_models_and_health(served, client):
  assert [m.id for m in client.models.list().data] == [MODEL]
  assert httpx.get(served[0] + "/health").json()["status"] == "ok"


# ---------------------------------------------------------------- bad input

BAD = [
    ("malformed JSON", b'{"model": "tiny-llama", "prompt": "x"', None),
    ("unknown field", {"model": MODEL, "prompt": "x", "max_tokenz": 3}, "max_tokenz"),
    ("negative max_tokens", {"model": MODEL, "prompt": "x", "max_tokens": -1}, "max_tokens"),
    ("huge max_tokens", {"model": MODEL, "prompt": "x", "max_tokens": 10**9}, "max_tokens"),
    ("negative temperature", {"model": MODEL, "prompt": "x", "temperature": -0.5}, "temperature"),
    ("prompt over the context", {"model": MODEL, "prompt": "x " * 5000}, "prompt"),
    ("n over the limit", {"model": MODEL, "prompt": "x", "n": 50}, "n"),
    ("unknown model", {"model": "gpt-17", "prompt": "x"}, "model"),
    ("five stop strings", {"model": MODEL, "prompt": "x", "stop": ["a", "b", "c", "d", "e"]}, "stop"),
]


@pytest.mark.parametrize("what,body,param", BAD, ids=[b[0] for b in BAD])
def test_bad_completion_requests_get_a_4xx_naming_the_field(served, what, body, param):
  url, _ = served
  kwargs = dict(content=body, headers={"content-type": "application/json"}) if isinstance(body, bytes) else \
      dict(json=body)
  r = httpx.post(url + "/v1/completions", timeout=60, **kwargs)
  assert 400 <= r.status_code < 500, (what, r.status_code, r.text)
  error = r.json()["error"]
  assert error["param"] == param and error["message"]
  if param:
    assert param in error["message"] or what == "unknown model"
  ok = httpx.post(url + "/v1/completions", json={"model": MODEL, "prompt": "x", "max_tokens": 2}, timeout=60)
  assert ok.status_code == 200 and ok.json()["choices"][0]["finish_reason"] in ("length", "stop")


def test_empty_messages_and_wrong_key(served, tiny_hf_base):
  url, server = served
  r = httpx.post(url + "/v1/chat/completions", json={"model": MODEL, "messages": []})
  assert r.status_code == 400 and r.json()["error"]["param"] == "messages"
  server.api_key = "secret"
  try:
    r = httpx.post(url + "/v1/completions", json={"model": MODEL, "prompt": "x"},
                   headers={"authorization": "Bearer wrong"})
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    keyed = openai.OpenAI(base_url=url + "/v1", api_key="secret", max_retries=0)
    assert keyed.completions.create(model=MODEL, prompt="x", max_tokens=2).choices[0].finish_reason
  finally:
    server.api_key = None


def test_a_request_that_fails_in_the_engine_fails_alone(served, monkeypatch):
  url, server = served
  prefill = server.engine.decoder.prefill

  def failing(params, cache, prompt, *args, **kwargs):
    if 13 in prompt[-1:]:
      raise RuntimeError("planted failure")
    return prefill(params, cache, prompt, *args, **kwargs)
  monkeypatch.setattr(server.engine.decoder, "prefill", failing)

  async def run():
    async with httpx.AsyncClient(base_url=url, timeout=120) as http:
      good = [http.post("/v1/completions", json={"model": MODEL, "prompt": [1, 40 + i], "max_tokens": 8})
              for i in range(5)]
      bad = http.post("/v1/completions", json={"model": MODEL, "prompt": [1, 13], "max_tokens": 8})
      return await asyncio.gather(bad, *good)
  bad, *good = asyncio.run(run())
  assert bad.status_code == 500 and "cmpl-" in bad.json()["error"]["message"]
  assert [r.status_code for r in good] == [200] * 5
  assert all(len(r.json()["choices"][0]["text"]) >= 0 and r.json()["usage"]["completion_tokens"] >= 1 for r in good)


def test_a_prefill_that_consumes_the_donated_cache_fails_and_the_engine_starts_a_fresh_cache(served, monkeypatch):
  """A prefill can fail after XLA took its donated cache: the engine must notice (every layer's buffers are
  deleted), fail that request and the ones running on the old cache, and keep serving on a new one."""
  url, server = served
  prefill = server.engine.decoder.prefill

  def consuming(params, cache, prompt, *args, **kwargs):
    if 13 in prompt[-1:]:
      for buffer in jax.tree.leaves(cache):
        buffer.delete()
      raise RuntimeError("planted failure after donation")
    out = prefill(params, cache, prompt, *args, **kwargs)
    if 41 in prompt[-1:]:
      time.sleep(1.0)  # the failing request arrives meanwhile, so it is admitted while this one runs
    return out
  monkeypatch.setattr(server.engine.decoder, "prefill", consuming)

  async def run():
    async with httpx.AsyncClient(base_url=url, timeout=120) as http:
      running = asyncio.ensure_future(http.post("/v1/completions", json={
          "model": MODEL, "prompt": [1, 41], "max_tokens": 64, "temperature": 0}))
      await asyncio.sleep(0.3)
      bad = await http.post("/v1/completions", json={"model": MODEL, "prompt": [1, 13], "max_tokens": 4})
      return bad, await running
  bad, running = asyncio.run(run())
  assert bad.status_code == 500 and "planted failure after donation" in bad.json()["error"]["message"]
  assert running.status_code == 500 and "the engine restarted its cache" in running.json()["error"]["message"]
  assert not any(x.is_deleted() for x in jax.tree.leaves(server.engine.cache))
  request = {"model": MODEL, "prompt": [1, 40], "max_tokens": 6, "temperature": 0}
  on_the_new_cache = httpx.post(url + "/v1/completions", json=request, timeout=120)
  monkeypatch.undo()
  again = httpx.post(url + "/v1/completions", json=request, timeout=120)
  assert on_the_new_cache.status_code == again.status_code == 200
  assert on_the_new_cache.json()["choices"][0]["text"] == again.json()["choices"][0]["text"]


def test_queue_limit_answers_429_at_once(served):
  url, server = served
  limit = server.engine.max_queue
  server.engine.max_queue = 0
  try:
    async def run():
      async with httpx.AsyncClient(base_url=url, timeout=120) as http:
        return await asyncio.gather(*(http.post("/v1/completions", json={"model": MODEL, "prompt": "x",
                                                                        "max_tokens": 30}) for _ in range(12)))
    responses = asyncio.run(run())
    assert {r.status_code for r in responses} == {429}
    assert responses[0].json()["error"]["type"] == "server_overloaded"
  finally:
    server.engine.max_queue = limit
  ok = httpx.post(url + "/v1/completions", json={"model": MODEL, "prompt": "x", "max_tokens": 2}, timeout=60)
  assert ok.status_code == 200


def test_a_disconnected_stream_frees_its_slot(served):
  url, server = served
  with httpx.stream("POST", url + "/v1/completions", timeout=60,
                    json={"model": MODEL, "prompt": "x", "max_tokens": 200, "stream": True}) as r:
    for line in r.iter_lines():
      if line.startswith("data: "):
        break
  deadline = time.time() + 10
  while server.engine.occupied and time.time() < deadline:
    time.sleep(0.05)
  assert server.engine.occupied == 0


def test_a_failed_decode_step_fails_its_requests_and_the_server_recovers(served, monkeypatch):
  url, server = served
  step = server.engine.decoder.step
  calls = {"n": 0}

  def failing_once(*args, **kwargs):
    calls["n"] += 1
    if calls["n"] == 1:
      raise RuntimeError("planted step failure")
    return step(*args, **kwargs)
  monkeypatch.setattr(server.engine.decoder, "step", failing_once)
  failed = httpx.post(url + "/v1/completions", json={"model": MODEL, "prompt": "x", "max_tokens": 5}, timeout=60)
  assert failed.status_code == 500 and "decode step failed" in failed.json()["error"]["message"]
  ok = httpx.post(url + "/v1/completions", json={"model": MODEL, "prompt": "x", "max_tokens": 5}, timeout=60)
  assert ok.status_code == 200 and ok.json()["usage"]["completion_tokens"] >= 1


def test_an_engine_that_cannot_recover_says_so(tiny_hf_base, monkeypatch):
  with running_server(hf_dir=tiny_hf_base, slots=2) as (url, server):
    def broken(*args, **kwargs):
      raise RuntimeError("planted: no memory left")
    monkeypatch.setattr(server.engine.decoder, "step", broken)
    monkeypatch.setattr(server.engine.decoder, "empty_cache", broken)
    first = httpx.post(url + "/v1/completions", json={"model": MODEL, "prompt": "x", "max_tokens": 5}, timeout=60)
    assert first.status_code in (500, 503)
    assert httpx.get(url + "/health").status_code == 503
    later = httpx.post(url + "/v1/completions", json={"model": MODEL, "prompt": "x", "max_tokens": 5}, timeout=60)
    assert later.status_code == 503
