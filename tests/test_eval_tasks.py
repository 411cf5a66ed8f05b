"""Task specs (evals/tasks.py), the task types and the runner, end to end on a tiny real model.

The model is random, so end-to-end tests check that each metric is what its
definition gives on the model's own scores (recomputed here from
LanguageModel calls), not that it is good.
"""

import dataclasses
import json
import math
import os
import subprocess
import sys

import pytest
import yaml

from data import tokenizer as tokenizer_lib
from errors import UserError
from evals import metrics, runner, task_classification
from evals import tasks as tasks_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SENTIMENT = [
    {"text": "Great value, works perfectly.", "label": "positive"},
    {"text": "Broke after a day.", "label": "negative"},
    {"text": "I love it.", "label": "positive"},
    {"text": "Awful smell and loud.", "label": "negative"},
    {"text": "Five stars, would buy again.", "label": "positive"},
]
LABELS = {"positive": " positive", "negative": " negative"}
LABELS_ORDER = list(LABELS)


def write_task(directory, name: str, spec: dict, rows: list, suffix: str = ".yaml") -> str:
  """Writes NAME.jsonl (rows: dicts, or raw strings for broken lines) and the spec; returns the spec path."""
  with open(os.path.join(directory, f"{name}.jsonl"), "w") as f:
    for row in rows:
      f.write((row if isinstance(row, str) else json.dumps(row)) + "\n")
  path = os.path.join(directory, name + suffix)
  with open(path, "w") as f:
    if suffix == ".json":
      json.dump({"data": f"{name}.jsonl", **spec}, f, indent=1)
    else:
      yaml.safe_dump({"data": f"{name}.jsonl", **spec}, f, sort_keys=False)
  return path


def sentiment_spec(**extra) -> dict:
  return {"type": "classification", "prompt": "Review: {text}\nSentiment:", "labels": LABELS, **extra}


# ---------------------------------------------------------------- validation (no model)


def test_label_outside_the_label_set_names_file_and_line(tmp_path):
  rows = SENTIMENT[:3] + ["", {"text": "Meh.", "label": "maybe"}]  # a blank line still counts
  write_task(tmp_path, "x", sentiment_spec(), rows)
  with pytest.raises(UserError) as e:
    tasks_lib.load(str(tmp_path / "x.yaml"))
  assert str(e.value) == f"{tmp_path}/x.jsonl:5: label 'maybe' is not in labels ['positive', 'negative']"


def test_missing_field_names_file_and_line(tmp_path):
  rows = [{"question": "1+1?", "choices": ["1", "2"], "answer": 1},
          {"question": "2+2?", "choices": ["4", "5"], "answer": "4"},
          {"question": "3+3?", "answer": 0}]
  write_task(tmp_path, "mc", {"type": "multiple_choice"}, rows)
  with pytest.raises(UserError, match=rf"^{tmp_path}/mc.jsonl:3: missing field 'choices'$"):
    tasks_lib.load(str(tmp_path / "mc.yaml"))
  # A field the prompt template needs is checked at load too.
  write_task(tmp_path, "gen", {"type": "generation", "prompt": "Q: {question}\nA:"},
             [{"question": "hi", "reference": "there"}, {"reference": "x"}])
  with pytest.raises(UserError, match=rf"^{tmp_path}/gen.jsonl:2: missing field 'question' used by the prompt"):
    tasks_lib.load(str(tmp_path / "gen.yaml"))


def test_broken_json_line_names_file_and_line(tmp_path):
  write_task(tmp_path, "x", sentiment_spec(), SENTIMENT[:2] + ['{"text": "oops", "label": '])
  with pytest.raises(UserError, match=rf"^{tmp_path}/x.jsonl:3: not valid JSON"):
    tasks_lib.load(str(tmp_path / "x.yaml"))


def test_spec_errors_name_file_line_and_field(tmp_path):
  path = write_task(tmp_path, "x", sentiment_spec(num_fewshots=2), SENTIMENT)  # misspelt key
  with pytest.raises(UserError, match=r"x.yaml:\d+: field 'num_fewshots' is not a classification task field"):
    tasks_lib.load(path)
  path = write_task(tmp_path, "y", sentiment_spec(scoring="vote"), SENTIMENT, suffix=".json")
  with pytest.raises(UserError, match=r"y.json:\d+: field 'scoring' must be one of \['loglikelihood', 'generate'\]"):
    tasks_lib.load(path)
  with open(tmp_path / "z.yaml", "w") as f:
    f.write("type: classification\nlabels: {a: ' a'\n")
  with pytest.raises(UserError, match=r"z.yaml:\d+: not valid YAML"):
    tasks_lib.load(str(tmp_path / "z.yaml"))
  with pytest.raises(UserError, match="unknown task 'no_such_task'.*sentiment"):
    tasks_lib.load("no_such_task")


def test_shipped_tasks_load():
  names = tasks_lib.available()
  assert {"sentiment", "stdlib_docs_ppl", "stdlib_modules", "stdlib_signatures", "stdlib_docstrings"} <= set(names)
  loaded = {t.name: t for t in runner.load_tasks(names)}
  # Retrieval tasks name an index that users build (tests/test_rag.py makes and scores one).
  assert {t.type for t in loaded.values()} == set(runner.RUNNERS) - runner.MODEL_FREE
  for task in loaded.values():
    assert 12 <= len(task.examples) <= 100
    assert os.path.getsize(task.data_path) < 100_000


def test_fewshot_prompts_are_deterministic_and_exclude_the_example(tmp_path):
  rows = [{"text": f"review {i}", "label": LABELS_ORDER[i % 2]} for i in range(8)]
  rows.append(dict(rows[0]))  # a duplicate of example 0 must not be its shot either
  task = tasks_lib.load(write_task(tmp_path, "x", sentiment_spec(num_fewshot=3, fewshot_separator="\n##\n"), rows))
  shot = lambda ex: f"Review: {ex['text']}\nSentiment:{LABELS[ex['label']]}"  # noqa: E731
  for i, example in enumerate(task.examples):
    shots = tasks_lib.fewshot_examples(task, i)
    assert len(shots) == 3 and example not in shots
    prefix = tasks_lib.fewshot_prefix(task, i, shot)
    assert prefix == "".join(shot(s) + "\n##\n" for s in shots)
    assert tasks_lib.fewshot_prefix(tasks_lib.load(task.path), i, shot) == prefix  # same on reload
  assert len({tasks_lib.fewshot_prefix(task, i, shot) for i in range(len(rows))}) > 1  # seeded per example
  # The classification context is the shots, then the example's prompt.
  contexts = task_classification.contexts(task, task.examples)
  assert contexts[2] == tasks_lib.fewshot_prefix(task, 2, shot) + "Review: review 2\nSentiment:"

  # Shots from fewshot_data; a copy of the scored example there is skipped.
  with open(tmp_path / "shots.jsonl", "w") as f:
    for row in [rows[0], {"text": "shot a", "label": "positive"}, {"text": "shot b", "label": "negative"}]:
      f.write(json.dumps(row) + "\n")
  task = tasks_lib.load(write_task(tmp_path, "y", sentiment_spec(num_fewshot=2, fewshot_data="shots.jsonl"), rows))
  assert sorted(s["text"] for s in tasks_lib.fewshot_examples(task, 0)) == ["shot a", "shot b"]
  # Too few shots for num_fewshot fails at load.
  with pytest.raises(UserError, match="num_fewshot 4 needs that many examples besides the one scored, but the "
                     "few-shot pool has 3"):
    tasks_lib.load(write_task(tmp_path, "z", sentiment_spec(num_fewshot=4, fewshot_data="shots.jsonl"), rows))



# ---------------------------------------------------------------- end to end on a tiny model


@pytest.fixture(scope="module")
def lm(tiny_hf_base):
  from evals.lm import LanguageModel
  return LanguageModel.load(hf_dir=tiny_hf_base, batch_size=8)


def argmax(values):
  return max(range(len(values)), key=values.__getitem__)


def test_classification_loglikelihood(tmp_path, lm):
  path = write_task(tmp_path, "sentiment", sentiment_spec(num_fewshot=1), SENTIMENT)
  results = runner.run_tasks(lm, [path], limit=100)
  result = results["tasks"]["sentiment"]
  assert result["notes"] == ["limit 100 > 5 examples in sentiment; using all 5"]
  out = result["metrics"]
  # Recompute the predictions from LanguageModel.loglikelihood directly.
  task = tasks_lib.load(path)
  contexts = task_classification.contexts(task, task.examples)
  preds = []
  for context in contexts:
    lls = [ll for ll, _ in lm.loglikelihood([lm.encode_pair(context, v) for v in LABELS.values()])]
    preds.append(LABELS_ORDER[argmax(lls)])
  gold = [r["label"] for r in SENTIMENT]
  assert out["accuracy"] == pytest.approx(sum(p == g for p, g in zip(preds, gold)) / len(gold))
  assert [d["pred"] for d in result["details"]] == preds
  assert sum(map(sum, out["confusion_matrix"])) == len(SENTIMENT)
  assert out["confusion_matrix_columns"] == LABELS_ORDER
  assert [out["per_class"][x]["support"] for x in LABELS_ORDER] == [3, 2]
  assert out == {**metrics.classification(gold, preds, LABELS_ORDER), "examples": 5}
  table = runner.format_table(results)
  assert "accuracy" in table and "f1[negative]" in table


def test_classification_generate(tmp_path, lm):
  path = write_task(tmp_path, "gen", sentiment_spec(scoring="generate", max_new_tokens=3), SENTIMENT[:3])
  result = runner.run_tasks(lm, [path], limit=None)["tasks"]["gen"]
  out, details = result["metrics"], result["details"]
  preds = [task_classification.parse(d["output"], LABELS) for d in details]
  assert preds == [d["pred"] for d in details]
  assert out["unparsed"] == preds.count(task_classification.UNPARSED)
  assert out["accuracy"] == sum(p == r["label"] for p, r in zip(preds, SENTIMENT)) / 3
  assert sum(map(sum, out["confusion_matrix"])) == 3
  assert all("\n" not in d["output"] for d in details)  # stops at a newline
  assert task_classification.parse(" Positive!", LABELS) == "positive"
  assert task_classification.parse("neutral", LABELS) == task_classification.UNPARSED


def test_unrepresentable_verbalization_is_a_clear_error(tmp_path, lm):
  # Our tokenizers fall back to bytes, so any text is representable; one
  # trained without byte fallback turns unseen characters into <unk>.
  lines = tmp_path / "lines.txt"
  lines.write_text("\n".join(["the positive review", "a negative one", "positive or negative"] * 20))
  no_fallback = tokenizer_lib.load(tokenizer_lib.train_sentencepiece(str(lines), str(tmp_path / "sp"), 40,
                                                                     byte_fallback=False))
  labels = {"positive": " positive", "odd": " \u00df\u00f8"}
  path = write_task(tmp_path, "bad", sentiment_spec(labels=labels), [{"text": "x", "label": "odd"}])
  runner.load_tasks([path])  # the spec itself is fine
  with pytest.raises(UserError, match=r"bad.yaml: the verbalization ' \u00df\u00f8' of label 'odd' cannot be "
                                      r"represented .*unknown token"):
    runner.run_tasks(dataclasses.replace(lm, tokenizer=no_fallback), [path])



def test_multiple_choice_acc_norm_uses_bytes(tmp_path, lm):
  rows = [{"question": "Which is a fruit?", "choices": ["apple", "épée", "naïve café"], "answer": 0},
          {"question": "2+2?", "choices": ["4", "four", "ünf"], "answer": "four"},
          {"question": "Color of the sky?", "choices": ["blue", "grün"], "answer": 1}]
  path = write_task(tmp_path, "mc", {"type": "multiple_choice"}, rows)
  result = runner.run_tasks(lm, [path])["tasks"]["mc"]
  acc = acc_norm = 0
  for row, detail in zip(rows, result["details"]):
    context = f"Question: {row['question']}\nAnswer:"
    lls = [ll for ll, _ in lm.loglikelihood([lm.encode_pair(context, " " + c) for c in row["choices"]])]
    assert detail["loglikelihoods"] == pytest.approx(lls, rel=1e-5)
    answer = row["answer"] if isinstance(row["answer"], int) else row["choices"].index(row["answer"])
    acc += argmax(lls) == answer
    acc_norm += argmax([ll / len((" " + c).encode()) for ll, c in zip(lls, row["choices"])]) == answer
  assert result["metrics"]["acc"] == acc / 3
  assert result["metrics"]["acc_norm"] == acc_norm / 3


def test_generation_metrics(tmp_path, lm):
  rows = [{"prompt": "def add(", "reference": "a, b):"},
          {"prompt": "import", "references": [" os", "sys"]},
          {"prompt": "class", "reference": "Foo:"}]
  path = write_task(tmp_path, "gen", {"type": "generation", "max_new_tokens": 6, "stop": ["\n", ":"]}, rows)
  result = runner.run_tasks(lm, [path])["tasks"]["gen"]
  outputs = lm.generate([lm.encode(r["prompt"], add_bos=True) for r in rows], 6, stop=["\n", ":"])
  predictions = [o.strip() for o in outputs]
  references = [[r["reference"]] if "reference" in r else r["references"] for r in rows]
  assert [d["prediction"] for d in result["details"]] == predictions
  out = result["metrics"]
  assert out["exact_match"] == sum(metrics.exact_match(p, r) for p, r in zip(predictions, references)) / 3
  assert out["f1"] == sum(metrics.token_f1(p, r) for p, r in zip(predictions, references)) / 3
  assert out["bleu"] == metrics.bleu(predictions, references)
  assert {k: out[k] for k in metrics.ROUGE_TYPES} == metrics.rouge(predictions, references)


def test_ranking(tmp_path, lm):
  rows = [{"query": "def add(a, b):", "candidates": ["    return a + b", "    import os", "pass"], "relevant": [0]},
          {"query": "import", "candidates": [{"id": "os", "text": " os"}, {"id": "re", "text": " re"}],
           "relevant": ["re", "os"]}]
  path = write_task(tmp_path, "rank", {"type": "ranking", "normalize": True, "k": [1, 2]}, rows)
  result = runner.run_tasks(lm, [path])["tasks"]["rank"]
  rankings, relevant = [], []
  for row in rows:
    pairs = [lm.encode_pair(row["query"] + "\n", c if isinstance(c, str) else c["text"]) for c in row["candidates"]]
    scores = [ll / len(cont) for (ll, _), (_, cont) in zip(lm.loglikelihood(pairs), pairs)]
    ids = [i if isinstance(c, str) else c["id"] for i, c in enumerate(row["candidates"])]
    rankings.append([ids[j] for j in sorted(range(len(ids)), key=lambda j: -scores[j])])
    relevant.append(row["relevant"])
  assert [d["ranking"] for d in result["details"]] == rankings
  assert result["metrics"]["mrr"] == pytest.approx(metrics.ranking(rankings, relevant, [1, 2])["mrr"])
  assert result["metrics"]["recall@2"] == 1.0  # every candidate of the second query is in its top 2


def check_perplexity(out: dict, texts: list[str], lm):
  assert out["perplexity"] == pytest.approx(math.exp(out["loss"]))
  assert out["bytes"] == sum(len(t.encode()) for t in texts)
  assert out["tokens"] == sum(len(lm.encode(t)) for t in texts)
  nll = out["loss"] * out["tokens"]
  assert out["bits_per_byte"] == pytest.approx(nll / math.log(2) / out["bytes"])


def test_perplexity_text_file_with_windows(tmp_path, lm):
  paragraphs = ["def f(x):\n  return x + 1", "\n".join(["import os", "print(os.getcwd())"] * 6), "class A:\n  pass"]
  (tmp_path / "docs.txt").write_text("\n\n".join(paragraphs) + "\n")
  with open(tmp_path / "ppl.yaml", "w") as f:
    yaml.safe_dump({"type": "perplexity", "data": "docs.txt", "documents": "blank_line", "window": 16,
                    "stride": 8}, f)
  result = runner.run_tasks(lm, [str(tmp_path / "ppl.yaml")], limit=2)["tasks"]["ppl"]
  check_perplexity(result["metrics"], paragraphs[:2], lm)
  # Sliding windows still score every token once, the same as lm.rolling_loglikelihood gives.
  want = lm.rolling_loglikelihood([lm.encode(t) for t in paragraphs[:2]], 16, 8)
  assert result["metrics"]["loss"] == pytest.approx(-sum(ll for ll, _ in want) / sum(n for _, n in want))


def test_perplexity_dataset_split(tmp_path, lm, dataset_dir):
  from data import shards
  with open(tmp_path / "val.yaml", "w") as f:
    yaml.safe_dump({"type": "perplexity", "dataset": dataset_dir, "split": "val", "window": 64}, f)
  out = runner.run_tasks(lm, [str(tmp_path / "val.yaml")], limit=2)["tasks"]["val"]["metrics"]
  source, lengths = shards.open_split(dataset_dir, "val")
  assert out["documents"] == 2 and out["tokens"] == int(lengths[:2].sum())  # the stored ids, as they are
  texts = [lm.decode(shards.decode_record(source[i], False)[0].tolist()) for i in range(2)]
  assert out["bytes"] == sum(len(t.encode()) for t in texts)
  assert out["perplexity"] == pytest.approx(math.exp(out["loss"]))


def test_cli_writes_json_and_table(tmp_path, tiny_hf_base):
  path = write_task(tmp_path, "sentiment", sentiment_spec(), SENTIMENT[:2])
  output = tmp_path / "out" / "results.json"
  proc = subprocess.run([sys.executable, os.path.join(REPO, "scripts", "evaluate.py"), f"--hf_dir={tiny_hf_base}",
                         f"--tasks={path}", "--limit=5", f"--output={output}"],
                        capture_output=True, text=True, cwd=tmp_path, env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert proc.returncode == 0, proc.stderr
  assert "note: limit 5 > 2 examples in sentiment; using all 2" in proc.stdout
  assert "accuracy" in proc.stdout
  saved = json.loads(output.read_text())
  assert saved["tasks"]["sentiment"]["metrics"]["examples"] == 2
  assert saved["model"]["hf_dir"] == tiny_hf_base
  assert os.listdir(output.parent) == ["results.json"]  # no temp file left behind
  proc = subprocess.run([sys.executable, os.path.join(REPO, "scripts", "evaluate.py"), f"--hf_dir={tiny_hf_base}",
                         "--tasks=no_such_task"], capture_output=True, text=True, cwd=tmp_path)
  assert proc.returncode == 1 and proc.stderr.startswith("error: unknown task 'no_such_task'")
