"""scripts/plot_metrics.py and evals/curves.py on synthetic metrics.jsonl files (no training)."""

import json
import logging
import os
import subprocess
import sys

import pytest
from matplotlib import image

from errors import UserError
from evals import curves

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "scripts", "plot_metrics.py")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TOKENS_PER_STEP = 1000


def _train(step, loss):
  return {"step": step, "split": "train", "loss": loss, "learning_rate": 1e-3 * step / 30,
          "grad_norm": 1.0 + step / 100, "tokens_per_sec": 500.0, "mfu": 0.1, "eta_s": 10.0,
          "tokens_seen": float(step * TOKENS_PER_STEP)}


def _val(step, loss, split="val"):
  return {"step": step, "split": split, "loss": loss, "perplexity": 2.718 ** loss, "tokens": 512.0}


def _write(workdir, rows, tail=""):
  os.makedirs(workdir)
  with open(os.path.join(workdir, "metrics.jsonl"), "w") as f:
    f.writelines(json.dumps(r) + "\n" for r in rows)
    f.write(tail)
  return str(workdir)


@pytest.fixture
def runs(tmp_path):
  """Two workdirs: `a` resumed from step 20 (so steps 20 and 30 logged twice) and cut off mid-line."""
  a = _write(tmp_path / "a", [
      _val(0, 5.0), _train(10, 4.0), _train(20, 3.5), _val(20, 3.6), _train(30, 3.4),
      {"step": 20, "split": "task/sentiment", "accuracy": 0.6, "macro_f1": 0.55},
      # Resumed from the step-20 checkpoint: steps 20 and 30 again, the last rows win.
      _train(20, 3.3), _val(20, 3.2), _train(30, 3.0), _val(30, 2.9), _val(30, 3.1, "test"),
      {"step": 30, "split": "task/sentiment", "accuracy": 0.7, "macro_f1": 0.65},
  ], tail='{"step": 40, "split": "train", "lo')
  b = _write(tmp_path / "b", [_val(0, 5.1), _train(10, 4.2), _train(20, 3.9), _val(20, 3.8)])
  return a, b


def test_read_metrics_dedups_and_skips_bad_line(runs, caplog):
  with caplog.at_level(logging.WARNING):
    splits = curves.read_metrics(os.path.join(runs[0], "metrics.jsonl"))
  assert sorted(splits) == ["task/sentiment", "test", "train", "val"]
  assert sorted(splits["train"]) == [10, 20, 30]  # step 40 was the half-written line
  assert splits["train"][20]["loss"] == 3.3 and splits["train"][30]["loss"] == 3.0
  assert splits["val"][20]["loss"] == 3.2
  assert splits["task/sentiment"][20]["accuracy"] == 0.6
  assert "metrics.jsonl:13: skipping bad line" in caplog.text


def test_series_and_tokens(runs):
  a = curves.load_run(runs[0])
  assert a.name == "a"
  assert curves.series(a, "train", "loss") == ([10.0, 20.0, 30.0], [4.0, 3.3, 3.0])
  # Val rows have no tokens_seen: step -> tokens from the train rows.
  assert curves.series(a, "val", "loss", "tokens") == ([0.0, 20_000.0, 30_000.0], [5.0, 3.2, 2.9])
  assert curves.tokens_at(a.splits["train"], 45) == 45_000.0
  assert curves.tokens_at({}, 10) is None
  no_train = curves.Run("v", {"val": a.splits["val"]})
  assert curves.series(no_train, "val", "loss", "tokens") == ([], [])


def test_figure_panels_and_lines(runs):
  fig = curves.build_figure([curves.load_run(w) for w in runs])
  axes = {ax.get_title(): ax for ax in fig.axes if ax.get_visible()}
  assert list(axes) == [
      "train loss", "train loss vs tokens", "val loss", "val loss vs tokens", "test loss",
      "learning rate", "grad norm", "tokens/s", "task/sentiment: accuracy", "task/sentiment: macro_f1"]
  for title in ["train loss", "train loss vs tokens", "val loss", "val loss vs tokens", "grad norm"]:
    assert len(axes[title].get_lines()) == 2, title
  # Only run a has a test split and task rows.
  assert len(axes["test loss"].get_lines()) == 1
  line, = axes["task/sentiment: accuracy"].get_lines()
  assert list(line.get_ydata()) == [0.6, 0.7]
  # Same colour per run in every panel.
  first_color = {ax.get_lines()[0].get_color() for ax in axes.values()}
  assert len(first_color) == 1
  assert [t.get_text() for t in fig.legends[0].get_texts()] == ["a", "b"]


def test_output_path_and_names():
  assert curves.output_path(None, ["r/a", "r/b"]) == os.path.join("r/a", "plots.png")
  assert curves.output_path("out/cmp.PNG", ["r/a"]) == "out/cmp.PNG"
  assert curves.output_path("out", ["r/a"]) == os.path.join("out", "plots.png")
  assert curves.run_names(["x/a/", "y/b"]) == ["a", "b"]
  assert curves.run_names(["x/s1", "y/s1"]) == ["x/s1", "y/s1"]


def _assert_png(path):
  with open(path, "rb") as f:
    assert f.read(8) == PNG_MAGIC
  h, w, channels = image.imread(path).shape
  assert h > 200 and w > 200 and channels in (3, 4)


def test_library_writes_png_atomically(runs, tmp_path):
  out = tmp_path / "plots" / "cmp.png"
  assert curves.plot_runs(list(runs), str(out)) == str(out)
  _assert_png(out)
  assert os.listdir(out.parent) == ["cmp.png"]  # no temp file left behind


def test_cli(runs, tmp_path):
  out = subprocess.run([sys.executable, SCRIPT, *runs], capture_output=True, text=True, timeout=60)
  assert out.returncode == 0, out.stderr
  _assert_png(os.path.join(runs[0], "plots.png"))
  assert "skipping bad line" in out.stderr

  missing = tmp_path / "nothing_here"
  missing.mkdir()
  out = subprocess.run([sys.executable, SCRIPT, runs[0], str(missing), f"--output={tmp_path}"],
                       capture_output=True, text=True, timeout=60)
  assert out.returncode != 0
  assert f"error: no metrics.jsonl in {missing}" in out.stderr
  assert not os.path.exists(tmp_path / "plots.png")


def test_missing_metrics_is_user_error(tmp_path):
  with pytest.raises(UserError, match=f"no metrics.jsonl in {tmp_path}"):
    curves.load_run(str(tmp_path))
  with pytest.raises(UserError, match="does_not_exist"):
    curves.plot_runs([str(tmp_path / "does_not_exist")])
