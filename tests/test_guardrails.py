"""Guardrails on the server: planted personal data and denied terms never reach a client, streamed or
not, though the model emits them token by token (so every one is split across chunks)."""

import json

import httpx
import numpy as np
import pytest

from conftest import REPO
from model.slots import Prefilled, TOP_LOGPROBS
from scripts.serving import guardrails
from serve_util import running_server

MODEL = "tiny-llama"
EMAIL, PHONE = "alice.smith@example.com", "+1 415 555 0132"
# Longer than the 128 characters a guarded stream holds back, so the planted strings pass mid-stream.
FILLER = "The parser reads each line of the file and returns the fields it found in order. " * 3


@pytest.fixture(scope="module")
def guarded(tiny_hf_base):
  with running_server(hf_dir=tiny_hf_base, slots=2,
                      guardrails=f"{REPO}/configs/guardrails/default.py") as (url, server):
    yield url, server


def script(monkeypatch, server, text: str) -> list[int]:
  """Makes the engine's model emit `text` token by token, then EOS, whatever the prompt."""
  tok = server.lm.tokenizer
  ids = tok.encode(text) + [tok.eos_id]
  top = np.zeros(TOP_LOGPROBS, np.int32), np.zeros(TOP_LOGPROBS, np.float32)

  def prefill(params, cache, prompt, slot, sampling, score=False):
    return cache, Prefilled(ids[0], 0.0, *top)

  def step(params, cache, token_S, position_S, sampling_S, index_S):
    next_S = np.array([ids[min(i, len(ids) - 1)] for i in index_S], np.int32)
    zeros = np.zeros(len(index_S), np.float32)
    return cache, next_S, zeros, np.zeros((len(index_S), TOP_LOGPROBS), np.int32), \
        np.zeros((len(index_S), TOP_LOGPROBS), np.float32)
  monkeypatch.setattr(server.engine.decoder, "prefill", prefill)
  monkeypatch.setattr(server.engine.decoder, "step", step)
  return ids


def complete(url: str, stream: bool, prompt: str = "hello") -> tuple[str, list[str], str]:
  """(the text the client got, its chunks, finish reason)."""
  body = {"model": MODEL, "prompt": prompt, "max_tokens": 600, "temperature": 0, "stream": stream}
  if not stream:
    choice = httpx.post(url + "/v1/completions", json=body, timeout=60).json()["choices"][0]
    return choice["text"], [choice["text"]], choice["finish_reason"]
  chunks, finish = [], None
  with httpx.stream("POST", url + "/v1/completions", json=body, timeout=60) as r:
    for line in r.iter_lines():
      if line.startswith("data: {"):
        choice = json.loads(line[6:])["choices"][0]
        chunks.append(choice["text"])
        finish = choice["finish_reason"] or finish
  return "".join(chunks), chunks, finish


@pytest.mark.parametrize("stream", [False, True])
def test_planted_personal_data_is_redacted(guarded, monkeypatch, stream):
  url, server = guarded
  script(monkeypatch, server, f"{FILLER}Write to {EMAIL} or call {PHONE} today. {FILLER}Thanks.")
  text, chunks, finish = complete(url, stream)
  assert EMAIL not in text and "555 0132" not in text and "alice" not in text
  assert "<EMAIL>" in text and "<PHONE>" in text and text.endswith("Thanks.")
  assert finish == "stop"
  if stream:
    assert len([c for c in chunks if c]) > 3  # it really streamed, piece by piece
    for secret in (EMAIL, "alice", "example.com", "555"):
      assert not any(secret in c for c in chunks)


@pytest.mark.parametrize("stream", [False, True])
def test_a_denied_term_ends_the_answer_with_the_refusal(guarded, monkeypatch, stream):
  url, server = guarded
  script(monkeypatch, server, f"{FILLER}Here is the plan. First obtain a nerve agent and then wait. {FILLER}")
  text, chunks, finish = complete(url, stream)
  assert "nerve" not in text.lower() and finish == "content_filter"
  assert text.endswith(server.guard.refusal) and text.startswith(FILLER[:40])


def test_input_policy_refuses_denied_prompts_and_redacts_personal_data(guarded):
  url, server = guarded
  refused = httpx.post(url + "/v1/completions", json={"model": MODEL, "prompt": "how to make a pipe bomb",
                                                       "max_tokens": 5}).json()["choices"][0]
  assert refused["text"] == server.guard.refusal and refused["finish_reason"] == "content_filter"
  seen = httpx.post(url + "/v1/completions", json={"model": MODEL, "prompt": f"mail {EMAIL} now", "max_tokens": 2,
                                                   "return_token_ids": True}).json()["choices"][0]
  assert "alice" not in server.lm.decode(seen["prompt_token_ids"])
  metrics = httpx.get(url + "/metrics").text
  assert 'strata_guardrail_interventions_total{kind="deny",stage="input"}' in metrics
  assert 'strata_guardrail_interventions_total{kind="pii",stage="input"}' in metrics


def test_policy_files_are_checked():
  with pytest.raises(Exception, match="unknown keys"):
    guardrails.from_config({"refusal": "no", "outptu": {}})
  with pytest.raises(Exception, match="topics"):
    guardrails.from_config({"output": {"deny": "weapons"}})
  with pytest.raises(Exception, match="unknown PII"):
    guardrails.from_config({"output": {"pii": ["emails"]}})


def test_text_released_character_by_character_never_shows_a_partial_address():
  """The hardest split: one character per token, so a cut can fall anywhere inside the address."""
  from scripts.serving.textstream import TextStream
  guard = guardrails.load(f"{REPO}/configs/guardrails/default.py")
  text = f"{FILLER}Write to {EMAIL} or call {PHONE} today. {FILLER}"
  stream = TextStream(lambda ids: text[:len(ids)], [], None, guard)
  chunks = [stream.push(i)[0] for i in range(len(text))] + [stream.close()]
  assert "".join(chunks) == guard.redact_output(text)
  assert not any(part in chunk for chunk in chunks for part in ("alice", "@example", "555"))
