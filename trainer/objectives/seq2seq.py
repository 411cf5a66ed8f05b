"""Encoder-decoder objectives: cross-entropy on the decoder's target tokens (teacher forcing).

`seq2seq` trains on prepared (input, target) pairs (data/seq2seq.py packs them,
both sides under the same segment ids); `span_corruption` is T5's pretraining,
whose pairs the data pipeline makes on the fly from raw text
(data/span_corruption.py). Both score rows of `targets` and `target_weights`
and report target-token loss, accuracy and perplexity.
"""

import dataclasses
from typing import ClassVar

from data import span_corruption
from errors import UserError
from model import flops
from model.families import ENCODER_DECODER_FIELDS
from trainer.objectives.base import Objective
from trainer.objectives.masked_lm import target_token_metrics, target_token_sums


@dataclasses.dataclass(frozen=True)
class Seq2Seq(Objective):
  """Predict each target token from the encoder's row and the targets before it."""
  target_len: int = 0             # decoder tokens per row (config.train.target_len; 0: seq_len)
  families: ClassVar[tuple[str, ...]] = ("encoder_decoder",)
  batch_fields: ClassVar[tuple[str, ...]] = ENCODER_DECODER_FIELDS + ("targets", "target_weights")

  @classmethod
  def from_config(cls, config) -> "Seq2Seq":
    return cls(target_len=config.train.target_len or config.train.seq_len)

  def sums(self, apply_fn, variables, batch, rngs=None, train: bool = True):
    """(target NLL sum, target count, {"loss_sum", "accuracy_sum"})."""
    return target_token_sums(apply_fn(variables, batch, rngs=rngs), batch)

  def eval_metrics(self, sums: dict) -> dict:
    """Mean target-token loss, accuracy and perplexity, and how many target tokens were scored."""
    return target_token_metrics(sums)

  def flops_per_token(self, model_cfg, seq_len: int) -> float:
    """Encoder and decoder FLOPs of a row (model/flops.py), per encoder token."""
    return flops.encoder_decoder_flops_per_token(model_cfg, seq_len, self.target_len)


@dataclasses.dataclass(frozen=True)
class SpanCorruption(Seq2Seq):
  """T5's span corruption: the rows' pairs are drawn per row by the data pipeline."""
  noise_density: float = 0.15
  mean_span_length: float = 3.0
  seed: int = 0
  decoder_start_id: int = 0
  inputs_len: int = 0

  @classmethod
  def from_config(cls, config) -> "SpanCorruption":
    sc, t = config.train.span_corruption, config.train
    _, targets_len, _ = span_corruption.row_lengths(t.seq_len, sc.noise_density, sc.mean_span_length)
    if t.target_len and t.target_len < targets_len:
      raise UserError(f"config.train.target_len={t.target_len} is shorter than span corruption's targets of "
                      f"rows with {t.seq_len} encoder tokens ({targets_len}); set it to 0 (derived)")
    return cls(target_len=t.target_len or targets_len, noise_density=sc.noise_density,
               mean_span_length=sc.mean_span_length, seed=t.seed, decoder_start_id=config.model.decoder_start_id,
               inputs_len=t.seq_len)

  def masking(self, config, metadata: dict) -> span_corruption.SpanSpec:
    """How the pipeline corrupts rows: this objective's rates, the dataset's sentinels and EOS."""
    return span_corruption.spec_for_dataset(metadata, self.inputs_len, self.noise_density, self.mean_span_length,
                                            self.seed, self.decoder_start_id, targets_len=self.target_len)
