"""Continuous batching's device side: a fixed set of decode slots sharing one KV cache.

A server (scripts/serving/engine.py) keeps one cache of `slots` rows, each
`context` positions long. A request joins by a prefill that writes its prompt's
keys and values into a free row; every decode step then advances all rows at
once, each at its own position and with its own sampling settings and seed, so
requests join and leave between steps without waiting for each other. A row's
stale keys beyond its position are never visible (slot s is seen only from
position >= s, see model/attention.py), so a freed row needs no clearing.

The first token of a row is drawn with key fold_in(fold_in(key(seed), choice),
0), its i-th next token with index i: a request's tokens do not depend on
which slot it got or what else runs beside it.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from model import kv_cache
from model.config import ModelConfig
from model.decode import Decoder, bucket
from model.sampling import logprobs_of, next_token_rows
from parallel import sharding

TOP_LOGPROBS = 5  # OpenAI's completions API returns at most 5 alternatives per token


@dataclasses.dataclass(frozen=True)
class RowSampling:
  """One row's sampling settings; `choice` tells apart the n samples of one request. `seed` is 32-bit."""
  temperature: float = 0.0
  top_k: int = 0
  top_p: float = 1.0
  seed: int = 0
  choice: int = 0


@dataclasses.dataclass
class Prefilled:
  """A row's first new token with its log-probabilities; with prompt scoring, every prompt token's
  (the first has none: nothing precedes it)."""
  token: int
  logprob: float
  top_ids: np.ndarray       # [TOP_LOGPROBS]
  top_logprobs: np.ndarray  # [TOP_LOGPROBS]
  prompt_logprobs: np.ndarray | None = None      # [T-1]: token t+1 given tokens 0..t
  prompt_top_ids: np.ndarray | None = None       # [T-1, TOP_LOGPROBS]
  prompt_top_logprobs: np.ndarray | None = None  # [T-1, TOP_LOGPROBS]


def _row_keys(seed_B, choice_B, index_B):
  return jax.vmap(lambda s, c, i: jax.random.fold_in(jax.random.fold_in(jax.random.key(s), c), i))(
      seed_B, choice_B, index_B)


class SlotDecoder(Decoder):
  """Prefill-into-a-slot and one-step-for-all-slots programs for one model on one mesh."""

  def __init__(self, cfg: ModelConfig, mesh, slots: int, context: int | None = None):
    super().__init__(cfg, mesh)
    self.slots = sharding.round_to_batch_axes(mesh, slots)
    self.context = min(context or cfg.max_seq_len, cfg.max_seq_len)
    self._sh = sh = self._shardings()
    self._prefill_jit = {}
    self._step_jit = jax.jit(self._step_all, static_argnums=(0,), donate_argnums=(2,),
                             out_shardings=(sh["cache"],) + (sh["replicated"],) * 4)

  # ------------------------------------------------------------ state

  def prepare_params(self, params: dict) -> dict:
    """The parameters in the unrolled layout decoding runs (a copy when the run scanned its layers)."""
    if self._unstack is None:
      return params
    with sharding.activate(self.mesh):
      return self._unstack(params)

  def empty_cache(self) -> list[dict]:
    make = jax.jit(lambda: kv_cache.empty(self.cfg, self.cfg.num_layers, self.slots, self.context),
                   out_shardings=self._sh["cache"])
    with sharding.activate(self.mesh):
      return make()

  def reset_cache(self) -> list[dict]:
    """A new cache after a failure; a multi-host leader's version makes its followers reset too."""
    return self.empty_cache()

  def heartbeat(self) -> None:
    """Nothing on one process (a multi-host leader keeps its followers' collectives alive)."""

  def stop_followers(self) -> None:
    """Nothing on one process (a multi-host leader ends its followers' loops)."""

  def prompt_bucket(self, length: int) -> int:
    return min(bucket(length, 16), self.context)

  # ------------------------------------------------------------ programs

  def _prefill_slot(self, score_prompt: bool):
    cfg, model = self.cfg, self.model

    def prefill(params, cache, tokens_1xT, length, slot, temperature, top_k, top_p, seed, choice):
      padded = tokens_1xT.shape[1]
      row_cache = kv_cache.empty(cfg, cfg.num_layers, 1, padded)
      positions_1xT = jnp.arange(padded, dtype=jnp.int32)[None]
      logits_at = None if score_prompt else jnp.reshape(length - 1, (1, 1))
      logits_1xTxV, row_cache = model.apply({"params": params}, tokens_1xT, positions_1xT,
                                            jnp.ones_like(tokens_1xT), cache=row_cache, logits_at_BxK=logits_at)
      last_1xV = (jax.lax.dynamic_slice_in_dim(logits_1xTxV, length - 1, 1, axis=1) if score_prompt
                  else logits_1xTxV)[:, 0]
      cache = jax.tree.map(lambda buf, row: jax.lax.dynamic_update_slice(buf, row, (slot, 0, 0, 0)), cache, row_cache)
      key_1 = _row_keys(seed[None], choice[None], jnp.zeros((1,), jnp.int32))
      token_1 = next_token_rows(last_1xV, temperature[None], top_k[None], top_p[None], key_1)
      first = logprobs_of(last_1xV, token_1, TOP_LOGPROBS)
      out = (cache, token_1[0], first[0][0], first[1][0], first[2][0])
      if score_prompt:
        scored = logprobs_of(logits_1xTxV[0, :-1], tokens_1xT[0, 1:], TOP_LOGPROBS)
        out += scored
      return out
    return prefill

  def _step_all(self, span, params, cache, token_S, position_S, temperature_S, top_k_S, top_p_S, seed_S, choice_S,
                index_S):
    # Attend over the first `span` cache positions only (every row's position is below it): a step's cost
    # follows the longest running request, not the context the cache could hold.
    window = jax.tree.map(lambda buf: jax.lax.slice_in_dim(buf, 0, span, axis=2), cache)
    logits_SxV, window = self._step(params, window, token_S, position_S)
    cache = jax.tree.map(lambda buf, w: jax.lax.dynamic_update_slice_in_dim(buf, w, 0, axis=2), cache, window)
    next_S = next_token_rows(logits_SxV, temperature_S, top_k_S, top_p_S, _row_keys(seed_S, choice_S, index_S))
    return (cache, next_S) + logprobs_of(logits_SxV, next_S, TOP_LOGPROBS)

  # ------------------------------------------------------------ calls

  def prefill(self, params, cache, prompt: list[int], slot: int, sampling: RowSampling,
              score_prompt: bool = False) -> tuple[list[dict], Prefilled]:
    """Writes `prompt` into row `slot` of `cache` (donated) and draws the row's first new token."""
    length = len(prompt)
    padded = self.prompt_bucket(length)
    tokens = np.zeros((1, padded), np.int32)
    tokens[0, :length] = prompt
    if score_prompt not in self._prefill_jit:
      rep = self._sh["replicated"]
      self._prefill_jit[score_prompt] = jax.jit(self._prefill_slot(score_prompt), donate_argnums=(1,),
                                                out_shardings=(self._sh["cache"],) + (rep,) * (7 if score_prompt else 4))
    host = lambda x: sharding.from_host(np.asarray(x), self._sh["replicated"])  # noqa: E731
    args = (tokens, np.int32(length), np.int32(slot), np.float32(sampling.temperature), np.int32(sampling.top_k),
            np.float32(sampling.top_p), np.uint32(sampling.seed), np.int32(sampling.choice))
    with sharding.activate(self.mesh):
      out = self._prefill_jit[score_prompt](params, cache, *map(host, args))
    cache, rest = out[0], [np.asarray(x) for x in out[1:]]
    result = Prefilled(int(rest[0]), float(rest[1]), rest[2], rest[3])
    if score_prompt:
      result.prompt_logprobs = rest[4][:length - 1]
      result.prompt_top_ids, result.prompt_top_logprobs = rest[5][:length - 1], rest[6][:length - 1]
    return cache, result

  def step(self, params, cache, token_S, position_S, sampling_S: dict, index_S):
    """One new token for every slot: (cache, tokens [S], their log-probabilities [S], top ids and
    log-probabilities [S, TOP_LOGPROBS]), as host arrays. `sampling_S` holds the per-slot arrays
    temperature, top_k, top_p, seed and choice. Free slots compute too (fixed shapes) and are ignored."""
    rows = self._sh["rows"]
    host = lambda x: sharding.from_host(np.asarray(x), rows)  # noqa: E731
    args = (token_S, position_S, sampling_S["temperature"], sampling_S["top_k"], sampling_S["top_p"],
            sampling_S["seed"], sampling_S["choice"], index_S)
    span = min(bucket(int(np.max(position_S)) + 1, 64), self.context)
    with sharding.activate(self.mesh):
      cache, *out = self._step_jit(span, params, cache, *map(host, args))
    return (cache,) + tuple(np.asarray(x) for x in out)

