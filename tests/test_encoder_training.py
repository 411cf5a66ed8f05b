"""Masked-LM and classifier training: one device vs data x FSDP x tensor, and exact resume.

For each objective, the same tiny encoder trains on one device and straight on
data=2 x fsdp=2 x tensor=2, saving a checkpoint (state and data iterator)
halfway; a copy of the straight run resumes from that checkpoint. Losses agree
across meshes within 1e-4 and the resumed run repeats the straight one within
1e-6: for masked LM that includes the masking draws, which the data pipeline
makes per row.
"""

import json
import os
import shutil

import jax
import pytest

from configs import base
from conftest import apply_overrides, read_metrics, train_losses
from data import corpus, labelled, shards
from trainer import loop

MESH = dict(data=2, fsdp=2, tensor=2)
STEPS, STOP = 4, 2
TINY_ENCODER = {"model.family": "encoder", "model.vocab_size": 512, "model.d_model": 32, "model.num_layers": 2,
                "model.num_heads": 4, "model.num_kv_heads": 4, "model.head_dim": 8, "model.mlp_dim": 64,
                "model.max_seq_len": 64, "model.norm": "layernorm", "model.norm_position": "post",
                "model.mlp": "gelu_erf", "model.position": "learned", "model.use_bias": True,
                "model.type_vocab_size": 2}


def _config(data_dir, objective: str, sizes: dict, **overrides):
  c = base.base_config()
  apply_overrides(c, {**TINY_ENCODER, "data.dir": data_dir, "train.objective": objective, "train.steps": STEPS,
                      "train.batch_size": 8, "train.seq_len": 32, "optimizer.learning_rate": 3e-3,
                      "optimizer.warmup_steps": 1, "log.every_steps": 1, "log.tensorboard": False,
                      "eval.at_start": False, "eval.every_steps": STEPS, "eval.steps": 2, "eval.final_split": "",
                      "checkpoint.every_steps": 1000, "checkpoint.async_save": False,
                      **{f"mesh.{k}": v for k, v in sizes.items()}, **overrides})
  return c


@pytest.fixture(scope="module")
def labelled_dir(encoder_dataset_dir, tmp_path_factory):
  """Lines of three standard-library modules, labelled by module, in the encoder's tokenizer."""
  root = tmp_path_factory.mktemp("labelled")
  rows = []
  for path, label in zip(corpus.stdlib_files()[:3], ("a", "b", "c")):
    with open(path, encoding="utf-8") as f:
      lines = [line.strip() for line in f if len(line.strip()) > 20][:40]
    rows += [{"text": line, "label": label} for line in lines]
  (root / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
  out = str(root / "ds")
  labelled.prepare_labelled([str(root / "rows.jsonl")], [], encoder_dataset_dir, out,
                            labelled.LabelledOptions(max_len=32, val_fraction=0.2))
  return out


KINDS = {
    "masked_lm": lambda dirs: (dirs[0], {}),
    "classification": lambda dirs: (dirs[1], {"model.mlm_head": False, "model.num_labels": 3,
                                              "model.pooler": True, "eval.final_split": "val",
                                              "eval.final_steps": 2}),
}


@pytest.fixture(scope="module", params=sorted(KINDS))
def runs(request, encoder_dataset_dir, labelled_dir, tmp_path_factory):
  """{"single", "straight"} workdirs of one objective, and a config maker (checkpoints every STOP steps)."""
  data_dir, extra = KINDS[request.param]((encoder_dataset_dir, labelled_dir))
  make = lambda sizes: _config(data_dir, request.param, sizes, **{"checkpoint.every_steps": STOP, **extra})  # noqa: E731
  root = tmp_path_factory.mktemp(request.param)
  out = {name: str(root / name) for name in ("single", "straight")}
  loop.run(make(dict(data=1, fsdp=1, tensor=1)), out["single"], devices=jax.devices()[:1])
  loop.run(make(MESH), out["straight"])
  return request.param, out, make


def test_mesh_matches_one_device_and_the_model_learns(runs):
  objective, out, _ = runs
  single, straight = train_losses(out["single"]), train_losses(out["straight"])
  assert sorted(single) == sorted(straight) == list(range(1, STEPS + 1))
  for step in single:
    assert straight[step] == pytest.approx(single[step], rel=1e-4), (step, single, straight)
  assert single[STEPS] < single[1]
  val = read_metrics(out["straight"], "val")[STEPS]
  if objective == "classification":  # a classifier's metrics, not a language model's
    assert {"accuracy", "macro_f1", "f1[a]", "recall[c]"} <= set(val) and "perplexity" not in val
  else:
    assert {"loss", "accuracy", "tokens"} <= set(val) and val["tokens"] > 0
  single_val = read_metrics(out["single"], "val")[STEPS]
  for name, value in val.items():
    if isinstance(value, float):
      assert value == pytest.approx(single_val[name], rel=1e-4, abs=1e-6), name


def test_resume_repeats_the_straight_run(runs, tmp_path, capsys):
  _, out, make = runs
  resumed = str(tmp_path / "resumed")
  shutil.copytree(out["straight"], resumed)
  checkpoints = os.path.join(resumed, "checkpoints")
  assert sorted(map(int, os.listdir(checkpoints))) == [STOP, STEPS]
  shutil.rmtree(os.path.join(checkpoints, str(STEPS)))  # as if the run had stopped at STOP
  capsys.readouterr()
  loop.run(make(MESH), resumed)
  assert f"resuming from {checkpoints}/{STOP}" in capsys.readouterr().out
  straight, again = train_losses(out["straight"]), train_losses(resumed)
  assert sorted(again) == list(range(1, STEPS + 1))
  for step in straight:
    assert again[step] == pytest.approx(straight[step], rel=1e-6, abs=1e-6), step


def test_classifier_needs_a_labelled_dataset_and_matching_labels(encoder_dataset_dir, labelled_dir, tmp_path):
  from errors import UserError
  with pytest.raises(UserError, match=r"needs a labelled dataset, but .* has no label set"):
    loop.run(_config(encoder_dataset_dir, "classification", dict(data=1, fsdp=1, tensor=1),
                     **{"model.num_labels": 3, "model.mlm_head": False}), str(tmp_path / "a"), jax.devices()[:1])
  with pytest.raises(UserError, match=r"config.model.num_labels=2, but .* has 3 labels \['a', 'b', 'c'\]"):
    loop.run(_config(labelled_dir, "classification", dict(data=1, fsdp=1, tensor=1),
                     **{"model.num_labels": 2, "model.mlm_head": False}), str(tmp_path / "b"), jax.devices()[:1])
  with pytest.raises(UserError, match=r"config.train.seq_len=16 is shorter than the examples of .* --max_len=32"):
    loop.run(_config(labelled_dir, "classification", dict(data=1, fsdp=1, tensor=1),
                     **{"model.num_labels": 3, "model.mlm_head": False, "train.seq_len": 16}),
             str(tmp_path / "e"), jax.devices()[:1])
  with pytest.raises(UserError, match=r"objective='masked_lm' does not fit config.model.family='decoder'"):
    loop.run(_config(encoder_dataset_dir, "masked_lm", dict(data=1, fsdp=1, tensor=1), **{"model.family": "decoder"}),
             str(tmp_path / "c"), jax.devices()[:1])
  assert shards.load_metadata(labelled_dir)["labels"] == ["a", "b", "c"]
  # A classifier checkpoint whose head has another number of labels than the config asks for.
  import transformers
  hf = transformers.BertForSequenceClassification(transformers.BertConfig(
      vocab_size=512, hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64,
      max_position_embeddings=64, num_labels=2))
  hf.save_pretrained(str(tmp_path / "two_labels"))
  with pytest.raises(UserError, match=r"config.model.num_labels=3, but the classifier in .*two_labels has 2 labels"):
    loop.run(_config(labelled_dir, "classification", dict(data=1, fsdp=1, tensor=1),
                     **{"model.num_labels": 3, "init.hf_dir": str(tmp_path / "two_labels")}),
             str(tmp_path / "d"), jax.devices()[:1])


def test_a_trained_classifier_labels_and_scores_text_on_any_mesh(runs, tmp_path):
  """scripts/classify.py and scripts/evaluate.py --labelled: the same probabilities on one device and
  on 8, metrics as scikit-learn computes them from the predictions, unknown labels named; a run
  that is not a classifier is refused."""
  from errors import UserError
  from evals.lm import LanguageModel
  from trainer.classifier import Classifier
  objective, out, _ = runs
  with pytest.raises(UserError, match="holds a classifier, not a language model" if objective == "classification"
                     else "holds an encoder, not a language model"):
    LanguageModel.load(workdir=out["straight"])  # evaluate.py --tasks, generate.py, the harness
  if objective != "classification":
    with pytest.raises(UserError, match="is not a classifier run"):
      Classifier.load(out["straight"])
    return
  from sklearn.metrics import accuracy_score, f1_score
  rows = [{"text": line, "label": label} for line, label in (
      ("import os, sys and the rest of the modules", "a"), ("def __init__(self, name, value=None):", "b"),
      ("return self._data[key] if key in self else default", "c"), ("class Base(object):", "a"),
      ("raise ValueError('bad value: %r' % (value,))", "b"))]
  path = tmp_path / "test.jsonl"
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))
  one = Classifier.load(out["straight"], batch_size=2)
  many = Classifier.load(out["straight"], mesh_config=MESH, batch_size=3)
  metrics, details = one.evaluate([str(path)])
  np_probs = many.probabilities(labelled.read_examples([str(path)]))
  assert [d["probability"] for d in details] == pytest.approx(np_probs.max(-1).tolist(), abs=1e-5)
  truth = [r["label"] for r in rows]
  predicted = [d["predicted"] for d in details]
  assert metrics["examples"] == 5 and metrics["accuracy"] == pytest.approx(accuracy_score(truth, predicted))
  assert metrics["macro_f1"] == pytest.approx(f1_score(truth, predicted, labels=["a", "b", "c"], average="macro",
                                                       zero_division=0))
  path.write_text(json.dumps({"text": "x", "label": "z"}) + "\n")
  with pytest.raises(UserError, match=r"test.jsonl:1: label 'z' is not in the label set"):
    one.evaluate([str(path)])


def test_a_classifier_run_starts_from_a_bert_model_with_a_fresh_head(labelled_dir, tmp_path):
  """config.init.hf_dir = a BertModel (no classifier): the run loads its weights, reads its pooler, and
  initializes only the head; at learning rate 0 the checkpoint then holds exactly those weights."""
  import numpy as np
  import transformers
  from safetensors.numpy import load_file
  from trainer import export
  hf_dir = str(tmp_path / "bert")
  transformers.BertModel(transformers.BertConfig(
      vocab_size=512, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
      max_position_embeddings=64)).save_pretrained(hf_dir)
  workdir = str(tmp_path / "run")
  loop.run(_config(labelled_dir, "classification", dict(data=1, fsdp=1, tensor=1),
                   **{"init.hf_dir": hf_dir, "model.num_labels": 3, "optimizer.learning_rate": 0.0,
                      "train.steps": 2}), workdir, jax.devices()[:1])
  params = export.restore(workdir).params
  saved = load_file(f"{hf_dir}/model.safetensors")
  np.testing.assert_array_equal(np.asarray(params["embed"]["table"]), saved["embeddings.word_embeddings.weight"])
  np.testing.assert_array_equal(np.asarray(params["pooler"]["dense"]), saved["pooler.dense.weight"].T)
  kernel = np.asarray(params["classifier"]["kernel"])
  assert kernel.shape == (32, 3) and 0.005 < kernel.std() < 0.05  # a fresh head, at the init scale (0.02)
  assert np.isfinite(train_losses(workdir)[2])


def test_a_classifier_starts_from_a_pretrained_masked_lm_run(runs, labelled_dir, tmp_path):
  """config.init.workdir = our own MLM run: the classifier takes its architecture and weights, leaves its
  MLM head behind and starts a fresh pooler and head; a run of another family is refused."""
  import numpy as np
  from errors import UserError
  from trainer import export
  objective, out, _ = runs
  if objective != "masked_lm":
    return
  single = dict(data=1, fsdp=1, tensor=1)
  start = {"init.workdir": out["single"], "model.num_labels": 3, "model.d_model": 64, "train.steps": 1}
  with pytest.raises(UserError, match="trained an 'encoder' model but config.model.family='decoder'"):
    loop.run(_config(labelled_dir, "classification", single, **{**start, "model.family": "decoder"}),
             str(tmp_path / "bad"))
  other = str(tmp_path / "other_tokenizer")  # as if the MLM run had read data tokenized otherwise
  shutil.copytree(out["single"], other)
  record = json.load(open(f"{other}/data_tokenizer.json"))
  json.dump({**record, "vocab_sha256": "0" * 64}, open(f"{other}/data_tokenizer.json", "w"))
  with pytest.raises(UserError, match="not with the tokenizer config.init.workdir=.* trained with"):
    loop.run(_config(labelled_dir, "classification", single, **{**start, "init.workdir": other}),
             str(tmp_path / "bad2"), jax.devices()[:1])
  workdir = str(tmp_path / "classifier")
  loop.run(_config(labelled_dir, "classification", single, **{**start, "optimizer.learning_rate": 0.0}), workdir,
           jax.devices()[:1])
  pretrained, classifier = export.restore(out["single"]).params, export.restore(workdir).params
  assert "mlm_head" in pretrained and "mlm_head" not in classifier
  assert np.asarray(classifier["classifier"]["kernel"]).shape == (32, 3)  # d_model from the run, not the config
  assert set(classifier) - set(pretrained) == {"classifier", "pooler"}
  for name in set(classifier) & set(pretrained):
    jax.tree.map(np.testing.assert_array_equal, classifier[name], pretrained[name])


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
  """A BertModel (encoder and pooler, no head) as transformers saves it."""
  import transformers
  path = str(tmp_path_factory.mktemp("bert") / "bert")
  transformers.BertModel(transformers.BertConfig(
      vocab_size=512, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
      max_position_embeddings=64)).save_pretrained(path)
  return path


def test_a_lora_classifier_trains_adapters_and_head_on_a_frozen_base(bert_dir, labelled_dir, tmp_path):
  """LoRA on an encoder classifier: the targeted projections and the head (with the pooler) learn, every
  other weight stays the base's exactly; the merged classifier exports and loads in transformers."""
  import numpy as np
  import transformers
  from safetensors.numpy import load_file
  from trainer import export
  workdir = str(tmp_path / "run")
  loop.run(_config(labelled_dir, "classification", dict(data=1, fsdp=1, tensor=1),
                   **{"init.hf_dir": bert_dir, "model.num_labels": 3, "lora.rank": 4, "lora.targets": "q,v,up",
                      "lora.base_dtype": "float32", "train.steps": 3, "checkpoint.every_steps": 1,
                      "eval.final_split": "val", "eval.final_steps": 1}), workdir, jax.devices()[:1])
  outputs = {}
  for step in (1, 3):
    export.export(workdir, str(tmp_path / f"hf{step}"), step=step)
    outputs[step] = load_file(str(tmp_path / f"hf{step}" / "model.safetensors"))
  base = load_file(f"{bert_dir}/model.safetensors")
  learned = ("attention.self.query.weight", "attention.self.value.weight", "intermediate.dense.weight", "pooler.",
             "classifier.")  # biases of adapted projections stay frozen
  for name, first in outputs[1].items():
    last = outputs[3][name]
    if any(part in name for part in learned):
      assert not np.array_equal(first, last), name  # adapted or trained in full
    else:
      base_name = name.removeprefix("bert.")
      np.testing.assert_array_equal(last, base[base_name], err_msg=name)  # frozen: the base, bit for bit
  model = transformers.BertForSequenceClassification.from_pretrained(str(tmp_path / "hf3"))
  assert model.config.num_labels == 3 and model.classifier.weight.shape == (3, 32)
  # A LoRA classifier's base may itself be a classifier: its frozen part is read without the head.
  from model import families, hf_weights, lora
  from parallel import mesh as mesh_lib
  from parallel import restore
  cfg = restore.load_run_config(workdir).model_config()
  abstract, shardings = restore.lora_base_shardings(families.build(cfg), mesh_lib.mesh_of_sizes(), "float32")
  frozen = hf_weights.load_params(str(tmp_path / "hf3"), cfg, lora.frozen_of(abstract), lora.frozen_of(shardings))
  assert set(frozen) == set(abstract) - {"classifier", "pooler"}
  assert np.isfinite(train_losses(workdir)[3])


def test_an_mlm_run_exports_a_tokenizer_that_knows_its_special_tokens(runs, tmp_path):
  """transformers reads the exported tokenizer as training tokenized: [CLS] text [SEP], with [PAD] and
  [MASK] by role (as a fill-mask pipeline looks for the mask)."""
  import transformers
  from data import tokenizer as tokenizer_lib
  from parallel import restore
  from trainer import export
  objective, out, _ = runs
  if objective != "masked_lm":
    return
  export.export(out["single"], str(tmp_path / "hf"))
  hf_tok = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "hf"))
  data_dir = restore.load_run_config(out["single"]).data.dir
  ours = tokenizer_lib.load(os.path.join(data_dir, shards.load_metadata(data_dir)["tokenizer"]))
  assert (hf_tok.cls_token_id, hf_tok.sep_token_id, hf_tok.pad_token_id, hf_tok.mask_token_id) == (1, 2, 3, 4)
  text = "def read(self, path):\n    return open(path).read()"
  assert hf_tok(text)["input_ids"] == [1] + ours.encode(text) + [2]
  assert hf_tok.mask_token == "[MASK]" and hf_tok(f"import {hf_tok.mask_token}")["input_ids"][-2] == 4
