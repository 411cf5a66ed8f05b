"""A trained reward model: score (prompt, response) conversations (scripts/score.py).

It reads a reward run's workdir (train.objective="reward") or an HF directory holding a one-label
sequence classifier (what scripts/export_hf.py writes for a reward run). A conversation is rendered
with the chat template and tokenized as data/preferences.py prepared the training pairs, and cut at
the end where they were cut (a run's preparation --max_len; give max_len for an export), so a score
here is the reward the run's validation computed for the same text.
"""

import dataclasses
import functools

import numpy as np

from data import chat, pipeline, preferences, sft
from data import examples as examples_lib
from data import tokenizer as tokenizer_lib
from errors import UserError
from model import families, hf_weights
from parallel import mesh as mesh_lib
from parallel import restore, sharding
from trainer.classifier import compiled_head, head_outputs


@dataclasses.dataclass
class RewardScorer:
  model: object
  params: dict
  mesh: object
  tokenizer: tokenizer_lib.Tokenizer
  formatter: chat.ChatFormatter
  seq_len: int
  batch_size: int = 32

  @classmethod
  def load(cls, workdir: str | None = None, hf_dir: str | None = None, best: bool = False,
           batch_size: int = 32, mesh_config: dict | None = None, max_len: int = 0) -> "RewardScorer":
    """max_len: tokens kept per conversation (cut at the end); 0: where the run's preparation cut its
    pairs (--workdir), or the smaller of 1024 and the model's positions (--hf_dir)."""
    if bool(workdir) == bool(hf_dir):
      raise UserError("give exactly one of --workdir (a reward run) and --hf_dir (an exported reward model)")
    mesh = mesh_lib.mesh_of_sizes(mesh_config)
    if workdir:
      r = restore.restore(workdir, mesh, best=best)
      cfg, params, seq_len = r.cfg, r.params, r.config.train.seq_len
      meta = pipeline.dataset_metadata(r.config.data)
      seq_len = min(seq_len, meta.get("options", {}).get("max_len") or seq_len)  # where preparation cut pairs
      tok, formatter = sft.dataset_chat(meta, r.config.init.hf_dir)
    else:
      cfg, params = hf_weights.load(hf_dir, mesh)
      seq_len = min(cfg.max_seq_len, 1024)
      tok, formatter = sft.model_chat(hf_dir)
    if cfg.num_labels != 1:
      raise UserError(f"{workdir or hf_dir} is not a reward model: it has {cfg.num_labels} output labels, "
                      f"a reward model has one (train.objective='reward', model.num_labels=1)")
    if max_len:
      seq_len = max_len
    return cls(families.build(cfg), params, mesh, tok, formatter, seq_len,
               sharding.round_to_batch_axes(mesh, batch_size))

  @functools.cached_property
  def _forward(self):
    return compiled_head(self.model, self.params, self.mesh)

  def score(self, conversations: list[tuple[list[dict], list[dict]]]) -> np.ndarray:
    """[N] rewards of (prompt messages, response messages) conversations."""
    rows = []
    for prompt, response in conversations:
      ids, _, _ = preferences.encode_side(self.tokenizer, self.formatter, prompt, response)
      rows.append(examples_lib.example_row(ids, np.zeros(len(ids), np.int32), self.seq_len))  # cut at the end
    return head_outputs(self._forward, self.params, self.mesh, rows, self.seq_len, self.batch_size)[:, 0]
