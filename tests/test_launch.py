"""scripts/launch.py: the TPU and Kubernetes launches match golden files, the manifests pass the
Kubernetes API's schema (the official client's models), and a cluster that does not fit the config's
mesh is refused before anything is written."""

import importlib.util
import os
import re

import pytest
import yaml

import k8s_schema
from conftest import REPO

GOLDEN = os.path.join(REPO, "tests", "golden")
# STRATA_UPDATE_GOLDEN=1 rewrites the golden files from the launcher (then review the diff).
UPDATE = os.environ.get("STRATA_UPDATE_GOLDEN") == "1"

_spec = importlib.util.spec_from_file_location("launch", os.path.join(REPO, "scripts", "launch.py"))
launch = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(launch)

LAUNCHES = {
    "tpu_v5p64.txt": ["tpu", "--config=configs/llama_1b.py", "--workdir=/mnt/runs/llama", "--tpu_name=strata-v5p",
                      "--zone=us-east5-a", "--accelerator_type=v5p-64", "--project=my-project", "--create",
                      "--delete", "--spot", "--dry_run", "--", "--config.mesh.fsdp=8", "--config.mesh.data=4"],
    "k8s_gpu.yaml": ["k8s", "--config=configs/gpt2_124m.py", "--workdir=/runs/gpt2", "--image=registry/strata:v1",
                     "--nodes=2", "--gpus_per_node=8", "--gpu_type=nvidia-h100-80gb", "--pvc=strata-runs",
                     "--max_restarts=3", "--dry_run", "--", "--config.mesh.data=2", "--config.mesh.fsdp=8",
                     "--config.train.steps=20000"],
    "k8s_tpu.yaml": ["k8s", "--config=configs/llama_1b.py", "--workdir=/runs/llama", "--image=registry/strata:v1",
                     "--nodes=4", "--tpu_type=tpu-v5p-slice", "--tpu_topology=2x2x4", "--chips_per_node=4",
                     "--namespace=research", "--pvc=strata-runs", "--dry_run"],
}


def _launch(argv: list[str], capsys) -> tuple[int, str, str]:
  """(exit status, stdout, the error message) of scripts/launch.py ARGV."""
  try:
    launch.main(argv)
    code, message = 0, ""
  except SystemExit as e:  # sys.exit("error: ...") on bad input
    code, message = (e.code, "") if isinstance(e.code, int) else (1, str(e.code))
  out, err = capsys.readouterr()
  return code, out, message or err


@pytest.mark.parametrize("golden", sorted(LAUNCHES))
def test_dry_run_matches_golden(golden, capsys):
  code, out, err = _launch(LAUNCHES[golden], capsys)
  assert code == 0, err
  path = os.path.join(GOLDEN, golden)
  if UPDATE:
    with open(path, "w") as f:
      f.write(out)
  with open(path) as f:
    assert out == f.read(), f"{golden} changed; if on purpose, rerun with STRATA_UPDATE_GOLDEN=1"


@pytest.mark.parametrize("golden", ["k8s_gpu.yaml", "k8s_tpu.yaml"])
def test_manifests_pass_the_kubernetes_schema(golden):
  with open(os.path.join(GOLDEN, golden)) as f:
    manifests = list(yaml.safe_load_all(f))
  assert [m["kind"] for m in manifests] == ["Service", "Job"]
  for manifest in manifests:
    k8s_schema.validate(manifest)
  job = manifests[1]["spec"]
  pod = job["template"]["spec"]
  assert job["completionMode"] == "Indexed" and job["completions"] == job["parallelism"]
  assert pod["subdomain"] == manifests[0]["metadata"]["name"]  # pods resolve as NAME-i.NAME


def test_the_schema_check_can_fail():
  with open(os.path.join(GOLDEN, "k8s_gpu.yaml")) as f:
    job = list(yaml.safe_load_all(f))[1]
  job["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
  job["spec"]["completions"] = "2"
  with pytest.raises(ValueError, match=r"imagePullPolicyy: not a field of V1Container.*|completions: '2' is not int"):
    k8s_schema.validate(job)
  del job["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"]
  job["spec"]["completions"] = 2
  del job["spec"]["template"]["spec"]["containers"][0]["name"]
  with pytest.raises(Exception, match="name"):
    k8s_schema.validate(job)


@pytest.mark.parametrize("argv, message", [
    (["slurm", "--nodes=2", "--gpus_per_node=8", "--", "--config.mesh.data=2", "--config.mesh.fsdp=4"],
     "--nodes=2 x 8 GPU(s) per node gives 16 devices: mesh (mesh.data=2, mesh.fsdp=4, mesh.tensor=1) has 8"),
    (["slurm", "--nodes=1", "--gpus_per_node=8", "--tasks_per_node=3"], "expected 1 (a process per node) or 8"),
    (["tpu", "--tpu_name=t", "--zone=z", "--accelerator_type=v5p-64", "--", "--config.mesh.fsdp=64"],
     "--accelerator_type=v5p-64 (8 host(s)) gives 32 devices"),
    (["tpu", "--tpu_name=t", "--zone=z", "--accelerator_type=v9-8"], "expected GENERATION-SIZE"),
    (["k8s", "--image=i", "--nodes=2", "--gpus_per_node=4", "--", "--config.mesh.tensor=3"],
     "gives 8 devices: mesh .* does not divide"),
    (["k8s", "--image=i", "--nodes=2", "--tpu_type=tpu-v5p-slice", "--tpu_topology=2x2x4"],
     "has 16 chips but --nodes=2 x --chips_per_node=4 = 8"),
    (["k8s", "--image=i", "--nodes=1", "--gpus_per_node=8", "--pvc=runs"], "expected a path under --pvc_mount=/runs"),
    (["slurm", "--", "--config.mesh.dat=2"], "unknown config key config.mesh.dat"),
])
def test_bad_launches_are_refused_in_one_line(argv, message, capsys, tmp_path):
  cluster, *rest = argv
  workdir = str(tmp_path / "run")
  code, out, err = _launch([cluster, "--config=configs/quickstart.py", f"--workdir={workdir}", *rest], capsys)
  assert code != 0 and not out
  assert len(err.strip().splitlines()) == 1, err
  assert re.search(message if "*" in message else re.escape(message), err), err
  assert not os.path.exists(workdir)  # nothing written


@pytest.mark.parametrize("workdir, name", [("/runs/gpt2", "gpt2"), ("/runs/7B_llama/", "strata-7b-llama"),
                                           ("runs/My Run", "my-run"), ("/", "strata")])
def test_job_names_are_dns_labels(workdir, name):
  from scripts.cluster.job import Run
  assert Run("configs/quickstart.py", workdir).name == name
