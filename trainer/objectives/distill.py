"""Knowledge distillation: a student decoder learns a frozen teacher's next-token distributions.

Per target token (next_token_targets: the same tokens, and loss mask, a causal LM trains on),
    loss = alpha * T^2 * D(teacher_T, student_T) + (1 - alpha) * cross-entropy(student, data)
where x_T = log_softmax(logits / T) and D is
    forward_kl  KL(teacher || student)      (Hinton et al.; TRL GKD beta=0)
    reverse_kl  KL(student || teacher)      (TRL GKD beta=1)
    jsd         beta KL(teacher || M) + (1 - beta) KL(student || M), M = beta teacher + (1 - beta) student
                (TRL GKD's generalized_jsd_loss; beta = config.train.distill.jsd_beta)
The T^2 factor keeps the divergence's gradients on the cross-entropy's scale as T grows (Hinton et al.).
`divergence` is that formula on logits, a pure function the tests compare with an independent one.

With a precomputed teacher (config.train.distill.teacher_topk_dir, data/teacher_topk.py) the rows carry
the teacher's k likeliest tokens, their log-probabilities, and the logsumexp of all its logits and of the
others (at T=1 and at the T it was computed for). `topk_divergence` then compares both distributions on
k + 1 outcomes: each of those tokens, and "any other token". Both sides' probabilities there are exact,
not renormalised over k, so the student also learns how much mass to leave outside the teacher's top k;
with k equal to the vocabulary every divergence is exactly the live teacher's. On fewer outcomes a
divergence (and the kl_t, kl_t1 metrics) is a lower bound of the one over the whole vocabulary.
"""

import dataclasses
import math
from typing import ClassVar

import jax
import jax.numpy as jnp

from data import teacher_topk as teacher_topk_lib
from trainer.objectives.base import Objective
from trainer.objectives.causal_lm import cross_entropy_sums, next_token_targets
from trainer.teacher import TEACHER, Teacher


def _kl(log_p, log_q):
  """KL(p || q) over the last axis, from log-probabilities."""
  return jnp.sum(jnp.exp(log_p) * (log_p - log_q), axis=-1)


def divergence(student_logits, teacher_logits, kind: str, temperature: float = 1.0, jsd_beta: float = 0.5):
  """Per-position divergence between teacher and student at `temperature` ([..., V] -> [...])."""
  student = jax.nn.log_softmax(student_logits.astype(jnp.float32) / temperature)
  teacher = jax.nn.log_softmax(teacher_logits.astype(jnp.float32) / temperature)
  return _divergence_of_logprobs(student, teacher, kind, jsd_beta)


def logsumexp_outside(x, ids):
  """logsumexp over the last axis of `x` [..., V] leaving out the (distinct) entries `ids` [..., k] (-inf if k = V)."""
  inside = jnp.put_along_axis(jnp.zeros(x.shape, bool), ids, True, axis=-1, inplace=False)
  return jax.nn.logsumexp(jnp.where(inside, -jnp.inf, x), axis=-1)


def topk_divergence(student_logits, teacher_ids, teacher_logps, teacher_norms, kind: str, temperature: float = 1.0,
                    jsd_beta: float = 0.5):
  """Per-position divergence from a teacher's top k to the student's logits [..., V] on k + 1 outcomes.

  `teacher_ids`, `teacher_logps` [..., k]: its k likeliest tokens and their log-probabilities at T=1;
  `teacher_norms` [..., 2, 2]: at t = 1 and at `temperature`, logsumexp(logits / t) over all tokens and
  over the others (data/teacher_topk.py)."""
  t = teacher_topk_lib.norms_index(temperature)
  teacher_ids = teacher_ids.astype(jnp.int32)  # stored as uint16 for vocabularies that fit
  log_z1, (log_z, log_z_rest) = teacher_norms[..., 0, 0], (teacher_norms[..., t, 0], teacher_norms[..., t, 1])
  teacher = (teacher_logps.astype(jnp.float32) + log_z1[..., None]) / temperature - log_z[..., None]
  z = student_logits.astype(jnp.float32) / temperature
  log_norm = jax.nn.logsumexp(z, axis=-1, keepdims=True)
  student = jnp.take_along_axis(z, teacher_ids, axis=-1) - log_norm
  if teacher_ids.shape[-1] < z.shape[-1]:  # "any other token": the mass outside the k, computed directly
    student_rest = logsumexp_outside(z, teacher_ids)[..., None] - log_norm
    student = jnp.concatenate([student, student_rest], -1)
    teacher = jnp.concatenate([teacher, (log_z_rest - log_z)[..., None]], -1)
  return _divergence_of_logprobs(student, teacher, kind, jsd_beta)


def _divergence_of_logprobs(student, teacher, kind: str, jsd_beta: float):
  if kind == "forward_kl":
    return _kl(teacher, student)
  if kind == "reverse_kl":
    return _kl(student, teacher)
  if kind != "jsd":
    raise ValueError(f"divergence kind {kind!r}; expected forward_kl, reverse_kl or jsd")
  mixture = jnp.logaddexp(student + math.log1p(-jsd_beta), teacher + math.log(jsd_beta))
  return jsd_beta * _kl(teacher, mixture) + (1 - jsd_beta) * _kl(student, mixture)


@dataclasses.dataclass(frozen=True)
class Distill(Objective):
  """config.train.distill: a student decoder trained on a frozen teacher's predictions and the data."""
  teacher: Teacher | None  # None: the teacher's top-k logits come with the rows (teacher_topk)
  teacher_topk: str = ""
  temperature: float = 2.0
  alpha: float = 0.5
  kind: str = "forward_kl"
  jsd_beta: float = 0.5
  families: ClassVar[tuple[str, ...]] = ("decoder",)

  @property
  def batch_fields(self) -> tuple[str, ...]:
    fields = ("tokens", "segment_ids", "positions", "loss_mask")
    return fields + teacher_topk_lib.FIELDS if self.teacher_topk else fields

  @classmethod
  def from_config(cls, config) -> "Distill":
    d = config.train.distill
    teacher = None if d.teacher_topk_dir else Teacher.from_config(d, config.model, config.train.seq_len)
    return cls(teacher, d.teacher_topk_dir, d.temperature, d.alpha, d.divergence, d.jsd_beta)

  def _divergence_from_teacher(self, student_BxTxV, variables, batch):
    """(kind, temperature) -> the per-position divergence from this batch's teacher (run once)."""
    if self.teacher is None:
      ids_BxTxK, logps_BxTxK, norms_BxTx2x2 = (batch[f] for f in teacher_topk_lib.FIELDS)
      return lambda kind, t: topk_divergence(student_BxTxV, ids_BxTxK, logps_BxTxK, norms_BxTx2x2, kind, t,
                                             self.jsd_beta)
    teacher_BxTxV = jax.lax.stop_gradient(self.teacher.apply_fn()({"params": variables[TEACHER]}, batch))
    return lambda kind, t: divergence(student_BxTxV, teacher_BxTxV, kind, t, self.jsd_beta)

  def sums(self, apply_fn, variables, batch, rngs=None, train: bool = True):
    """(summed loss, target tokens, metric sums): cross-entropy and the divergence trained on; in
    evaluation also the forward KL at T and at T=1."""
    student = {k: v for k, v in variables.items() if k != TEACHER}
    student_BxTxV = apply_fn(student, batch, rngs=rngs).astype(jnp.float32)
    targets_BxT, weights_BxT = next_token_targets(batch)
    nll, _, tokens = cross_entropy_sums(student_BxTxV, targets_BxT, weights_BxT)
    divergence_at = self._divergence_from_teacher(student_BxTxV, variables, batch)
    div_BxT = divergence_at(self.kind, self.temperature)
    div = jnp.sum(div_BxT * weights_BxT)
    loss = self.alpha * self.temperature ** 2 * div + (1 - self.alpha) * nll
    metrics = {"loss_sum": loss, "ce_sum": nll, "divergence_sum": div}
    if not train:  # the forward KL at T and at T=1, for evaluations only (each computed once)
      kl = {(self.kind, self.temperature): div}
      for name, t in (("kl_t_sum", self.temperature), ("kl_t1_sum", 1.0)):
        if ("forward_kl", t) not in kl:
          kl["forward_kl", t] = jnp.sum(divergence_at("forward_kl", t) * weights_BxT)
        metrics[name] = kl["forward_kl", t]
    return loss, tokens, metrics

  def eval_metrics(self, sums: dict) -> dict:
    tokens = max(sums["count"], 1.0)
    means = {k.removesuffix("_sum"): v / tokens for k, v in sums.items() if k.endswith("_sum")}
    return {**means, "perplexity": math.exp(min(means["ce"], 50.0)), "tokens": sums["count"]}
