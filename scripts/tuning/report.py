"""A sweep's results: results.csv and results.md (every trial, best first), params.png (the metric
against each swept key) and curves.png (every trial's metric over its steps, overlaid)."""

import csv
import math
import os

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import optuna  # noqa: E402
from optuna.trial import TrialState  # noqa: E402

from scripts.tuning import search, trial as trial_lib  # noqa: E402
from scripts.tuning.space import Sweep  # noqa: E402

_STATES = {TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned", TrialState.FAIL: "failed",
           TrialState.RUNNING: "running", TrialState.WAITING: "waiting"}


def _rows(study: optuna.Study, sweep: Sweep) -> list[dict]:
  cut = search.interrupted(study)
  rows = []
  for t in study.get_trials(deepcopy=False):
    if t.number in cut:
      continue  # its rerun (the trial that `resumes` it) stands for it
    workdir = t.user_attrs.get("workdir", "")
    points = trial_lib.curve(workdir, sweep.metric) if workdir else []
    value = t.value if t.state == TrialState.COMPLETE else (points[-1][1] if points else None)
    duration = (t.datetime_complete - t.datetime_start).total_seconds() if t.datetime_complete else None
    rows.append({"trial": t.number, "state": _STATES.get(t.state, t.state.name.lower()),
                 "default": bool(t.user_attrs.get("default")), sweep.metric: value,
                 "last_step": points[-1][0] if points else None, **t.params,
                 "duration_s": round(duration, 1) if duration is not None else None, "workdir": workdir,
                 "command": t.user_attrs.get("command", ""), "log_tail": t.user_attrs.get("log_tail", ""),
                 "_curve": points})
  sign = 1 if sweep.direction == "minimize" else -1
  order = {"complete": 0, "pruned": 1, "running": 2, "waiting": 3, "failed": 4}
  rows.sort(key=lambda r: (order.get(r["state"], 5), sign * r[sweep.metric] if r[sweep.metric] is not None
                           else math.inf, r["trial"]))
  return rows


def _fmt(value) -> str:
  if isinstance(value, float):
    return f"{value:.4g}"
  return "" if value is None else str(value)


def _write_atomic(path: str, write) -> None:
  tmp = f"{path}.{os.getpid()}.tmp"  # SLURM array workers may write the report at once
  with open(tmp, "w", newline="") as f:
    write(f)
  os.replace(tmp, path)


def _csv(rows: list[dict], columns: list[str], path: str) -> None:
  def write(f):
    w = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
  _write_atomic(path, write)


def _markdown(rows: list[dict], columns: list[str], sweep: Sweep, summary: list[str], path: str) -> None:
  shown = [c for c in columns if c not in ("workdir", "command", "log_tail")]
  lines = [f"# Sweep of {os.path.basename(sweep.config)}: {sweep.metric} ({sweep.direction})", "", *summary, "",
           "| " + " | ".join(shown) + " |", "|" + " --- |" * len(shown)]
  lines += ["| " + " | ".join(_fmt(r[c]) for c in shown) + " |" for r in rows]
  failed = [r for r in rows if r["state"] == "failed"]
  for r in failed:
    lines += ["", f"## Trial {r['trial']} failed", "", "```", r["log_tail"].rstrip(), "```"]
  _write_atomic(path, lambda f: f.write("\n".join(lines) + "\n"))


def _save(fig, path: str) -> None:
  tmp = f"{path}.{os.getpid()}.tmp.png"
  fig.savefig(tmp, dpi=110)
  os.replace(tmp, path)


def _plots(rows: list[dict], sweep: Sweep, sweep_dir: str) -> None:
  keys = list(sweep.space)
  fig, axes = plt.subplots(1, len(keys), figsize=(4.5 * len(keys), 3.6), squeeze=False)
  for ax, key in zip(axes[0], keys):
    for state, style in (("complete", dict(marker="o", color="C0")), ("pruned", dict(marker="x", color="0.6"))):
      points = [(r[key], r[sweep.metric]) for r in rows if r["state"] == state and r[sweep.metric] is not None]
      if points:
        ax.scatter(*zip(*points), label=state, **style)
    best = next((r for r in rows if r["state"] == "complete"), None)
    if best:
      ax.scatter([best[key]], [best[sweep.metric]], marker="*", s=200, color="C3", label="best", zorder=3)
    dist = sweep.space[key]
    if getattr(dist, "log", False):
      ax.set_xscale("log")
      ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # unlabelled minor ticks: no overlap
    ax.set_xlabel(key)
    ax.set_ylabel(sweep.metric)
    ax.grid(alpha=0.3)
  axes[0][0].legend()
  fig.tight_layout()
  _save(fig, os.path.join(sweep_dir, "params.png"))
  plt.close(fig)

  fig, ax = plt.subplots(figsize=(7, 4.5))
  best = next((r for r in rows if r["state"] == "complete"), None)
  for r in rows:
    if r["_curve"]:
      steps, values = zip(*r["_curve"])
      is_best = r is best
      ax.plot(steps, values, color="C3" if is_best else ("0.7" if r["state"] != "complete" else "C0"),
              linewidth=2.5 if is_best else 1, alpha=1 if is_best else 0.7,
              label=f"best: trial {r['trial']}" if is_best else None)
  ax.set_xlabel("step")
  ax.set_ylabel(sweep.metric)
  ax.set_title("every trial (grey: pruned or failed)")
  ax.grid(alpha=0.3)
  if best:
    ax.legend()
  fig.tight_layout()
  _save(fig, os.path.join(sweep_dir, "curves.png"))
  plt.close(fig)


def write(study: optuna.Study, sweep: Sweep, sweep_dir: str) -> list[str]:
  """Writes the table and plots; returns the summary lines (best trial, its command, the default's value)."""
  rows = _rows(study, sweep)
  columns = ["trial", "state", "default", sweep.metric, "last_step", *sweep.space, "duration_s", "workdir",
             "command", "log_tail"]
  counts = {s: sum(r["state"] == s for r in rows) for s in ("complete", "pruned", "failed")}
  summary = [f"{len(rows)} trials: " + ", ".join(f"{n} {s}" for s, n in counts.items())]
  best = next((r for r in rows if r["state"] == "complete"), None)
  default = next((r for r in rows if r["default"] and r["state"] == "complete"), None)
  if best:
    summary.append(f"best: trial {best['trial']}, {sweep.metric} {best[sweep.metric]:.4f} with "
                   + ", ".join(f"{k}={_fmt(best[k])}" for k in sweep.space))
    if default:
      summary.append(f"the config's default ({', '.join(f'{k}={_fmt(default[k])}' for k in sweep.space)}): "
                     f"{sweep.metric} {default[sweep.metric]:.4f}")
    summary.append(f"best trial's command: python {best['command']}")
  _csv(rows, columns, os.path.join(sweep_dir, "results.csv"))
  _markdown(rows, columns, sweep, summary, os.path.join(sweep_dir, "results.md"))
  _plots(rows, sweep, sweep_dir)
  return summary
