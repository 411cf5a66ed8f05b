"""A trained classifier: label new text, or score a labelled file (scripts/classify.py, scripts/evaluate.py).

It reads a classification run's workdir: the parameters go straight onto the
mesh (parallel/restore.py), and text is encoded exactly as the run's dataset
was (data/labelled.py: the same tokenizer, pair layout and --max_len), so a
score here is the score the run's validation would give on the same examples.
"""

import dataclasses
import functools

import jax
import numpy as np

from data import examples as examples_lib
from data import labelled, pipeline
from data import tokenizer as tokenizer_lib
from errors import UserError
from model import families
from parallel import mesh as mesh_lib
from parallel import restore, sharding
from trainer.objectives.classification import classification_report


@dataclasses.dataclass
class Classifier:
  model: object
  params: dict
  mesh: object
  encode: labelled.Encoder
  names: list[str]
  seq_len: int
  batch_size: int = 32

  @classmethod
  def load(cls, workdir: str, mesh_config: dict | None = None, best: bool = False,
           batch_size: int = 32) -> "Classifier":
    mesh = mesh_lib.mesh_of_sizes(mesh_config)
    r = restore.restore(workdir, mesh, best=best)
    if not r.cfg.num_labels:
      raise UserError(f"{workdir} is not a classifier run (its config.model.num_labels is 0)")
    meta = pipeline.dataset_metadata(r.config.data)
    if not meta.get("labels"):
      raise UserError(f"{workdir} trained on {r.config.data.dir}, which has no label set")
    tok = tokenizer_lib.load(meta["tokenizer_path"])
    max_len = meta.get("options", {}).get("max_len", r.config.train.seq_len)
    batch_size = sharding.round_to_batch_axes(mesh, batch_size)
    return cls(families.build(r.cfg), r.params, mesh, labelled.Encoder(tok, max_len), list(meta["labels"]),
               r.config.train.seq_len, batch_size)

  @functools.cached_property
  def _forward(self):
    return compiled_head(self.model, self.params, self.mesh)

  def probabilities(self, examples: list[labelled.Example]) -> np.ndarray:
    """[N, classes]: the softmax of the classifier's logits for each example."""
    rows = [examples_lib.example_row(ids, types, self.seq_len) for ids, types, _ in map(self.encode, examples)]
    logits = head_outputs(self._forward, self.params, self.mesh, rows, self.seq_len, self.batch_size)
    return np.asarray(jax.nn.softmax(logits, axis=-1)) if len(rows) else np.zeros((0, len(self.names)), np.float32)

  def evaluate(self, files: list[str]) -> tuple[dict, list[dict]]:
    """(metrics, per-example predictions) on labelled JSONL files, against the run's label set."""
    examples = labelled.read_examples(files)
    if not examples:
      raise UserError(f"{','.join(files)} holds no examples")
    truth = labelled.label_ids(examples, self.names, "the classifier's training data")
    probs = self.probabilities(examples)
    predicted = probs.argmax(-1)
    confusion = np.zeros((len(self.names),) * 2)
    np.add.at(confusion, (np.asarray(truth), predicted), 1)
    details = [{"where": e.where, "label": e.label, "predicted": self.names[int(k)], "probability": float(p[k])}
               for e, p, k in zip(examples, probs, predicted)]
    return {**classification_report(confusion, self.names), "examples": len(examples)}, details


def compiled_head(model, params, mesh):
  """jitted (params, batch of rows) -> the model's head outputs [B, C] in float32 (logits; rewards)."""
  rows_sh, params_sh = sharding.batch_sharding(mesh), jax.tree.map(lambda a: a.sharding, params)

  def outputs(params, batch):
    return model.apply({"params": params}, *families.batch_inputs(model, batch)).astype(np.float32)

  fields = {k: rows_sh for k in ("tokens", "segment_ids", "positions", "token_types")}
  return jax.jit(outputs, in_shardings=(params_sh, fields), out_shardings=sharding.replicated(mesh))


def head_outputs(forward, params, mesh, rows: list[dict], seq_len: int, batch_size: int) -> np.ndarray:
  """[N, C]: `forward` (compiled_head) over example rows, batch_size at a time."""
  fields = examples_lib.example_row([], [], seq_len).keys()
  out = [o for _, _, o in sharding.map_rows(forward, params, rows.__getitem__, len(rows), batch_size, fields, mesh)]
  return np.concatenate(out) if out else np.zeros((0, 1), np.float32)
