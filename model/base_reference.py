"""The base model a LoRA run's adapters belong to.

Adapter checkpoints hold no base weights, so WORKDIR/lora_base.json names the
base directory and fingerprints it:

- model: a hash of the model settings config.json translates to (so editing a
  bookkeeping field such as `_name_or_path` is not a change);
- layout: a hash of every tensor's name, dtype and shape;
- content: a hash of sampled values of every tensor, read lazily with
  safetensors' get_slice: runs of up to 128 elements at its start, near its
  end and at two offsets drawn from its name. Fine-tuning moves every
  element of the weights it touches, so any sample of a changed tensor
  differs; about 1 KiB per tensor costs little even for a 70B model.

A resumed run or an export refuses a base that differs in any of the three.
A lora_base.json without the content hash (written before it existed) is
refused too, with the way out: check the base by hand, then delete the file
so the next run records it again. Re-fingerprinting silently would trust the
very base it cannot check.
"""

import hashlib
import json
import os

import numpy as np

from errors import UserError

FILE = "lora_base.json"
_WINDOW = 128  # elements per sampled window


def _windows(name: str, shape: list[int]) -> list[tuple[slice, ...]]:
  """Index tuples sampled from one tensor: at its start, near its end and at two spots picked by the
  name's hash, each a run of up to _WINDOW elements within one row of the last axis."""
  size = int(np.prod(shape))
  if size <= 4 * _WINDOW:
    return [tuple(slice(None) for _ in shape)]
  seed = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "little")
  out = []
  for start in (0, size - _WINDOW, seed % (size - _WINDOW), (seed >> 32) % (size - _WINDOW)):
    *lead, last = (int(i) for i in np.unravel_index(start, shape))
    out.append(tuple(slice(i, i + 1) for i in lead) + (slice(last, min(last + _WINDOW, shape[-1])),))
  return out


def _weights_hashes(hf_dir: str) -> tuple[str, str]:
  from model.hf_weights import open_safetensors, weight_files
  layout, content = hashlib.sha256(), hashlib.sha256()
  by_file: dict[str, list[str]] = {}
  for name, path in sorted(weight_files(hf_dir).items()):
    by_file.setdefault(path, []).append(name)
  for path, names in sorted(by_file.items()):
    with open_safetensors(path) as f:
      missing = sorted(set(names) - set(f.keys()))
      if missing:
        raise UserError(f"{path}: has no tensor {missing[0]!r}, though the index lists it there")
      for name in names:  # get_slice reads only the sampled bytes
        tensor = f.get_slice(name)
        shape, dtype = tensor.get_shape(), tensor.get_dtype()
        layout.update(json.dumps([name, dtype, shape]).encode())
        for index in _windows(name, shape):
          content.update(np.ascontiguousarray(tensor[index] if shape else f.get_tensor(name)).tobytes())
  return layout.hexdigest(), content.hexdigest()


def fingerprint(hf_dir: str) -> dict:
  from model import hf_config
  arch, fields = hf_config.read(hf_dir)
  model_sha = hashlib.sha256(json.dumps([arch, fields], sort_keys=True).encode()).hexdigest()
  layout_sha, content_sha = _weights_hashes(hf_dir)
  return {"hf_dir": os.path.abspath(hf_dir), "config_sha256": model_sha, "layout_sha256": layout_sha,
          "content_sha256": content_sha}


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


_WHAT = {"config_sha256": "model settings in config.json", "layout_sha256": "tensor names, dtypes or shapes",
         "content_sha256": "weight values"}


def same_weights(a: dict, b: dict) -> bool:
  """Two fingerprints of the same model, wherever its files are."""
  return all(a.get(k) == b.get(k) for k in _WHAT)


def check(workdir: str, current: dict) -> None:
  path = os.path.join(workdir, FILE)
  with open(path) as f:
    saved = json.load(f)
  if "content_sha256" not in saved:
    raise UserError(f"{path} records no content fingerprint of the base model {saved.get('hf_dir')} (it "
                    f"predates them); if that base is unchanged, delete {path} to record it again")
  changed = [what for key, what in _WHAT.items() if saved.get(key) != current[key]]
  if changed:
    raise UserError(f"the LoRA adapters in {workdir} were trained on the base model {saved['hf_dir']}, but "
                    f"{current['hf_dir']} differs from it ({', '.join(changed)})")
