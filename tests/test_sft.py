"""Supervised fine-tuning: chat data preparation, whole-example packing, masked loss, early stopping."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import read_metrics, sft_config
from data import pipeline, sft, shards
from data import tokenizer as tokenizer_lib
from data.packing import PackedRows
from errors import UserError
from trainer import loop
from trainer.objectives import cross_entropy_sums, next_token_targets
from trainer.objectives.causal_lm import CausalLM

ONE_DEVICE = {"mesh.data": 1, "mesh.fsdp": 1}
GOOD = [
    {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a prime."},
                  {"role": "assistant", "content": "Seven."}]},
    {"prompt": "Two plus two?", "completion": "Four."},
    {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello there."},
                  {"role": "user", "content": "Bye"}, {"role": "assistant", "content": "Goodbye."}]},
]


def _write(path, rows):
  with open(path, "w") as f:
    for row in rows:
      f.write(row if isinstance(row, str) else json.dumps(row))
      f.write("\n")
  return str(path)


def test_prepare_masks_assistant_turns_only(tiny_hf_base, tmp_path):
  data = _write(tmp_path / "chat.jsonl", GOOD * 4)
  out = str(tmp_path / "out")
  meta = sft.prepare_sft([data], tiny_hf_base, out, sft.SftOptions(val_fraction=0.25))
  assert meta["counts"] == {"lines": 12, "examples": 12}
  assert {s: v["num_docs"] for s, v in meta["splits"].items()} == {"train": 9, "val": 3}
  tok = tokenizer_lib.load_dir(tiny_hf_base)
  source, _ = shards.open_split(out, "train")
  replies = set()
  for raw in source:
    ids, mask = shards.decode_record(raw, has_mask=True)
    assert ids[0] == tok.bos_id  # the built-in template starts with the model's BOS
    replies.add(tok.decode([int(i) for i, m in zip(ids, mask) if m]))
  assert replies == {"Seven.<|im_end|>\n", "Four.<|im_end|>\n", "Hello there.<|im_end|>\nGoodbye.<|im_end|>\n"}


def test_overlong_examples_are_truncated_or_dropped_and_counted(tiny_hf_base, tmp_path):
  sft.prepare_sft([_write(tmp_path / "good.jsonl", GOOD * 2)], tiny_hf_base, str(tmp_path / "g"))
  longest = int(max(shards.open_split(str(tmp_path / "g"), s)[1].max() for s in sft.SPLITS))
  data = _write(tmp_path / "chat.jsonl", GOOD * 2 + [{"prompt": "Repeat.", "completion": "word " * 200}])
  meta = sft.prepare_sft([data], tiny_hf_base, str(tmp_path / "t"), sft.SftOptions(max_len=longest))
  assert meta["counts"]["truncated"] == 1 and meta["counts"]["examples"] == 7
  assert max(shards.open_split(str(tmp_path / "t"), s)[1].max() for s in sft.SPLITS) == longest
  meta = sft.prepare_sft([data], tiny_hf_base, str(tmp_path / "d"), sft.SftOptions(max_len=longest, overlong="drop"))
  assert meta["counts"]["dropped_overlong"] == 1 and meta["counts"]["examples"] == 6


@pytest.mark.parametrize("bad,message", [
    ('{"messages": [{"role": "wizard", "content": "x"}]}', "chat.jsonl:3: message 0 has role 'wizard'"),
    ('{"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": ""}]}',
     "chat.jsonl:3: message 1 is an empty assistant turn"),
    ('{"prompt": "no completion"}', "chat.jsonl:3: 'prompt' and a non-empty 'completion'"),
    ('{"text": "plain"}', "chat.jsonl:3: expected 'messages' or 'prompt'/'completion'"),
    ('{"messages": [', "chat.jsonl:3: not valid JSON"),
])
def test_bad_lines_error_with_line_number_or_are_skipped(tiny_hf_base, tmp_path, bad, message):
  data = _write(tmp_path / "chat.jsonl", GOOD[:2] + [bad] + GOOD)
  with pytest.raises(UserError, match=message.replace("[", r"\[")):
    sft.prepare_sft([data], tiny_hf_base, str(tmp_path / "out"))
  assert not os.path.exists(tmp_path / "out")  # nothing half-written
  meta = sft.prepare_sft([data], tiny_hf_base, str(tmp_path / "out"), sft.SftOptions(bad_lines="skip"))
  assert meta["counts"]["skipped_bad_line"] == 1 and meta["counts"]["examples"] == 5
  assert message.split(": ", 1)[1][:12] in meta["skipped_examples"][0]


class _Source:
  def __init__(self, docs):
    self.docs = [np.asarray(d, np.int32).tobytes() + np.asarray(m, np.uint8).tobytes() for d, m in docs]

  def __getitem__(self, i):
    return self.docs[i]


def test_whole_packing_keeps_every_example_intact_once_per_epoch():
  rng = np.random.default_rng(0)
  docs = [(rng.integers(3, 500, n), rng.integers(0, 2, n)) for n in rng.integers(2, 30, 40)]
  docs.append((np.arange(3, 50), np.ones(47)))  # longer than a row: truncated
  rows = PackedRows(_Source(docs), [len(d) for d, _ in docs], seq_len=32, seed=1, shuffle=True,
                    bos_id=None, eos_id=None, has_mask=True, packing="whole")
  assert rows.truncated_docs == 1
  start = 0
  for epoch in range(2):
    seen, stop = [], start + rows._rows_in_epoch(epoch)
    for g in range(start, stop):
      row = rows[g]
      for s in range(1, row["segment_ids"].max() + 1):
        at = row["segment_ids"] == s
        assert np.array_equal(row["positions"][at], np.arange(at.sum()))  # positions restart per example
        seen.append((tuple(row["tokens"][at]), tuple(row["loss_mask"][at])))
      assert (row["loss_mask"][row["segment_ids"] == 0] == 0).all()  # padding never carries loss
    want = sorted((tuple(d[:32]), tuple(m[:32].astype(np.int32))) for d, m in docs)
    assert sorted(seen) == want
    start = stop


def test_masked_tokens_get_zero_gradient(chat_dataset):
  """On a real SFT batch, the loss gradient vanishes at every position whose target is a
  prompt (masked) token, and not at assistant targets."""
  cfg = sft_config("", chat_dataset).data
  batch = next(pipeline.train_iterator(cfg, 128, 4, 0, 4, seed=0))
  batch = {k: jnp.asarray(batch[k]) for k in CausalLM.batch_fields}
  logits = jax.random.normal(jax.random.key(0), batch["tokens"].shape + (512,))
  targets, weights = next_token_targets(batch)
  grad = jax.grad(lambda lg: cross_entropy_sums(lg, targets, weights)[0])(logits)
  per_position = np.abs(np.asarray(grad)).sum(-1)
  assistant_target = np.pad(np.asarray(batch["loss_mask"])[:, 1:], ((0, 0), (0, 1))).astype(bool)
  same_example = np.asarray(weights) > 0
  assert (per_position[~assistant_target] == 0).all()
  assert (per_position[same_example] > 0).all() and same_example.sum() == (assistant_target & same_example).sum()
  assert 0 < same_example.sum() < (np.asarray(batch["segment_ids"]) > 0).sum() / 2  # prompts are most tokens


def test_sft_lowers_val_loss_and_keeps_the_best(tiny_hf_base, chat_dataset, tmp_path):
  workdir = str(tmp_path / "sft")
  cfg = sft_config(tiny_hf_base, chat_dataset, **ONE_DEVICE, **{
      "train.steps": 30, "eval.every_steps": 10, "eval.at_start": True, "checkpoint.keep_best": True})
  loop.run(cfg, workdir, devices=jax.devices()[:1])
  val = {s: r["loss"] for s, r in read_metrics(workdir, "val").items()}
  assert sorted(val) == [0, 10, 20, 30]
  assert val[30] < val[0] - 0.5, val
  with open(os.path.join(workdir, "best.json")) as f:
    best = json.load(f)
  assert best["step"] == min(val, key=val.get) and best["value"] == pytest.approx(min(val.values()))
  assert os.listdir(os.path.join(workdir, "best")) == [str(best["step"])]


def test_task_metric_drives_early_stopping(tiny_hf_base, chat_dataset, tmp_path):
  """config.eval.tasks runs at every evaluation and logs under task/NAME; with a zero learning rate
  the task's accuracy never improves, so best_metric on it stops the run `patience` evals later."""
  import yaml

  from evals import in_training
  spec = tmp_path / "yesno.yaml"
  rows = [{"text": t, "label": l} for t, l in [("Is 7 prime?", "yes"), ("Is 8 prime?", "no"), ("Is 2 even?", "yes")]]
  (tmp_path / "yesno.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
  spec.write_text(yaml.safe_dump({"type": "classification", "data": "yesno.jsonl", "prompt": "{text}",
                                  "labels": {"yes": " Yes", "no": " No"}}))
  workdir = str(tmp_path / "stall")
  cfg = sft_config(tiny_hf_base, chat_dataset, **ONE_DEVICE, **{
      "train.steps": 20, "eval.every_steps": 2, "eval.at_start": True, "eval.patience": 2,
      "eval.tasks": str(spec), "eval.best_metric": "task/yesno/accuracy", "eval.best_mode": "max",
      "optimizer.learning_rate": 0.0})
  summary = loop.run(cfg, workdir, devices=jax.devices()[:1], task_evaluator=in_training.TaskEvaluator)
  assert summary["early_stopped"] and summary["step"] == 4
  assert summary["best"]["step"] == 0 and summary["best"]["metric"] == "task/yesno/accuracy"
  tasks = read_metrics(workdir, "task/yesno")
  assert sorted(tasks) == [0, 2, 4] and {"accuracy", "macro_f1", "f1[yes]"} <= set(tasks[0])
  assert len({r["accuracy"] for r in tasks.values()}) == 1  # the parameters never change
  assert sorted(read_metrics(workdir, "val")) == [0, 2, 4]
  cfg.eval.best_metric = "task/other/accuracy"
  with pytest.raises(UserError, match="names a task that config.eval.tasks"):
    loop.run(cfg, str(tmp_path / "bad"), devices=jax.devices()[:1], task_evaluator=in_training.TaskEvaluator)