"""AdamW with decoupled weight decay on matrices, warmup + cosine/WSD, clipping."""

import jax
import optax

from configs.schema import OptimizerConfig


def learning_rate_schedule(opt_cfg: OptimizerConfig, total_steps: int) -> optax.Schedule:
  peak, warmup = opt_cfg.learning_rate, opt_cfg.warmup_steps
  floor = peak * opt_cfg.min_lr_ratio
  after_warmup = max(1, total_steps - warmup)
  if opt_cfg.schedule == "cosine":
    decay = optax.cosine_decay_schedule(peak, after_warmup, alpha=opt_cfg.min_lr_ratio)
  elif opt_cfg.schedule == "wsd":
    decay_steps = max(1, int(round(total_steps * opt_cfg.wsd_decay_fraction)))
    stable_steps = max(0, after_warmup - decay_steps)
    decay = optax.join_schedules(
        [optax.constant_schedule(peak), optax.linear_schedule(peak, floor, decay_steps)],
        [stable_steps])
  else:  # "constant" (configs/schema.py OptimizerConfig.schedule)
    decay = optax.constant_schedule(peak)
  warm = optax.linear_schedule(peak / max(1, warmup), peak, max(1, warmup - 1))
  return optax.join_schedules([warm, decay], [warmup])


def decay_mask(params):
  """Weight decay on weight matrices only: not on norm scales or biases."""
  return jax.tree_util.tree_map_with_path(lambda path, _: decays(str(getattr(path[-1], "key", path[-1]))), params)


def decays(name: str) -> bool:
  """Whether a parameter of this (last path component's) name takes weight decay."""
  return not (name == "scale" or name.endswith("bias"))


def make_optimizer(opt_cfg, total_steps: int):
  schedule = learning_rate_schedule(opt_cfg, total_steps)
  parts = []
  if opt_cfg.grad_clip_norm > 0:
    parts.append(optax.clip_by_global_norm(opt_cfg.grad_clip_norm))
  parts.append(optax.adamw(schedule, b1=opt_cfg.b1, b2=opt_cfg.b2, eps=opt_cfg.eps,
                           weight_decay=opt_cfg.weight_decay, mask=decay_mask))
  return optax.chain(*parts), schedule
