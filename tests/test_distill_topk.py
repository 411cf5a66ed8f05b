"""Distillation from a teacher's precomputed top-k logits (scripts/precompute_teacher.py): the sparse divergences
against numpy, the stored logits against the teacher run live on the very rows a run reads, the loss against
the live teacher's when k is the vocabulary, one device against (2, 2, 2) across a resume, and the refusals."""

import json
import os
import shutil

import jax
import numpy as np
import pytest

from conftest import read_metrics
from configs.schema import RunConfig
from data import pipeline
from errors import UserError
from model import families
from parallel import mesh as mesh_lib
from parallel import sharding
from test_distill import MESH, ONE_DEVICE, _config
from trainer import loop, teacher_topk
from trainer.objectives import distill

VOCAB = 512  # the tiny Llama's (and the student's) vocabulary
STEPS, STOP = 4, 2
EVALS = {"train.steps": STEPS, "eval.every_steps": STEPS, "eval.steps": 1}  # 32 train rows, 8 of val


def _log_softmax(x):
  x = x - x.max(-1, keepdims=True)
  return x - np.log(np.exp(x).sum(-1, keepdims=True))


def _lse(x, axis=-1):
  top = x.max(axis, keepdims=True)
  top = np.where(np.isfinite(top), top, 0.0)  # all -inf (no other tokens at k = V): -inf
  with np.errstate(divide="ignore"):
    return (top + np.log(np.exp(x - top).sum(axis, keepdims=True))).squeeze(axis)


def _stored(teacher_logits, ids, temperature):
  """What precompute stores for these logits: log-probabilities at T=1, and (all, others) logsumexps at 1 and T."""
  others = np.ones(teacher_logits.shape, bool)
  np.put_along_axis(others, ids, False, -1)
  norms = [[_lse(teacher_logits / t), _lse(np.where(others, teacher_logits / t, -np.inf))] for t in (1.0, temperature)]
  logps = np.take_along_axis(teacher_logits, ids, -1) - _lse(teacher_logits)[..., None]
  return logps, np.moveaxis(np.asarray(norms), (0, 1), (-2, -1))


def _coarse_numpy(student_logits, teacher_logits, ids, kind, beta, temperature):
  """Both full distributions at T, coarsened to the teacher's k tokens and "any other token"."""
  def coarse(logits):
    p = np.exp(_log_softmax(logits / temperature))
    top = np.take_along_axis(p, ids, -1)
    return np.log(np.concatenate([top, 1 - top.sum(-1, keepdims=True)], -1))
  t, s = coarse(teacher_logits), coarse(student_logits)
  kl = lambda log_p, log_q: (np.exp(log_p) * (log_p - log_q)).sum(-1)  # noqa: E731
  if kind == "forward_kl":
    return kl(t, s)
  if kind == "reverse_kl":
    return kl(s, t)
  m = np.logaddexp(s + np.log1p(-beta), t + np.log(beta))
  return beta * kl(t, m) + (1 - beta) * kl(s, m)


@pytest.mark.parametrize("kind,beta", [("forward_kl", 0.0), ("reverse_kl", 1.0), ("jsd", 0.3)])
@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_top_k_divergences_follow_numpy_and_equal_the_full_ones_at_k_equal_vocabulary(kind, beta, temperature):
  rng = np.random.default_rng(0)
  student, teacher = rng.normal(size=(2, 3, 5, 17)) * 3
  full = np.asarray(distill.divergence(student, teacher, kind, temperature, beta))
  order = np.argsort(-teacher, axis=-1)
  for k in (4, 16):
    ids = order[..., :k]
    got = np.asarray(distill.topk_divergence(student, ids, *_stored(teacher, ids, temperature), kind, temperature,
                                             beta))
    np.testing.assert_allclose(got, _coarse_numpy(student, teacher, ids, kind, beta, temperature), rtol=1e-5,
                               atol=1e-6)
    assert np.all(got >= -1e-6) and np.all(got <= full + 1e-5)  # coarser outcomes never diverge more
  ids = order  # k = V: exactly the full divergence
  got = distill.topk_divergence(student, ids, *_stored(teacher, ids, temperature), kind, temperature, beta)
  np.testing.assert_allclose(got, full, rtol=1e-5, atol=1e-6)


def test_a_saturated_student_still_learns_the_mass_outside_the_top_k():
  """The student's mass outside the teacher's top 4 is ~1e-13, the teacher's 0.35: the gradient still moves it."""
  teacher = np.log(np.array([0.3, 0.2, 0.1, 0.05] + [0.35 / 12] * 12, np.float32))[None]
  student = np.array([[30.0, 29.0, 28.0, 27.0] + [0.0] * 12], np.float32)
  ids = np.arange(4)[None]
  logps, norms = _stored(teacher.astype(np.float64), ids, 1.0)
  loss = lambda z: distill.topk_divergence(z, ids, logps, norms, "forward_kl").sum()  # noqa: E731
  grad = np.asarray(jax.grad(loss)(student))
  assert np.isfinite(float(loss(student))) and np.all(np.isfinite(grad))
  assert np.all(grad[0, 4:] < -0.01)  # raising the other tokens' logits lowers the loss


@pytest.fixture(scope="module")
def topk_dirs(dataset_dir, tiny_hf_base, tmp_path_factory):
  """The tiny Llama's logits over the test dataset's rows: all VOCAB of them (float32), and the top 8 (float16)."""
  root = tmp_path_factory.mktemp("topk")
  config = _config(dataset_dir, tiny_hf_base, **{**ONE_DEVICE, **EVALS})
  full, top8 = str(root / "full"), str(root / "top8")
  summary = teacher_topk.precompute(config, full, VOCAB, logps_dtype="float32", log=lambda _: None)
  assert all(s["topk_mass"] == pytest.approx(1.0, abs=1e-5) for s in summary.values())
  teacher_topk.precompute(config, top8, 8, train_rows=24, log=lambda _: None)
  return {"full": full, "top8": top8, "config": config}


def test_stored_logits_are_the_teachers_on_the_rows_a_run_reads_and_give_the_live_loss(topk_dirs):
  rc = RunConfig.from_config(topk_dirs["config"])
  teacher = distill.Teacher.from_config(rc.train.distill, rc.model, rc.train.seq_len)
  mesh = mesh_lib.mesh_of_sizes(None)
  params = teacher.load(mesh, *teacher.shardings(mesh))
  it = pipeline.train_iterator(rc.data, rc.train.seq_len, 8, 0, 8, seed=3, teacher_topk=topk_dirs["top8"])
  for _ in range(4):  # past the 24 precomputed train rows: the second epoch, reshuffled
    batch = next(it)
  fields = {f: batch[f] for f in ("tokens", "segment_ids", "positions", "loss_mask")}
  with sharding.activate(mesh):
    live = np.asarray(jax.jit(teacher.apply_fn())({"params": params}, fields), np.float32)
  kth = np.sort(live, -1)[..., -8]
  top = np.take_along_axis(live, batch["teacher_ids"], -1)
  assert np.all(top >= kth[..., None] - 1e-5) and np.all(np.diff(top, axis=-1) <= 1e-5)  # the top 8, in order
  logps, norms = _stored(live.astype(np.float64), batch["teacher_ids"], 2.0)
  np.testing.assert_allclose(batch["teacher_logps"], logps, rtol=1e-3, atol=4e-3)  # float16 storage
  np.testing.assert_allclose(batch["teacher_norms"], norms, rtol=1e-5, atol=1e-5)
  # k = the vocabulary: the loss and every metric equal the live teacher's.
  rows = pipeline.eval_batches(rc.data, "train", rc.train.seq_len, 8, 0, 8, 1, teacher_topk=topk_dirs["full"])[0]
  model = families.build(rc.model)
  student = model.init(jax.random.key(1), *families.example_inputs(model))
  apply_fn = families.batch_apply(model)
  full = distill.Distill(None, topk_dirs["full"], 2.0, 0.7, "jsd", 0.3)
  live_objective = distill.Distill(teacher, "", 2.0, 0.7, "jsd", 0.3)
  with sharding.activate(mesh):
    got = jax.jit(lambda v, b: full.sums(apply_fn, v, b, train=False))(student, rows)
    want = jax.jit(lambda v, b: live_objective.sums(apply_fn, v, b, train=False))({**student, "teacher": params},
                                                                                   rows)
  assert float(got[0]) == pytest.approx(float(want[0]), rel=1e-5)
  for key in want[2]:
    assert float(got[2][key]) == pytest.approx(float(want[2][key]), rel=1e-5, abs=1e-5), key


def _run_config(dataset_dir, topk_dir, **overrides):
  return _config(dataset_dir, "", **{"train.distill.teacher_topk_dir": topk_dir, "checkpoint.every_steps": STOP,
                                     **EVALS, **overrides})


def test_one_device_matches_a_mesh_resumed_mid_run(topk_dirs, dataset_dir, tmp_path):
  """A run on one device; the same run stopped at STOP and resumed on (2, 2, 2) repeats its losses."""
  single, resumed = str(tmp_path / "single"), str(tmp_path / "resumed")
  loop.run(_run_config(dataset_dir, topk_dirs["top8"], **ONE_DEVICE), single, jax.devices()[:1])
  shutil.copytree(single, resumed)
  shutil.rmtree(os.path.join(resumed, "checkpoints", str(STEPS)))
  loop.run(_run_config(dataset_dir, topk_dirs["top8"], **MESH), resumed)
  a, b = read_metrics(single), read_metrics(resumed)
  assert a[STEPS]["divergence"] < a[1]["divergence"]
  for step in range(STOP + 1, STEPS + 1):
    for key in ("loss", "ce", "divergence"):
      assert b[step][key] == pytest.approx(a[step][key], rel=1e-4), (step, key)
  assert read_metrics(resumed, "val")[STEPS]["kl_t1"] == pytest.approx(read_metrics(single, "val")[STEPS]["kl_t1"],
                                                                       rel=1e-4)
  with open(os.path.join(single, "teacher.json")) as f:
    assert json.load(f)["teacher_topk_dir"] == os.path.abspath(topk_dirs["top8"])
  with pytest.raises(UserError, match="was distilled from"):  # resuming on other logits
    loop.run(_run_config(dataset_dir, topk_dirs["full"], **{**ONE_DEVICE, "train.steps": STEPS + 1}), single,
             jax.devices()[:1])


def test_logits_of_other_rows_another_teacher_or_a_damaged_file_are_refused(topk_dirs, dataset_dir, tiny_hf_base,
                                                                          tmp_path):
  run = lambda **o: loop.run(_run_config(dataset_dir, topk_dirs["top8"], **{**ONE_DEVICE, **o}),  # noqa: E731
                             str(tmp_path / "run"), jax.devices()[:1])
  with pytest.raises(UserError, match="computed on the rows of .* config.train.seq_len=32"):
    run(**{"train.seq_len": 32})
  with pytest.raises(UserError, match="config.data.packing='whole'"):
    run(**{"data.packing": "whole"})
  with pytest.raises(UserError, match="temperature=3.0, but .* computed for temperature 2.0"):
    run(**{"train.distill.temperature": 3.0})
  with pytest.raises(UserError, match="holds 8 rows of split 'val', but the run's evaluations read 16"):
    run(**{"eval.steps": 2})
  moved = str(tmp_path / "moved_teacher")
  shutil.copytree(tiny_hf_base, moved)
  with pytest.raises(UserError, match="not config.train.distill.teacher_hf_dir="):
    run(**{"train.distill.teacher_hf_dir": moved})
  damaged = str(tmp_path / "damaged")
  shutil.copytree(topk_dirs["top8"], damaged)
  with open(os.path.join(damaged, "val.logps.npy"), "r+b") as f:
    f.seek(200)
    f.write(b"\x01\x02")
  with pytest.raises(UserError, match="val.logps.npy is corrupt"):
    loop.run(_run_config(dataset_dir, damaged, **ONE_DEVICE), str(tmp_path / "run2"), jax.devices()[:1])
  assert not os.path.exists(tmp_path / "run2" / "checkpoints")
  with pytest.raises(UserError, match="is not a precomputed teacher"):  # a dataset is never replaced
    teacher_topk.precompute(topk_dirs["config"], dataset_dir, 4)
  with pytest.raises(UserError, match="--top_k=0"):
    teacher_topk.precompute(topk_dirs["config"], str(tmp_path / "new"), 0)
