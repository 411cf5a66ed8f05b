"""Jitted train and eval steps with explicit shardings."""

import jax
import jax.numpy as jnp
import optax

from trainer.objectives import cross_entropy_sums, next_token_targets
from trainer.state import TrainState


def _loss_sums(model, params, batch, z_loss):
  logits = model.apply({"params": params}, batch["tokens"], batch["positions"], batch["segment_ids"])
  targets, weights = next_token_targets(batch)
  return cross_entropy_sums(logits, targets, weights, z_loss)


def make_train_step(model, tx, schedule, state_sh, batch_sh, metrics_sh, grad_accum_steps: int,
                    z_loss: float):
  """(state, batch) -> (state, metrics). The state buffer is donated.

  Gradients are the mean over all target tokens of the global batch, whether it
  is processed at once or as `grad_accum_steps` micro-batches.
  """

  def sums_and_grads(params, batch):
    def objective(p):
      nll, z, count = _loss_sums(model, p, batch, z_loss)
      return nll + z, (nll, count)
    (_, (nll, count)), grads = jax.value_and_grad(objective, has_aux=True)(params)
    return nll, count, grads

  def accumulate(params, batch):
    if grad_accum_steps == 1:
      return sums_and_grads(params, batch)
    # Strided micro-batches keep each device's rows local: row r -> micro-batch r % k.
    micro = jax.tree.map(
        lambda x: x.reshape(x.shape[0] // grad_accum_steps, grad_accum_steps, *x.shape[1:]).swapaxes(0, 1),
        batch)

    def body(carry, mb):
      nll, count, grads = sums_and_grads(params, mb)
      return jax.tree.map(jnp.add, carry, (nll, count, grads)), None

    zeros = (jnp.zeros(()), jnp.zeros(()), jax.tree.map(jnp.zeros_like, params))
    totals, _ = jax.lax.scan(body, zeros, micro)
    return totals

  def train_step(state: TrainState, batch):
    nll, count, grad_sums = accumulate(state.params, batch)
    denom = jnp.maximum(count, 1.0)
    grads = jax.tree.map(lambda g: g / denom, grad_sums)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    new_state = TrainState(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                           opt_state=opt_state)
    metrics = {"loss": nll / denom, "grad_norm": optax.tree.norm(grads),
               "learning_rate": schedule(state.step), "target_tokens": count}
    return new_state, metrics

  return jax.jit(train_step, in_shardings=(state_sh, batch_sh), out_shardings=(state_sh, metrics_sh),
                 donate_argnums=(0,))


def make_eval_step(model, params_sh, batch_sh, metrics_sh):
  """(params, batch) -> {"nll_sum", "count"}: sums, to be combined over batches."""

  def eval_step(params, batch):
    nll, _, count = _loss_sums(model, params, batch, 0.0)
    return {"nll_sum": nll, "count": count}

  return jax.jit(eval_step, in_shardings=(params_sh, batch_sh), out_shardings=metrics_sh)
