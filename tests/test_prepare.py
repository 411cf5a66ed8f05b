"""The data preparation pipeline on a planted corpus, plus determinism, the Ray runner and bad input."""

import gzip
import json
import os

import numpy as np
import pytest

from conftest import stdlib_data_config
from data import corpus, dedup, prepare, prepare_config
from errors import UserError

LICENSE = "\n".join([
    "# Copyright (c) 2019-2024 Example Corporation. All rights reserved.",
    "# Licensed under the Example Public License, Version 2.0 (the License);",
    "# you may not use this file except in compliance with the License.",
    "# Unless required by applicable law or agreed to in writing, software",
    "# distributed under the License is distributed on an AS IS BASIS,",
    "# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.",
]) + "\n"

PII = {
    "email": "jane.doe+ml@example-corp.com",
    "phone": "+1 650-253-0000",
    "ip_address": "203.0.113.42",
    "ipv6": "2001:db8:85a3::8a2e:370:7334",
    "credit_card": "4111 1111 1111 1111",
    "iban": "GB82 WEST 1234 5698 7654 32",
    "secret": "AKIAIOSFODNN7EXAMPLE",
    "github": "ghp_R8x2kLm9Qw3Zt7Yp4Vn6Bc1Hd5Jf0Gs8Ka2E",
    "private_key": ("-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA7bq3kNfQ9m2x\n"
                    "Zy8h2T5vQ1wE3rPq9sLk0aB7cD2eF4gH6iJ8kL0mN1oP3qR5sT7uV9w\n-----END RSA PRIVATE KEY-----"),
}

WORDS = "alpha beta gamma delta epsilon kappa lambda sigma omega theta".split()


def _edit_words(text: str, rng, fraction: float = 0.03) -> str:
  """Replaces, deletes or inserts whole words until about `fraction` of the characters changed."""
  words = text.split(" ")
  changed, budget = 0, fraction * len(text)
  while changed < budget:
    i = int(rng.integers(len(words)))
    op = int(rng.integers(3))
    if op == 0:
      changed += len(words[i])
      words[i] = str(rng.choice(WORDS))
    elif op == 1 and len(words) > 1:
      changed += len(words.pop(i))
    else:
      new = str(rng.choice(WORDS))
      words.insert(i, new)
      changed += len(new)
  return " ".join(words)


def _base_files(n: int):
  files = [f for f in corpus.stdlib_files() if "/encodings/" not in f and 2_000 <= os.path.getsize(f) <= 40_000]
  return files[:n]


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
  """300 real modules; 20 exact copies, 40 near copies, a license header in 100, PII in 10."""
  root = tmp_path_factory.mktemp("planted")
  rng = np.random.default_rng(0)
  texts = [open(f, encoding="utf-8").read() for f in _base_files(300)]
  for i in range(0, 300, 3):
    texts[i] = LICENSE + texts[i]
  for i in range(60, 70):
    texts[i] += f"\n# maintainer number {i} can be reached at: " + " / ".join(v for k, v in PII.items() if k != "private_key") + "\n"
    texts[i] += f"KEY = '''\n{PII['private_key']}\n'''\n"
  for d in ("base", "exact", "near"):
    (root / d).mkdir()
  for i, t in enumerate(texts):
    (root / "base" / f"{i:03d}.py").write_text(t)
  for i in range(20):
    (root / "exact" / f"{i:03d}.py").write_text(texts[i])
  for i in range(20, 60):
    (root / "near" / f"{i:03d}.py").write_text(_edit_words(texts[i], rng))
  cfg = stdlib_data_config()
  with cfg.sources.unlocked():
    del cfg.sources["stdlib"]
  prepare_config.add_source(cfg, "corpus", str(root))
  cfg.num_workers = 2
  out = str(tmp_path_factory.mktemp("planted_out") / "dataset")
  meta = prepare.prepare(cfg, out, write_text=True)
  kept = {}
  for split in prepare.SPLITS:
    with gzip.open(os.path.join(out, "text", f"{split}.jsonl.gz"), "rt") as f:
      kept.update({d["id"]: d["text"] for d in map(json.loads, f)})
  with gzip.open(os.path.join(out, "removed.jsonl.gz"), "rt") as f:
    removed = {r["id"]: r for r in map(json.loads, f)}
  return {"root": root, "out": out, "meta": meta, "kept": kept, "removed": removed, "texts": texts, "cfg": cfg}


def test_planted_duplicates_are_removed(planted):
  kept, removed = planted["kept"], planted["removed"]
  exact = [f"corpus:exact/{i:03d}.py" for i in range(20)]
  assert all(removed[e]["reason"] == "exact_duplicate" for e in exact)
  pairs = [(f"corpus:base/{i:03d}.py", f"corpus:near/{i:03d}.py") for i in range(20, 60)]
  caught = sum(not (a in kept and b in kept) for a, b in pairs)
  print(f"near-duplicate pairs caught: {caught}/{len(pairs)}")
  assert caught / len(pairs) >= 0.95, caught


def test_few_distinct_documents_removed_as_duplicates(planted):
  """A base module removed as a duplicate counts as a false positive unless its true
  shingle Jaccard similarity with the module it duplicates reaches the threshold."""
  removed, threshold = planted["removed"], planted["cfg"].near_dedup.threshold
  hasher = dedup.MinHasher(shingle_chars=planted["cfg"].near_dedup.shingle_chars)
  texts = {f"corpus:base/{i:03d}.py": t for i, t in enumerate(planted["texts"])}
  false_positives = []
  for doc_id, r in removed.items():
    if doc_id.startswith("corpus:base/") and r["stage"] in ("exact_dedup", "near_dedup"):
      a, b = hasher.shingles(texts[doc_id]), hasher.shingles(texts[r["duplicate_of"]])
      if len(a & b) / len(a | b) < threshold:
        false_positives.append(doc_id)
  print(f"distinct modules removed as duplicates: {len(false_positives)}/300")
  assert len(false_positives) < 0.01 * 300, false_positives


def test_license_header_and_pii_are_gone(planted):
  text = "\n".join(planted["kept"].values())
  assert "Licensed under the Example Public License" not in text
  for name, value in PII.items():
    assert value not in text, name
  for placeholder in ("<EMAIL>", "<PHONE>", "<IP_ADDRESS>", "<CREDIT_CARD>", "<IBAN>", "<SECRET>", "<PRIVATE_KEY>"):
    assert placeholder in text


def test_report_shows_every_stage(planted):
  report = open(os.path.join(planted["out"], "report.md")).read()
  stats = json.load(open(os.path.join(planted["out"], "stats.json")))
  assert stats["exact_dedup"]["removed"]["exact_duplicate"] >= 20
  assert stats["near_dedup"]["removed"]["near_duplicate"] >= 38
  assert stats["boilerplate"]["counts"]["lines_removed"] >= 6 * 100
  pii = stats["pii"]["counts"]
  for kind in ("email", "phone", "ip_address", "credit_card", "iban", "secret", "private_key"):
    assert pii[kind] >= 10, kind
  for line in ("| exact deduplication |", "| near-duplicate deduplication |", "| boilerplate removal |",
               "| PII scrubbing | credit_card |", "| PII scrubbing | iban |", "near_duplicate", "### ",
               "| train |", "tokens per word", "bytes per token"):
    assert line in report, line


def _assert_same_files(a: str, b: str) -> None:
  """Every file of dataset `a`, byte for byte, in `b`, and no other."""
  names = sorted(os.path.relpath(os.path.join(r, n), a) for r, _, files in os.walk(a) for n in files)
  assert sorted(os.path.relpath(os.path.join(r, n), b) for r, _, files in os.walk(b) for n in files) == names
  for rel in names:
    with open(os.path.join(a, rel), "rb") as x, open(os.path.join(b, rel), "rb") as y:
      assert x.read() == y.read(), (b, rel)


@pytest.fixture(scope="module")
def local_ray():
  """One local Ray of 2 workers for the module's Ray runs (each run would otherwise start its own)."""
  import ray
  from data import prep_ray
  assert prep_ray.connect("", 60.0, 2)
  yield
  ray.shutdown()


def test_rerun_and_ray_runner_are_byte_identical(planted, tmp_path, local_ray):
  cfg = planted["cfg"]
  again = str(tmp_path / "again")
  prepare.prepare(cfg, again, write_text=True)
  _assert_same_files(planted["out"], again)
  on_ray = str(tmp_path / "ray")
  prepare.prepare(cfg, on_ray, write_text=True, runner="ray")
  _assert_same_files(planted["out"], on_ray)


def test_ray_runner_joins_a_chain_of_near_duplicates(tmp_path, local_ray):
  """Six documents, each with one more tenth of the text replaced: only neighbours are above the
  threshold, so the cluster (diameter 5) needs connected components, not pairwise matches, and
  several rounds of label propagation on Ray."""
  src = tmp_path / "src"
  src.mkdir()
  docs = _docs(31)
  for i, d in enumerate(docs[1:]):
    (src / f"base-{i:02d}.py").write_text(d)
  text, filler = docs[0][:6000], "".join(docs[1:])[-6000:]
  n = len(text) // 10
  chain = [filler[:k * n] + text[k * n:] for k in range(6)]
  for name, t in zip("fedcba", chain):  # the chain's far end has the smallest id
    (src / f"chain-{name}.py").write_text(t)
  sigs = [dedup.MinHasher().signature(t) for t in chain]
  # Every neighbouring pair is an edge (estimated Jaccard >= the 0.7 threshold); no pair two apart is.
  assert all(dedup.estimated_jaccard(a, b) >= 0.7 for a, b in zip(sigs, sigs[1:]))
  assert all(dedup.estimated_jaccard(a, b) < 0.7 for a, b in zip(sigs, sigs[2:]))
  cfg = _cfg_for(str(src), near_dedup__enabled=True)
  local, on_ray = str(tmp_path / "local"), str(tmp_path / "ray")
  prepare.prepare(cfg, local, write_text=True)
  prepare.prepare(cfg, on_ray, write_text=True, runner="ray")
  _assert_same_files(local, on_ray)
  with gzip.open(os.path.join(on_ray, "removed.jsonl.gz"), "rt") as f:
    near = {r["id"]: r["duplicate_of"] for r in map(json.loads, f) if r["stage"] == "near_dedup"}
  assert near == {f"in:chain-{c}.py": "in:chain-a.py" for c in "bcdef"}
  stats = json.load(open(os.path.join(on_ray, "stats.json")))
  assert stats["near_dedup"]["cluster_sizes"] == {"6": 1}


def test_ray_runner_matches_other_configurations(tmp_path, local_ray, dataset_dir):
  """Exact dedup off (copies fall to near dedup), MinHash verification, decontamination, and a
  tokenizer given by path: still byte-identical to the local runner."""
  src = tmp_path / "src"
  src.mkdir()
  docs = _docs(30)
  for i, d in enumerate(docs):
    (src / f"{i:02d}.py").write_text(d)
  for i in range(3):
    (src / f"copy-{i}.py").write_text(docs[i])
  (tmp_path / "eval.jsonl").write_text(json.dumps({"text": " ".join(docs[7].split()[100:130])}) + "\n")
  cfg = _cfg_for(str(src), near_dedup__enabled=True, near_dedup__verify="minhash", exact_dedup__enabled=False,
                 decontam__eval_sets=str(tmp_path / "eval.jsonl"),
                 tokenizer__path=os.path.join(dataset_dir, "tokenizer.model"))
  local, on_ray = str(tmp_path / "local"), str(tmp_path / "ray")
  prepare.prepare(cfg, local, write_text=True)
  prepare.prepare(cfg, on_ray, write_text=True, runner="ray")
  _assert_same_files(local, on_ray)
  stats = json.load(open(os.path.join(on_ray, "stats.json")))
  assert stats["near_dedup"]["removed"]["near_duplicate"] >= 3 and stats["decontam"]["removed"]


def test_ray_task_errors_read_like_local_ones(tmp_path, local_ray):
  (tmp_path / "d.jsonl").write_text(json.dumps({"text": "x" * 50}) + "\n{not json\n")
  with pytest.raises(UserError) as raised:
    prepare.prepare(_cfg_for(str(tmp_path / "d.jsonl")), str(tmp_path / "out"), runner="ray")
  assert str(raised.value) == f"{tmp_path / 'd.jsonl'}:2: not valid JSON (Expecting property name enclosed in double quotes at column 2)"
  assert not os.path.exists(tmp_path / "out")


def test_ray_runner_without_ray_installed(tmp_path, monkeypatch):
  import sys
  monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
  (tmp_path / "a.txt").write_text("some text " * 20)
  with pytest.raises(UserError, match=r"--runner=ray needs Ray Data: pip install -e '.\[ray\]'"):
    prepare.prepare(_cfg_for(str(tmp_path / "a.txt")), str(tmp_path / "out"), runner="ray")


def test_ray_address_of_something_else_times_out(tmp_path):
  """A port that accepts connections but is no Ray head: ray.init would retry for minutes."""
  import socket
  import subprocess
  import sys
  import time
  from conftest import REPO
  (tmp_path / "a.txt").write_text("some text " * 20)
  with socket.socket() as listener:
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    address = f"127.0.0.1:{listener.getsockname()[1]}"
    start = time.time()
    run = subprocess.run([sys.executable, os.path.join(REPO, "scripts", "prepare_data.py"), f"--inputs={tmp_path}",
                          f"--output={tmp_path / 'out'}", "--runner=ray", f"--ray_address={address}",
                          "--ray_timeout_s=3"], capture_output=True, text=True, timeout=120)
  assert run.returncode == 1, run.stderr[-2000:]
  assert f"error: --ray_address={address}: no Ray cluster answered within 3 s" in run.stderr
  assert time.time() - start < 60 and not os.path.exists(tmp_path / "out")


def test_ray_address_that_does_not_answer(tmp_path):
  from data import prep_ray
  with pytest.raises(UserError, match=r"--ray_address=127.0.0.1:1: no Ray cluster answered within 2 s"):
    prep_ray._probe("127.0.0.1:1", 2.0)
  with pytest.raises(UserError, match=r"expected HOST:PORT, ray://HOST:PORT or 'auto'"):
    prep_ray._probe("head-node", 2.0)
  with pytest.raises(UserError, match=r"--ray_address=\[::1\]:1: no Ray cluster answered"):
    prep_ray._probe("[::1]:1", 2.0)
  with pytest.raises(UserError, match=r"--runner='spark': expected one of local, ray"):
    prepare.prepare(_cfg_for(str(tmp_path)), str(tmp_path / "out"), runner="spark")


def test_existing_output(planted):
  assert prepare.prepare(planted["cfg"], planted["out"])["inputs_sha256"] == planted["meta"]["inputs_sha256"]
  other = planted["cfg"].copy_and_resolve_references()
  other.near_dedup.threshold = 0.9
  with pytest.raises(UserError, match="already holds a different dataset"):
    prepare.prepare(other, planted["out"])


def _cfg_for(inputs: str, **kw):
  cfg = stdlib_data_config()
  with cfg.sources.unlocked():
    del cfg.sources["stdlib"]
  prepare_config.add_source(cfg, "in", inputs, kw.pop("text_field", "text"))
  cfg.quality.min_chars = 10
  cfg.tokenizer.vocab_size = 512
  cfg.near_dedup.enabled = False
  cfg.split.val_fraction = cfg.split.test_fraction = 0.25
  for k, v in kw.items():
    section, key = k.split("__")
    cfg[section][key] = v
  return cfg


def _docs(n=40):
  return [open(f, encoding="utf-8").read() for f in _base_files(n)]


def test_jsonl_gz_zst_and_parquet_inputs(tmp_path):
  import pyarrow as pa
  import pyarrow.parquet as pq
  import zstandard
  docs = _docs(30)
  lines = "".join(json.dumps({"body": d}) + "\n" for d in docs[:10]).encode()
  (tmp_path / "a.jsonl.gz").write_bytes(gzip.compress(lines))
  (tmp_path / "b.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(
      "".join(json.dumps({"body": d}) + "\n" for d in docs[10:20]).encode()))
  pq.write_table(pa.table({"body": docs[20:30]}), tmp_path / "c.parquet")
  meta = prepare.prepare(_cfg_for(str(tmp_path), text_field="body"), str(tmp_path / "out"))
  stats = json.load(open(tmp_path / "out" / "stats.json"))
  assert stats["read"]["docs_in"] == 30
  with gzip.open(tmp_path / "out" / "removed.jsonl.gz", "rt") as f:
    removed = [json.loads(l)["id"] for l in f]
  assert sum(s["num_docs"] for s in meta["splits"].values()) + len(removed) == 30
  assert {r.split(":")[1] for r in removed} <= {"a.jsonl.gz", "b.jsonl.zst", "c.parquet"}


def test_bad_jsonl_names_file_and_line(tmp_path):
  (tmp_path / "d.jsonl").write_text(json.dumps({"text": "x" * 50}) + "\n{not json\n")
  with pytest.raises(UserError, match=r"d.jsonl:2: not valid JSON"):
    prepare.prepare(_cfg_for(str(tmp_path / "d.jsonl")), str(tmp_path / "out"))
  (tmp_path / "e.jsonl").write_text(json.dumps({"body": "x" * 50}) + "\n")
  with pytest.raises(UserError, match=r"e.jsonl:1: no string field 'text'"):
    prepare.prepare(_cfg_for(str(tmp_path / "e.jsonl")), str(tmp_path / "out2"))
  assert not os.path.exists(tmp_path / "out") and not os.path.exists(tmp_path / "out2")


def test_non_utf8_fails_or_is_skipped_and_counted(tmp_path):
  src = tmp_path / "src"
  src.mkdir()
  for i, d in enumerate(_docs(20)):
    (src / f"{i}.txt").write_text(d)
  (src / "bad.txt").write_bytes(b"caf\xe9 latin-1 text " * 20)
  with pytest.raises(UserError, match=r"bad.txt: not valid UTF-8"):
    prepare.prepare(_cfg_for(str(src)), str(tmp_path / "out"))
  assert not any(p.name.startswith(".tmp") for p in tmp_path.iterdir())
  prepare.prepare(_cfg_for(str(src), read__on_decode_error="skip"), str(tmp_path / "out"))
  stats = json.load(open(tmp_path / "out" / "stats.json"))
  assert stats["read"]["counts"]["skipped_not_utf8"] == 1


def test_empty_result_is_an_error_and_leaves_nothing(tmp_path):
  (tmp_path / "tiny.txt").write_text("too short")
  with pytest.raises(UserError, match="no documents left after the quality filters"):
    prepare.prepare(_cfg_for(str(tmp_path / "tiny.txt")), str(tmp_path / "out"))
  assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.txt"]


def test_decontamination_drops_documents_sharing_eval_ngrams(tmp_path):
  docs = _docs(30)
  src = tmp_path / "src"
  src.mkdir()
  for i, d in enumerate(docs):
    (src / f"{i:02d}.txt").write_text(d)
  words = docs[7].split()
  (tmp_path / "eval.jsonl").write_text(json.dumps({"text": " ".join(words[100:130])}) + "\n")
  prepare.prepare(_cfg_for(str(src), decontam__eval_sets=str(tmp_path / "eval.jsonl")), str(tmp_path / "out"))
  with gzip.open(tmp_path / "out" / "removed.jsonl.gz", "rt") as f:
    removed = [json.loads(l) for l in f]
  assert {"id": "in:07.txt", "stage": "decontam", "reason": "eval_ngram_overlap"} in removed
  assert sum(r["stage"] == "decontam" for r in removed) == 1


def test_existing_tokenizer_and_hf_tokenizer_json(tmp_path, dataset_dir):
  from tokenizers import Tokenizer, models, pre_tokenizers, trainers
  src = tmp_path / "src"
  src.mkdir()
  for i, d in enumerate(_docs(20)):
    (src / f"{i}.txt").write_text(d)
  meta = prepare.prepare(_cfg_for(str(src), tokenizer__path=os.path.join(dataset_dir, "tokenizer.model")),
                         str(tmp_path / "sp"))
  assert meta["vocab_size"] == 512 and meta["tokenizer_kind"] == "sentencepiece"
  hf = Tokenizer(models.BPE(unk_token="[UNK]"))
  hf.pre_tokenizer = pre_tokenizers.ByteLevel()
  hf.train_from_iterator(_docs(20), trainers.BpeTrainer(vocab_size=400, special_tokens=["[UNK]", "<s>", "</s>"]))
  hf.save(str(tmp_path / "tokenizer.json"))
  meta = prepare.prepare(_cfg_for(str(src), tokenizer__path=str(tmp_path / "tokenizer.json")), str(tmp_path / "hf"))
  assert meta["tokenizer_kind"] == "hf" and meta["bos_id"] == 1 and meta["eos_id"] == 2
  assert 1.0 < meta["splits"]["train"]["bytes_per_token"] < 20


def test_cli_prepares_and_rejects_bad_overrides(tmp_path):
  import subprocess
  import sys
  from conftest import REPO
  src = tmp_path / "src"
  src.mkdir()
  for i, d in enumerate(_docs(20)):
    (src / f"{i}.txt").write_text(d)
  script = os.path.join(REPO, "scripts", "prepare_data.py")
  base = [sys.executable, script, f"--output={tmp_path / 'out'}", f"--inputs={src}"]
  bad = subprocess.run(base + ["--config.near_dedup.treshold=0.5"], capture_output=True, text=True, timeout=120)
  assert bad.returncode == 1 and "Traceback" not in bad.stderr
  assert "unknown config key config.near_dedup.treshold" in bad.stderr and "threshold" in bad.stderr
  ok = subprocess.run(base + ["--config.tokenizer.vocab_size=512", "--config.quality.min_chars=10",
                              "--config.split.val_fraction=0.2", "--config.split.test_fraction=0.2"],
                      capture_output=True, text=True, timeout=300)
  assert ok.returncode == 0, ok.stderr[-2000:]
  assert "tokens/word" in ok.stdout and os.path.exists(tmp_path / "out" / "report.md")
