"""Distillation: the divergences against TRL's published formulas, and runs of a small student taught by the
tiny Llama (one device against data x fsdp x tensor, straight against resumed, a teacher equal to the student)."""

import math
import os
import shutil

import jax
import numpy as np
import pytest

from conftest import read_metrics, small_config
from configs.schema import RunConfig
from errors import UserError
from trainer import loop
from trainer.objectives import distill

# --- The formulas, against numpy. ---


def _log_softmax(x):
  x = x - x.max(-1, keepdims=True)
  return x - np.log(np.exp(x).sum(-1, keepdims=True))


def _trl_gkd(student_logits, teacher_logits, beta, temperature):
  """TRL GKDTrainer.generalized_jsd_loss per position (its F.kl_div(input, target) is KL(target || input))."""
  s, t = _log_softmax(student_logits / temperature), _log_softmax(teacher_logits / temperature)
  kl = lambda log_p, log_q: (np.exp(log_p) * (log_p - log_q)).sum(-1)  # noqa: E731
  if beta == 0:
    return kl(t, s)
  if beta == 1:
    return kl(s, t)
  m = np.logaddexp(s + np.log1p(-beta), t + np.log(beta))
  return beta * kl(t, m) + (1 - beta) * kl(s, m)


@pytest.mark.parametrize("kind,beta", [("forward_kl", 0.0), ("reverse_kl", 1.0), ("jsd", 0.5), ("jsd", 0.1)])
@pytest.mark.parametrize("temperature", [1.0, 2.5])
def test_divergences_follow_trl_gkd(kind, beta, temperature):
  rng = np.random.default_rng(0)
  student, teacher = rng.normal(size=(2, 3, 5, 17)) * 3
  got = distill.divergence(student, teacher, kind, temperature, beta)
  np.testing.assert_allclose(got, _trl_gkd(student, teacher, beta, temperature), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind,beta", [("forward_kl", 0.0), ("reverse_kl", 1.0), ("jsd", 0.3)])
def test_divergences_match_trl_itself(kind, beta, monkeypatch):
  """TRL's GKDTrainer.generalized_jsd_loss, live, on the same logits at T=2."""
  import torch
  monkeypatch.setenv("TRL_EXPERIMENTAL_SILENCE", "1")
  from trl.experimental.gkd import GKDTrainer
  rng = np.random.default_rng(1)
  student, teacher = (rng.normal(size=(2, 4, 33)) * 2).astype(np.float32)
  theirs = GKDTrainer.generalized_jsd_loss(torch.tensor(student), torch.tensor(teacher), beta=beta,
                                           temperature=2.0, reduction="none").sum(-1).numpy()
  np.testing.assert_allclose(distill.divergence(student, teacher, kind, 2.0, beta), theirs, rtol=1e-5, atol=1e-6)


# --- Runs. ---

STUDENT = {"model.vocab_size": 512, "model.d_model": 32, "model.num_layers": 1, "model.num_heads": 2,
           "model.num_kv_heads": 2, "model.head_dim": 16, "model.mlp_dim": 64}
MESH = {"mesh.data": 2, "mesh.fsdp": 2, "mesh.tensor": 2}
ONE_DEVICE = {"mesh.data": 1, "mesh.fsdp": 1, "mesh.tensor": 1}
STEPS, STOP = 4, 2


def _config(dataset_dir, teacher, **overrides):
  return small_config(dataset_dir, **{**STUDENT, "train.objective": "distill", "train.distill.teacher_hf_dir": teacher,
                                      "train.distill.temperature": 2.0, "train.distill.alpha": 0.7,
                                      "train.steps": STEPS, "optimizer.learning_rate": 3e-3, **overrides})


@pytest.fixture(scope="module")
def distill_runs(dataset_dir, tiny_hf_base, tmp_path_factory):
  """Workdirs of the same distillation on one device and on (2, 2, 2), checkpointing every STOP steps."""
  root = tmp_path_factory.mktemp("distill")
  make = lambda mesh: _config(dataset_dir, tiny_hf_base, **mesh, **{  # noqa: E731
      "checkpoint.every_steps": STOP, "eval.every_steps": STEPS, "eval.steps": 2})
  out = {"single": str(root / "single"), "mesh": str(root / "mesh")}
  loop.run(make(ONE_DEVICE), out["single"], jax.devices()[:1])
  loop.run(make(MESH), out["mesh"])
  return out, make


def test_a_mesh_matches_one_device_and_a_resume_repeats_the_straight_run(distill_runs, tmp_path):
  out, make = distill_runs
  single, mesh = read_metrics(out["single"]), read_metrics(out["mesh"])
  for step in range(1, STEPS + 1):
    for key in ("loss", "ce", "divergence"):
      assert mesh[step][key] == pytest.approx(single[step][key], rel=1e-4), (step, key)
  # alpha T^2 KL_T + (1 - alpha) CE, per token
  assert single[1]["loss"] == pytest.approx(0.7 * 4 * single[1]["divergence"] + 0.3 * single[1]["ce"], rel=1e-5)
  assert single[STEPS]["divergence"] < single[1]["divergence"]  # the student moves towards the teacher
  val, mesh_val = read_metrics(out["single"], "val")[STEPS], read_metrics(out["mesh"], "val")[STEPS]
  assert val["perplexity"] == pytest.approx(math.exp(val["ce"]), rel=1e-6)
  assert val["kl_t"] == pytest.approx(val["divergence"], rel=1e-6) and val["kl_t1"] > 0  # forward KL at T
  for key in ("loss", "ce", "kl_t", "kl_t1"):
    assert mesh_val[key] == pytest.approx(val[key], rel=1e-4), key
  resumed = str(tmp_path / "resumed")
  shutil.copytree(out["mesh"], resumed)
  shutil.rmtree(os.path.join(resumed, "checkpoints", str(STEPS)))  # as if the run had stopped at STOP
  loop.run(make(MESH), resumed)
  again = read_metrics(resumed)
  for step in range(STOP + 1, STEPS + 1):
    assert again[step]["loss"] == pytest.approx(mesh[step]["loss"], rel=1e-6, abs=1e-6), step


def test_a_student_that_is_its_teacher_has_zero_divergence(dataset_dir, tiny_hf_base, tmp_path):
  """Started from the teacher's own weights, every divergence is 0 at step 0 and the loss is (1 - alpha) CE."""
  config = _config(dataset_dir, tiny_hf_base, **ONE_DEVICE,
                   **{"init.hf_dir": tiny_hf_base, "train.steps": 1, "train.distill.divergence": "jsd",
                      "eval.at_start": True, "eval.steps": 1})
  loop.run(config, str(tmp_path / "self"), jax.devices()[:1])
  first, val = read_metrics(str(tmp_path / "self"))[1], read_metrics(str(tmp_path / "self"), "val")[0]
  assert abs(first["divergence"]) < 1e-6 and first["loss"] == pytest.approx(0.3 * first["ce"], rel=1e-5)
  assert max(abs(val["kl_t1"]), abs(val["kl_t"]), abs(val["divergence"])) < 1e-6


def test_a_teacher_of_another_vocabulary_or_none_is_refused(dataset_dir, tiny_hf_base, tmp_path):
  with pytest.raises(UserError, match="a teacher must share the student's tokenizer"):
    loop.run(_config(dataset_dir, tiny_hf_base, **ONE_DEVICE, **{"model.vocab_size": 1024}),
             str(tmp_path / "a"), jax.devices()[:1])
  with pytest.raises(UserError, match="needs a teacher"):
    loop.run(_config(dataset_dir, "", **ONE_DEVICE), str(tmp_path / "b"), jax.devices()[:1])


def test_a_teacher_workdir_teaches_unless_its_tokenizer_differs(distill_runs, dataset_dir, tmp_path):
  """A train.py workdir as the teacher: its newest checkpoint; one whose recorded tokenizer differs is refused."""
  import json
  out, _ = distill_runs
  teacher = str(tmp_path / "teacher")
  shutil.copytree(out["single"], teacher)
  config = _config(dataset_dir, "", **ONE_DEVICE, **{"train.distill.teacher_workdir": teacher, "train.steps": 1})
  loop.run(config, str(tmp_path / "student"), jax.devices()[:1])
  assert read_metrics(str(tmp_path / "student"))[1]["divergence"] >= 0
  # The student pinned the teacher's checkpoint; a resume takes that one even once the teacher trains on.
  with open(os.path.join(tmp_path, "student", "teacher.json")) as f:
    pinned = json.load(f)
  assert pinned["source"] == os.path.abspath(teacher) and pinned["step"] == STEPS
  student = distill.Distill.from_config(RunConfig.from_config(config)).teacher
  with open(os.path.join(tmp_path, "student", "teacher.json"), "w") as f:
    json.dump({**pinned, "step": STOP}, f)
  assert student.pin(str(tmp_path / "student"), resuming=True, write=False) == STOP
  with open(os.path.join(tmp_path, "student", "teacher.json"), "w") as f:
    json.dump({**pinned, "source": "/elsewhere"}, f)
  with pytest.raises(UserError, match="was distilled from the teacher /elsewhere"):
    student.pin(str(tmp_path / "student"), resuming=True, write=False)
  record = os.path.join(teacher, "data_tokenizer.json")
  with open(record) as f:
    recorded = json.load(f)
  with open(record, "w") as f:
    json.dump({**recorded, "vocab_sha256": "0" * 64}, f)
  with pytest.raises(UserError, match="config.train.distill.teacher_workdir=.*their vocabularies differ"):
    loop.run(config, str(tmp_path / "student2"), jax.devices()[:1])
