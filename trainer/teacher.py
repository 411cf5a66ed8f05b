"""A frozen teacher model for distillation: its architecture, its parameters on the mesh, its forward pass.

The teacher is an HF model directory or a train.py workdir (a checkpoint of it, LoRA merged in), of
any size, with the student's tokenizer (preflight checks the vocabularies). Its parameters ride beside
the student's in the frozen collection TEACHER, sharded by the same logical-axis rules, and it computes
in the student's dtype. A run pins its teacher at its first start (WORKDIR/teacher.json: the workdir's
checkpoint step, or the HF directory's fingerprint), so a resumed run learns from the very same one.
"""

import dataclasses
import json
import os

import jax

from data import prep_io
from errors import UserError
from model import base_reference, families, hf_config, hf_weights
from model.config import ModelConfig
from parallel import restore, sharding

TEACHER = "teacher"  # the frozen collection holding the teacher's parameters
RECORD = "teacher.json"
# How a model computes rather than what it is: the teacher takes the student's.
_RUNTIME_FIELDS = ("dtype", "param_dtype", "attention_impl")


@dataclasses.dataclass(frozen=True)
class Teacher:
  source: str             # the HF directory or workdir
  from_workdir: bool
  cfg: ModelConfig

  @property
  def field(self) -> str:
    return f"config.train.distill.teacher_{'workdir' if self.from_workdir else 'hf_dir'}"

  @classmethod
  def from_config(cls, distill, student: ModelConfig, seq_len: int = 0) -> "Teacher":
    """config.train.distill's teacher, checked against the student's vocabulary and sequence length."""
    if not distill.teacher:
      raise UserError("config.train.objective='distill' needs a teacher: set config.train.distill.teacher_hf_dir "
                      "(an HF model directory), config.train.distill.teacher_workdir (a train.py workdir) or "
                      "config.train.distill.teacher_topk_dir (its logits, scripts/precompute_teacher.py)")
    if distill.teacher_workdir:
      cfg = dataclasses.replace(restore.load_run_config(distill.teacher_workdir).model, lora=None)
    else:
      cfg = ModelConfig.from_config(hf_config.read(distill.teacher_hf_dir, "decoder")[1])
    cfg = dataclasses.replace(cfg, **{f: getattr(student, f) for f in _RUNTIME_FIELDS})
    teacher = cls(distill.teacher, bool(distill.teacher_workdir), cfg)
    where = f"{teacher.field}={distill.teacher}"
    if cfg.family != "decoder" or cfg.num_labels:
      raise UserError(f"{where} holds {'a classifier' if cfg.num_labels else cfg.family}, not a decoder "
                      f"language model to distil from")
    if cfg.vocab_size != student.vocab_size:
      raise UserError(f"{where} predicts over {cfg.vocab_size} tokens but the student's config.model.vocab_size "
                      f"is {student.vocab_size}: a teacher must share the student's tokenizer and vocabulary")
    if cfg.position == "learned" and seq_len > cfg.max_seq_len:
      raise UserError(f"config.train.seq_len={seq_len} exceeds the {cfg.max_seq_len} positions of {where}")
    return teacher

  @property
  def module(self):
    return families.build(self.cfg)

  def apply_fn(self):
    return families.batch_apply(self.module)

  def shardings(self, mesh):
    """(abstract parameters, NamedShardings) on `mesh`."""
    abstract, shardings = sharding.abstract_variables(self.module, mesh, "params")
    sharding.check_divisible(abstract, shardings, "teacher parameter")
    return abstract, shardings

  def identity(self) -> dict:
    """Which teacher this is now: its source, and its newest checkpoint step (a workdir) or the
    fingerprint of its files (an HF directory)."""
    return {"source": os.path.abspath(self.source),
            "step": restore.latest_step(self.source) if self.from_workdir else None,
            "fingerprint": None if self.from_workdir else base_reference.fingerprint(self.source)}

  def pin(self, workdir: str, resuming: bool, write: bool) -> int | None:
    """The teacher checkpoint step this run uses (None for an HF teacher): recorded at the first start,
    checked or reused on resume."""
    path = os.path.join(workdir, RECORD)
    if resuming and os.path.isfile(path):
      with open(path) as f:
        recorded = json.load(f)
      if recorded.get("source") != os.path.abspath(self.source):
        was = recorded.get("source") or f"precomputed in {recorded.get('teacher_topk_dir')}"
        raise UserError(f"{workdir} was distilled from the teacher {was} ({path}), not "
                        f"{self.field}={self.source}; resume with that teacher or start a new --workdir")
      if not self.from_workdir and recorded.get("fingerprint") != base_reference.fingerprint(self.source):
        raise UserError(f"{self.field}={self.source} has changed since {workdir} started distilling from it "
                        f"({path}); resume with the original teacher or start a new --workdir")
      return recorded.get("step")
    identity = self.identity()
    if write:
      os.makedirs(workdir, exist_ok=True)
      prep_io.write_json_atomic(path, identity)
    return identity["step"]

  def load(self, mesh, abstract, shardings, step: int | None = None) -> dict:
    """The teacher's parameters (a workdir's checkpoint `step`, else its newest), placed on `shardings`
    (from `shardings(mesh)`, as are the shapes and dtypes in `abstract`)."""
    if self.from_workdir:
      params = restore.restore(self.source, mesh, step=step).params
      return jax.tree.map(lambda x, a: x.astype(a.dtype), params, abstract)  # in the student's param dtype
    return hf_weights.load_params(self.source, self.cfg, abstract, shardings)
