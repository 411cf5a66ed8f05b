"""Export a training run's checkpoint as a Hugging Face model directory."""

import json
import os
import shutil
import tempfile

import jax
import ml_dtypes
import numpy as np

from configs import base
from data import pipeline
from errors import UserError
from model import hf_weights
from model.config import ModelConfig
from model.transformer import DecoderLM
from parallel import mesh as mesh_lib
from parallel import sharding
from trainer import optimizer as optimizer_lib
from trainer import state as state_lib
from trainer.checkpoint import Checkpointer

DTYPES = {"float32": np.float32, "bfloat16": ml_dtypes.bfloat16, "float16": np.float16}


def load_run_config(workdir: str):
  path = os.path.join(workdir, "config.json")
  if not os.path.isfile(path):
    raise UserError(f"{workdir} has no config.json; is it a train.py --workdir?")
  with open(path) as f:
    saved = json.load(f)
  config = base.base_config()
  for section, values in saved.items():
    config[section].update(values)
  return config


def restore_params(workdir: str, step: int | None = None):
  """(config, ModelConfig, params on one device, step) from WORKDIR/checkpoints."""
  config = load_run_config(workdir)
  cfg = ModelConfig.from_config(config.model)
  config.mesh.update(dict(data=1, fsdp=1, tensor=1))
  mesh = mesh_lib.make_mesh(config.mesh, jax.devices()[:1])
  model = DecoderLM(cfg)
  tx, _ = optimizer_lib.make_optimizer(config.optimizer, config.train.steps)
  ckpt = Checkpointer(os.path.abspath(os.path.join(workdir, "checkpoints")), keep=1000, async_save=False)
  step = ckpt.latest_step() if step is None else step
  if step is None or step not in ckpt.all_steps():
    raise UserError(f"{workdir}/checkpoints has no checkpoint {'at all' if step is None else f'for step {step}'}")
  with sharding.activate(mesh):
    abstract, shardings = state_lib.state_shardings(model, tx, mesh, config.train.seq_len)
    state = ckpt.restore_state(step, state_lib.with_shardings(abstract, shardings))
  ckpt.close()
  return config, cfg, state.params, step


def _export_tokenizer(config, out_dir: str) -> tuple[int | None, int | None]:
  meta = pipeline.dataset_metadata(config.data)
  src = meta["tokenizer_path"]
  if meta["tokenizer_kind"] == "hf":
    shutil.copyfile(src, os.path.join(out_dir, "tokenizer.json"))
    tok_config = {"tokenizer_class": "PreTrainedTokenizerFast"}
  else:
    shutil.copyfile(src, os.path.join(out_dir, "tokenizer.model"))
    tok_config = {"tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>",
                  "unk_token": "<unk>", "add_bos_token": True, "add_eos_token": False}
  with open(os.path.join(out_dir, "tokenizer_config.json"), "w") as f:
    json.dump(tok_config, f, indent=2)
  return meta.get("bos_id"), meta.get("eos_id")


def export(workdir: str, output: str, step: int | None = None, dtype: str = "float32") -> int:
  """Writes OUTPUT atomically; returns the exported step."""
  if dtype not in DTYPES:
    raise UserError(f"--dtype={dtype!r}; expected one of {sorted(DTYPES)}")
  if os.path.exists(output):
    raise UserError(f"{output} already exists; remove it or choose another --output")
  config, cfg, params, step = restore_params(workdir, step)
  parent = os.path.dirname(os.path.abspath(output))
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=".tmp-export-", dir=parent)
  try:
    bos, eos = _export_tokenizer(config, tmp)
    hf_weights.save(params, cfg, tmp, DTYPES[dtype], bos_id=bos, eos_id=eos)
    os.chmod(tmp, 0o755)
    os.rename(tmp, output)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return step
