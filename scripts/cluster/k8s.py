"""A Kubernetes indexed Job (one pod per node, each one JAX process) and the headless Service that
gives its pods stable names, so every process finds the coordinator at pod 0."""

import dataclasses
import math

import yaml

from errors import UserError
from scripts.cluster.job import Run

COORDINATOR_PORT = 1234
_INDEX_ANNOTATION = "metadata.annotations['batch.kubernetes.io/job-completion-index']"


@dataclasses.dataclass(frozen=True)
class Pods:
  """The pods of the job and the accelerators each one holds."""
  image: str                      # a container image holding the repository, installed, at workdir_in_image
  nodes: int = 1
  gpus_per_node: int = 0
  gpu_type: str = ""              # GKE's cloud.google.com/gke-accelerator, e.g. nvidia-h100-80gb
  tpu_type: str = ""              # GKE's cloud.google.com/gke-tpu-accelerator, e.g. tpu-v5p-slice
  tpu_topology: str = ""          # e.g. 2x2x4 (chips); the slice's chips = nodes x chips_per_node
  chips_per_node: int = 4
  namespace: str = "default"
  repo_dir: str = "/strata"
  pvc: str = ""                   # a PersistentVolumeClaim mounted at pvc_mount (the workdir must be under it)
  pvc_mount: str = "/runs"
  max_restarts: int = 0           # the Job's backoffLimit: a restarted cluster resumes from the newest checkpoint

  def check(self) -> None:
    if not self.image:
      raise UserError("--image: expected the container image that holds the repository (e.g. REGISTRY/strata:TAG)")
    if self.nodes < 1:
      raise UserError(f"--nodes={self.nodes}: expected at least 1")
    if bool(self.tpu_type) == bool(self.gpus_per_node):
      raise UserError("expected accelerators of one kind: --gpus_per_node=G, or --tpu_type with --tpu_topology")
    if self.tpu_type:
      try:
        chips = math.prod(int(n) for n in self.tpu_topology.split("x"))
      except ValueError:
        raise UserError(f"--tpu_topology={self.tpu_topology!r}: expected chips per dimension, e.g. 2x2x4") from None
      if chips != self.nodes * self.chips_per_node:
        raise UserError(f"--tpu_topology={self.tpu_topology} has {chips} chips but --nodes={self.nodes} x "
                        f"--chips_per_node={self.chips_per_node} = {self.nodes * self.chips_per_node}")

  @property
  def num_devices(self) -> int:
    return self.nodes * (self.chips_per_node if self.tpu_type else self.gpus_per_node)

  def describe(self) -> str:
    each = f"{self.chips_per_node} TPU chip(s)" if self.tpu_type else f"{self.gpus_per_node} GPU(s)"
    return f"--nodes={self.nodes} x {each} per node"


def _container(run: Run, pods: Pods, name: str) -> dict:
  coordinator = f"{name}-0.{name}:{COORDINATOR_PORT}"
  command = ["python", *run.train_args(), f"--coordinator_address={coordinator}",
             f"--num_processes={pods.nodes}", "--process_id=$(JOB_COMPLETION_INDEX)"]
  # Quantities as strings, as the API's schema types them.
  resource = ({"google.com/tpu": str(pods.chips_per_node)} if pods.tpu_type
              else {"nvidia.com/gpu": str(pods.gpus_per_node)})
  container = {
      "name": "train",
      "image": pods.image,
      "workingDir": pods.repo_dir,
      "command": command,
      "env": [{"name": "JOB_COMPLETION_INDEX", "valueFrom": {"fieldRef": {"fieldPath": _INDEX_ANNOTATION}}}],
      "ports": [{"name": "coordinator", "containerPort": COORDINATOR_PORT}],
      "resources": {"limits": resource, "requests": resource},
  }
  container["volumeMounts"] = [{"name": "dshm", "mountPath": "/dev/shm"}]
  if pods.pvc:
    container["volumeMounts"].append({"name": "runs", "mountPath": pods.pvc_mount})
  return container


def _node_selector(pods: Pods) -> dict:
  if pods.tpu_type:
    return {"cloud.google.com/gke-tpu-accelerator": pods.tpu_type,
            "cloud.google.com/gke-tpu-topology": pods.tpu_topology}
  return {"cloud.google.com/gke-accelerator": pods.gpu_type} if pods.gpu_type else {}


def manifests(run: Run, pods: Pods) -> list[dict]:
  """[headless Service, indexed Job] of the run."""
  pods.check()
  if pods.pvc and not run.workdir.startswith(pods.pvc_mount.rstrip("/") + "/"):
    raise UserError(f"--workdir={run.workdir}: expected a path under --pvc_mount={pods.pvc_mount}, where "
                    f"the claim {pods.pvc} is mounted, or checkpoints would be lost with the pod")
  name = run.name
  labels = {"app.kubernetes.io/name": "strata", "strata/run": name}
  service = {
      "apiVersion": "v1",
      "kind": "Service",
      "metadata": {"name": name, "namespace": pods.namespace, "labels": labels},
      # Headless, and naming pods before they are ready: process 0's address must resolve while
      # every process is still starting.
      "spec": {"clusterIP": "None", "publishNotReadyAddresses": True, "selector": {"strata/run": name},
               "ports": [{"name": "coordinator", "port": COORDINATOR_PORT}]},
  }
  pod_spec = {
      "subdomain": name,
      "restartPolicy": "Never",
      "containers": [_container(run, pods, name)],
  }
  if selector := _node_selector(pods):
    pod_spec["nodeSelector"] = selector
  # A memory-backed /dev/shm: containers get 64 MiB by default, too little for NCCL and data workers.
  pod_spec["volumes"] = [{"name": "dshm", "emptyDir": {"medium": "Memory"}}]
  if pods.pvc:
    pod_spec["volumes"].append({"name": "runs", "persistentVolumeClaim": {"claimName": pods.pvc}})
  job = {
      "apiVersion": "batch/v1",
      "kind": "Job",
      "metadata": {"name": name, "namespace": pods.namespace, "labels": labels},
      "spec": {
          "completionMode": "Indexed",
          "completions": pods.nodes,
          "parallelism": pods.nodes,
          "backoffLimit": pods.max_restarts,
          "template": {"metadata": {"labels": labels}, "spec": pod_spec},
      },
  }
  return [service, job]


class _NoAliases(yaml.SafeDumper):
  """Writes a dict used twice (labels, resources) out twice: manifests read plainly, without &anchors."""
  def ignore_aliases(self, data):
    return True


def render(run: Run, pods: Pods) -> str:
  return yaml.dump_all(manifests(run, pods), Dumper=_NoAliases, sort_keys=False)
