"""Training curves: read runs' WORKDIR/metrics.jsonl and draw them on one figure.

  runs = [curves.load_run(w) for w in workdirs]
  curves.save_figure(curves.build_figure(runs), "plots.png")

Each run is one colour in every panel. The panels: train and val loss against
step and against tokens seen, the loss of other held-out splits (`test`, ...)
against step, learning rate, gradient norm, tokens/s, and one per metric of
each `task/...` split. The figure is built with matplotlib's object API on the
Agg canvas, never pyplot, so this module changes no global backend state.
matplotlib is imported only when drawing: reading metrics, and failing on a
bad workdir, stay fast.
"""

import dataclasses
import json
import math
import os
import tempfile
from typing import TYPE_CHECKING

from absl import logging

from errors import UserError

if TYPE_CHECKING:
  from matplotlib.figure import Figure

METRICS_FILE = "metrics.jsonl"
TRAIN = "train"
TASK_PREFIX = "task/"
NCOLS = 3
PANEL_SIZE = (5.0, 3.4)  # inches
LEGEND_COLS = 4


@dataclasses.dataclass
class Run:
  """One run's metrics: `splits[split][step]` is the last row logged for that step."""
  name: str
  splits: dict[str, dict[int, dict]]


@dataclasses.dataclass
class Panel:
  """One axis: `metric` of `split` against "step" or "tokens"."""
  title: str
  split: str
  metric: str
  x: str = "step"
  ylabel: str = ""


def read_metrics(path: str) -> dict[str, dict[int, dict]]:
  """Rows of a metrics.jsonl as {split: {step: row}}; the last row for a (split, step) wins.

  A resumed run appends rows for steps it logged before, so later rows replace
  earlier ones. Lines that are not a JSON object with "step" and "split" (such
  as a half-written final line after a crash) are skipped with a warning.
  """
  splits: dict[str, dict[int, dict]] = {}
  with open(path) as f:
    for lineno, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        row = json.loads(line)
        step, split = int(row["step"]), str(row["split"])
      except (ValueError, TypeError, KeyError) as e:
        logging.warning("%s:%d: skipping bad line (%s): %.80r", path, lineno, type(e).__name__, line)
        continue
      splits.setdefault(split, {})[step] = row
  return splits


def load_run(workdir: str, name: str | None = None) -> Run:
  """Reads WORKDIR/metrics.jsonl; raises UserError when it is missing."""
  path = os.path.join(workdir, METRICS_FILE)
  if not os.path.isfile(path):
    raise UserError(f"no {METRICS_FILE} in {workdir} (expected {path}): is it a train.py --workdir?")
  return Run(name or os.path.basename(os.path.normpath(workdir)), read_metrics(path))


def run_names(workdirs: list[str]) -> list[str]:
  """Legend labels: each workdir's basename, or its whole path where basenames collide."""
  bases = [os.path.basename(os.path.normpath(w)) for w in workdirs]
  return [b if bases.count(b) == 1 else os.path.normpath(w) for b, w in zip(bases, workdirs)]


def tokens_at(train: dict[int, dict], step: int) -> float | None:
  """Tokens seen by `step`, interpolated from train rows' tokens_seen (None if unknown).

  Between logged train steps (and before the first, from 0 tokens at step 0) it
  interpolates linearly; after the last it extrapolates at that row's
  tokens_seen/step ratio.
  """
  known = sorted((s, r["tokens_seen"]) for s, r in train.items() if s > 0 and _number(r.get("tokens_seen")))
  if not known:
    return None
  prev_s, prev_t = 0, 0.0
  for s, t in known:
    if step <= s:
      return prev_t + (t - prev_t) * (step - prev_s) / (s - prev_s)
    prev_s, prev_t = s, t
  return step * prev_t / prev_s


def series(run: Run, split: str, metric: str, x: str = "step") -> tuple[list[float], list[float]]:
  """(xs, ys) of `metric` in `split`, by step; x is "step" or "tokens".

  Rows without a finite value are left out, and so are all rows on the tokens
  axis when the run's tokens seen are unknown.
  """
  xs, ys = [], []
  train = run.splits.get(TRAIN, {})
  for step, row in sorted(run.splits.get(split, {}).items()):
    y = row.get(metric)
    if not _number(y):
      continue
    if x == "tokens":
      t = row.get("tokens_seen") if split == TRAIN else None
      t = t if _number(t) else tokens_at(train, step)
      if t is None:
        continue
      xs.append(float(t))
    else:
      xs.append(float(step))
    ys.append(float(y))
  return xs, ys


def panels(runs: list[Run]) -> list[Panel]:
  """The panels that at least one run has data for, in display order."""
  splits = sorted({s for r in runs for s in r.splits})
  held_out = [s for s in splits if s != TRAIN and not s.startswith(TASK_PREFIX)]
  held_out.sort(key=lambda s: (s != "val", s))
  tasks = [s for s in splits if s.startswith(TASK_PREFIX)]
  out = [Panel("train loss", TRAIN, "loss", "step", "loss"),
         Panel("train loss vs tokens", TRAIN, "loss", "tokens", "loss")]
  for s in held_out:  # val against tokens too; a final test split is usually one point
    out.append(Panel(f"{s} loss", s, "loss", "step", "loss"))
    if s == "val":
      out.append(Panel(f"{s} loss vs tokens", s, "loss", "tokens", "loss"))
  out += [Panel("learning rate", TRAIN, "learning_rate", "step", "learning rate"),
          Panel("grad norm", TRAIN, "grad_norm", "step", "global gradient norm"),
          Panel("tokens/s", TRAIN, "tokens_per_sec", "step", "tokens/s")]
  for s in tasks:
    metrics = sorted({k for r in runs for row in r.splits.get(s, {}).values()
                      for k, v in row.items() if k not in ("step", "split") and _number(v)})
    out += [Panel(f"{s}: {m}", s, m, "step", m) for m in metrics]
  return [p for p in out if any(series(r, p.split, p.metric, p.x)[0] for r in runs)]


def colors(n: int) -> list:
  """One distinct colour per run (tab10, or tab20 beyond ten runs)."""
  from matplotlib import colormaps
  cmap = colormaps["tab10" if n <= 10 else "tab20"]
  return [cmap(i % cmap.N) for i in range(n)]


def build_figure(runs: list[Run], ncols: int = NCOLS) -> "Figure":
  """A Figure with one axis per panel and one line per run, each run one colour throughout.

  Held-out and task lines carry markers, since they often have few points. The
  runs' legend sits above the panels. Raises UserError if no run has data.
  """
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure
  from matplotlib.lines import Line2D
  from matplotlib.ticker import EngFormatter
  plist = panels(runs)
  if not plist:
    raise UserError("no metrics to plot in " + ", ".join(r.name for r in runs))
  nrows = math.ceil(len(plist) / ncols)
  legend_rows = math.ceil(len(runs) / LEGEND_COLS)
  # Fixed margins in inches: several times faster to draw than constrained layout.
  top, bottom, left, right = 0.5 + 0.25 * legend_rows, 0.55, 0.8, 0.2
  width, height = PANEL_SIZE[0] * ncols, PANEL_SIZE[1] * nrows + top
  fig = Figure(figsize=(width, height))
  fig.subplots_adjust(left=left / width, right=1 - right / width, bottom=bottom / height,
                      top=1 - top / height, wspace=0.3, hspace=0.45)
  FigureCanvasAgg(fig)
  cols = colors(len(runs))
  axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
  for ax, p in zip(axes, plist):
    marker = None if p.split == TRAIN else "o"
    for run, c in zip(runs, cols):
      xs, ys = series(run, p.split, p.metric, p.x)
      if xs:
        ax.plot(xs, ys, color=c, marker=marker, markersize=3, linewidth=1.2, label=run.name)
    ax.set_title(p.title)
    ax.set_xlabel("tokens seen" if p.x == "tokens" else "step")
    if p.x == "tokens":
      ax.xaxis.set_major_formatter(EngFormatter())  # 200k, 1M: no crowded long numbers
    ax.set_ylabel(p.ylabel)
    ax.grid(True, alpha=0.3)
  for ax in axes[len(plist):]:
    ax.set_visible(False)
  handles = [Line2D([], [], color=c, linewidth=2) for c in cols]
  fig.legend(handles, [r.name for r in runs], loc="upper center", ncols=min(len(runs), LEGEND_COLS),
             bbox_to_anchor=(0.5, 1 - 0.1 / height), frameon=False)
  return fig


def output_path(output: str | None, workdirs: list[str]) -> str:
  """Where the PNG goes: `output` if it ends in .png, else OUTPUT/plots.png; default WORKDIR[0]/plots.png."""
  if not output:
    return os.path.join(workdirs[0], "plots.png")
  return output if output.lower().endswith(".png") else os.path.join(output, "plots.png")


def save_figure(fig: "Figure", path: str, dpi: int = 100) -> None:
  """Writes `fig` as a PNG at `path` atomically: a temp file in the same directory, then os.replace."""
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=directory, prefix=".plots-", suffix=".png.tmp")
  try:
    with os.fdopen(fd, "wb") as f:
      fig.savefig(f, format="png", dpi=dpi)
    os.chmod(tmp, 0o644)  # mkstemp makes it 0600
    os.replace(tmp, path)
  except BaseException:
    os.unlink(tmp)
    raise


def plot_runs(workdirs: list[str], output: str | None = None) -> str:
  """Reads every workdir, writes the comparison PNG and returns its path."""
  runs = [load_run(w, n) for w, n in zip(workdirs, run_names(workdirs))]
  path = output_path(output, workdirs)
  save_figure(build_figure(runs), path)
  return path


def _number(v) -> bool:
  """Whether `v` is a finite int or float (bools and strings are not)."""
  return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
