"""Labelled JSONL -> classification shards: encodings against transformers, label sets, bad input."""

import json
import os

import numpy as np
import pytest

from data import labelled, shards
from errors import UserError

SENTENCES = ["the film was a delight from start to end", "a dull and tedious plot", "great acting and a fine score",
             "i want my money back", "the best thing i saw this year", "boring characters and weak jokes",
             "does the train stop at the station", "where is the nearest station", "is it raining today"]


@pytest.fixture(scope="module")
def bert_tokenizer_dir(tmp_path_factory):
  """A tiny WordPiece tokenizer with BERT's post-processor, as tokenizer.json."""
  from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
  tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
  tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
  tok.train_from_iterator(SENTENCES * 3, trainers.WordPieceTrainer(
      vocab_size=120, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]))
  tok.post_processor = processors.BertProcessing(("[SEP]", tok.token_to_id("[SEP]")),
                                                 ("[CLS]", tok.token_to_id("[CLS]")))
  directory = tmp_path_factory.mktemp("bert_tok")
  tok.save(str(directory / "tokenizer.json"))
  return str(directory)


def _jsonl(path, rows):
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))
  return str(path)


def _records(directory, split):
  meta = shards.load_metadata(directory)
  source, lengths = shards.open_split(directory, split, meta)
  decoded = [shards.decode_record(source[i], has_mask=True) for i in range(len(source))]
  return meta, decoded, shards.open_labels(directory, split, meta)


def test_pairs_encode_as_transformers_does_and_labels_follow_their_examples(bert_tokenizer_dir, tmp_path):
  from transformers import PreTrainedTokenizerFast
  rows = [{"text": s, "text_pair": SENTENCES[-1 - i], "label": "pos" if i % 2 else "neg"}
          for i, s in enumerate(SENTENCES)]
  train = _jsonl(tmp_path / "train.jsonl", rows[:6])
  val = _jsonl(tmp_path / "val.jsonl", rows[6:])
  out = str(tmp_path / "ds")
  meta = labelled.prepare_labelled([train], [val], bert_tokenizer_dir, out, labelled.LabelledOptions(max_len=12))
  assert meta["labels"] == ["neg", "pos"] and meta["encoding"] == "post_processor"
  reference = PreTrainedTokenizerFast(tokenizer_file=os.path.join(bert_tokenizer_dir, "tokenizer.json"))
  for split, split_rows in (("train", rows[:6]), ("val", rows[6:])):
    _, decoded, labels = _records(out, split)
    assert labels.tolist() == [meta["labels"].index(r["label"]) for r in split_rows]
    for (ids, types), r in zip(decoded, split_rows):
      want = reference(r["text"], r["text_pair"], truncation="longest_first", max_length=12,
                       return_token_type_ids=True)
      assert ids.tolist() == want["input_ids"] and types.tolist() == want["token_type_ids"]
  assert meta["counts"]["truncated"] > 0  # some pairs were cut to 12 tokens, longest first
  assert shards.verify_split(out, "train")


def test_a_decoder_example_ends_with_eos_after_its_text(dataset_dir, tmp_path):
  from data import tokenizer as tokenizer_lib
  rows = [{"text": s, "label": i % 3} for i, s in enumerate(SENTENCES)]
  out = str(tmp_path / "ds")
  meta = labelled.prepare_labelled([_jsonl(tmp_path / "t.jsonl", rows)], [], dataset_dir, out,
                                   labelled.LabelledOptions(val_fraction=0.3))
  assert meta["labels"] == ["0", "1", "2"] and meta["encoding"] == "text_then_eos"
  tok = tokenizer_lib.load(os.path.join(dataset_dir, shards.load_metadata(dataset_dir)["tokenizer"]))
  seen = 0
  for split in ("train", "val"):
    _, decoded, labels = _records(out, split)
    for (ids, types), label in zip(decoded, labels):
      text = next(r["text"] for r in rows if tok.encode(r["text"], add_special_tokens=True) + [tok.eos_id] == ids.tolist())
      assert str(label) == next(str(r["label"]) for r in rows if r["text"] == text)
      assert not types.any()
      seen += 1
  assert seen == len(rows) and meta["splits"]["val"]["num_docs"] == 3


def test_label_set_is_fixed_and_an_unknown_label_names_its_line(bert_tokenizer_dir, tmp_path):
  train = _jsonl(tmp_path / "train.jsonl", [{"text": s, "label": ["a", "b"][i % 2]} for i, s in enumerate(SENTENCES)])
  val = _jsonl(tmp_path / "val.jsonl", [{"text": "x y", "label": "a"}, {"text": "z", "label": "c"}])
  out = tmp_path / "ds"
  with pytest.raises(UserError, match=r"val.jsonl:2: label 'c' is not in the label set of the training data"):
    labelled.prepare_labelled([train], [val], bert_tokenizer_dir, str(out))
  assert not out.exists()  # nothing half-written
  meta = labelled.prepare_labelled([train], [], bert_tokenizer_dir, str(out),
                                   labelled.LabelledOptions(labels=("b", "a", "c")))
  assert meta["labels"] == ["b", "a", "c"]  # the given order is the class order
  assert set(meta["splits"]["train"]["per_label"]) | set(meta["splits"]["val"]["per_label"]) == {"a", "b"}


@pytest.mark.parametrize("line, message", [
    ("{\"text\": \"hi\"}", r"bad.jsonl:1: no 'label' field"),
    ("{\"label\": \"a\"}", r"bad.jsonl:1: no 'text' field"),
    ("{\"text\": \"hi\", \"label\": [1]}", r"bad.jsonl:1: \"label\" must be a string or an integer"),
    ("not json", r"bad.jsonl:1: not valid JSON"),
])
def test_bad_lines_name_file_line_and_field(bert_tokenizer_dir, tmp_path, line, message):
  (tmp_path / "bad.jsonl").write_text(line + "\n")
  with pytest.raises(UserError, match=message):
    labelled.prepare_labelled([str(tmp_path / "bad.jsonl")], [], bert_tokenizer_dir, str(tmp_path / "ds"))


def test_padding_and_truncation_in_tokenizer_json_do_not_apply(bert_tokenizer_dir, tmp_path):
  """MiniLM's tokenizer.json pads every text to 128 and truncates there; transformers ignores both
  unless asked, and so does data preparation (max_len decides)."""
  from tokenizers import Tokenizer
  from transformers import PreTrainedTokenizerFast
  tok = Tokenizer.from_file(os.path.join(bert_tokenizer_dir, "tokenizer.json"))
  tok.enable_padding(length=24, pad_id=0, pad_token="[PAD]")
  tok.enable_truncation(max_length=6)
  (tmp_path / "tok").mkdir()
  tok.save(str(tmp_path / "tok" / "tokenizer.json"))
  rows = [{"text": s, "label": i % 2} for i, s in enumerate(SENTENCES)]
  out = str(tmp_path / "ds")
  labelled.prepare_labelled([_jsonl(tmp_path / "t.jsonl", rows)], [], str(tmp_path / "tok"), out)
  reference = PreTrainedTokenizerFast(tokenizer_file=os.path.join(bert_tokenizer_dir, "tokenizer.json"))
  want = sorted(reference(r["text"])["input_ids"] for r in rows)
  got = sorted(ids.tolist() for split in ("train", "val") for ids, _ in _records(out, split)[1])
  assert got == want and max(map(len, got)) > 6
