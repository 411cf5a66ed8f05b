"""T5's span corruption (data/span_corruption.py): lengths as T5's random_spans_helper gives them, a golden
fixture on fixed seeds (sentinel placement, inputs, targets and the text they reconstruct), the noise
statistics T5 draws, per-row seeding, and a tokenizer without enough sentinels refused."""

import json
import os

import numpy as np
import pytest

from conftest import REPO
from data import masking
from data import pipeline
from data import span_corruption as sc
from data import tokenizer as tokenizer_lib
from errors import UserError

GOLDEN = os.path.join(REPO, "tests", "golden", "span_corruption.json")
UPDATE = os.environ.get("STRATA_UPDATE_GOLDEN") == "1"  # rewrites the fixture (then review the diff)
TEXT = ("the quick brown fox jumps over the lazy dog while a small bird sings in the old oak tree and "
        "children laugh as they run along the river bank under a bright summer sky").split()
VOCAB = ["<pad>", "</s>"] + sorted(set(TEXT))  # a word-level vocabulary; sentinels at the end
SENTINELS = 8
V = len(VOCAB) + SENTINELS


def _word(i: int) -> str:
  return VOCAB[i] if i < len(VOCAB) else sc.SENTINEL_FORMAT.format(V - 1 - i)


def _reconstruct(inputs: list[str], targets: list[str]) -> list[str]:
  """The original words: each sentinel in the inputs replaced by what follows it in the targets."""
  spans, current = {}, None
  for w in targets:
    if w.startswith("<extra_id_"):
      current = spans.setdefault(w, [])
    elif w != "</s>":
      current.append(w)
  return [x for w in inputs if w != "</s>" for x in (spans[w] if w in spans else [w])]


@pytest.mark.parametrize("inputs_len, raw_len, targets_len", [(512, 568, 114), (128, 141, 29)])
def test_lengths_are_t5s(inputs_len, raw_len, targets_len):
  """T5's random_spans_helper at noise 0.15, mean span 3: 512 inputs come from 568 tokens with 114 targets
  (the t5.1.1 pretraining numbers); its formula for the others."""
  spec = sc.SpanSpec(inputs_len=inputs_len, vocab_size=V, eos_id=1)
  assert (spec.raw_len, spec.targets_len) == (raw_len, targets_len)
  assert sc.corrupted_lengths(raw_len, 0.15, 3.0)[0] <= inputs_len < sc.corrupted_lengths(raw_len + 1, 0.15, 3.0)[0]


def test_golden_fixture():
  """Fixed seeds give the fixture's sentinel placement, inputs and targets; inputs and targets put back
  together are the original text, and the counts are T5's."""
  spec = sc.SpanSpec(inputs_len=32, vocab_size=V, eos_id=1, seed=7)
  ids = np.asarray([VOCAB.index(w) for w in TEXT[:spec.raw_len]], np.int32)
  got = []
  for row_index, stream in ((0, "train"), (1, "train"), (12345, "train"), (0, "eval")):
    row = sc.corrupt_row(ids, np.ones_like(ids), spec, masking.generator(spec, row_index, stream))
    n_in, n_out = int(row["encoder_segment_ids"].sum()), int(row["target_weights"].sum())
    inputs = [_word(i) for i in row["encoder_tokens"][:n_in]]
    targets = [_word(i) for i in row["targets"][:n_out]]
    assert _reconstruct(inputs, targets) == TEXT[:spec.raw_len]
    num_noise, num_spans = sc.noise_counts(spec.raw_len, 0.15, 3.0)
    assert n_out == num_noise + num_spans + 1 and n_in == spec.raw_len - num_noise + num_spans + 1
    sentinels = [w for w in inputs if w.startswith("<extra_id_")]
    assert sentinels == [f"<extra_id_{k}>" for k in range(num_spans)]  # in order, counting down from V-1
    assert targets[0] == "<extra_id_0>" and inputs[-1] == targets[-1] == "</s>" and inputs[0] != "<extra_id_0>"
    assert row["tokens"][0] == 0 and list(row["tokens"][1:n_out]) == list(row["targets"][:n_out - 1])
    got.append({"row_index": row_index, "stream": stream, "inputs": " ".join(inputs), "targets": " ".join(targets)})
  fixture = {"text": " ".join(TEXT[:spec.raw_len]), "seed": 7, "inputs_len": 32, "rows": got}
  if UPDATE:
    with open(GOLDEN, "w") as f:
      json.dump(fixture, f, indent=1)
  with open(GOLDEN) as f:
    assert fixture == json.load(f), "span corruption draws changed; if on purpose, rerun with STRATA_UPDATE_GOLDEN=1"


def test_noise_statistics():
  """Over many rows: exactly round(0.15 L) noise tokens in round(noise / 3) spans, kept tokens first, and
  every span length possible (a uniform random composition, as T5's)."""
  spec = sc.SpanSpec(inputs_len=128, vocab_size=1000, eos_id=1, seed=3)
  lengths = []
  for i in range(300):
    mask = sc.noise_mask(spec.raw_len, spec, masking.generator(spec, i))
    starts = np.flatnonzero(mask & ~np.concatenate([[False], mask[:-1]]))
    ends = np.flatnonzero(mask & ~np.concatenate([mask[1:], [False]]))
    assert mask.sum() == 21 and starts.size == 7 and not mask[0]
    lengths += list(ends - starts + 1)
  assert np.mean(lengths) == pytest.approx(3.0) and max(lengths) > 8 and min(lengths) == 1


def test_rows_depend_only_on_seed_stream_and_index():
  spec = sc.SpanSpec(inputs_len=32, vocab_size=V, eos_id=1, seed=7)
  ids = np.arange(2, 2 + spec.raw_len, dtype=np.int32)
  row = lambda seed, index, stream="train": sc.CorruptRows(sc.SpanSpec(32, V, 1, seed=seed), stream).map(  # noqa: E731
      {"tokens": ids, "segment_ids": np.ones_like(ids), "row_index": index})["encoder_tokens"]
  np.testing.assert_array_equal(row(7, 3), row(7, 3))
  assert not np.array_equal(row(7, 3), row(7, 4)) and not np.array_equal(row(7, 3), row(8, 3))
  assert not np.array_equal(row(7, 3), row(7, 3, "eval"))


def test_tokenizer_reserves_sentinels_and_too_few_are_refused(t5_dataset_dir, dataset_dir):
  meta = pipeline.dataset_metadata(pipeline_cfg(t5_dataset_dir))
  tok = tokenizer_lib.load(meta["tokenizer_path"])
  assert meta["vocab_size"] == 512 and sc.sentinel_count(tok, 512) == 100
  assert tok.token_to_id("<extra_id_0>") == 511 and 412 in tok.encode("x <extra_id_99> y")
  spec = sc.spec_for_dataset(meta, 128, 0.15, 3.0, seed=0, decoder_start_id=0)
  assert spec.max_spans == 7 and spec.eos_id == meta["eos_id"]
  with pytest.raises(UserError, match=r"has 100 sentinel tokens .* need 307; prepare the data with "
                                      r"--config.tokenizer.sentinels=307"):
    sc.spec_for_dataset(meta, 1024, 0.3, 1.0, seed=0, decoder_start_id=0)
  plain_meta = pipeline.dataset_metadata(pipeline_cfg(dataset_dir))  # prepared without sentinels
  with pytest.raises(UserError, match=r"has 0 sentinel tokens \(<extra_id_0> = id 511 and down\), but rows of "
                                      r"141 tokens .* need 7"):
    sc.spec_for_dataset(plain_meta, 128, 0.15, 3.0, seed=0, decoder_start_id=0)


def pipeline_cfg(directory: str):
  from data.config import DataConfig
  return DataConfig(dir=directory)
