"""BERT masking (data/masking.py), its pipeline wiring, the encoder tokenizer specials and the MaskedLM objective."""

import os

import jax.numpy as jnp
import numpy as np
import pytest

from configs import base, schema
from conftest import stdlib_data_config
from data import masking, pipeline, prepare, shards
from data import tokenizer as tokenizer_lib
from errors import UserError
from trainer import objectives
from trainer.objectives.masked_lm import MaskedLM

SPECIALS = (0, 1, 2, 3)  # unk, [CLS], [SEP], [PAD]; [MASK] is 4
VOCAB = 512


def _spec(**kw) -> masking.MaskSpec:
  return masking.MaskSpec(**{"mask_id": 4, "vocab_size": VOCAB, "special_ids": SPECIALS, **kw})


def _row(n: int, seed: int = 0, pad: int = 0):
  """Documents of ordinary tokens in [CLS] ... [SEP], then `pad` padding positions."""
  rng = np.random.default_rng(seed)
  tokens = rng.integers(5, VOCAB, n).astype(np.int32)
  segments = np.ones(n, np.int32)
  cuts = np.sort(rng.choice(np.arange(2, n - 2), size=max(1, n // 50), replace=False))
  for c in cuts:
    tokens[c - 1], tokens[c] = 2, 1  # [SEP] ends a document, [CLS] starts the next
    segments[c:] += 1
  tokens[0] = 1
  return np.concatenate([tokens, np.zeros(pad, np.int32)]), np.concatenate([segments, np.zeros(pad, np.int32)])


def test_rate_and_80_10_10_split_on_a_large_row():
  tokens, segments = _row(200_000, pad=1000)
  spec = _spec()
  inputs, targets, weights = masking.mask_tokens(tokens, segments, spec, masking.generator(spec, 7))
  np.testing.assert_array_equal(targets, tokens)
  maskable = (segments != 0) & (tokens >= 5)
  chosen = weights == 1.0
  assert set(np.unique(weights)) == {0.0, 1.0}
  assert abs(chosen.sum() - 0.15 * maskable.sum()) <= 1  # the count is rounded, up or down
  assert np.all(inputs[~chosen] == tokens[~chosen])  # only chosen tokens change
  n = chosen.sum()
  as_mask = (inputs[chosen] == 4).mean()
  randomized = inputs[chosen & (inputs != 4) & (inputs != tokens)]
  kept = (inputs[chosen] == tokens[chosen]).mean()
  # Standard errors at n ~ 30,000: 0.0023 (80%) and 0.0017 (10%); the bounds are 4+ of them.
  assert abs(as_mask - 0.8) < 0.01, as_mask
  assert abs(randomized.size / n - 0.1 * (1 - 1 / 507)) < 0.008, randomized.size / n
  assert abs(kept - (0.1 + 0.1 / 507)) < 0.008, kept
  # Random tokens: never special, uniform over the 507 ordinary ids (chi-square, 506 dof: mean 506, sd 32).
  assert randomized.min() >= 5 and randomized.max() < VOCAB
  counts = np.bincount(randomized, minlength=VOCAB)[5:]
  expected = randomized.size / 507
  chi2 = ((counts - expected) ** 2 / expected).sum()
  assert chi2 < 506 + 5 * 32, chi2


def test_specials_and_padding_are_never_masked():
  tokens, segments = _row(300, seed=1, pad=40)
  tokens[[10, 50, 90]] = 0  # <unk> too
  spec = _spec(rate=0.9)
  never = (segments == 0) | np.isin(tokens, SPECIALS)
  for g in range(50):
    for whole_word in (False, True):
      s = _spec(rate=0.9, whole_word=whole_word, continuation_ids=tuple(range(5, 300)))
      inputs, _, weights = masking.mask_tokens(tokens, segments, s, masking.generator(s, g))
      assert np.all(weights[never] == 0) and np.all(inputs[never] == tokens[never])
  inputs, _, weights = masking.mask_tokens(tokens, segments, spec, masking.generator(spec, 0))
  assert weights.sum() > 0.85 * (~never).sum()


class _Pieces:
  """A tokenizer's vocabulary, as _word_tables reads it."""

  def __init__(self, pieces):
    self.pieces = pieces

  def id_to_token(self, i):
    return self.pieces[i]


@pytest.mark.parametrize("style", ["metaspace", "bytelevel", "wordpiece"])
def test_word_tables_follow_the_vocabulary_convention(style):
  start, cont = {"metaspace": ("\u2581cat", "s"), "bytelevel": ("\u0120cat", "s"), "wordpiece": ("cat", "##s")}[style]
  space = {"metaspace": "\u2581\u2581", "bytelevel": "\u010a\u0120", "wordpiece": "\n"}[style]
  pieces = [start, cont, space] + [("##" if style == "wordpiece" else start[0]) + f"w{i}" for i in range(5)]
  continuation, standalone = masking._word_tables(_Pieces(pieces), len(pieces))
  assert 0 not in continuation and 1 in continuation and standalone == (2,)
  assert all(i in continuation for i in range(3, 8)) == (style == "wordpiece")


def _words(tokens, segments, continues, standalone, special):
  """Independent reference: lists of positions, one per word (maskable tokens only)."""
  words, prev = [], None
  for t, (tok, seg) in enumerate(zip(tokens.tolist(), segments.tolist())):
    if seg == 0 or tok in special:
      prev = None
      continue
    joins = (prev is not None and segments[prev] == seg and prev == t - 1 and tok in continues
             and tok not in standalone and tokens[prev] not in standalone)
    if joins:
      words[-1].append(t)
    else:
      words.append([t])
    prev = t
  return words


def test_whole_word_masking_masks_whole_words():
  rng = np.random.default_rng(3)
  continues = set(range(5, 400))  # ids 400+ start words; 5 and 6 are whitespace-only
  tokens, segments = _row(4000, seed=2, pad=100)
  tokens[rng.choice(4000, 300)] = rng.integers(400, VOCAB, 300)  # more word starts: words of 1..15 tokens
  spec = _spec(whole_word=True, continuation_ids=tuple(sorted(continues)), standalone_ids=(5, 6))
  words = _words(tokens, segments, continues, {5, 6}, set(SPECIALS))
  assert max(len(w) for w in words) > 3
  total = sum(len(w) for w in words)
  long_words_chosen = 0
  for g in range(20):
    _, _, weights = masking.mask_tokens(tokens, segments, spec, masking.generator(spec, g))
    for w in words:
      assert weights[w].min() == weights[w].max(), (g, w, weights[w])
      long_words_chosen += len(w) > 1 and weights[w[0]] == 1
    assert abs(weights.sum() - 0.15 * total) <= 16  # filled word by word up to the count: off by under a word
  assert long_words_chosen > 100


def test_masking_is_a_function_of_seed_stream_and_row():
  tokens, segments = _row(512)
  spec = _spec()

  def draw(s, g, stream="train"):
    return masking.mask_tokens(tokens, segments, s, masking.generator(s, g, stream))

  a, b = draw(spec, 5), draw(spec, 5)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x, y)
  assert not np.array_equal(a[2], draw(spec, 6)[2])
  assert not np.array_equal(a[2], draw(_spec(seed=1), 5)[2])
  assert not np.array_equal(a[2], draw(spec, 5, "eval")[2])
  row = {"tokens": tokens, "segment_ids": segments, "positions": np.arange(512), "dataset": np.int32(0)}
  out = masking.MaskRows(spec).map({**row, "row_index": 5})
  assert "row_index" not in out and out["dataset"] == 0
  np.testing.assert_array_equal(out["tokens"], a[0])


# --- a dataset whose tokenizer reserves the encoder specials ----------------------------------

@pytest.fixture
def encoder_dir(encoder_dataset_dir):
  return encoder_dataset_dir


def _data_cfg(directory, workers=0):
  cfg = base.base_config().data
  cfg.update(dict(dir=directory, worker_count=workers))
  return cfg


def _mlm_config(directory, **mlm):
  c = base.base_config()
  c.data.dir = directory
  c.model.family, c.train.objective, c.train.seed = "encoder", "masked_lm", 3
  c.train.mlm.update(mlm)
  return c


def _spec_for(directory, **mlm):
  c = _mlm_config(directory, **mlm)
  objective = objectives.build(c)
  return objective.masking(c, pipeline.dataset_metadata(c.data))


def test_tokenizer_reserves_encoder_specials_and_metadata_records_them(encoder_dir):
  meta = shards.load_metadata(encoder_dir)
  tok = tokenizer_lib.load(os.path.join(encoder_dir, meta["tokenizer"]))
  ids = {k: meta[k] for k in ("cls_id", "sep_id", "pad_id", "mask_id")}
  assert ids == {"cls_id": 1, "sep_id": 2, "pad_id": 3, "mask_id": 4}
  assert [tok.id_to_token(i) for i in range(1, 5)] == ["[CLS]", "[SEP]", "[PAD]", "[MASK]"]
  assert meta["bos_id"] == 1 and meta["eos_id"] == 2 and meta["add_bos"]
  assert 4 not in tok.encode_batch(["a literal [MASK] and [CLS] stay text"])[0]
  # Packed documents read "[CLS] doc [SEP]".
  rows = pipeline.RowStream(_data_cfg(encoder_dir), "train", 256, seed=0, shuffle=False)
  row = rows[0]
  starts = np.flatnonzero(np.diff(row["segment_ids"]) != 0) + 1
  assert row["tokens"][0] == 1 and np.all(row["tokens"][starts] == 1) and np.all(row["tokens"][starts - 1] == 2)


def test_default_tokenizer_training_is_unchanged(tmp_path):
  text = tmp_path / "lines.txt"
  text.write_text("\n".join(f"def function_{i}(x):\n    return x * {i} + alpha" for i in range(300)))
  a = tokenizer_lib.train_sentencepiece(str(text), str(tmp_path / "a"), 300)
  b = tokenizer_lib.train_sentencepiece(str(text), str(tmp_path / "b"), 300, encoder_specials=True)
  ta, tb = tokenizer_lib.load(a), tokenizer_lib.load(b)
  assert [ta.id_to_token(i) for i in range(4)] == ["<unk>", "<s>", "</s>", "\n"]
  assert ta.impl.pad_id() == -1 and tokenizer_lib.encoder_special_ids(ta) == {}
  assert tokenizer_lib.encoder_special_ids(tb) == {"mask_id": 4, "cls_id": 1, "sep_id": 2, "pad_id": 3}
  with pytest.raises(UserError, match=r"the dataset at .* has no \[MASK\] token; prepare it with .*"
                                      r"--config.tokenizer.encoder_specials=True"):
    masking.spec_for_dataset({"tokenizer_path": a, "vocab_size": 300})


def test_given_tokenizer_with_or_without_a_mask_token(tmp_path):
  from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
  texts = [f"def function_{i}(x):\n    return x * {i} + alpha" for i in range(300)]
  bert = Tokenizer(models.WordPiece(unk_token="[UNK]"))
  bert.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
  bert.train_from_iterator(texts, trainers.WordPieceTrainer(
      vocab_size=200, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]))
  bert.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]",
                                                      special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
  bert.save(str(tmp_path / "tokenizer.json"))
  cfg = stdlib_data_config(num_files=20)
  cfg.split.val_fraction = cfg.split.test_fraction = 0.25
  cfg.tokenizer.path, cfg.tokenizer.encoder_specials = str(tmp_path / "tokenizer.json"), True
  meta = prepare.prepare(cfg, str(tmp_path / "bert"))
  assert {k: meta[k] for k in ("pad_id", "cls_id", "sep_id", "mask_id", "bos_id", "eos_id")} == \
      {"pad_id": 0, "cls_id": 2, "sep_id": 3, "mask_id": 4, "bos_id": 2, "eos_id": 3}
  text = tmp_path / "lines.txt"
  text.write_text("\n".join(texts))
  cfg.tokenizer.path = tokenizer_lib.train_sentencepiece(str(text), str(tmp_path / "plain"), 300)
  with pytest.raises(UserError, match=r"config.tokenizer.encoder_specials=True, but tokenizer.path=.*plain.model "
                                      r"has no \[MASK\] token"):
    prepare.prepare(cfg, str(tmp_path / "plain_out"))


def test_masked_train_iterator_resumes_exactly_and_ignores_process_count(encoder_dir):
  spec = _spec_for(encoder_dir)
  assert spec.mask_id == 4 and set(SPECIALS) <= set(spec.special_ids)
  cfg = _data_cfg(encoder_dir)
  straight = pipeline.train_iterator(cfg, 64, 4, 0, 4, seed=1, masking=spec)
  expected = [next(straight) for _ in range(6)][3:]
  assert set(MaskedLM.batch_fields) <= set(expected[0]) and expected[0]["target_weights"].sum() > 0
  for workers in (0, 1):  # in this process, and in a grain worker process
    it = pipeline.train_iterator(_data_cfg(encoder_dir, workers), 64, 4, 0, 4, seed=1, masking=spec)
    for _ in range(3):
      next(it)
    fresh = pipeline.train_iterator(_data_cfg(encoder_dir, workers), 64, 4, 0, 4, seed=1, masking=spec)
    fresh.set_state(it.get_state())
    for want in expected:
      got = next(fresh)
      for key in MaskedLM.batch_fields:
        np.testing.assert_array_equal(got[key], want[key])
  # Two processes holding two rows each see the rows (and masks) one process sees.
  whole = pipeline.train_iterator(cfg, 64, 4, 0, 4, seed=1, masking=spec)
  halves = [pipeline.train_iterator(cfg, 64, 4, lo, hi, seed=1, masking=spec) for lo, hi in ((0, 2), (2, 4))]
  for _ in range(2):
    full, parts = next(whole), [next(h) for h in halves]
    for key in MaskedLM.batch_fields:
      np.testing.assert_array_equal(full[key], np.concatenate([p[key] for p in parts]))


def test_eval_batches_are_masked_the_same_every_time(encoder_dir):
  spec = _spec_for(encoder_dir, whole_word=True)
  assert spec.whole_word and spec.continuation_ids
  cfg = _data_cfg(encoder_dir)
  a = pipeline.eval_batches(cfg, "val", 64, 4, 0, 4, 3, masking=spec)
  b = pipeline.eval_batches(cfg, "val", 64, 4, 0, 4, 3, masking=spec)
  assert len(a) == 3 and set(a[0]) == set(MaskedLM.batch_fields) | {"loss_mask"}
  for x, y in zip(a, b):
    for key in MaskedLM.batch_fields:
      np.testing.assert_array_equal(x[key], y[key])
  plain = pipeline.eval_batches(cfg, "val", 64, 4, 0, 4, 3)
  assert set(plain[0]) == {"tokens", "positions", "segment_ids", "loss_mask"}
  np.testing.assert_array_equal(plain[0]["tokens"], a[0]["targets"])
  assert not np.array_equal(plain[0]["tokens"], a[0]["tokens"])


def test_masked_lm_sums_match_a_numpy_reference():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(2, 6, 11)).astype(np.float32) * 3
  targets = rng.integers(0, 11, (2, 6)).astype(np.int32)
  targets[0, :3] = logits[0, :3].argmax(-1)  # some correct predictions
  weights = (rng.random((2, 6)) < 0.5).astype(np.float32)
  weights[0, :3] = 1.0
  batch = {"tokens": jnp.zeros((2, 6), jnp.int32), "positions": jnp.zeros((2, 6), jnp.int32),
           "segment_ids": jnp.ones((2, 6), jnp.int32), "targets": jnp.asarray(targets),
           "target_weights": jnp.asarray(weights)}
  seen = {}

  def apply_fn(variables, batch, rngs=None):
    seen.update(segments=batch["segment_ids"])
    return jnp.asarray(logits)

  total, weight, metrics = MaskedLM().sums(apply_fn, {}, batch, train=False)
  x = logits.astype(np.float64)
  log_z = np.log(np.exp(x - x.max(-1, keepdims=True)).sum(-1)) + x.max(-1)
  nll = ((log_z - np.take_along_axis(x, targets[..., None], -1)[..., 0]) * weights).sum()
  correct = ((x.argmax(-1) == targets) * weights).sum()
  np.testing.assert_allclose(float(total), nll, rtol=1e-5)
  np.testing.assert_allclose(float(metrics["loss_sum"]), nll, rtol=1e-5)
  assert float(weight) == weights.sum() and float(metrics["accuracy_sum"]) == correct >= 3
  assert seen["segments"] is batch["segment_ids"]
  m = MaskedLM().eval_metrics({"loss_sum": nll, "accuracy_sum": correct, "count": weights.sum()})
  assert m["loss"] == pytest.approx(nll / weights.sum()) and m["accuracy"] == pytest.approx(correct / weights.sum())
  assert m["tokens"] == weights.sum() and m["perplexity"] == pytest.approx(np.exp(nll / weights.sum()))


def test_objectives_declare_fields_and_masking(encoder_dir):
  c = _mlm_config(encoder_dir)
  assert objectives.build(c).batch_fields == MaskedLM.batch_fields
  c.model.family, c.train.objective = "decoder", "causal_lm"
  causal = objectives.build(c)
  assert causal.masking(c, {}) is None and causal.batch_fields == ("tokens", "segment_ids", "positions", "loss_mask")
  c.train.objective = "masked_lm"
  with pytest.raises(UserError, match="does not fit config.model.family='decoder'"):
    objectives.build(c)
  with pytest.raises(UserError, match=r"config.train.mlm.rate=1.5; expected a fraction in \(0, 1\]"):
    schema.RunConfig.from_config(_mlm_config(encoder_dir, rate=1.5))
