"""evals/metrics.py: library metrics match direct library calls; the rest checked by hand."""

import pytest
import sacrebleu
from rouge_score import rouge_scorer

from evals import metrics

PREDICTIONS = [
    "the cat sat on the mat",
    "a quick brown fox jumps over the lazy dog",
    "def wrap(text, width=70):",
    "completely unrelated words here",
    "",
]
REFERENCES = [
    ["the cat is sitting on the mat", "a cat sat on the mat"],
    ["the quick brown fox jumped over the lazy dogs"],
    ["def wrap(text, width=70, **kwargs):", "def wrap(text, width):", "wrap(text)"],
    ["nothing in common"],
    ["empty prediction"],
]


def test_bleu_equals_sacrebleu_with_variable_reference_counts():
  # sacrebleu's reference streams, padded with None by hand: the i-th reference of every example.
  streams = [
      ["the cat is sitting on the mat", "the quick brown fox jumped over the lazy dogs",
       "def wrap(text, width=70, **kwargs):", "nothing in common", "empty prediction"],
      ["a cat sat on the mat", None, "def wrap(text, width):", None, None],
      [None, None, "wrap(text)", None, None],
  ]
  assert metrics.bleu(PREDICTIONS, REFERENCES) == sacrebleu.corpus_bleu(PREDICTIONS, streams).score
  single = [[refs[0]] for refs in REFERENCES]
  assert metrics.bleu(PREDICTIONS, single) == sacrebleu.corpus_bleu(PREDICTIONS, [streams[0]]).score
  assert 0 < metrics.bleu(PREDICTIONS, REFERENCES) < 100


def test_rouge_equals_rouge_score_mean_fmeasure():
  scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
  expected = {}
  for name in ("rouge1", "rouge2", "rougeL"):
    values = [scorer.score_multi(refs, pred)[name].fmeasure for pred, refs in zip(PREDICTIONS, REFERENCES)]
    expected[name] = sum(values) / len(values)
  assert metrics.rouge(PREDICTIONS, REFERENCES) == expected
  # Stemming is on: "jumps"/"jumped" and "dog"/"dogs" match.
  one = metrics.rouge(["the fox jumps"], [["the fox jumped"]])
  assert one["rouge1"] == 1.0


@pytest.mark.parametrize("text, normalized", [
    ("The Cat!", "cat"),
    ("  A   dog's   life. ", "dogs life"),
    ("an apple, the pear and a plum", "apple pear and plum"),
    ("Theatre anthem", "theatre anthem"),  # articles only as whole words
    ("...", ""),
])
def test_squad_normalization(text, normalized):
  assert metrics.normalize_answer(text) == normalized


def test_exact_match_and_token_f1_known_values():
  assert metrics.exact_match("The Cat!", ["cat"]) == 1.0
  assert metrics.exact_match("cats", ["cat", "dog"]) == 0.0
  assert metrics.exact_match("the dog", ["cat", "Dog."]) == 1.0  # any reference
  # "the cat sat" -> [cat, sat]; "cat sat on mat" -> 4 tokens; 2 shared:
  # precision 2/2, recall 2/4, F1 = 2 * 1 * 0.5 / 1.5 = 2/3.
  assert metrics.token_f1("the cat sat", ["cat sat on mat"]) == pytest.approx(2 / 3)
  assert metrics.token_f1("the cat sat", ["dog", "cat sat on mat", "cat sat"]) == 1.0  # max over references
  assert metrics.token_f1("cat cat", ["cat"]) == pytest.approx(2 * 0.5 * 1 / 1.5)  # shared counts are clipped
  assert metrics.token_f1("", ["the"]) == 1.0  # both normalize to nothing
  assert metrics.token_f1("", ["cat"]) == 0.0
  assert metrics.token_f1("dog", ["cat"]) == 0.0


def test_classification_metrics_by_hand():
  # gold a a a b b c, predicted a a b b c c:
  #            pred a  b  c
  #   gold a       2  1  0
  #   gold b       0  1  1
  #   gold c       0  0  1
  y_true = ["a", "a", "a", "b", "b", "c"]
  y_pred = ["a", "a", "b", "b", "c", "c"]
  out = metrics.classification(y_true, y_pred, ["a", "b", "c"])
  assert out["confusion_matrix"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
  assert out["confusion_matrix_columns"] == ["a", "b", "c"]
  assert out["accuracy"] == pytest.approx(4 / 6)
  expected = {  # precision = diagonal / column sum, recall = diagonal / row sum
      "a": (2 / 2, 2 / 3, 0.8),       # F1 = 2 * 1 * 2/3 / (5/3)
      "b": (1 / 2, 1 / 2, 0.5),
      "c": (1 / 2, 1 / 1, 2 / 3),     # F1 = 2 * 0.5 * 1 / 1.5
  }
  for label, (p, r, f) in expected.items():
    got = out["per_class"][label]
    assert (got["precision"], got["recall"], got["f1"]) == pytest.approx((p, r, f))
  assert [out["per_class"][x]["support"] for x in "abc"] == [3, 2, 1]
  assert out["macro_f1"] == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)


def test_classification_label_order_and_unparsed_predictions():
  # The label order fixes rows and columns; a prediction outside the labels is wrong and
  # lands in an extra "other" column, so every row still sums to its class's support.
  out = metrics.classification(["pos", "neg", "neg", "pos"], ["pos", "<unparsed>", "neg", "neg"], ["pos", "neg"])
  assert out["confusion_matrix"] == [[1, 1, 0], [0, 1, 1]]
  assert out["confusion_matrix_columns"] == ["pos", "neg", "other"]
  assert out["accuracy"] == 0.5
  assert out["per_class"]["neg"]["recall"] == 0.5  # the unparsed one counts against its gold class
  assert out["per_class"]["neg"]["precision"] == 0.5
  assert out["per_class"]["pos"] == {"precision": 1.0, "recall": 0.5, "f1": pytest.approx(2 / 3), "support": 2}


def test_ranking_metrics_by_hand():
  rankings = [[3, 1, 2], ["a", "b", "c"], ["x", "y", "z"]]
  relevant = [[1], ["c", "a"], ["q"]]  # q was never ranked
  # reciprocal ranks 1/2, 1/1, 0 -> MRR 0.5
  # recall@1: 0, 1/2, 0 -> 1/6; recall@2: 1, 1/2, 0 -> 1/2; recall@3: 1, 1, 0 -> 2/3
  out = metrics.ranking(rankings, relevant, [1, 2, 3])
  assert out == pytest.approx({"mrr": 0.5, "recall@1": 1 / 6, "recall@2": 0.5, "recall@3": 2 / 3})
  assert metrics.reciprocal_rank(["b", "a"], ["a", "b"]) == 1.0  # the first relevant one counts
