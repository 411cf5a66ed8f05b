"""Masked language modelling (BERT): predict the original token wherever the data pipeline masked one.

The corruption itself happens in the data pipeline (data/masking.py), seeded per
row, so batches arrive as `tokens` (corrupted), `targets` (the originals) and
`target_weights` (1.0 at the chosen positions). The objective only scores them;
`masking` tells the pipeline how to corrupt, from config.train.mlm and the
dataset's mask token.
"""

import dataclasses
import math
from typing import ClassVar

import jax.numpy as jnp

from data import masking as masking_lib
from trainer.objectives.base import Objective
from trainer.objectives.causal_lm import cross_entropy_sums


def target_token_sums(logits_BxTxV, batch: dict):
  """(NLL sum, count, {"loss_sum", "accuracy_sum"}) over the weighted positions of `targets`: the scoring
  shared by objectives whose rows carry their own targets (masked LM, the encoder-decoders)."""
  targets_BxT = batch["targets"]
  weights_BxT = batch["target_weights"].astype(jnp.float32)
  nll, _, count = cross_entropy_sums(logits_BxTxV, targets_BxT, weights_BxT)
  correct = jnp.sum((jnp.argmax(logits_BxTxV, axis=-1) == targets_BxT).astype(jnp.float32) * weights_BxT)
  return nll, count, {"loss_sum": nll, "accuracy_sum": correct}


def target_token_metrics(sums: dict) -> dict:
  """Mean target-token loss, accuracy and perplexity, and how many target tokens were scored."""
  count = max(sums["count"], 1.0)
  loss = sums["loss_sum"] / count
  return {"loss": loss, "accuracy": sums["accuracy_sum"] / count, "perplexity": math.exp(min(loss, 50.0)),
          "tokens": sums["count"]}


@dataclasses.dataclass(frozen=True)
class MaskedLM(Objective):
  """Cross-entropy over the masked positions of an encoder's logits; reports masked-token accuracy."""
  rate: float = 0.15              # config.train.mlm.rate: fraction of maskable tokens chosen per row
  whole_word: bool = False        # config.train.mlm.whole_word
  mask_fraction: float = 0.8      # config.train.mlm.mask_fraction: chosen tokens that become [MASK]
  random_fraction: float = 0.1    # config.train.mlm.random_fraction: ... a random token (the rest stay)
  families: ClassVar[tuple[str, ...]] = ("encoder",)
  batch_fields: ClassVar[tuple[str, ...]] = ("tokens", "positions", "segment_ids", "targets", "target_weights")

  @classmethod
  def from_config(cls, config) -> "MaskedLM":
    mlm = config.train.mlm  # configs/schema.py MlmConfig, checked there
    return cls(rate=mlm.rate, whole_word=mlm.whole_word, mask_fraction=mlm.mask_fraction,
               random_fraction=mlm.random_fraction)

  def masking(self, config, metadata: dict) -> masking_lib.MaskSpec:
    """How the pipeline masks rows: this objective's rates, the dataset's mask token, config.train.seed."""
    return masking_lib.spec_for_dataset(metadata, rate=self.rate, whole_word=self.whole_word,
                                        seed=config.train.seed, mask_fraction=self.mask_fraction,
                                        random_fraction=self.random_fraction)

  def sums(self, apply_fn, variables, batch, rngs=None, train: bool = True):
    """(masked-token NLL sum, masked-token count, {"loss_sum", "accuracy_sum"})."""
    return target_token_sums(apply_fn(variables, batch, rngs=rngs), batch)

  def eval_metrics(self, sums: dict) -> dict:
    """Mean masked-token loss, its accuracy and perplexity, and how many masked tokens were scored."""
    return target_token_metrics(sums)
