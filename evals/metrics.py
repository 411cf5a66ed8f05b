"""Standard metrics for task benchmarks.

BLEU, ROUGE and the classification metrics call the reference libraries
(sacrebleu, rouge-score, scikit-learn) so numbers match what others report;
only SQuAD-style answer matching and the ranking metrics, which have no
well-kept library, are written here.
"""

import collections
import re
import string

import sacrebleu
from rouge_score import rouge_scorer
from sklearn import metrics as sk_metrics

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = set(string.punctuation)


def bleu(predictions: list[str], references: list[list[str]]) -> float:
  """sacrebleu corpus BLEU (0-100) of predictions against one or more references each.

  sacrebleu wants reference *streams* (the i-th reference of every example);
  examples with fewer references are padded with None, which it skips.
  """
  if not predictions:
    return 0.0
  num_streams = max(len(refs) for refs in references)
  streams = [[refs[i] if i < len(refs) else None for refs in references] for i in range(num_streams)]
  return sacrebleu.corpus_bleu(predictions, streams).score


def rouge(predictions: list[str], references: list[list[str]]) -> dict[str, float]:
  """Mean ROUGE-1/2/L F-measure over examples (Porter stemming on).

  With several references an example takes the best one (rouge-score's score_multi).
  """
  scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
  totals = dict.fromkeys(ROUGE_TYPES, 0.0)
  for prediction, refs in zip(predictions, references):
    scores = scorer.score_multi(refs, prediction)
    for name in ROUGE_TYPES:
      totals[name] += scores[name].fmeasure
  n = max(len(predictions), 1)
  return {name: total / n for name, total in totals.items()}


def normalize_answer(text: str) -> str:
  """SQuAD normalization: lowercase, drop punctuation and articles, collapse whitespace."""
  text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
  return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, references: list[str]) -> float:
  """1.0 if the normalized prediction equals any normalized reference."""
  normalized = normalize_answer(prediction)
  return float(any(normalized == normalize_answer(ref) for ref in references))


def _token_f1(prediction: str, reference: str) -> float:
  pred_tokens = normalize_answer(prediction).split()
  ref_tokens = normalize_answer(reference).split()
  if not pred_tokens or not ref_tokens:  # SQuAD: two empty answers agree, one empty one scores 0
    return float(pred_tokens == ref_tokens)
  common = sum((collections.Counter(pred_tokens) & collections.Counter(ref_tokens)).values())
  if common == 0:
    return 0.0
  precision, recall = common / len(pred_tokens), common / len(ref_tokens)
  return 2 * precision * recall / (precision + recall)


def token_f1(prediction: str, references: list[str]) -> float:
  """SQuAD token-overlap F1, the best over references."""
  return max(_token_f1(prediction, ref) for ref in references)


def classification(y_true: list[str], y_pred: list[str], labels: list[str]) -> dict:
  """Accuracy, per-class precision/recall/F1/support, macro-F1 and the confusion matrix.

  `labels` fixes the class order of the per-class lists and the matrix rows
  (gold). A prediction outside `labels` (an unparsable generation) is wrong:
  it lowers accuracy and its gold class's recall and appears in the matrix's
  extra last column, `other`, which is only present when such predictions occur.
  """
  labels = list(labels)
  precision, recall, f1, support = sk_metrics.precision_recall_fscore_support(
      y_true, y_pred, labels=labels, zero_division=0)
  other = sorted({p for p in y_pred if p not in labels})
  columns = labels + other
  matrix = sk_metrics.confusion_matrix(y_true, y_pred, labels=columns)[:len(labels)]
  if other:  # fold all unknown predictions into one column
    matrix = [list(row[:len(labels)]) + [sum(row[len(labels):])] for row in matrix.tolist()]
  else:
    matrix = matrix.tolist()
  return {
      "accuracy": float(sk_metrics.accuracy_score(y_true, y_pred)),
      "macro_f1": float(sk_metrics.f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
      "per_class": {label: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
                    for label, p, r, f, s in zip(labels, precision, recall, f1, support)},
      "labels": labels,
      "confusion_matrix": [[int(x) for x in row] for row in matrix],
      "confusion_matrix_columns": labels + (["other"] if other else []),
  }


def reciprocal_rank(ranking: list, relevant: list) -> float:
  """1 / (position of the first relevant id in `ranking`), 0 if none is ranked."""
  wanted = set(relevant)
  for position, item in enumerate(ranking, start=1):
    if item in wanted:
      return 1.0 / position
  return 0.0


def recall_at_k(ranking: list, relevant: list, k: int) -> float:
  """Fraction of the relevant ids among the first k of `ranking`."""
  wanted = set(relevant)
  return len(wanted & set(ranking[:k])) / len(wanted)


def ranking(rankings: list[list], relevant: list[list], ks: list[int]) -> dict[str, float]:
  """MRR and recall@k, each averaged over queries."""
  n = max(len(rankings), 1)
  out = {"mrr": sum(reciprocal_rank(r, rel) for r, rel in zip(rankings, relevant)) / n}
  for k in ks:
    out[f"recall@{k}"] = sum(recall_at_k(r, rel, k) for r, rel in zip(rankings, relevant)) / n
  return out
