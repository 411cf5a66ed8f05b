"""Launch one experiment.

  python train.py --config=configs/quickstart.py --workdir=runs/quickstart [--config.train.steps=100]

Multi-host: pass --coordinator_address/--num_processes/--process_id, or let
JAX detect the cluster (SLURM, Open MPI, Cloud TPU). Re-running the same
command resumes from the newest checkpoint in --workdir.
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


def parse_flags(argv):
  """absl parsing, but a bad config file or override is one line on stderr, not a traceback."""
  try:
    remaining = flags.FLAGS(argv)
    flags.FLAGS.config.to_dict()  # config_flags defers a broken config file's error to first use
    return remaining
  except flags.Error as e:
    sys.exit(f"error: {e}")
  except Exception as e:  # raised from inside ml_collections while applying --config.* overrides
    config_path = next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), None)
    message = None
    if config_path:
      try:
        message = overrides.explain_bad_override(overrides.load_config_file(config_path), argv)
      except Exception as load_error:  # the config file itself is missing or broken
        message = f"cannot load config file {config_path}: {type(load_error).__name__}: {load_error}"
    sys.exit(f"error: {message or f'{type(e).__name__}: {e}'}")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.WARNING)
  try:
    distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
    from trainer import loop  # after jax.distributed, which must precede other JAX use
    summary = loop.run(_CONFIG.value, _WORKDIR.value)
  except UserError as e:
    sys.exit(f"error: {e}")
  if summary.get("interrupted"):
    sys.exit(130)


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
