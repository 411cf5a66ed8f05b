"""Corrupt data files are named; bad data, tokenizers and split sizes fail before step 1, not after the run."""

import contextlib
import io
import json
import os
import shutil
import stat

import jax
import numpy as np
import pytest

from conftest import small_config, stdlib_data_config
from data import corpus, prep_io, prepare, shards
from errors import UserError
from trainer import loop, preflight


def _copy(dataset_dir, tmp_path) -> str:
  """A private copy: the session's dataset is shared by every test."""
  out = str(tmp_path / "data")
  shutil.copytree(dataset_dir, out)
  return out


def _assert_not_trained(workdir) -> None:
  """Nothing of a training run was written: no checkpoint, no train metrics."""
  assert not os.path.exists(os.path.join(workdir, "checkpoints"))
  metrics = os.path.join(workdir, "metrics.jsonl")
  assert not os.path.exists(metrics) or '"train"' not in open(metrics).read()


def _zero_middle(path: str, n: int = 100) -> None:
  """Zeros n bytes from the middle byte of the file's content (ArrayRecord files hold zero padding)."""
  with open(path, "rb") as f:
    nonzero = np.flatnonzero(np.frombuffer(f.read(), np.uint8))
  with open(path, "r+b") as f:
    f.seek(int(nonzero[nonzero.size // 2]))
    f.write(bytes(n))


def _run_error(config, workdir) -> str:
  with pytest.raises(UserError) as e:
    loop.run(config, str(workdir))
  _assert_not_trained(str(workdir))
  return str(e.value)


def test_truncated_shard_is_named(dataset_dir, tmp_path):
  data = _copy(dataset_dir, tmp_path)
  shard = os.path.join(data, "train-00000.array_record")
  with open(shard, "r+b") as f:
    f.truncate(os.path.getsize(shard) // 2)
  message = _run_error(small_config(data), tmp_path / "run")
  assert shard in message and "corrupt" in message and "\n" not in message


@pytest.mark.parametrize("split", ["train", "val"])
def test_zeroed_bytes_in_a_shard_are_named(dataset_dir, tmp_path, split):
  """Zeros in the middle of a shard (a bad disk block): riegeli may read them without complaint."""
  data = _copy(dataset_dir, tmp_path)
  shard = os.path.join(data, f"{split}-00000.array_record")
  _zero_middle(shard)
  message = _run_error(small_config(data, **{"eval.steps": 2, "eval.at_start": True}), tmp_path / "run")
  assert shard in message and "sha256 differs from metadata.json" in message


def test_read_error_names_the_shard_without_checksums(dataset_dir, tmp_path):
  """A dataset written before checksums were recorded: riegeli's own error, with the file's name."""
  data = _copy(dataset_dir, tmp_path)
  meta = shards.load_metadata(data)
  for info in meta["splits"].values():
    del info["shards"], info["lengths"]
  with open(os.path.join(data, shards.METADATA), "w") as f:
    json.dump(meta, f)
  shard = os.path.join(data, "train-00000.array_record")
  _zero_middle(shard)
  assert shards.verify_split(data, "train") is False  # nothing recorded to check against
  source, _ = shards.open_split(data, "train")
  with pytest.raises(UserError, match=f"{shard} is corrupt .*Riegeli"):
    for i in range(len(source)):
      source[i]


def test_sft_shards_are_checked(chat_dataset, tmp_path):
  data = _copy(chat_dataset, tmp_path)
  assert shards.verify_split(data, "train")
  shard = os.path.join(data, "val-00000.array_record")
  _zero_middle(shard)
  with pytest.raises(UserError, match=f"{shard} is corrupt: its sha256 .*prepare_sft.py"):
    shards.verify_split(data, "val")


def test_unchanged_shards_are_hashed_once(dataset_dir, monkeypatch):
  calls = []
  monkeypatch.setattr(shards, "file_sha256", lambda p: calls.append(p) or prep_io.file_sha256(p))
  monkeypatch.setattr(shards, "_HASHES", {})
  for _ in range(3):
    assert shards.verify_split(dataset_dir, "val")
  files = ("val-00000.array_record", "val.lengths.npy")
  assert sorted(calls) == sorted(os.path.join(dataset_dir, f) for f in files)  # each once


def test_missing_tokenizer_fails_before_training(dataset_dir, tmp_path):
  data = _copy(dataset_dir, tmp_path)
  os.remove(os.path.join(data, "tokenizer.model"))
  message = _run_error(small_config(data), tmp_path / "run")
  assert os.path.join(data, "tokenizer.model") in message


def _shrink_split(data: str, split: str, docs: list[list[int]]) -> None:
  """Rewrites `split` of a dataset copy with these documents, as prepare would have written them."""
  for name in os.listdir(data):
    if name.startswith(split + "-") or name == f"{split}.lengths.npy":
      os.remove(os.path.join(data, name))
  writer = shards.SplitWriter(data, split)
  for ids in docs:
    writer.write(ids)
  meta = shards.load_metadata(data)
  meta["splits"][split] = writer.close()
  prep_io.write_json_atomic(os.path.join(data, shards.METADATA), meta)


def test_too_small_split_fails_before_training(dataset_dir, tmp_path):
  data = _copy(dataset_dir, tmp_path)
  _shrink_split(data, "test", [list(range(3, 90)), list(range(5, 90))])  # 172 tokens
  message = _run_error(small_config(data, **{"eval.final_split": "test"}), tmp_path / "run")
  assert "split 'test'" in message and "172 tokens" in message
  assert "config.train.batch_size=8 x config.train.seq_len=64" in message and "config.eval.final_split" in message


@pytest.fixture(scope="module")
def prepared_with_log(tmp_path_factory):
  """Other modules, another tokenizer of the same size (512) as the session dataset's; and what
  preparing it wrote on stderr."""
  c = stdlib_data_config(vocab_size=512)
  c.sources.stdlib.inputs = ",".join(corpus.stdlib_files()[100:120])
  c.split.val_fraction = c.split.test_fraction = 0.25
  c.tokenizer.seed = 1
  out = str(tmp_path_factory.mktemp("other") / "other")
  log = io.StringIO()
  with contextlib.redirect_stderr(log):
    prepare.prepare(c, out)
  return out, log.getvalue()


@pytest.fixture(scope="module")
def other_tokenizer_dataset(prepared_with_log):
  return prepared_with_log[0]


def test_data_preparation_shows_progress(prepared_with_log):
  out, log = prepared_with_log
  assert f"preparing {out} (local runner): clean 20 input files" in log
  for phase in ("clean", "dedup", "tokenize"):
    assert f"{phase}: 100%" in log and "20/20" in log
  assert "training a 512-piece bpe tokenizer" in log and f"wrote {out}: train " in log


def test_evaluate_shows_progress_per_task(tiny_hf_base, capsys):
  from evals import runner
  from evals.lm import LanguageModel
  lm = LanguageModel.load(hf_dir=tiny_hf_base, batch_size=8)
  results = runner.run_tasks(lm, ["sentiment"], limit=5, progress=True)
  assert results["tasks"]["sentiment"]["metrics"]["examples"] == 5
  labels = len(runner.load_tasks(["sentiment"])[0].spec["labels"])
  err = capsys.readouterr().err
  assert f"[1/1] sentiment (5 examples): {5 * labels}seq" in err.replace(" seq", "seq")
  assert lm.progress is None  # the bar is gone with its task


def test_dataset_of_another_tokenizer_is_refused_for_an_hf_model(tiny_hf_base, other_tokenizer_dataset,
                                                                   dataset_dir, tmp_path):
  assert shards.load_metadata(other_tokenizer_dataset)["vocab_size"] == 512
  config = small_config(other_tokenizer_dataset, **{"init.hf_dir": tiny_hf_base})
  message = _run_error(config, tmp_path / "run")
  assert os.path.join(tiny_hf_base, "tokenizer.model") in message and "vocabularies differ" in message


def test_resume_on_data_of_another_tokenizer_is_refused(dataset_dir, other_tokenizer_dataset, tmp_path):
  workdir = str(tmp_path / "run")
  tiny = {"train.steps": 2, "model.num_layers": 1, "model.d_model": 64, "model.mlp_dim": 128}
  one_device = jax.devices()[:1]  # compiles faster
  loop.run(small_config(dataset_dir, **tiny), workdir, one_device, stop_after_step=1)
  recorded = os.path.join(workdir, preflight.DATA_TOKENIZER)
  with pytest.raises(UserError, match=f"{workdir} was trained on data tokenized with .*{recorded}"):
    loop.run(small_config(other_tokenizer_dataset, **tiny), workdir, one_device)


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o077, 0o600)])
def test_json_files_follow_the_umask(tmp_path, umask, mode):
  """Not tempfile.mkstemp's 0600: metadata.json, results.json and the like are readable as usual."""
  old = os.umask(umask)
  try:
    prep_io.write_json_atomic(str(tmp_path / "x.json"), {"a": 1})
  finally:
    os.umask(old)
  assert stat.S_IMODE(os.stat(tmp_path / "x.json").st_mode) == mode
  assert os.listdir(tmp_path) == ["x.json"]  # no temporary file left behind


def test_run_records_its_tokenizer_with_normal_permissions(dataset_dir, tmp_path):
  from data import tokenizer as tokenizer_lib
  old = os.umask(0o022)
  try:
    tok = tokenizer_lib.load(os.path.join(dataset_dir, "tokenizer.model"))
    preflight.record_or_check_run_tokenizer(str(tmp_path / "run"), small_config(dataset_dir), tok,
                                            preflight.tokenizer_fingerprint(tok), write=True)
  finally:
    os.umask(old)
  path = tmp_path / "run" / preflight.DATA_TOKENIZER
  assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
  assert json.loads(path.read_text())["vocab_size"] == 512
  assert os.listdir(tmp_path / "run") == [preflight.DATA_TOKENIZER]
