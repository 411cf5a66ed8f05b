"""A real single-node SLURM cluster for tests: slurmctld and slurmd (Debian's slurm-wlm), 2 CPUs.

Runs as root (SLURM's slurmd launches jobs as their users), and installs slurm-wlm with apt-get when
its daemons are missing.
No munge: the cluster trusts its one host (auth/none), so nothing but the two daemons runs. SLURM's
own commands (sbatch, squeue, scontrol) find it through SLURM_CONF, in `env`.
"""

import os
import shutil
import socket
import subprocess
import time

_PACKAGES = ("slurm-wlm",)
_DAEMONS = ("slurmctld", "slurmd")

_CONF = """\
ClusterName=strata-test
SlurmctldHost={host}
SlurmctldPort={ctld_port}
SlurmdPort={d_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/none
CredType=cred/none
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
ReturnToService=2
SlurmdParameters=config_overrides
KillWait=60
JobRequeue=1
NodeName={host} CPUs=2 RealMemory=2000 State=UNKNOWN
PartitionName=test Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def install() -> None:
  """apt-get install slurm-wlm, once per machine."""
  if all(shutil.which(d) or os.path.exists(f"/usr/sbin/{d}") for d in _DAEMONS):
    return
  env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
  for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *_PACKAGES]):
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode:
      raise RuntimeError(f"{' '.join(command)} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")


class Cluster:
  """slurmctld + slurmd in the foreground under `root`; `env` points SLURM's commands at them."""

  def __init__(self, root: str):
    if os.geteuid() != 0:
      raise RuntimeError("the SLURM test runs slurmd, which must run as root (and apt-get installs slurm-wlm)")
    install()
    self.root = root
    for sub in ("state", "spool"):
      os.makedirs(os.path.join(root, sub), exist_ok=True)
    self.host = socket.gethostname().split(".")[0]
    conf = os.path.join(root, "slurm.conf")
    with open(conf, "w") as f:
      f.write(_CONF.format(host=self.host, ctld_port=_free_port(), d_port=_free_port(), root=root))
    self.env = dict(os.environ, SLURM_CONF=conf)
    sbin = lambda name: shutil.which(name) or f"/usr/sbin/{name}"  # noqa: E731 -- /usr/sbin is off some PATHs
    self._daemons = [subprocess.Popen([sbin("slurmctld"), "-D", "-i"], env=self.env, stdout=subprocess.DEVNULL,
                                      stderr=open(os.path.join(root, "slurmctld.out"), "w")),
                     subprocess.Popen([sbin("slurmd"), "-D"], env=self.env, stdout=subprocess.DEVNULL,
                                      stderr=open(os.path.join(root, "slurmd.out"), "w"))]
    self._wait_idle()

  def _wait_idle(self, timeout_s: float = 60) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
      state = self.run("sinfo", "-h", "-o", "%T", check=False).strip()
      if state == "idle":
        return
      time.sleep(0.5)
    raise RuntimeError(f"the test SLURM node never became idle (state {state!r}); logs in {self.root}")

  def run(self, *command: str, check: bool = True) -> str:
    done = subprocess.run(command, env=self.env, capture_output=True, text=True)
    if check and done.returncode:
      raise RuntimeError(f"{' '.join(command)}: {done.stderr.strip()}")
    return done.stdout

  def job_field(self, job_id: str, field: str) -> str:
    """A field of `scontrol show job` (JobState, Restarts, Reason, ...)."""
    for token in self.run("scontrol", "show", "job", job_id).split():
      if token.startswith(field + "="):
        return token.split("=", 1)[1]
    raise KeyError(field)

  def wait(self, job_id: str, timeout_s: float = 300) -> str:
    """Waits for the job to end; returns its final state. A requeued job's begin-time hold is lifted."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
      state = self.job_field(job_id, "JobState")
      if state in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY"):
        return state
      if state == "PENDING" and self.job_field(job_id, "Reason") == "BeginTime":
        # SLURM defers a requeued job's start by about two minutes; start it now.
        self.run("scontrol", "update", f"JobId={job_id}", "StartTime=now", check=False)
      time.sleep(0.5)
    raise TimeoutError(f"job {job_id} still {state} after {timeout_s}s")

  def close(self) -> None:
    for daemon in self._daemons:
      daemon.terminate()
    for daemon in self._daemons:
      try:
        daemon.wait(timeout=30)
      except subprocess.TimeoutExpired:
        daemon.kill()
