"""The search: an Optuna study in a journal file beside the trials, run by K local workers.

The journal (SWEEP_DIR/journal.log) holds every trial's parameters, reported values and state, so a
sweep that stops (a crash, a kill, Ctrl-C) resumes where it was: finished trials stand, and a trial
left running is run again in its own workdir, where train.py resumes from its newest checkpoint.
"""

import itertools
import os
import shlex
import threading

import optuna
from optuna.storages.journal import JournalFileBackend, JournalStorage
from optuna.trial import TrialState

from errors import UserError
from scripts.tuning import trial as trial_lib
from scripts.tuning.space import Sweep, default_params

STUDY = "sweep"
JOURNAL = "journal.log"
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


def _sampler(sweep: Sweep) -> optuna.samplers.BaseSampler:
  if sweep.sampler in ("random", "grid"):  # a grid's points are all queued (enqueue_points): none is sampled
    return optuna.samplers.RandomSampler(seed=sweep.seed)
  return optuna.samplers.TPESampler(seed=sweep.seed, n_startup_trials=sweep.startup_trials)


def _pruner(sweep: Sweep) -> optuna.pruners.BasePruner:
  if sweep.pruner == "median":
    return optuna.pruners.MedianPruner(n_startup_trials=sweep.startup_trials)
  if sweep.pruner == "asha":
    return optuna.pruners.SuccessiveHalvingPruner()
  return optuna.pruners.NopPruner()


def open_study(sweep: Sweep, sweep_dir: str) -> optuna.Study:
  os.makedirs(sweep_dir, exist_ok=True)
  storage = JournalStorage(JournalFileBackend(os.path.join(sweep_dir, JOURNAL)))
  study = optuna.create_study(study_name=STUDY, storage=storage, direction=sweep.direction,
                              sampler=_sampler(sweep), pruner=_pruner(sweep), load_if_exists=True)
  recorded = study.user_attrs.get("metric")
  if recorded and recorded != sweep.metric:
    raise UserError(f"{sweep_dir} holds a sweep of {recorded}, not {sweep.metric}; use another --sweep_dir")
  study.set_user_attr("metric", sweep.metric)
  return study


def interrupted(study: optuna.Study) -> set[int]:
  """Numbers of the trials a stopped sweep cut short (each queued again as a trial that `resumes` it)."""
  return {t.user_attrs["resumes"] for t in study.get_trials(deepcopy=False) if "resumes" in t.user_attrs}


def counted(study: optuna.Study) -> int:
  """Trials that count against the budget: finished ones, except those a stopped sweep cut short."""
  cut = interrupted(study)
  return sum(t.state in FINISHED and t.number not in cut for t in study.get_trials(deepcopy=False))


def requeue_interrupted(study: optuna.Study, owner: str) -> int:
  """Trials `owner`'s stopped run left RUNNING: closed as interrupted, and queued again with their workdir.

  The owner is the local sweep (which holds the sweep directory's lock) or one SLURM array task, so no
  one else can be running them.
  """
  stale = [t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
           if t.user_attrs.get("owner") == owner]
  for t in stale:
    study.tell(t.number, state=TrialState.FAIL)
    study.enqueue_trial(t.params, user_attrs={"workdir": t.user_attrs.get("workdir", ""),
                                              "resumes": t.number})
  return len(stale)


def grid_points(sweep: Sweep) -> list[dict]:
  keys = list(sweep.space)
  return [dict(zip(keys, values)) for values in itertools.product(*(sweep.space[k].choices for k in keys))]


def enqueue_points(study: optuna.Study, sweep: Sweep) -> None:
  """Queues the config's default (include_default) and, for a grid, every point; none twice, resumed or not."""
  if sweep.include_default:
    study.enqueue_trial(default_params(sweep), user_attrs={"default": True}, skip_if_exists=True)
  if sweep.sampler == "grid":
    for point in grid_points(sweep):
      study.enqueue_trial(point, skip_if_exists=True)


def budget(sweep: Sweep) -> int:
  return min(sweep.budget, len(grid_points(sweep))) if sweep.sampler == "grid" else sweep.budget


class Search:
  """K workers, each asking the study for a trial and running it, until the budget is spent."""

  def __init__(self, study: optuna.Study, sweep: Sweep, sweep_dir: str, owner: str):
    self.study, self.sweep, self.sweep_dir, self.owner = study, sweep, sweep_dir, owner
    self.stop = threading.Event()
    self._lock = threading.Lock()
    self.errors: list[BaseException] = []

  def _claim(self) -> optuna.Trial | None:
    """The next trial, while finished and running ones (of every worker, in every process) are under budget."""
    with self._lock:
      if self.stop.is_set():
        return None
      cut = interrupted(self.study)
      taken = sum(t.state in (*FINISHED, TrialState.RUNNING) and t.number not in cut
                  for t in self.study.get_trials(deepcopy=False))
      if taken >= budget(self.sweep):
        return None
      t = self.study.ask(dict(self.sweep.space))
      t.set_user_attr("owner", self.owner)
      return t

  def _one(self, t: optuna.Trial) -> None:
    workdir = t.user_attrs.get("workdir") or os.path.join(self.sweep_dir, "trials", f"{t.number:04d}")
    argv = trial_lib.command(self.sweep, t.params, workdir)
    t.set_user_attr("workdir", workdir)
    t.set_user_attr("command", shlex.join(argv[1:]))
    print(f"trial {t.number}: {t.params} -> {workdir}", flush=True)
    outcome = trial_lib.run(t, self.sweep, argv, workdir, self.stop)
    if outcome.state == "interrupted":
      return  # left RUNNING: the next run of the sweep resumes it
    if outcome.state == "failed" and outcome.log_tail.startswith(trial_lib.NO_METRIC):
      self.study.tell(t, state=TrialState.FAIL)
      raise UserError(f"trial {t.number} ({workdir}): {outcome.log_tail}; set the sweep's metric to one of them")
    with self._lock:
      if outcome.state == "complete":
        self.study.tell(t, outcome.value)
      elif outcome.state == "pruned":
        self.study.tell(t, state=TrialState.PRUNED)
      else:
        t.set_user_attr("log_tail", outcome.log_tail)
        self.study.tell(t, state=TrialState.FAIL)
    shown = f"{outcome.value:.4f}" if outcome.value is not None else outcome.log_tail.strip().splitlines()[-1:]
    print(f"trial {t.number}: {outcome.state} {shown}", flush=True)

  def _worker(self) -> None:
    try:
      while (t := self._claim()) is not None:
        self._one(t)
    except BaseException as e:  # noqa: BLE001 -- surfaced by run(); the other workers stop
      self.errors.append(e)
      self.stop.set()

  def run(self, parallel: int) -> None:
    workers = [threading.Thread(target=self._worker, name=f"sweep-worker-{i}") for i in range(parallel)]
    for w in workers:
      w.start()
    try:
      for w in workers:
        while w.is_alive():
          w.join(timeout=0.5)
    except KeyboardInterrupt:
      self.stop.set()
      for w in workers:
        w.join()
      raise
    if self.errors:
      raise self.errors[0]
