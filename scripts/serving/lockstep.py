"""Multi-host serving: process 0 runs HTTP and the engine; every other process follows its batches.

A jitted program over a mesh that spans processes runs only when every process
calls it with the same inputs. The engine's device work is two calls
(SlotDecoder.prefill and .step) whose inputs are small host values, so the
leader broadcasts each call's inputs (a fixed-size header, then the JSON of
the arguments) with `multihost_utils.broadcast_one_to_all` before making it,
and each follower makes the same call with what it received. While idle the
leader sends a heartbeat every second, so followers never sit in a collective
long enough to time out; on shutdown it sends STOP.
"""

import json
import logging
import time

import numpy as np
from jax.experimental import multihost_utils

from model.slots import RowSampling

STOP, IDLE, PREFILL, STEP, RESET = 0, 1, 2, 3, 4
HEARTBEAT_S = 1.0


def _broadcast(op: int, payload: dict | None = None) -> tuple[int, dict | None]:
  """Sends (op, payload) from process 0; every process returns what process 0 sent."""
  data = np.frombuffer(json.dumps(payload).encode(), np.uint8) if payload is not None else np.zeros(0, np.uint8)
  header = multihost_utils.broadcast_one_to_all(np.array([op, data.size], np.int64))
  op, size = int(header[0]), int(header[1])
  if size == 0:
    return op, None
  body = data if data.size == size else np.zeros(size, np.uint8)
  body = multihost_utils.broadcast_one_to_all(body)
  return op, json.loads(np.asarray(body, np.uint8).tobytes().decode())


class LockstepDecoder:
  """Process 0's SlotDecoder: each device call is announced to the followers first."""

  def __init__(self, decoder):
    self.decoder = decoder
    self._last_sent = time.monotonic()

  def __getattr__(self, name):  # slots, context, prepare_params, empty_cache, ... as the decoder has them
    return getattr(self.decoder, name)

  def prefill(self, params, cache, prompt, slot, sampling: RowSampling, score_prompt: bool = False):
    _broadcast(PREFILL, {"prompt": list(map(int, prompt)), "slot": int(slot), "score": bool(score_prompt),
                         "sampling": [sampling.temperature, sampling.top_k, sampling.top_p, sampling.seed,
                                      sampling.choice]})
    self._last_sent = time.monotonic()
    return self.decoder.prefill(params, cache, prompt, slot, sampling, score_prompt)

  def step(self, params, cache, token_S, position_S, sampling_S: dict, index_S):
    _broadcast(STEP, {"token": token_S.tolist(), "position": position_S.tolist(), "index": index_S.tolist(),
                      "sampling": {k: v.tolist() for k, v in sampling_S.items()}})
    self._last_sent = time.monotonic()
    return self.decoder.step(params, cache, token_S, position_S, sampling_S, index_S)

  def reset_cache(self):
    _broadcast(RESET)
    self._last_sent = time.monotonic()
    return self.decoder.empty_cache()

  def heartbeat(self) -> None:
    if time.monotonic() - self._last_sent >= HEARTBEAT_S:
      _broadcast(IDLE)
      self._last_sent = time.monotonic()

  def stop_followers(self) -> None:
    _broadcast(STOP)


_DTYPES = {"temperature": np.float32, "top_k": np.int32, "top_p": np.float32, "seed": np.uint32, "choice": np.int32}


def follow(decoder, params, cache) -> None:
  """A follower's loop: the leader's device calls, with its inputs, until it says STOP."""
  while True:
    op, args = _broadcast(IDLE)
    if op == STOP:
      return
    if op == RESET:
      cache = None  # dropped before the new one is made: two need not fit
    try:
      cache = _apply(decoder, params, cache, op, args)
    except Exception:  # noqa: BLE001 - the leader failed the same call; it resets the cache next (RESET)
      logging.exception("follower: a %s call failed", {PREFILL: "prefill", STEP: "step"}.get(op, op))


def _apply(decoder, params, cache, op: int, args):
  if op == RESET:
    return decoder.empty_cache()
  if op == PREFILL:
    t, k, p, seed, choice = args["sampling"]
    cache, _ = decoder.prefill(params, cache, args["prompt"], args["slot"], RowSampling(t, k, p, seed, choice),
                               args["score"])
  elif op == STEP:
    sampling = {name: np.asarray(v, _DTYPES[name]) for name, v in args["sampling"].items()}
    cache, *_ = decoder.step(params, cache, np.asarray(args["token"], np.int32),
                             np.asarray(args["position"], np.int32), sampling, np.asarray(args["index"], np.int32))
  return cache
