"""Launch one experiment.

  python train.py --config=configs/quickstart.py --workdir=runs/quickstart [--config.train.steps=100]

Multi-host: pass --coordinator_address/--num_processes/--process_id, or let
JAX detect the cluster (SLURM, Open MPI, Cloud TPU). Re-running the same
command resumes from the newest checkpoint in --workdir (or, once the run has
finished, says so and does nothing); one run at a time holds a workdir.
"""

import sys

from absl import app, flags, logging
from ml_collections import config_flags

from configs import overrides
from errors import UserError
from parallel import distributed

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file (configs/*.py).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and logs.")
_COORDINATOR = flags.DEFINE_string("coordinator_address", "", "HOST:PORT of process 0 (multi-host).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", 0, "Number of processes (multi-host).")
_PROCESS_ID = flags.DEFINE_integer("process_id", -1, "This process's index (multi-host).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.WARNING)
  try:
    distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
    from evals import in_training  # after jax.distributed, which must precede other JAX use
    from trainer import loop
    summary = loop.run(_CONFIG.value, _WORKDIR.value, task_evaluator=in_training.TaskEvaluator)
  except UserError as e:
    sys.exit(f"error: {e}")
  except KeyboardInterrupt:  # a second Ctrl-C during the stop: out at once, no checkpoint
    print("stopped at once without saving; a rerun resumes from the last checkpoint", file=sys.stderr)
    sys.exit(130)
  if summary.get("interrupted"):
    sys.exit(130)


if __name__ == "__main__":
  app.run(main, flags_parser=overrides.parse_flags)
