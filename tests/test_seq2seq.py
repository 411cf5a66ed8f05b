"""Text-to-text data (data/seq2seq.py): preparation with a task prefix, EOS on both sides, truncation counted
or refused by line, missing fields named by line; two-sided packing; seq2seq fine-tuning of a tiny T5, with
LoRA on a transformers T5 base."""

import json

import jax
import numpy as np
import pytest

from conftest import read_metrics, train_losses
from data import pipeline, seq2seq, shards
from data import tokenizer as tokenizer_lib
from data.config import DataConfig
from errors import UserError
from test_t5_training import t5_config
from trainer import loop


def _write(path, rows):
  path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
  return str(path)


def _pairs(n: int) -> list[dict]:
  words = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split()
  return [{"input": " ".join(words[(i + j) % 12] for j in range(3 + i % 9)), "target": words[i % 12] + " x" * (i % 4)}
          for i in range(n)]


def test_prepare_prefix_eos_truncation_and_bad_lines(t5_dataset_dir, tmp_path):
  data = _write(tmp_path / "pairs.jsonl", _pairs(40))
  opts = seq2seq.Seq2SeqOptions(prefix="summarize: ", max_input_len=8, max_target_len=4, val_fraction=0.1)
  out = str(tmp_path / "ds")
  meta = seq2seq.prepare_seq2seq([data], t5_dataset_dir, out, opts)
  tok = tokenizer_lib.load(f"{out}/{meta['tokenizer']}")
  source, lengths = shards.open_split(out, "train", meta)
  assert meta["kind"] == "seq2seq" and len(lengths) == 2 * 36 and meta["max_input_len"] <= 8
  first = json.loads(open(data).readline())
  in_ids, target_ids = (shards.decode_record(source[i], has_mask=False)[0].tolist() for i in (0, 1))
  full_input = tok.encode("summarize: " + first["input"]) + [tok.eos_id]
  want = full_input if len(full_input) <= 8 else full_input[:7] + [tok.eos_id]
  order_ok = in_ids == want or in_ids[-1] == tok.eos_id  # train holds the examples not drawn for val
  assert order_ok and target_ids[-1] == tok.eos_id and len(target_ids) <= 4
  assert meta["counts"]["truncated_inputs"] > 0 and meta["counts"]["examples"] == 40
  strict = seq2seq.Seq2SeqOptions(max_input_len=8, max_target_len=64, overlong="error")
  with pytest.raises(UserError, match=r"pairs.jsonl:\d+: the input is \d+ tokens \(EOS included\), longer than "
                                      r"--max_input_len=8"):
    seq2seq.prepare_seq2seq([data], t5_dataset_dir, str(tmp_path / "strict"), strict)
  bad = _write(tmp_path / "bad.jsonl", _pairs(3) + [{"input": "only an input"}] + _pairs(2))
  with pytest.raises(UserError, match=r"bad.jsonl:4: field 'target' is missing or not a non-empty string"):
    seq2seq.prepare_seq2seq([bad], t5_dataset_dir, str(tmp_path / "bad"), seq2seq.Seq2SeqOptions())
  skipped = seq2seq.prepare_seq2seq([bad], t5_dataset_dir, str(tmp_path / "skip"),
                                    seq2seq.Seq2SeqOptions(bad_lines="skip", val_fraction=0.2))
  assert skipped["counts"]["skipped_bad_line"] == 1 and skipped["counts"]["examples"] == 5


def test_two_sided_packing():
  """Rows take examples while both sides fit; both sides give an example the same segment id; the decoder
  reads the targets shifted right after the start token."""
  inputs, targets = np.array([5, 3, 4, 2, 6]), np.array([2, 3, 1, 3, 2])
  groups = seq2seq.pack(inputs, targets, range(5), seq_len=8, target_len=5)
  assert groups == [[0, 1], [2, 3], [4]]  # adding 2 overflows the encoder, adding 4 too
  records = []
  for n_in, n_out in zip(inputs, targets):
    records += [np.arange(1, n_in + 1, dtype=np.int32).tobytes(), np.arange(50, 50 + n_out, dtype=np.int32).tobytes()]
  lengths = np.ravel(np.stack([inputs, targets], 1))
  rows = seq2seq.Seq2SeqRows(records, lengths, 8, 5, seed=0, shuffle=False, decoder_start_id=0)
  row = rows[0]
  np.testing.assert_array_equal(row["encoder_segment_ids"], [1] * 5 + [2] * 3)
  np.testing.assert_array_equal(row["encoder_positions"], [0, 1, 2, 3, 4, 0, 1, 2])
  np.testing.assert_array_equal(row["segment_ids"], [1, 1, 2, 2, 2])
  np.testing.assert_array_equal(row["targets"], [50, 51, 50, 51, 52])
  np.testing.assert_array_equal(row["tokens"], [0, 50, 0, 50, 51])
  np.testing.assert_array_equal(row["target_weights"], [1, 1, 1, 1, 1])
  assert rows.rows_per_epoch == 3 and rows[2]["target_weights"].tolist() == [1, 1, 0, 0, 0]


@pytest.fixture(scope="module")
def pairs_dir(t5_dataset_dir, tmp_path_factory):
  root = tmp_path_factory.mktemp("pairs")
  data = _write(root / "pairs.jsonl", _pairs(200))
  out = str(root / "ds")
  seq2seq.prepare_seq2seq([data], t5_dataset_dir, out, seq2seq.Seq2SeqOptions(prefix="copy: ", max_input_len=24,
                                                                              max_target_len=8))
  return out


def test_seq2seq_finetune_learns(pairs_dir, tmp_path):
  cfg = t5_config(pairs_dir, dict(data=1, fsdp=1, tensor=1), **{
      "train.objective": "seq2seq", "train.steps": 30, "train.target_len": 16, "eval.every_steps": 30,
      "checkpoint.every_steps": 1000})
  loop.run(cfg, str(tmp_path / "run"), devices=jax.devices()[:1])
  losses = train_losses(str(tmp_path / "run"))
  assert losses[30] < 0.7 * losses[1]
  assert read_metrics(str(tmp_path / "run"), "val")[30]["accuracy"] > 0.3
  with pytest.raises(UserError, match=r"config.train.seq_len=16 is shorter than the longest inputs of .* \(2\d "
                                      r"tokens\); set config.train.seq_len=2\d"):
    loop.run(t5_config(pairs_dir, dict(data=1, fsdp=1, tensor=1), **{"train.objective": "seq2seq",
                                                                      "train.seq_len": 16}),
             str(tmp_path / "short"), devices=jax.devices()[:1])
  rows = pipeline.RowStream(DataConfig(dir=pairs_dir), "train", 64, seed=0, shuffle=True, target_len=16)
  assert rows.rows_per_epoch < 100  # several examples per row


def test_lora_on_a_transformers_t5_base(pairs_dir, tmp_path):
  """LoRA adapters train on a frozen T5 base imported from transformers: the loss falls while the base's
  weights, merged out of the final checkpoint's adapters, stay as they were."""
  import torch
  from transformers import T5Config, T5ForConditionalGeneration
  from parallel import restore
  torch.manual_seed(0)
  hf = T5ForConditionalGeneration(T5Config(
      vocab_size=512, d_model=32, d_kv=8, d_ff=48, num_layers=2, num_decoder_layers=2, num_heads=4,
      relative_attention_num_buckets=8, relative_attention_max_distance=16, feed_forward_proj="gated-gelu",
      tie_word_embeddings=False, dropout_rate=0.0, decoder_start_token_id=0, pad_token_id=0))
  hf.save_pretrained(str(tmp_path / "base"))
  cfg = t5_config(pairs_dir, dict(data=1, fsdp=1, tensor=1), **{
      "train.objective": "seq2seq", "train.steps": 20, "train.target_len": 16, "init.hf_dir": str(tmp_path / "base"),
      "lora.rank": 4, "lora.base_dtype": "float32", "optimizer.learning_rate": 1e-2, "eval.every_steps": 20})
  loop.run(cfg, str(tmp_path / "lora"), devices=jax.devices()[:1])
  losses = train_losses(str(tmp_path / "lora"))
  assert losses[20] < 0.8 * losses[1]
  from model import hf_weights
  from parallel import mesh as mesh_lib
  mesh = mesh_lib.mesh_of_sizes()
  r = restore.restore(str(tmp_path / "lora"), mesh)
  _, base = hf_weights.load(str(tmp_path / "base"), mesh)
  assert r.adapters is not None and r.lora.rank == 4
  np.testing.assert_array_equal(np.asarray(r.params["embed"]["table"]), np.asarray(base["embed"]["table"]))
  for layer, module in (("encoder_layers_0", "attention"), ("decoder_layers_1", "cross_attention")):
    merged, frozen = np.asarray(r.params[layer][module]["query"]), np.asarray(base[layer][module]["query"])
    assert np.abs(merged - frozen).max() > 1e-4  # the adapters moved the (merged) weights, base untouched
