"""The base model a LoRA run's adapters belong to.

Adapter checkpoints hold no base weights, so WORKDIR/lora_base.json names the
base directory and fingerprints it (config.json hash, weight file sizes). A
resumed run or an export refuses a base that has changed since.
"""

import hashlib
import json
import os

from errors import UserError

FILE = "lora_base.json"


def fingerprint(hf_dir: str) -> dict:
  with open(os.path.join(hf_dir, "config.json"), "rb") as f:
    config_sha = hashlib.sha256(f.read()).hexdigest()
  weights = {name: os.path.getsize(os.path.join(hf_dir, name)) for name in sorted(os.listdir(hf_dir))
             if name.endswith(".safetensors")}
  return {"hf_dir": os.path.abspath(hf_dir), "config_sha256": config_sha, "weights": weights}


def record_or_check(workdir: str, hf_dir: str, write: bool) -> None:
  """Writes the reference on a run's first start; checks it on every later one."""
  path = os.path.join(workdir, FILE)
  current = fingerprint(hf_dir)
  if not os.path.isfile(path):
    if write:
      with open(path + ".tmp", "w") as f:
        json.dump(current, f, indent=2)
      os.replace(path + ".tmp", path)
    return
  check(workdir, current)


def check(workdir: str, current: dict) -> None:
  with open(os.path.join(workdir, FILE)) as f:
    saved = json.load(f)
  if {k: v for k, v in saved.items() if k != "hf_dir"} != {k: v for k, v in current.items() if k != "hf_dir"}:
    raise UserError(f"the LoRA adapters in {workdir} were trained on the base model {saved['hf_dir']}, but "
                    f"{current['hf_dir']} differs from it (config.json or weight files changed)")
