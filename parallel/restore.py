"""A training run's model, restored from its workdir straight onto a mesh.

Export, evaluation, generation and the harness all read a run's parameters
through `restore`: the run's config.json says what model it trained; Orbax
reads only the parameters (not the optimizer state) and puts each array
directly on the shards the caller's mesh gives it, so nothing is first
gathered on one device. A LoRA run's adapters are merged into its base model,
which is read from config.init.hf_dir after checking it is the base the
adapters were trained on.
"""

import dataclasses
import json
import os

import jax
import jax.numpy as jnp

from configs import base
from errors import UserError
from model import base_reference, families, hf_weights, lora
from model.config import ModelConfig
from parallel import sharding
from parallel.checkpoint import Checkpointer


def load_run_config(workdir: str):
  """The config a train.py run saved in WORKDIR/config.json, over today's defaults."""
  path = os.path.join(workdir, "config.json")
  if not os.path.isfile(path):
    raise UserError(f"{workdir} has no config.json; is it a train.py --workdir?")
  with open(path) as f:
    saved = json.load(f)
  config = base.base_config()
  for section, values in saved.items():
    config[section].update(values)
  return config


@dataclasses.dataclass
class Restored:
  config: object          # the run's config
  cfg: ModelConfig        # the plain model (no adapters)
  params: dict            # plain parameters (LoRA merged in), on the caller's mesh
  step: int
  adapters: dict | None   # the LoRA adapters alone, for a LoRA run (on the mesh)
  lora: lora.LoraConfig | None


def _checkpoint_step(workdir: str, step: int | None, best: bool) -> tuple[Checkpointer, int]:
  where = "best" if best else "checkpoints"
  ckpt = Checkpointer(os.path.abspath(os.path.join(workdir, where)), keep=1000, async_save=False)
  step = ckpt.latest_step() if step is None else step
  if step is None or step not in ckpt.all_steps():
    ckpt.close()
    raise UserError(f"{workdir}/{where} has no checkpoint {'at all' if step is None else f'for step {step}'}"
                    + (" (best checkpoints need config.checkpoint.keep_best=True)" if best else ""))
  return ckpt, step


def restore(workdir: str, mesh, step: int | None = None, best: bool = False) -> Restored:
  """A run's checkpoint (newest, `step`, or the best by config.eval.best_metric), sharded over `mesh`."""
  config = load_run_config(workdir)
  adapters_cfg = lora.LoraConfig.from_config(config.lora)
  cfg = dataclasses.replace(ModelConfig.from_config(config.model), lora=adapters_cfg)
  model = families.build(cfg)
  trained = lora.COLLECTION if adapters_cfg is not None else "params"
  ckpt, step = _checkpoint_step(workdir, step, best)
  try:
    with sharding.activate(mesh):
      abstract, shardings = sharding.abstract_variables(model, mesh, trained)
      sharding.check_divisible(abstract, shardings, "parameter")
      target = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings)
      params = ckpt.restore_params(step, target)
      if adapters_cfg is None:
        return Restored(config, cfg, params, step, None, None)
      base_reference.check(workdir, base_reference.fingerprint(config.init.hf_dir))
      base_abstract, base_sh = sharding.abstract_variables(model, mesh, "params")
      dtype = jnp.dtype(config.lora.base_dtype)
      base_abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, dtype), base_abstract)
      base_params = hf_weights.load_params(config.init.hf_dir, cfg, base_abstract, base_sh)
      merge = jax.jit(lambda b, a: lora.merge(b, a, adapters_cfg), out_shardings=base_sh)
      merged = merge(base_params, params)
  finally:
    ckpt.close()
  return Restored(config, dataclasses.replace(cfg, lora=None), merged, step, params, adapters_cfg)
