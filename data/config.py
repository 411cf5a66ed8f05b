"""`config.data`: which prepared dataset a run reads, and how rows are made from it."""

import dataclasses
from typing import Literal

from typed_config import Section


@dataclasses.dataclass(frozen=True)
class DataConfig(Section):
  PATH = "config.data"
  dir: str = ""                   # a prepared dataset (scripts/prepare_data.py)
  # Several prepared datasets sampled by weight, "DIR:WEIGHT,DIR:WEIGHT"
  # (they must share one tokenizer); replaces `dir` when set.
  mixture: str = ""
  worker_count: int = 0           # grain worker processes; 0 reads in the main process
  # Wrap documents in BOS/EOS: BOS only where the dataset's tokenizer adds one itself
  # (as transformers tokenizes); chat datasets keep their template's.
  add_bos: bool = True
  add_eos: bool = True
  # "split": concatenate documents and cut rows (pretraining, no padding);
  # "whole": never cut an example, pad rows instead (fine-tuning).
  packing: Literal["split", "whole"] = "split"
  # When set, `dir` is prepared on first use with this data config
  # (configs/data/*.py), e.g. the quickstart's standard-library corpus.
  prepare_config: str = ""

  def check(self) -> None:
    self.require(self.worker_count >= 0, "worker_count", "0 (the main process) or more")
