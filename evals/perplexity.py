"""Token-level loss and perplexity of a model over a fixed set of batches."""

import math

import jax

from parallel import sharding


def evaluate(eval_step, params, local_batches: list[dict], batch_sh, global_batch: int) -> dict:
  nll, count = 0.0, 0.0
  for local in local_batches:
    out = eval_step(params, sharding.to_global_batch(local, batch_sh, global_batch))
    out = jax.device_get(out)
    nll += float(out["nll_sum"])
    count += float(out["count"])
  loss = nll / max(count, 1.0)
  return {"loss": loss, "perplexity": math.exp(min(loss, 50.0)), "tokens": count}
