"""The feedback loop: serve a model, collect ratings and comparisons through /v1/feedback, turn them into
preference pairs, prepare them, and train DPO on them; the log survives a restart and rotates."""

import json

import httpx
import jax
import pytest

from conftest import read_metrics, sft_config
from data import preferences
from scripts.serving import feedback
from scripts.serving.request_log import JsonlLog
from serve_util import running_server
from trainer import loop

MODEL = "tiny-llama"
QUESTIONS = ["What does os.path.join do?", "How do I read a file?", "What is a list comprehension?",
             "How do I sort a dict by value?", "What does json.dumps return?", "Why use a context manager?"]


def chat(url, question, seed):
  r = httpx.post(url + "/v1/chat/completions", timeout=60, json={
      "model": MODEL, "messages": [{"role": "user", "content": question}], "max_tokens": 12,
      "temperature": 1.0, "seed": seed})
  r.raise_for_status()
  return r.json()


def test_served_feedback_becomes_preferences_that_dpo_trains_on(tiny_hf_base, tmp_path):
  log_dir = str(tmp_path / "logs")
  with running_server(hf_dir=tiny_hf_base, slots=4, request_log=log_dir) as (url, _):
    answers = {q: [chat(url, q, seed) for seed in range(3)] for q in QUESTIONS}
    for q, (a, b, c) in answers.items():
      for response, rating in ((a, 1), (b, -1), (c, -1)):
        assert httpx.post(url + "/v1/feedback", json={"id": response["id"], "rating": rating}).status_code == 200
      assert httpx.post(url + "/v1/feedback", json={"chosen": c["id"], "rejected": b["id"]}).status_code == 200
    unknown = httpx.post(url + "/v1/feedback", json={"id": "chatcmpl-nope", "rating": 1})
    assert unknown.status_code == 404 and unknown.json()["error"]["param"] == "id"
    bad = httpx.post(url + "/v1/feedback", json={"id": answers[QUESTIONS[0]][0]["id"], "rating": 5})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "rating"
  # A restarted server knows the old responses: feedback on them is still accepted.
  with running_server(hf_dir=tiny_hf_base, slots=4, request_log=log_dir) as (url, _):
    late = httpx.post(url + "/v1/feedback", json={"id": answers[QUESTIONS[0]][2]["id"], "rating": 1})
    assert late.status_code == 200

  pairs_file = str(tmp_path / "pairs.jsonl")
  counts = feedback.convert(log_dir, pairs_file)
  pairs = [json.loads(line) for line in open(pairs_file)]
  # Per question: a (+1) over b and c (-1), plus the comparison c over b; the late +1 for question 0's c
  # replaces its -1, so there a and c both beat b and the comparison repeats (c, b).
  assert counts["pairs"] == len(pairs) == 3 * len(QUESTIONS) - 1
  first = answers[QUESTIONS[1]]
  texts = {r["choices"][0]["message"]["content"] for r in first}
  prompt_pairs = [p for p in pairs if p["prompt"][-1]["content"] == QUESTIONS[1]]
  assert {(p["chosen"][0]["content"], p["rejected"][0]["content"]) for p in prompt_pairs} == {
      (first[0]["choices"][0]["message"]["content"], first[1]["choices"][0]["message"]["content"]),
      (first[0]["choices"][0]["message"]["content"], first[2]["choices"][0]["message"]["content"]),
      (first[2]["choices"][0]["message"]["content"], first[1]["choices"][0]["message"]["content"])}
  assert len(texts) == 3

  prepared = str(tmp_path / "prefs")
  preferences.prepare_preferences([pairs_file], tiny_hf_base, prepared,
                                  preferences.PreferenceOptions(max_len=96, val_fraction=0.1))
  config = sft_config(tiny_hf_base, prepared, **{
      "train.objective": "dpo", "train.dpo.beta": 0.5, "optimizer.learning_rate": 2e-3, "train.steps": 8,
      "train.batch_size": 8, "eval.final_split": "", "mesh.data": 1, "mesh.fsdp": 1, "mesh.tensor": 1})
  workdir = str(tmp_path / "dpo")
  loop.run(config, workdir, jax.devices()[:1])
  train = read_metrics(workdir)
  assert train[1]["loss"] == pytest.approx(0.6931, abs=1e-3)  # log 2: the policy starts as its reference
  assert train[8]["loss"] < train[1]["loss"] and train[8]["rewards/margins"] > 0


def test_pairing_rules_skip_what_cannot_be_a_pair():
  responses = [
      {"id": "a", "endpoint": "completions", "prompt": "p", "choices": ["x"], "finish_reasons": ["stop"]},
      {"id": "b", "endpoint": "completions", "prompt": "p", "choices": ["x"], "finish_reasons": ["stop"]},
      {"id": "c", "endpoint": "completions", "prompt": "q", "choices": ["y"], "finish_reasons": ["stop"]},
      {"id": "d", "endpoint": "completions", "prompt": "p", "choices": ["no"], "finish_reasons": ["content_filter"]},
      {"id": "e", "endpoint": "completions", "prompt": "p", "choices": ["z"], "finish_reasons": ["length"]}]
  pairs, counts = feedback.preference_pairs(responses, [
      {"chosen": "a", "rejected": "b"}, {"chosen": "a", "rejected": "c"}, {"chosen": "a", "rejected": "d"},
      {"chosen": "zz", "rejected": "a"}, {"chosen": "e", "rejected": "a"}])
  assert pairs == [{"prompt": "p", "chosen": "z", "rejected": "x"}]
  assert counts == {"skipped_identical_answers": 1, "skipped_different_prompts": 1, "skipped_refused_or_empty": 1,
                    "skipped_unknown_response": 1, "pairs_from_comparisons": 1, "pairs": 1}


def test_the_log_rotates_without_losing_a_record(tmp_path):
  log = JsonlLog(str(tmp_path), "requests", max_bytes=200)
  for i in range(20):
    log.append({"id": f"r{i}", "text": "x" * 30})
  assert len(log.files()) > 3
  assert [r["id"] for r in log.records()] == [f"r{i}" for i in range(20)]
  reopened = JsonlLog(str(tmp_path), "requests", max_bytes=200)
  reopened.append({"id": "r20"})
  assert [r["id"] for r in reopened.records()][-2:] == ["r19", "r20"]
