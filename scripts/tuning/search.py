"""The search: an Optuna study in a journal file beside the trials, run by workers that each ask for a
trial, run it, and tell its result: K threads of one local sweep, or one per SLURM array task.

The journal (SWEEP_DIR/journal.log) holds every trial's parameters, reported values and state, so a
sweep that stops (a crash, a kill, Ctrl-C, a requeue) resumes where it was: finished trials stand, and
a trial left running is run again in its own workdir, where train.py resumes from its checkpoint.
"""

import contextlib
import fcntl
import itertools
import os
import shlex
import threading
import time
import zlib

import optuna
from optuna.storages.journal import JournalFileBackend, JournalStorage
from optuna.trial import TrialState

from errors import UserError
from scripts.tuning import trial as trial_lib
from scripts.tuning.space import Sweep, default_params

STUDY = "sweep"
JOURNAL = "journal.log"
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
HEARTBEAT_S = 30          # a running trial's worker stamps it this often
STALE_S = 5 * 60          # a RUNNING trial unstamped this long lost its worker


def _sampler(sweep: Sweep, seed: int) -> optuna.samplers.BaseSampler:
  if sweep.sampler in ("random", "grid"):  # a grid's points are all queued (enqueue_points): none is sampled
    return optuna.samplers.RandomSampler(seed=seed)
  return optuna.samplers.TPESampler(seed=seed, n_startup_trials=sweep.startup_trials)


def _pruner(sweep: Sweep) -> optuna.pruners.BasePruner:
  if sweep.pruner == "median":
    return optuna.pruners.MedianPruner(n_startup_trials=sweep.startup_trials, n_warmup_steps=sweep.prune_from_step)
  if sweep.pruner == "asha":
    return optuna.pruners.SuccessiveHalvingPruner(min_resource=max(1, sweep.prune_from_step))
  return optuna.pruners.NopPruner()


def open_study(sweep: Sweep, sweep_dir: str, worker: str = "local") -> optuna.Study:
  os.makedirs(sweep_dir, exist_ok=True)
  storage = JournalStorage(JournalFileBackend(os.path.join(sweep_dir, JOURNAL)))
  study = optuna.create_study(study_name=STUDY, storage=storage, direction=sweep.direction,
                              pruner=_pruner(sweep), load_if_exists=True)
  recorded = study.user_attrs.get("metric")
  if recorded and recorded != sweep.metric:
    raise UserError(f"{sweep_dir} holds a sweep of {recorded}, not {sweep.metric}; use another --sweep_dir")
  study.set_user_attr("metric", sweep.metric)
  # A resumed sweep, or each of several workers, draws new random points: not the first run's again.
  study.sampler = _sampler(sweep, sweep.seed + len(study.trials) + zlib.crc32(worker.encode()) % 10_000)
  return study


def interrupted(study: optuna.Study) -> set[int]:
  """Numbers of the trials a stopped sweep cut short (each queued again as a trial that `resumes` it)."""
  return {t.user_attrs["resumes"] for t in study.get_trials(deepcopy=False) if "resumes" in t.user_attrs}


def counted(study: optuna.Study, states=FINISHED) -> int:
  """Trials in `states` that count against the budget: not those a stopped sweep cut short."""
  cut = interrupted(study)
  return sum(t.state in states and t.number not in cut for t in study.get_trials(deepcopy=False))


def requeue_interrupted(study: optuna.Study, all_running: bool) -> int:
  """RUNNING trials whose worker is gone: closed as failed and queued again with their workdir.

  A local sweep holds the sweep directory's lock, so every RUNNING trial is a stopped run's
  (`all_running`); otherwise, those whose worker stopped stamping them (SLURM array tasks).
  """
  now = time.time()
  requeued = 0
  for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
    if not all_running and now - t.user_attrs.get("heartbeat", t.datetime_start.timestamp()) < STALE_S:
      continue
    try:
      study.tell(t.number, state=TrialState.FAIL)
    except (RuntimeError, ValueError):  # another worker closed it first
      continue
    keep = {k: v for k, v in t.user_attrs.items() if k in ("workdir", "default")}
    study.enqueue_trial(t.params, user_attrs={**keep, "resumes": t.number})
    requeued += 1
  return requeued


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


@contextlib.contextmanager
def _file_lock(path: str):
  """Serializes the budget count and the ask across processes (SLURM array tasks share the journal)."""
  with open(path, "a") as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)


class Search:
  """Workers asking the study for trials and running them, until the budget is spent.

  `gpus_per_trial` > 0 gives worker slot i the GPUs [i * n, (i + 1) * n) (CUDA_VISIBLE_DEVICES), so
  parallel trials on one GPU machine do not share devices.
  """

  def __init__(self, study: optuna.Study, sweep: Sweep, sweep_dir: str, gpus_per_trial: int = 0):
    self.study, self.sweep, self.sweep_dir = study, sweep, sweep_dir
    self.gpus_per_trial = gpus_per_trial
    self.stop = threading.Event()
    self._lock = threading.Lock()
    self.errors: list[BaseException] = []

  def _claim(self) -> optuna.Trial | None:
    """The next trial, while finished and running ones (of every worker) are under the budget."""
    with self._lock, _file_lock(os.path.join(self.sweep_dir, "claim.lock")):
      if self.stop.is_set() or counted(self.study, (*FINISHED, TrialState.RUNNING)) >= budget(self.sweep):
        return None
      t = self.study.ask(dict(self.sweep.space))
      t.set_user_attr("heartbeat", time.time())
      return t

  def _env(self, slot: int) -> dict:
    if not self.gpus_per_trial:
      return {}
    first = slot * self.gpus_per_trial
    return {"CUDA_VISIBLE_DEVICES": ",".join(str(first + i) for i in range(self.gpus_per_trial))}

  def _one(self, t: optuna.Trial, slot: int) -> None:
    workdir = t.user_attrs.get("workdir") or os.path.join(self.sweep_dir, "trials", f"{t.number:04d}")
    argv = trial_lib.command(self.sweep, t.params, workdir)
    t.set_user_attr("workdir", workdir)
    t.set_user_attr("command", shlex.join(argv[1:]))
    print(f"trial {t.number}: {t.params} -> {workdir}", flush=True)
    outcome = trial_lib.run(t, self.sweep, argv, workdir, self.stop, self._env(slot), HEARTBEAT_S)
    if outcome.state == "interrupted":
      return  # left RUNNING: the next run of the sweep resumes it
    with self._lock:
      if outcome.state == "complete":
        self.study.tell(t, outcome.value)
      elif outcome.state == "pruned":
        self.study.tell(t, state=TrialState.PRUNED)
      else:
        t.set_user_attr("log_tail", outcome.log_tail)
        self.study.tell(t, state=TrialState.FAIL)
    if outcome.state == "failed" and outcome.log_tail.startswith(trial_lib.NO_METRIC):
      raise UserError(f"trial {t.number} ({workdir}): {outcome.log_tail}; set the sweep's metric to one of them")
    last = outcome.log_tail.strip().splitlines()[-1] if outcome.log_tail.strip() else ""
    shown = f"{outcome.value:.4f}" if outcome.value is not None else last
    print(f"trial {t.number}: {outcome.state} {shown}", flush=True)

  def _worker(self, slot: int) -> None:
    try:
      while (t := self._claim()) is not None:
        self._one(t, slot)
    except BaseException as e:  # noqa: BLE001 -- surfaced by run(); the other workers stop
      self.errors.append(e)
      self.stop.set()

  def run(self, parallel: int) -> None:
    workers = [threading.Thread(target=self._worker, args=(i,), name=f"sweep-worker-{i}") for i in range(parallel)]
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
