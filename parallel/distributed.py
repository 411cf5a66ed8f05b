"""Joining a multi-process JAX cluster."""

import os

import jax
from absl import logging

# Environment variables by which jax.distributed.initialize() auto-detects a
# cluster (SLURM, Open MPI, Cloud TPU pods, GKE / explicit coordinator).
_CLUSTER_ENV = ("SLURM_JOB_ID", "OMPI_COMM_WORLD_SIZE", "TPU_WORKER_HOSTNAMES",
                "MEGASCALE_COORDINATOR_ADDRESS", "JAX_COORDINATOR_ADDRESS")


# Set by scripts/launch.py tpu on every worker: join the slice's cluster, which jax.distributed finds
# itself on a Cloud TPU VM (from the VM's metadata, not its environment).
_FORCE_ENV = "STRATA_DISTRIBUTED"


def _multi_task_slurm() -> bool:
  return int(os.environ.get("SLURM_NTASKS", "1")) > 1


def initialize(coordinator_address: str = "", num_processes: int = 0, process_id: int = -1) -> None:
  """Starts jax.distributed from explicit flags, from the cluster's environment, or not at all."""
  explicit = bool(coordinator_address)
  detected = os.environ.get(_FORCE_ENV) == "1" or (any(v in os.environ for v in _CLUSTER_ENV) and (
      "SLURM_JOB_ID" not in os.environ or _multi_task_slurm()))
  if not explicit and not detected:
    return
  # CPU collectives across processes need gloo; harmless on GPU/TPU.
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  if explicit:
    jax.distributed.initialize(coordinator_address=coordinator_address,
                               num_processes=num_processes or None,
                               process_id=None if process_id < 0 else process_id)
  else:
    jax.distributed.initialize()
  logging.info("joined cluster: process %d of %d, %d global devices",
               jax.process_index(), jax.process_count(), jax.device_count())
