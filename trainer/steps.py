"""Jitted train and eval steps with explicit shardings.

The model's variables are split in two: the trainable collection (the train
state's `params`: the weights, or only the LoRA adapters) and `frozen`
collections passed alongside (the base weights under LoRA; empty otherwise).
"""

import jax
import jax.numpy as jnp
import optax

from trainer.objectives import cross_entropy_sums, next_token_targets
from trainer.state import TrainState


def _loss_sums(model, variables, batch, z_loss, rngs=None):
  logits = model.apply(variables, batch["tokens"], batch["positions"], batch["segment_ids"], rngs=rngs)
  targets, weights = next_token_targets(batch)
  return cross_entropy_sums(logits, targets, weights, z_loss)


def _uses_dropout(model) -> bool:
  return model.cfg.lora is not None and model.cfg.lora.dropout > 0


def make_train_step(model, tx, schedule, state_sh, frozen_sh, batch_sh, metrics_sh, grad_accum_steps: int,
                    z_loss: float, trainable: str = "params", seed: int = 0):
  """(state, frozen, batch) -> (state, metrics). The state buffer is donated.

  Gradients are the mean over all target tokens of the global batch, whether it
  is processed at once or as `grad_accum_steps` micro-batches. Dropout keys
  derive from (seed, step, micro-batch), so a resumed run draws the same masks.
  """

  def sums_and_grads(params, frozen, batch, rng):
    def objective(p):
      rngs = {"dropout": rng} if _uses_dropout(model) else None
      nll, z, count = _loss_sums(model, {**frozen, trainable: p}, batch, z_loss, rngs)
      return nll + z, (nll, count)
    (_, (nll, count)), grads = jax.value_and_grad(objective, has_aux=True)(params)
    return nll, count, grads

  def accumulate(params, frozen, batch, rng):
    if grad_accum_steps == 1:
      return sums_and_grads(params, frozen, batch, rng)
    # Strided micro-batches keep each device's rows local: row r -> micro-batch r % k.
    micro = jax.tree.map(
        lambda x: x.reshape(x.shape[0] // grad_accum_steps, grad_accum_steps, *x.shape[1:]).swapaxes(0, 1),
        batch)

    def body(carry, mb_and_index):
      mb, i = mb_and_index
      nll, count, grads = sums_and_grads(params, frozen, mb, jax.random.fold_in(rng, i))
      return jax.tree.map(jnp.add, carry, (nll, count, grads)), None

    zeros = (jnp.zeros(()), jnp.zeros(()), jax.tree.map(jnp.zeros_like, params))
    totals, _ = jax.lax.scan(body, zeros, (micro, jnp.arange(grad_accum_steps)))
    return totals

  def train_step(state: TrainState, frozen, batch):
    rng = jax.random.fold_in(jax.random.key(seed), state.step)
    nll, count, grad_sums = accumulate(state.params, frozen, batch, rng)
    denom = jnp.maximum(count, 1.0)
    grads = jax.tree.map(lambda g: g / denom, grad_sums)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    new_state = TrainState(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                           opt_state=opt_state)
    metrics = {"loss": nll / denom, "grad_norm": optax.tree.norm(grads),
               "learning_rate": schedule(state.step), "target_tokens": count}
    return new_state, metrics

  return jax.jit(train_step, in_shardings=(state_sh, frozen_sh, batch_sh),
                 out_shardings=(state_sh, metrics_sh), donate_argnums=(0,))


def make_eval_step(model, params_sh, frozen_sh, batch_sh, metrics_sh, trainable: str = "params"):
  """(params, frozen, batch) -> {"nll_sum", "count"}: sums, to be combined over batches."""

  def eval_step(params, frozen, batch):
    nll, _, count = _loss_sums(model, {**frozen, trainable: params}, batch, 0.0)
    return {"nll_sum": nll, "count": count}

  return jax.jit(eval_step, in_shardings=(params_sh, frozen_sh, batch_sh), out_shardings=metrics_sh)
