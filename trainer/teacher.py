"""A frozen teacher model for distillation: its architecture, its parameters on the mesh, its forward pass.

The teacher is an HF model directory or a train.py workdir (its newest checkpoint, LoRA merged in), of
any size, with the student's tokenizer (preflight checks the vocabularies). Its parameters ride beside
the student's in the frozen collection TEACHER, sharded by the same logical-axis rules.
"""

import dataclasses

from errors import UserError
from model import families, hf_config, hf_weights
from model.config import ModelConfig
from parallel import restore, sharding

TEACHER = "teacher"  # the frozen collection holding the teacher's parameters


@dataclasses.dataclass(frozen=True)
class Teacher:
  source: str             # the HF directory or workdir
  from_workdir: bool
  cfg: ModelConfig

  @classmethod
  def from_config(cls, distill, student: ModelConfig) -> "Teacher":
    """config.train.distill's teacher, checked against the student's vocabulary."""
    if not distill.teacher:
      raise UserError("config.train.objective='distill' needs a teacher: set config.train.distill.teacher_hf_dir "
                      "(an HF model directory) or config.train.distill.teacher_workdir (a train.py workdir)")
    if distill.teacher_workdir:
      cfg = dataclasses.replace(restore.load_run_config(distill.teacher_workdir).model, lora=None)
      field = "config.train.distill.teacher_workdir"
    else:
      cfg = ModelConfig.from_config(hf_config.read(distill.teacher_hf_dir, "decoder")[1])
      field = "config.train.distill.teacher_hf_dir"
    if cfg.family != "decoder" or cfg.num_labels:
      raise UserError(f"{field}={distill.teacher} holds {'a classifier' if cfg.num_labels else cfg.family}, "
                      f"not a decoder language model to distil from")
    if cfg.vocab_size != student.vocab_size:
      raise UserError(f"{field}={distill.teacher} predicts over {cfg.vocab_size} tokens but the student's "
                      f"config.model.vocab_size is {student.vocab_size}: a teacher must share the student's "
                      f"tokenizer and vocabulary")
    return cls(distill.teacher, bool(distill.teacher_workdir), cfg)

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

  def load(self, mesh) -> dict:
    """The teacher's parameters, placed on their shards."""
    if self.from_workdir:
      return restore.restore(self.source, mesh).params
    abstract, shardings = self.shardings(mesh)
    return hf_weights.load_params(self.source, self.cfg, abstract, shardings)
