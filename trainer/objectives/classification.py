"""Sequence classification: one labelled example per row, cross-entropy over the classes.

The model's classification head (config.model.num_labels > 0) gives logits
[B, C]: an encoder pools its [CLS] token or the mean of its tokens, a decoder
reads its last token. Evaluation sums a confusion matrix over batches and
devices, so its metrics are exact for the whole split: accuracy, macro-F1
and per-class precision, recall and F1, computed by scikit-learn from it.
"""

import dataclasses
import math
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from errors import UserError
from trainer.objectives.base import Objective


def expand_confusion(confusion_CxC: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(y_true, y_pred) with one entry per example a confusion matrix [true, predicted] counts."""
  counts = np.rint(confusion_CxC).astype(np.int64)
  true_C, pred_C = np.indices(counts.shape)
  return np.repeat(true_C.ravel(), counts.ravel()), np.repeat(pred_C.ravel(), counts.ravel())


def classification_report(confusion_CxC: np.ndarray, names: list[str]) -> dict:
  """Accuracy, macro-F1 and per-class precision/recall/F1 (scikit-learn's definitions)."""
  from sklearn.metrics import accuracy_score, precision_recall_fscore_support
  y_true, y_pred = expand_confusion(confusion_CxC)
  if not y_true.size:
    return {"accuracy": 0.0, "macro_f1": 0.0}
  labels = list(range(len(names)))
  precision, recall, f1, _ = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
  out = {"accuracy": float(accuracy_score(y_true, y_pred)), "macro_f1": float(np.mean(f1))}
  for i, name in enumerate(names):
    out.update({f"precision[{name}]": float(precision[i]), f"recall[{name}]": float(recall[i]),
                f"f1[{name}]": float(f1[i])})
  return out


@dataclasses.dataclass(frozen=True)
class Classification(Objective):
  """Predict each row's `label` from its example."""
  num_labels: int
  names: tuple[str, ...] = ()  # class names in id order (the dataset's label set)
  families: ClassVar[tuple[str, ...]] = ("decoder", "encoder")
  batch_fields: ClassVar[tuple[str, ...]] = ("tokens", "segment_ids", "positions", "token_types", "label")

  @classmethod
  def from_config(cls, config) -> "Classification":
    from data import pipeline
    names = pipeline.dataset_metadata(config.data).get("labels")  # one label set across a mixture
    if not names:
      raise UserError(f"config.train.objective='classification' needs a labelled dataset, but "
                      f"{config.data.dir} has no label set; prepare one with scripts/prepare_classify.py")
    if config.model.num_labels != len(names):
      raise UserError(f"config.model.num_labels={config.model.num_labels}, but {config.data.dir} has "
                      f"{len(names)} labels {names}; set --config.model.num_labels={len(names)}")
    return cls(num_labels=len(names), names=tuple(names))

  def sums(self, apply_fn, variables, batch, rngs=None, train: bool = True):
    """(summed cross-entropy, examples, metric sums); evaluation adds the confusion matrix."""
    logits_BxC = apply_fn(variables, batch, rngs=rngs).astype(jnp.float32)
    label_B = batch["label"]
    weight_B = (batch["segment_ids"] != 0).any(axis=1).astype(jnp.float32)  # rows that hold an example
    log_z_B = jax.nn.logsumexp(logits_BxC, axis=-1)
    nll_B = log_z_B - jnp.take_along_axis(logits_BxC, label_B[:, None], axis=-1)[:, 0]
    predicted_B = jnp.argmax(logits_BxC, axis=-1)
    metrics = {"loss_sum": jnp.sum(nll_B * weight_B),
               "accuracy_sum": jnp.sum((predicted_B == label_B) * weight_B)}
    if not train:
      true_BxC = jax.nn.one_hot(label_B, self.num_labels) * weight_B[:, None]
      metrics["confusion_sum"] = true_BxC.T @ jax.nn.one_hot(predicted_B, self.num_labels)
    return metrics["loss_sum"], jnp.sum(weight_B), metrics

  def eval_metrics(self, sums: dict) -> dict:
    """Mean loss, accuracy, macro-F1, per-class precision/recall/F1, and the number of examples."""
    count = float(sums["count"])
    names = list(self.names) or [str(i) for i in range(self.num_labels)]
    report = classification_report(np.asarray(sums["confusion_sum"]), names)
    loss = float(sums["loss_sum"]) / max(count, 1.0)
    return {"loss": loss if math.isfinite(loss) else float("inf"), **report, "examples": count}
