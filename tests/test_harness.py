"""evals.harness: lm-evaluation-harness tasks on a Strata model, offline.

Local task definitions (JSONL data, one YAML each) run through
lm_eval.simple_evaluate on the tiny random Llama; every number the harness
reports must match what evals.lm.LanguageModel computes directly.
"""

import contextlib
import json
import math
import re
import socket

import pytest

pytest.importorskip("lm_eval")

import lm_eval  # noqa: E402
from lm_eval.api.instance import Instance  # noqa: E402
from lm_eval.tasks import TaskManager  # noqa: E402

from errors import UserError  # noqa: E402
from evals import harness  # noqa: E402

# Batches of other shapes sum in another order: float32 noise, not bugs.
CLOSE = dict(rel=1e-5, abs=1e-4)
MC_DOCS = [
    {"question": "def add(a, b):", "choices": ["return a + b", "import os", "class Foo:"], "label": 0},
    {"question": "for i in", "choices": ["range(10):", "None", "'''", "self"], "label": 0},
    {"question": "import", "choices": [" os", " sys", " re"], "label": 2},
    {"question": "class Parser(", "choices": ["object):", "1 + 2", "if x"], "label": 0},
    {"question": "if __name__ ==", "choices": ["'__main__':", "None:", "0"], "label": 1},
]
ROLLING_DOCS = [
    {"text": "def parse(line):\n    return line.split(',')\n"},
    {"text": "import os\nimport sys\n\nprint(os.getcwd())"},
    {"text": "x = 1"},
]
GEN_DOCS = [
    {"prompt": "def main():\n    ", "answer": "pass"},
    {"prompt": "class Config:", "answer": ""},
    {"prompt": "import", "answer": " os"},
    {"prompt": "    return", "answer": " None"},
]


@contextlib.contextmanager
def offline():
  """No Hugging Face downloads, and any attempt to open a network connection fails."""
  import datasets
  import huggingface_hub
  with pytest.MonkeyPatch.context() as mp:
    mp.setenv("HF_DATASETS_OFFLINE", "1")
    mp.setenv("HF_HUB_OFFLINE", "1")
    # Both libraries read those variables once, at import: set what they read.
    mp.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    mp.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    connect = socket.socket.connect

    def local_only(sock, address):
      if sock.family in (socket.AF_INET, socket.AF_INET6):
        raise OSError(f"test_harness is offline; something tried to reach {address}")
      return connect(sock, address)
    mp.setattr(socket.socket, "connect", local_only)
    yield


def write_task(root, name: str, docs: list[dict], **config) -> None:
  """A task YAML (JSON is YAML) reading docs from a local JSONL file."""
  data = root / f"{name}.jsonl"
  data.write_text("".join(json.dumps(d) + "\n" for d in docs))
  config = dict(task=name, dataset_path="json", test_split="test",
                dataset_kwargs={"data_files": {"test": str(data)}, "cache_dir": str(root / "hf_cache")},
                **config)
  (root / f"{name}.yaml").write_text(json.dumps(config, indent=2))


def gen_kwargs_for(lm) -> dict[str, dict]:
  """gen_kwargs of two generate_until tasks (lm_eval sends each task's own).

  A random model seldom writes "\n", so the second task stops at a character
  its greedy output is known to contain: some output must then be cut.
  """
  first = lm.generate([lm.encode(GEN_DOCS[0]["prompt"], add_bos=True)], 6)[0]
  assert first, "the model ended its output at once"
  return {"strata_gen_line": {"until": ["\n"], "max_gen_toks": 12, "do_sample": False},
          "strata_gen_char": {"until": [first[len(first) // 2], "("], "max_gen_toks": 6}}


def write_tasks(root, gen_kwargs: dict[str, dict]) -> list[str]:
  write_task(root, "strata_mc", MC_DOCS, output_type="multiple_choice", doc_to_text="{{question}}",
             doc_to_choice="choices", doc_to_target="label",
             # acc_mutual_info makes the harness send ("", choice) requests too.
             metric_list=[{"metric": m} for m in ("acc", "acc_norm", "acc_mutual_info")])
  write_task(root, "strata_rolling", ROLLING_DOCS, output_type="loglikelihood_rolling", doc_to_text="",
             doc_to_target="{{text}}", metric_list=[{"metric": "word_perplexity"}])
  for name, kwargs in gen_kwargs.items():
    write_task(root, name, GEN_DOCS, output_type="generate_until", doc_to_text="{{prompt}}",
               doc_to_target="{{answer}}", generation_kwargs=kwargs, metric_list=[{"metric": "exact_match"}])
  return ["strata_mc", "strata_rolling", *gen_kwargs]


@pytest.fixture(scope="module")
def lm(tiny_hf_base):
  from evals.lm import LanguageModel
  return LanguageModel.load(hf_dir=tiny_hf_base, batch_size=8)


@pytest.fixture(scope="module")
def adapter(lm):
  return harness.StrataLM(lm)


def record_generate(lm, mp) -> list:
  """Patches lm.generate to list its calls as (prompts, max_new_tokens, kwargs)."""
  calls = []
  generate = lm.generate

  def recording_generate(prompts, max_new_tokens, **kwargs):
    calls.append((prompts, max_new_tokens, kwargs))
    return generate(prompts, max_new_tokens, **kwargs)
  mp.setattr(lm, "generate", recording_generate)
  return calls


@pytest.fixture(scope="module")
def harness_run(adapter, lm, tmp_path_factory):
  """simple_evaluate on the local tasks; also records every LanguageModel.generate call."""
  root = tmp_path_factory.mktemp("lm_eval_tasks")
  gen_kwargs = gen_kwargs_for(lm)
  tasks = write_tasks(root, gen_kwargs)
  with offline(), pytest.MonkeyPatch.context() as mp:
    calls = record_generate(lm, mp)
    manager = TaskManager(include_path=str(root), include_defaults=False)
    # No bootstrapped stderrs, and no torch import just to seed it.
    results = lm_eval.simple_evaluate(model=adapter, tasks=tasks, task_manager=manager,
                                      bootstrap_iters=0, torch_random_seed=None)
  return results, calls, gen_kwargs


def by_doc(results, task: str) -> list[dict]:
  return sorted(results["samples"][task], key=lambda s: s["doc_id"])


def choice_lls(lm, context: str, choices: list[str]) -> list[float]:
  """log p(" " + choice | context); an empty context means BOS only."""
  if context:
    pairs = [lm.encode_pair(context, " " + c) for c in choices]
  else:
    pairs = [([lm.tokenizer.bos_id], lm.encode(" " + c)) for c in choices]
  return [ll for ll, _ in lm.loglikelihood(pairs)]


def argmax(xs) -> int:
  return max(range(len(xs)), key=lambda i: xs[i])


def test_multiple_choice_matches_language_model(harness_run, lm):
  results = harness_run[0]
  samples = by_doc(results, "strata_mc")
  assert [s["doc"] for s in samples] == MC_DOCS
  acc, acc_norm, acc_mi = [], [], []
  for doc, sample in zip(MC_DOCS, samples):
    lls = choice_lls(lm, doc["question"], doc["choices"])
    unconditional = choice_lls(lm, "", doc["choices"])
    got = [ll for ll, _ in sample["filtered_resps"]]
    assert got == pytest.approx(lls + unconditional, **CLOSE)
    acc.append(argmax(lls) == doc["label"])
    acc_norm.append(argmax([ll / len(c) for ll, c in zip(lls, doc["choices"])]) == doc["label"])
    acc_mi.append(argmax([a - b for a, b in zip(lls, unconditional)]) == doc["label"])
  metrics = results["results"]["strata_mc"]
  assert metrics["acc,none"] == pytest.approx(sum(acc) / len(acc))
  assert metrics["acc_norm,none"] == pytest.approx(sum(acc_norm) / len(acc_norm))
  assert metrics["acc_mutual_info,none"] == pytest.approx(sum(acc_mi) / len(acc_mi))


def test_rolling_matches_language_model(harness_run, lm):
  results = harness_run[0]
  texts = [d["text"] for d in ROLLING_DOCS]
  scored = lm.rolling_loglikelihood([lm.encode(t) for t in texts])
  assert [n for _, n in scored] == [len(lm.encode(t)) for t in texts]  # every token, once
  totals = [total for total, _ in scored]
  got = [s["filtered_resps"][0] for s in by_doc(results, "strata_rolling")]
  assert got == pytest.approx(totals, **CLOSE)
  words = sum(len(re.split(r"\s+", t)) for t in texts)
  assert results["results"]["strata_rolling"]["word_perplexity,none"] == pytest.approx(
      math.exp(-sum(totals) / words), **CLOSE)


def test_generate_until_matches_greedy_generate(harness_run, lm):
  results, calls, all_gen_kwargs = harness_run
  prompts = [lm.encode(d["prompt"], add_bos=True) for d in GEN_DOCS]
  # One batched call per distinct gen_kwargs, i.e. per task here.
  assert len(calls) == len(all_gen_kwargs)
  assert all(sorted(call_prompts) == sorted(prompts) for call_prompts, _, _ in calls)
  cut = 0
  for task, gen_kwargs in all_gen_kwargs.items():
    want = lm.generate(prompts, gen_kwargs["max_gen_toks"], stop=gen_kwargs["until"])
    got = [s["filtered_resps"][0] for s in by_doc(results, task)]
    assert got == want
    assert not any(stop in text for text in got for stop in gen_kwargs["until"])
    unstopped = lm.generate(prompts, gen_kwargs["max_gen_toks"])
    cut += sum(any(stop in text for stop in gen_kwargs["until"]) for text in unstopped)
  assert cut > 0  # some stop string was met: the check above is not vacuous


def request(kind: str, *args) -> Instance:
  return Instance(request_type=kind, doc={}, arguments=args, idx=0)


def test_loglikelihood_requests(adapter, lm):
  text = " return x"
  got = adapter.loglikelihood([request("loglikelihood", "", text),
                               request("loglikelihood", "def f(x):", text),
                               request("loglikelihood", "def f(x): ", text.lstrip())])
  want = lm.loglikelihood([([lm.tokenizer.bos_id], lm.encode(text)), lm.encode_pair("def f(x):", text)])
  assert [type(g) for g in got[0]] == [float, bool]
  assert got[:2] == [pytest.approx(w, **CLOSE) for w in want]
  # lm_eval's convention: a context's trailing space belongs to the continuation.
  assert got[2] == pytest.approx(got[1], **CLOSE)
  # Empty context is the text given BOS only, which is also what rolling scores.
  rolling = adapter.loglikelihood_rolling([request("loglikelihood_rolling", text)])
  assert rolling[0] == pytest.approx(got[0][0], **CLOSE)
  assert adapter.loglikelihood([request("loglikelihood", "x =", "")]) == [(0.0, True)]


def test_generate_until_groups_by_gen_kwargs(adapter, lm, monkeypatch):
  line = {"until": ["\n"], "max_gen_toks": 8, "do_sample": False}
  word = {"until": "(", "max_gen_toks": 4}  # a bare string, as some task YAMLs write it
  contexts = ["def f(x):", "import", "class A:"]
  generate = lm.generate
  calls = record_generate(lm, monkeypatch)
  got = adapter.generate_until([request("generate_until", contexts[0], line),
                                request("generate_until", contexts[1], word),
                                request("generate_until", contexts[2], dict(line))])
  prompts = [lm.encode(c, add_bos=True) for c in contexts]
  assert calls == [([prompts[0], prompts[2]], 8, dict(stop=["\n"], temperature=0.0, top_k=0, top_p=1.0, seed=0)),
                   ([prompts[1]], 4, dict(stop=["("], temperature=0.0, top_k=0, top_p=1.0, seed=0))]
  line_out = generate([prompts[0], prompts[2]], 8, stop=["\n"])
  assert got == [line_out[0], generate([prompts[1]], 4, stop=["("])[0], line_out[1]]


def test_model_args(monkeypatch):
  loads = []
  monkeypatch.setattr(harness.StrataLM, "from_checkpoint", classmethod(lambda cls, **kw: loads.append(kw)))
  get = lm_eval.api.registry.get_model
  assert get("strata") is harness.StrataLM
  assert "hf" in lm_eval.api.registry.model_registry  # the built-in models are still there
  get("strata").create_from_arg_string("pretrained=/m,max_gen_toks=32", {"batch_size": 4, "device": None})
  get("strata").create_from_arg_string("workdir=runs/x,batch_size=16", {"batch_size": 1})
  get("strata").create_from_arg_string("workdir=runs/x", {"batch_size": "auto"})
  assert loads == [{"hf_dir": "/m", "max_gen_toks": 32, "batch_size": 4},
                   {"workdir": "runs/x", "batch_size": 16}, {"workdir": "runs/x"}]
  with pytest.raises(UserError, match="hf_dri"):
    harness.StrataLM.create_from_arg_string("hf_dri=/m")
