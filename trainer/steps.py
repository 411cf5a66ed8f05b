"""Jitted train and eval steps with explicit shardings, and the guard against non-finite steps.

The model's variables are split in two: what trains (the train state's
`params`: the weights, or under LoRA the adapters and a classifier's head) and
`frozen` collections passed alongside (the base weights under LoRA; empty
otherwise); trainer/state.py joins them.

A step whose loss, gradient norm or updated parameters are not finite is not
applied: params and opt_state stay as they were (so the optimizer's count and
learning-rate schedule lag by the skipped steps), while `step` still advances,
since it counts the batches consumed -- it stays equal to the checkpoint's
step and the data iterator's position, which keeps a resume exact. The step
reports `nonfinite` (1.0 or 0.0) on device; `NonfiniteGuard` reads those flags
only at log and checkpoint time and decides whether the run stops.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax

from errors import UserError
from model import families
from parallel import sharding
from parallel.checkpoint import all_finite
from trainer.state import TrainState, variables_of


def _uses_dropout(model) -> bool:
  return model.cfg.lora is not None and model.cfg.lora.dropout > 0


def make_train_step(model, objective, tx, schedule, state_sh, frozen_sh, batch_sh, metrics_sh,
                    grad_accum_steps: int, seed: int = 0):
  """(state, frozen, batch) -> (state, metrics). The state buffer is donated.

  `objective` (trainer/objectives) gives the summed loss, weight and metrics of a
  batch. Gradients are of the loss summed over the global batch, divided by its
  summed weight (target tokens for a language model), whether the batch is
  processed at once or as `grad_accum_steps` micro-batches. Dropout keys derive
  from (seed, step, micro-batch), so a resumed run draws the same masks.
  """

  apply_fn = families.batch_apply(model)

  def sums_and_grads(params, frozen, batch, rng):
    def loss(p):
      rngs = {"dropout": rng} if _uses_dropout(model) else None
      total, weight, metric_sums = objective.sums(apply_fn, variables_of(model, p, frozen), batch, rngs)
      return total, (weight, metric_sums)
    (_, (weight, metric_sums)), grads = jax.value_and_grad(loss, has_aux=True)(params)
    return metric_sums, weight, grads

  def accumulate(params, frozen, batch, rng):
    if grad_accum_steps == 1:
      return sums_and_grads(params, frozen, batch, rng)
    # Strided micro-batches keep each device's rows local: row r -> micro-batch r % k.
    micro = jax.tree.map(
        lambda x: x.reshape(x.shape[0] // grad_accum_steps, grad_accum_steps, *x.shape[1:]).swapaxes(0, 1),
        batch)

    def body(carry, mb_and_index):
      mb, i = mb_and_index
      return jax.tree.map(jnp.add, carry, sums_and_grads(params, frozen, mb, jax.random.fold_in(rng, i))), None

    first = jax.tree.map(lambda x: x[0], micro)
    zeros = jax.tree.map(jnp.zeros_like, jax.eval_shape(sums_and_grads, params, frozen, first, rng))
    totals, _ = jax.lax.scan(body, zeros, (micro, jnp.arange(grad_accum_steps)))
    return totals

  def train_step(state: TrainState, frozen, batch):
    rng = jax.random.fold_in(jax.random.key(seed), state.step)
    metric_sums, weight, grad_sums = accumulate(state.params, frozen, batch, rng)
    denom = jnp.maximum(weight, 1.0)
    grads = jax.tree.map(lambda g: g / denom, grad_sums)
    metrics = {name.removesuffix("_sum"): v / denom for name, v in metric_sums.items()}  # "loss", ...
    loss, grad_norm = metrics["loss"], optax.tree.norm(grads)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm) & all_finite(params)
    keep_finite = lambda new, old: jnp.where(finite, new, old)  # noqa: E731
    new_state = TrainState(step=state.step + 1, params=jax.tree.map(keep_finite, params, state.params),
                           opt_state=jax.tree.map(keep_finite, opt_state, state.opt_state))
    metrics.update(grad_norm=grad_norm, learning_rate=schedule(state.step), target_tokens=weight,
                   nonfinite=1.0 - finite.astype(jnp.float32))
    return new_state, metrics

  return jax.jit(train_step, in_shardings=(state_sh, frozen_sh, batch_sh),
                 out_shardings=(state_sh, metrics_sh), donate_argnums=(0,))


def make_eval_step(model, objective, params_sh, frozen_sh, batch_sh, metrics_sh):
  """(params, frozen, batch) -> the objective's metric sums and "count" (its weight), to add over batches."""

  apply_fn = families.batch_apply(model)

  def eval_step(params, frozen, batch):
    _, weight, metric_sums = objective.sums(apply_fn, variables_of(model, params, frozen), batch, train=False)
    return {**metric_sums, "count": weight}

  return jax.jit(eval_step, in_shardings=(params_sh, frozen_sh, batch_sh), out_shardings=metrics_sh)


def evaluate(eval_step, objective, local_batches: list[dict], batch_sh, global_batch: int) -> dict:
  """The objective's metrics over fixed batches: eval-step sums added up on the host, then divided."""
  totals = {}
  for local in local_batches:
    out = jax.device_get(eval_step(sharding.to_global_batch(local, batch_sh, global_batch)))
    for name, value in out.items():  # scalars, or arrays such as a confusion matrix
      totals[name] = totals.get(name, 0.0) + np.asarray(value, np.float64)
  return objective.eval_metrics({name: float(v) if v.ndim == 0 else v for name, v in totals.items()})


def _describe(step: int, m: dict) -> str:
  values = f"loss {m['loss']:.4g}, grad_norm {m['grad_norm']:.4g}"
  if math.isfinite(m["loss"]) and math.isfinite(m["grad_norm"]):
    return f"the update at step {step} made the parameters non-finite ({values})"
  return f"training went non-finite at step {step} ({values})"


class NonfiniteGuard:
  """Stops a run that went non-finite (config.train.on_nonfinite, max_skipped_steps).

  `observe` keeps each step's device-side flags without reading them, so
  there is no host sync per step; `check` reads all pending ones at once --
  at log time, before every evaluation or checkpoint save, and at the end --
  and raises before a state that saw a non-finite step ("stop") or too many
  skipped steps ("skip") could be saved.
  """

  def __init__(self, mode: str, max_skipped: int):
    """`mode` and `max_skipped`: config.train's (TrainConfig checks them)."""
    self.mode, self.max_skipped = mode, max_skipped
    self.skipped = 0  # skipped steps checked so far in this run (a resume counts afresh)
    self._pending = []  # (step, device metrics) not read yet

  def observe(self, step: int, metrics: dict) -> None:
    self._pending.append((step, {k: metrics[k] for k in ("loss", "grad_norm", "nonfinite")}))

  def check(self, checkpointer) -> None:
    """Raises UserError if the run must stop, after letting `checkpointer` finish and close."""
    pending, self._pending = self._pending, []
    if not pending:
      return
    values = jax.device_get([m for _, m in pending])
    bad = [(step, {k: float(v) for k, v in m.items()}) for (step, _), m in zip(pending, values)
           if m["nonfinite"]]
    if not bad:
      return
    if self.mode == "skip":
      self.skipped += len(bad)
      if self.skipped <= self.max_skipped:
        return
      why = (f"{self.skipped} non-finite steps were skipped, more than config.train.max_skipped_steps="
             f"{self.max_skipped} (the last: {_describe(*bad[-1])})")
      remedy = "raise config.train.max_skipped_steps"
    else:
      why, remedy = _describe(*bad[0]), "set config.train.on_nonfinite=skip"
    checkpointer.wait()  # saves still in flight are of earlier, finite states: let them finish
    last = checkpointer.latest_step()
    checkpointer.close()
    last = f"step {last} in {checkpointer.directory}" if last is not None else "none saved"
    raise UserError(f"{why}; the run stopped without saving that state; last finite checkpoint: {last}. "
                    f"Lower config.optimizer.learning_rate, or {remedy}")
