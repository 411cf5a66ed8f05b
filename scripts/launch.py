"""Launch train.py on a cluster: a SLURM job, every worker of a Cloud TPU slice, or a Kubernetes Job.

  python scripts/launch.py slurm --config=configs/gpt2_124m.py --workdir=/shared/runs/gpt2 \\
      --nodes=2 --gpus_per_node=8 --time=04:00:00 -- --config.train.steps=20000
  python scripts/launch.py tpu --config=configs/llama_1b.py --workdir=/mnt/runs/llama \\
      --tpu_name=strata-v5p --zone=us-east5-a --accelerator_type=v5p-64 --create --delete
  python scripts/launch.py k8s --config=configs/gpt2_124m.py --workdir=/runs/gpt2 \\
      --image=REGISTRY/strata:TAG --nodes=2 --gpus_per_node=8 --pvc=runs

Arguments after `--` are train.py's config overrides. The config's mesh (with them) is checked against
the cluster's device count before anything is written or submitted. --dry_run prints the batch script,
the gcloud commands or the manifests, and changes nothing. The workdir must be on storage every node
shares: SLURM's shared filesystem, a mount on every TPU worker, a PersistentVolumeClaim.
"""

import argparse
import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from errors import UserError  # noqa: E402
from scripts.cluster import job, k8s, slurm, tpu  # noqa: E402


def _add_run_flags(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--config", required=True, help="experiment config (configs/NAME.py), relative to the repo")
  parser.add_argument("--workdir", required=True, help="the run's workdir, on storage every node shares")
  parser.add_argument("--dry_run", action="store_true", help="print what would be written and run; change nothing")


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], prog="scripts/launch.py")
  commands = parser.add_subparsers(dest="cluster", required=True)

  s = commands.add_parser("slurm", help="write WORKDIR/slurm.sbatch and submit it with sbatch")
  _add_run_flags(s)
  s.add_argument("--nodes", type=int, default=1)
  s.add_argument("--gpus_per_node", type=int, default=0, help="0: CPU processes")
  s.add_argument("--tasks_per_node", type=int, default=1, help="1 (a process per node) or gpus_per_node")
  s.add_argument("--cpus_per_task", type=int, default=0)
  s.add_argument("--time", default="", help="time limit, e.g. 04:00:00")
  s.add_argument("--partition", default="")
  s.add_argument("--account", default="")
  s.add_argument("--array", default="", help="an array job, e.g. 0-7%%2 (sweep workers)")
  s.add_argument("--signal_seconds", type=int, default=300,
                 help="requeue this long before the time limit (train.py checkpoints on SIGTERM)")
  s.add_argument("--sbatch_arg", action="append", default=[], help="another sbatch option, verbatim (repeatable)")
  s.add_argument("--python", default=sys.executable, help="the Python every node runs (on the shared filesystem)")

  t = commands.add_parser("tpu", help="run on every worker of a Cloud TPU VM slice (gcloud)")
  _add_run_flags(t)
  t.add_argument("--tpu_name", required=True)
  t.add_argument("--zone", required=True)
  t.add_argument("--accelerator_type", required=True, help="e.g. v5p-64, v5litepod-16, v6e-8")
  t.add_argument("--project", default="")
  t.add_argument("--runtime_version", default="", help="default: the generation's (scripts/cluster/tpu.py)")
  t.add_argument("--create", action="store_true", help="make a queued resource for the slice first")
  t.add_argument("--delete", action="store_true", help="delete the queued resource when the run ends")
  t.add_argument("--spot", action="store_true")
  t.add_argument("--no_install", action="store_true", help="the workers already have the venv (a rerun)")

  k = commands.add_parser("k8s", help="an indexed Job and its headless Service (kubectl apply, or print)")
  _add_run_flags(k)
  for field in ("image", "gpu_type", "tpu_type", "tpu_topology", "namespace", "repo_dir", "pvc", "pvc_mount"):
    k.add_argument(f"--{field}", default=getattr(k8s.Pods, field, ""))
  for field in ("nodes", "gpus_per_node", "chips_per_node", "max_restarts"):
    k.add_argument(f"--{field}", type=int, default=getattr(k8s.Pods, field))
  k.add_argument("--manifest", default="", help="where to write the manifests (default: RUN_NAME.k8s.yaml)")
  return parser


def _split_overrides(argv: list[str]) -> tuple[list[str], tuple[str, ...]]:
  if "--" in argv:
    i = argv.index("--")
    return argv[:i], tuple(argv[i + 1:])
  return argv, ()


def _slurm(args, run: job.Run) -> None:
  res = slurm.Resources(nodes=args.nodes, gpus_per_node=args.gpus_per_node, tasks_per_node=args.tasks_per_node,
                        cpus_per_task=args.cpus_per_task, time=args.time, partition=args.partition,
                        account=args.account, array=args.array, signal_seconds=args.signal_seconds,
                        extra=tuple(args.sbatch_arg))
  res.check()
  job.check_mesh(run, res.num_devices, res.describe())
  workdir = os.path.abspath(run.workdir)
  script = slurm.render([args.python, *job.Run(run.config, workdir, run.overrides).train_args()], res,
                        run.name, workdir, job.REPO)
  if args.dry_run:
    print(script, end="")
    return
  path = os.path.join(workdir, "slurm.sbatch")
  job_id = slurm.write_and_submit(script, path)
  log = f"slurm-{job_id}_*.out" if args.array else f"slurm-{job_id}.out"
  print(f"submitted job {job_id}: {path}\n  follow: tail -f {workdir}/{log}; squeue -j {job_id}")


def _tpu(args, run: job.Run) -> None:
  slice_ = tpu.Slice(name=args.tpu_name, zone=args.zone, accelerator_type=args.accelerator_type,
                     project=args.project, runtime_version=args.runtime_version, create=args.create,
                     delete=args.delete, spot=args.spot)
  devices, hosts = job.tpu_slice(args.accelerator_type)
  job.check_mesh(run, devices, f"--accelerator_type={args.accelerator_type} ({hosts} host(s))")
  if args.dry_run:
    print("\n".join(tpu.plan(slice_, run, install=not args.no_install)))
    return
  tpu.launch(slice_, run, install=not args.no_install)


def _k8s(args, run: job.Run) -> None:
  pods = k8s.Pods(**{f: getattr(args, f) for f in k8s.Pods.__dataclass_fields__})
  text = k8s.render(run, pods)  # checks the pods' flags first
  job.check_mesh(run, pods.num_devices, pods.describe())
  if args.dry_run:
    print(text, end="")
    return
  path = args.manifest or f"{run.name}.k8s.yaml"
  with open(path + ".tmp", "w") as f:
    f.write(text)
  os.replace(path + ".tmp", path)
  if shutil.which("kubectl") is None:
    raise UserError(f"wrote {path}, but kubectl is not on PATH to apply it")
  if subprocess.run(["kubectl", "apply", "-f", path]).returncode:
    raise UserError(f"kubectl apply -f {path} failed")
  print(f"applied {path}: kubectl logs -f job/{run.name} -n {pods.namespace}")


def main(argv: list[str]) -> None:
  flags_argv, config_overrides = _split_overrides(argv)
  args = _parser().parse_args(flags_argv)
  run = job.Run(args.config, args.workdir, config_overrides)
  try:
    {"slurm": _slurm, "tpu": _tpu, "k8s": _k8s}[args.cluster](args, run)
  except UserError as e:
    sys.exit(f"error: {e}")


if __name__ == "__main__":
  main(sys.argv[1:])
