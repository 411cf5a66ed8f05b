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

from configs.schema import RunConfig
from errors import UserError
from model import base_reference, families, hf_weights, lora
from model.config import ModelConfig
from parallel import sharding
from parallel.checkpoint import Checkpointer


def load_run_config(workdir: str) -> RunConfig:
  """The typed config a train.py run saved in WORKDIR/config.json (keys it predates take today's defaults)."""
  path = os.path.join(workdir, "config.json")
  if not os.path.isfile(path):
    raise UserError(f"{workdir} has no config.json; is it a train.py --workdir?")
  with open(path) as f:
    saved = json.load(f)
  try:
    return RunConfig.from_config(saved)
  except UserError as e:
    raise UserError(f"{path}: {e}") from None


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


def latest_step(workdir: str) -> int:
  """The step of a run's newest checkpoint (a UserError when it has none)."""
  ckpt, step = _checkpoint_step(workdir, None, False)
  ckpt.close()
  return step


def lora_base_shardings(model, mesh, base_dtype: str):
  """(abstract, NamedShardings) of a LoRA run's base "params": stored in `base_dtype`, except a
  classifier's head, which trains and so keeps the parameters' dtype."""
  abstract, shardings = sharding.abstract_variables(model, mesh, "params")
  sharding.check_divisible(abstract, shardings, "parameter")
  dtype = jnp.dtype(base_dtype)
  cast = lambda tree: jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, dtype), tree)  # noqa: E731
  return {k: (v if k in lora.HEAD else cast(v)) for k, v in abstract.items()}, shardings


def trained_shardings(model, mesh):
  """(shapes, NamedShardings) of what a run trains and checkpoints: the model's params, or under LoRA
  {"lora": adapters, "params": a classifier's head}."""
  uses_lora = model.cfg.lora is not None
  both = {c: sharding.abstract_variables(model, mesh, c) for c in (("params", lora.COLLECTION) if uses_lora
                                                                   else ("params",))}
  abstract, shardings = {c: a for c, (a, _) in both.items()}, {c: s for c, (_, s) in both.items()}
  if uses_lora:
    return lora.trainable_of(abstract), lora.trainable_of(shardings)
  return abstract["params"], shardings["params"]


def _trained_target(model, mesh):
  """ShapeDtypeStructs (with shardings) of what a run's checkpoint holds."""
  abstract, shardings = trained_shardings(model, mesh)
  sharding.check_divisible(abstract, shardings, "parameter")
  return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings)


def restore(workdir: str, mesh, step: int | None = None, best: bool = False) -> Restored:
  """A run's checkpoint (newest, `step`, or the best by config.eval.best_metric), sharded over `mesh`."""
  config = load_run_config(workdir)
  cfg = config.model_config()
  model = families.build(cfg)
  ckpt, step = _checkpoint_step(workdir, step, best)
  try:
    with sharding.activate(mesh):
      trained = ckpt.restore_params(step, _trained_target(model, mesh))
      if cfg.lora is None:
        return Restored(config, cfg, trained, step, None, None)
      base_reference.check(workdir, base_reference.fingerprint(config.init.hf_dir))
      base_abstract, base_sh = lora_base_shardings(model, mesh, config.lora.base_dtype)
      frozen = lora.frozen_of(hf_weights.load_params(config.init.hf_dir, cfg, lora.frozen_of(base_abstract),
                                                     lora.frozen_of(base_sh)))
      merge = jax.jit(lambda t, f: lora.merged_params(t, f, cfg.lora), out_shardings=base_sh)
      merged = merge(trained, frozen)
  finally:
    ckpt.close()
  return Restored(config, dataclasses.replace(cfg, lora=None), merged, step, trained[lora.COLLECTION], cfg.lora)
