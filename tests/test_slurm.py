"""A real SLURM (slurmctld + slurmd on this machine, 2 CPUs) runs scripts/launch.py's batch script:
its two tasks form one JAX cluster whose losses equal one process's, and `scontrol requeue` mid-run
resumes from the SIGTERM checkpoint to the same final loss. A sweep's trials run as array tasks."""

import csv
import os
import subprocess
import sys
import time

import jax
import pytest

from conftest import REPO, read_metrics, small_config, train_losses
from slurm_cluster import Cluster
from trainer import loop

STEPS = 24
MESH = {"mesh.data": 2, "mesh.fsdp": 1}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
  c = Cluster(str(tmp_path_factory.mktemp("slurm")))
  yield c
  c.close()


def _overrides(dataset_dir: str) -> list[str]:
  """small_config's settings as train.py flags."""
  cfg = small_config(dataset_dir, **{"train.steps": STEPS, **MESH})
  keys = ("data.dir", "data.prepare_config", "train.steps", "train.batch_size", "train.seq_len",
          "optimizer.warmup_steps", "log.every_steps", "log.tensorboard", "eval.at_start", "eval.every_steps",
          "eval.final_split", "eval.num_samples", "checkpoint.every_steps", "checkpoint.async_save", *MESH)
  value = lambda key: cfg[key.split(".")[0]][key.split(".")[1]]  # noqa: E731
  return [f"--config.{k}={value(k)}" for k in keys]


def _submit(cluster: Cluster, workdir: str, dataset_dir: str) -> str:
  """launch.py slurm: 1 node x 2 CPU tasks, one CPU device each (not the suite's 8)."""
  env = dict(cluster.env, XLA_FLAGS="--xla_backend_optimization_level=0", JAX_PLATFORMS="cpu")
  done = subprocess.run(
      [sys.executable, os.path.join(REPO, "scripts/launch.py"), "slurm", "--config=configs/quickstart.py",
       f"--workdir={workdir}", "--nodes=1", "--tasks_per_node=2", "--", *_overrides(dataset_dir)],
      cwd=REPO, env=env, capture_output=True, text=True)
  assert done.returncode == 0, done.stderr
  assert os.path.exists(os.path.join(workdir, "slurm.sbatch"))
  return done.stdout.split()[2].rstrip(":")  # "submitted job N: PATH"


def _log(workdir: str, job_id: str) -> str:
  with open(os.path.join(workdir, f"slurm-{job_id}.out")) as f:
    return f.read()


@pytest.fixture(scope="module")
def straight_job(cluster, dataset_dir, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("slurm_straight"))
  job_id = _submit(cluster, workdir, dataset_dir)
  assert cluster.wait(job_id) == "COMPLETED", _log(workdir, job_id)[-3000:]
  return workdir, job_id


def test_two_tasks_form_one_cluster_with_one_process_losses(straight_job, dataset_dir, tmp_path):
  workdir, job_id = straight_job
  log = _log(workdir, job_id)
  assert "2 task(s) on" in log and "2 process(es), 2 devices" in log, log[-3000:]
  single = str(tmp_path / "single")
  loop.run(small_config(dataset_dir, **{"train.steps": STEPS, **MESH}), single, jax.devices()[:2])
  a, b = train_losses(single), train_losses(workdir)
  assert sorted(b) == list(range(1, STEPS + 1))
  for step in a:
    assert b[step] == pytest.approx(a[step], rel=1e-4), step


def test_requeue_resumes_from_the_checkpoint(cluster, straight_job, dataset_dir, tmp_path):
  workdir = str(tmp_path / "requeued")
  job_id = _submit(cluster, workdir, dataset_dir)
  deadline = time.time() + 240
  while len(read_metrics(workdir) if os.path.exists(os.path.join(workdir, "metrics.jsonl")) else {}) < 4:
    assert time.time() < deadline and cluster.job_field(job_id, "JobState") in ("PENDING", "RUNNING"), \
        _log(workdir, job_id)[-3000:]
    time.sleep(0.2)
  cluster.run("scontrol", "requeue", job_id)
  assert cluster.wait(job_id) == "COMPLETED", _log(workdir, job_id)[-3000:]
  log = _log(workdir, job_id)
  assert cluster.job_field(job_id, "Restarts") == "1"
  assert "DUE TO JOB REQUEUE" in log and "checkpoint saved" in log and "resuming from" in log, log[-3000:]
  straight, resumed = train_losses(straight_job[0]), train_losses(workdir)
  assert sorted(resumed) == list(range(1, STEPS + 1))
  assert resumed[STEPS] == pytest.approx(straight[STEPS], rel=1e-6, abs=1e-6)


def test_sweep_trials_run_as_slurm_array_tasks(cluster, dataset_dir, tmp_path):
  """sweep.py --launcher=slurm: two array tasks share the journal and run the grid's two trials."""
  from test_sweep import OVERRIDES, SWEEP
  path = tmp_path / "grid.py"
  path.write_text(SWEEP.format(overrides=(f"--config.data.dir={dataset_dir}", *OVERRIDES))
                  .replace("choice(8, 12)", "choice(8)"))
  sweep_dir = str(tmp_path / "sweep")
  env = dict(cluster.env, XLA_FLAGS="--xla_backend_optimization_level=0", JAX_PLATFORMS="cpu")
  done = subprocess.run([sys.executable, os.path.join(REPO, "scripts/sweep.py"), f"--sweep={path}",
                         f"--sweep_dir={sweep_dir}", "--launcher=slurm", "--parallel=2"],
                        cwd=REPO, env=env, capture_output=True, text=True)
  assert done.returncode == 0, done.stderr
  job_id = done.stdout.split()[3]  # "submitted array job N (2 workers): ..."
  deadline = time.time() + 300
  while cluster.run("squeue", "-h", "-j", job_id, check=False).strip():
    assert time.time() < deadline, cluster.run("squeue", check=False)
    time.sleep(1)
  # Each worker writes the results as it ends; the last may have read the study before the other's tell.
  subprocess.run([sys.executable, os.path.join(REPO, "scripts/sweep.py"), f"--sweep={path}",
                  f"--sweep_dir={sweep_dir}", "--report_only"], cwd=REPO, check=True, capture_output=True)
  with open(os.path.join(sweep_dir, "results.csv")) as f:
    rows = list(csv.DictReader(f))
  logs = "".join(open(os.path.join(sweep_dir, "slurm", n)).read() for n in os.listdir(os.path.join(sweep_dir, "slurm")))
  assert sorted(r["state"] for r in rows) == ["complete", "complete"], logs[-3000:]
  assert {r["optimizer.learning_rate"] for r in rows} == {"0.001", "0.003"}
  assert len(os.listdir(os.path.join(sweep_dir, "slurm"))) == 2  # one log per array task
