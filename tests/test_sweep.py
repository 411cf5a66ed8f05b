"""scripts/sweep.py: Optuna over train.py trials. A sweep killed mid-trial resumes from its journal
without redoing finished trials (the cut one reruns in its workdir), a crashing trial is recorded as
failed with its log tail, the results table and plots are written, and a bad sweep file is refused in
one line naming the key."""

import csv
import math
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from conftest import REPO
from scripts.tuning import space

SWEEP = """
from scripts.tuning.space import Sweep, choice

def get_sweep():
  return Sweep(config="configs/quickstart.py", metric="val/loss", budget=4, sampler="grid", pruner="none",
               include_default=False,
               # batch 12 does not split over the 8 devices: those trials crash with train.py's error
               space={{"optimizer.learning_rate": choice(1e-3, 3e-3), "train.batch_size": choice(8, 12)}},
               overrides={overrides!r})
"""
OVERRIDES = ("--config.data.prepare_config=", "--config.train.steps=24", "--config.train.seq_len=64",
             "--config.optimizer.warmup_steps=2", "--config.eval.every_steps=12", "--config.eval.steps=2",
             "--config.eval.final_split=", "--config.eval.num_samples=0", "--config.log.every_steps=1",
             "--config.log.tensorboard=False", "--config.checkpoint.async_save=False")


def _sweep_cmd(path: str, sweep_dir: str) -> list[str]:
  """Two trials at a time: a killed sweep's threads exit one by one, each a parent death to its trials."""
  return [sys.executable, os.path.join(REPO, "scripts", "sweep.py"), f"--sweep={path}", f"--sweep_dir={sweep_dir}",
          "--parallel=2"]


def _launches(workdir: str) -> int:
  """How many times a trial's train.py was started in its workdir."""
  with open(os.path.join(workdir, "train.log")) as f:
    return sum(line.startswith("$ ") for line in f)


def test_killed_sweep_resumes_and_records_crashes(dataset_dir, tmp_path):
  path = tmp_path / "tiny.py"
  path.write_text(SWEEP.format(overrides=(f"--config.data.dir={dataset_dir}", *OVERRIDES)))
  sweep_dir = str(tmp_path / "sweep")

  first = subprocess.Popen(_sweep_cmd(str(path), sweep_dir), cwd=REPO, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, env=dict(os.environ, PYTHONUNBUFFERED="1"))
  finished, cut, lines = None, None, []
  for line in first.stdout:
    lines.append(line)
    words = line.split()
    if finished is None and len(words) > 2 and words[0] == "trial" and words[2] in ("complete", "failed"):
      finished = int(words[1].rstrip(":"))
    elif finished is not None and "->" in line and "'train.batch_size': 8" in line:
      cut = int(words[1].rstrip(":"))
      metrics = os.path.join(sweep_dir, "trials", f"{cut:04d}", "metrics.jsonl")
      while not (os.path.exists(metrics) and '"split": "train"' in open(metrics).read()):
        assert first.poll() is None, "".join(lines)
        time.sleep(0.05)
      first.send_signal(signal.SIGKILL)  # mid-training: its train.py gets SIGTERM (parent death)
      break
  first.wait()
  assert cut is not None, "".join(lines)

  second = subprocess.run(_sweep_cmd(str(path), sweep_dir), cwd=REPO, capture_output=True, text=True)
  assert second.returncode == 0, second.stdout + second.stderr
  assert re.search(r"[12] trial\(s\) cut short run again", second.stdout), second.stdout

  with open(os.path.join(sweep_dir, "results.csv")) as f:
    rows = list(csv.DictReader(f))
  assert len(rows) == 4 and sorted(r["state"] for r in rows) == ["complete", "complete", "failed", "failed"]
  workdirs = {int(r["trial"]): r["workdir"] for r in rows}
  # The trial finished before the kill was not redone; those cut short reran in their own workdirs,
  # from the checkpoint their train.py saved on the (repeated) parent-death SIGTERM.
  assert _launches(workdirs[finished]) == 1
  cut_workdir = os.path.join(sweep_dir, "trials", f"{cut:04d}")
  assert cut_workdir in workdirs.values() and _launches(cut_workdir) == 2
  with open(os.path.join(cut_workdir, "train.log")) as f:
    cut_log = f.read()
  assert "checkpoint saved" in cut_log and "resuming from" in cut_log, cut_log[-3000:]
  assert sum(_launches(w) for w in workdirs.values()) in (5, 6)
  for r in rows:
    if r["state"] == "failed":
      assert r["train.batch_size"] == "12" and "batch" in r["log_tail"] and "error:" in r["log_tail"], r
    else:
      assert r["train.batch_size"] == "8" and float(r["val/loss"]) < math.log(4096)  # learned past uniform
  best = min((r for r in rows if r["state"] == "complete"), key=lambda r: float(r["val/loss"]))
  assert f"best: trial {best['trial']}" in second.stdout
  assert f"--config.optimizer.learning_rate={best['optimizer.learning_rate']}" in second.stdout
  with open(os.path.join(sweep_dir, "results.md")) as f:
    markdown = f.read()
  assert markdown.count("## Trial") == 2 and "| trial | state |" in markdown
  for plot in ("params.png", "curves.png"):
    assert os.path.getsize(os.path.join(sweep_dir, plot)) > 10_000


@pytest.mark.parametrize("space_text, message", [
    ('{"optimizer.learning_rat": log_uniform(1e-4, 1e-2)}',
     "space['optimizer.learning_rat']: unknown config key config.optimizer.learning_rat"),
    ('{"optimizer.learning_rate": log_uniform(1e-2, 1e-4)}', "log_uniform(0.01, 0.0001): empty range"),
    ('{"optimizer.learning_rate": uniform(1e-3, 1e-3)}', "uniform(0.001, 0.001): empty range"),
    ('{"optimizer.warmup_steps": integer(10, 0)}', "integer(10, 0): empty range"),
    ('{"optimizer.warmup_steps": choice()}', "choice(): empty"),
    ('{"train.steps": choice(10, 2.5)}', "--config.train.steps=2.5: expected an integer"),
    ('{}', "the space is empty"),
])
def test_bad_sweep_files_are_refused(space_text, message, tmp_path):
  path = tmp_path / "bad.py"
  path.write_text("from scripts.tuning.space import Sweep, choice, integer, log_uniform, uniform\n"
                  f"def get_sweep():\n  return Sweep(config='configs/quickstart.py', space={space_text})\n")
  with pytest.raises(space.UserError) as e:
    space.load(str(path))
  assert str(path) in str(e.value) and message in str(e.value), str(e.value)


def test_grid_needs_choices_and_metric_needs_a_split(tmp_path):
  path = tmp_path / "grid.py"
  path.write_text("from scripts.tuning.space import Sweep, log_uniform\n"
                  "def get_sweep():\n  return Sweep(config='configs/quickstart.py', sampler='grid',\n"
                  "               space={'optimizer.learning_rate': log_uniform(1e-4, 1e-2)})\n")
  with pytest.raises(space.UserError, match="needs choice.*optimizer.learning_rate is a range"):
    space.load(str(path))
  path.write_text(path.read_text().replace("sampler='grid'", "metric='loss'"))
  with pytest.raises(space.UserError, match="metric='loss'; expected SPLIT/NAME"):
    space.load(str(path))
