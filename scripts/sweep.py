"""Hyperparameter sweep: Optuna searches a sweep file's space, each trial an ordinary train.py workdir.

  python scripts/sweep.py --sweep=sweeps/quickstart_lr.py --parallel=2
  python scripts/sweep.py --sweep=sweeps/quickstart_lr.py --launcher=slurm --parallel=8 \\
      --slurm_gpus_per_node=1 --slurm_time=02:00:00      # 8 SLURM array tasks, one trial at a time each

A sweep file (sweeps/NAME.py, see scripts/tuning/space.py) names a base config, the search space over
its keys, the metric (any metrics.jsonl SPLIT/NAME) and a budget of trials. Trials live in
SWEEP_DIR/trials/NNNN; the study in SWEEP_DIR/journal.log, so rerunning the same command after a crash
or a kill resumes: finished trials stand, cut-short ones rerun in their workdir (train.py resumes them).
At the end: SWEEP_DIR/results.csv, results.md, params.png, curves.png, and the best trial's command.
"""

import os
import signal
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import optuna  # noqa: E402
from absl import app, flags  # noqa: E402

from errors import UserError  # noqa: E402
from scripts.cluster import slurm  # noqa: E402
from scripts.tuning import report, search, space  # noqa: E402
from trainer.workdir_lock import WorkdirLock  # noqa: E402

_SWEEP = flags.DEFINE_string("sweep", None, "The sweep file (sweeps/NAME.py).")
_SWEEP_DIR = flags.DEFINE_string("sweep_dir", "", "Where the study and trials live (default runs/sweeps/NAME).")
_PARALLEL = flags.DEFINE_integer("parallel", 1, "Trials at a time: local processes, or SLURM array tasks.")
_LAUNCHER = flags.DEFINE_enum("launcher", "local", ["local", "slurm"], "Where trials run.")
_GPUS_PER_TRIAL = flags.DEFINE_integer("gpus_per_trial", 0, "Local: GPUs each trial gets of this machine's "
                                       "(CUDA_VISIBLE_DEVICES per parallel slot); 0 leaves devices alone.")
_REPORT_ONLY = flags.DEFINE_bool("report_only", False, "Write the results of the trials so far; run none.")
_WORKER = flags.DEFINE_bool("worker", False, "Internal: one SLURM array task of a --launcher=slurm sweep.")
_SLURM_GPUS = flags.DEFINE_integer("slurm_gpus_per_node", 0, "--launcher=slurm: GPUs of each array task.")
_SLURM_TIME = flags.DEFINE_string("slurm_time", "", "--launcher=slurm: each array task's time limit.")
_SLURM_PARTITION = flags.DEFINE_string("slurm_partition", "", "--launcher=slurm: the partition.")
_SLURM_ARGS = flags.DEFINE_multi_string("slurm_arg", [], "--launcher=slurm: another sbatch option, verbatim.")
flags.mark_flag_as_required("sweep")


def _sweep_dir() -> str:
  name = os.path.splitext(os.path.basename(_SWEEP.value))[0]
  return os.path.abspath(_SWEEP_DIR.value or os.path.join("runs", "sweeps", name))


def _finish(study, sweep, sweep_dir) -> None:
  for line in report.write(study, sweep, sweep_dir):
    print(line)
  print(f"results: {sweep_dir}/results.md, results.csv, params.png, curves.png")


def _prepare_data(sweep: space.Sweep) -> None:
  """The trials' dataset, prepared here once if the config prepares it on first use: trials started
  side by side would each prepare it at once."""
  from configs import overrides
  from trainer import loop
  config = overrides.load_with_overrides(sweep.config, list(sweep.overrides))
  cwd = os.getcwd()
  os.chdir(REPO)  # as the trials see the config's relative paths
  try:
    loop.ensure_dataset(config.data)
  finally:
    os.chdir(cwd)


def _local(sweep: space.Sweep, sweep_dir: str) -> None:
  _prepare_data(sweep)
  with WorkdirLock(sweep_dir):  # one local sweep per directory: its RUNNING trials are then stale
    study = search.open_study(sweep, sweep_dir)
    if resumed := search.requeue_interrupted(study, all_running=True):
      print(f"resuming: {resumed} trial(s) cut short run again in their workdirs; "
            f"{search.counted(study)} finished trial(s) stand")
    search.enqueue_points(study, sweep)
    try:
      search.Search(study, sweep, sweep_dir, _GPUS_PER_TRIAL.value).run(_PARALLEL.value)
    except KeyboardInterrupt:
      sys.exit(f"stopped: rerun the same command to resume ({search.counted(study)} trial(s) finished)")
    _finish(study, sweep, sweep_dir)


def _worker(sweep: space.Sweep, sweep_dir: str) -> None:
  worker = f"slurm-{os.environ.get('SLURM_ARRAY_JOB_ID', '')}-{os.environ.get('SLURM_ARRAY_TASK_ID', '0')}"
  study = search.open_study(sweep, sweep_dir, worker)
  search.requeue_interrupted(study, all_running=False)  # trials whose worker stopped stamping them
  try:
    search.Search(study, sweep, sweep_dir).run(1)
  except KeyboardInterrupt:
    sys.exit("stopped: the requeued task resumes its trial")
  _finish(study, sweep, sweep_dir)


def _submit_array(sweep: space.Sweep, sweep_dir: str) -> None:
  _prepare_data(sweep)
  study = search.open_study(sweep, sweep_dir)
  search.requeue_interrupted(study, all_running=False)  # a resubmitted sweep: trials of workers long gone
  search.enqueue_points(study, sweep)
  command = [sys.executable, os.path.abspath(__file__), f"--sweep={os.path.abspath(_SWEEP.value)}",
             f"--sweep_dir={sweep_dir}", "--worker"]
  res = slurm.Resources(nodes=1, gpus_per_node=_SLURM_GPUS.value, time=_SLURM_TIME.value,
                        partition=_SLURM_PARTITION.value, array=f"0-{_PARALLEL.value - 1}",
                        extra=tuple(_SLURM_ARGS.value))
  log_dir = os.path.join(sweep_dir, "slurm")
  os.makedirs(log_dir, exist_ok=True)  # SLURM does not make an --output file's directory
  script = slurm.render(command, res, "sweep-" + os.path.basename(sweep_dir), log_dir, REPO)
  job_id = slurm.write_and_submit(script, os.path.join(sweep_dir, "slurm.sbatch"))
  print(f"submitted array job {job_id} ({_PARALLEL.value} workers): {sweep_dir}/slurm.sbatch\n"
        f"  each worker writes the results when it ends; or: python scripts/sweep.py --sweep={_SWEEP.value} "
        f"--sweep_dir={sweep_dir} --report_only")


def _raise_interrupt(signum, frame):
  raise KeyboardInterrupt


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  optuna.logging.set_verbosity(optuna.logging.WARNING)
  signal.signal(signal.SIGTERM, _raise_interrupt)  # a kill stops the trials cleanly, as Ctrl-C does
  try:
    if _PARALLEL.value < 1:
      raise UserError(f"--parallel={_PARALLEL.value}: expected at least 1")
    sweep = space.load(_SWEEP.value)
    sweep_dir = _sweep_dir()
    if _REPORT_ONLY.value:
      _finish(search.open_study(sweep, sweep_dir), sweep, sweep_dir)
    elif _WORKER.value:
      _worker(sweep, sweep_dir)
    elif _LAUNCHER.value == "slurm":
      _submit_array(sweep, sweep_dir)
    else:
      _local(sweep, sweep_dir)
  except UserError as e:
    sys.exit(f"error: {e}")


if __name__ == "__main__":
  app.run(main)
