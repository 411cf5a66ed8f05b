"""The serving engine: one background thread owns the model's slots and steps them (continuous batching).

Requests wait in a bounded queue. Between decode steps the thread admits
waiting requests into free slots (a prefill each, at most `prefills_per_step`
while others are decoding, so running streams keep flowing), then advances
every occupied slot by one token (model/slots.py). A choice leaves its slot the
step it finishes (EOS, a stop string, max_tokens, the context's end, a
guardrail) or its client goes away, and the next waiting request takes it.

The HTTP side talks to the thread through a `Handle`: the thread posts events
(prompt log-probabilities, tokens with their releasable text, a choice's end,
an error) into the handle's asyncio queue; the handler sets `cancelled` when its
client disconnects. A request that raises inside the engine (its prefill, its
text handling) fails alone with its id; the others keep their slots.
"""

import asyncio
import collections
import dataclasses
import logging
import re
import threading
import time

import jax
import numpy as np

from model.slots import RowSampling, SlotDecoder
from scripts.serving.protocol import ApiError
from scripts.serving.textstream import TextStream

logger = logging.getLogger("strata.serve")
_BYTE_PIECE = re.compile(r"<0x[0-9A-Fa-f]{2}>")


@dataclasses.dataclass
class GenRequest:
  """One prompt of an HTTP request, with its n choices (numbered from `first_choice` in the response)."""
  prompt: list[int]
  max_tokens: int
  sampling: list[RowSampling]
  stop: list[str] = dataclasses.field(default_factory=list)
  score_prompt: bool = False
  ignore_eos: bool = False
  first_choice: int = 0
  prompt_index: int = 0


class Handle:
  """An HTTP request's link to the engine thread."""

  def __init__(self, request_id: str, loop: asyncio.AbstractEventLoop | None = None):
    self.id = request_id
    self.loop = loop or asyncio.get_running_loop()
    self.events: asyncio.Queue = asyncio.Queue()
    self.cancelled = False
    self.created = time.perf_counter()
    self.first_token_at: float | None = None

  def emit(self, event: dict) -> None:
    try:
      self.loop.call_soon_threadsafe(self.events.put_nowait, event)
    except RuntimeError:  # the client's event loop is gone
      self.cancelled = True


@dataclasses.dataclass
class _Row:
  """A choice occupying a slot."""
  handle: Handle
  request: GenRequest
  choice: int  # within the request
  stream: TextStream
  position: int  # where the next fed token goes
  emitted: int = 0
  last_token_at: float = 0.0

  @property
  def sampling(self) -> RowSampling:
    return self.request.sampling[self.choice]


def make_slot_decoder(lm, slots: int) -> SlotDecoder:
  """The engine's device side; followers of a multi-host server build theirs the same way."""
  return SlotDecoder(lm.cfg, lm.mesh, slots, lm.max_len)


def byte_fallback_ids(tokenizer) -> frozenset:
  """Ids of sentencepiece's byte pieces (<0x41>), whose text settles only when their run ends."""
  pieces = ((i, tokenizer.id_to_token(i)) for i in range(tokenizer.vocab_size))
  return frozenset(i for i, p in pieces if p and _BYTE_PIECE.fullmatch(p))


class Engine:
  def __init__(self, lm, slots: int = 8, max_queue: int = 256, prefills_per_step: int = 1, metrics=None,
               guard=None):
    self.lm, self.metrics, self.guard = lm, metrics, guard
    self.decoder = make_slot_decoder(lm, slots)
    if jax.process_count() > 1:  # the other processes make the same device calls (scripts/serving/lockstep.py)
      from scripts.serving.lockstep import LockstepDecoder
      self.decoder = LockstepDecoder(self.decoder)
    self.slots, self.context = self.decoder.slots, self.decoder.context
    self.params = self.decoder.prepare_params(lm.params)
    self.cache = self.decoder.empty_cache()
    self.rows: list[_Row | None] = [None] * self.slots
    self._byte_ids = byte_fallback_ids(lm.tokenizer)
    self.max_queue, self.prefills_per_step = max_queue, prefills_per_step
    self._pending: collections.deque[tuple[GenRequest, Handle]] = collections.deque()
    self._lock = threading.Lock()
    self._wake = threading.Event()
    self._stopping = False
    self._dead = False
    self._thread = threading.Thread(target=self._run, name="strata-engine", daemon=True)

  # ------------------------------------------------------------ HTTP side

  def start(self) -> "Engine":
    self._thread.start()
    return self

  def stop(self) -> None:
    self._stopping = True
    self._wake.set()
    self._thread.join(timeout=30)

  @property
  def queue_depth(self) -> int:
    return len(self._pending)

  @property
  def occupied(self) -> int:
    return sum(r is not None for r in self.rows)

  @property
  def alive(self) -> bool:
    return not self._dead and self._thread.is_alive()

  def submit(self, requests: list[GenRequest], handle: Handle) -> None:
    """Queues all prompts of one HTTP request, or none: a full queue is a 429 at once."""
    if not self.alive:
      raise ApiError(503, "the engine has stopped; restart the server", kind="server_error")
    if any(len(r.sampling) > self.slots for r in requests):
      raise ApiError(400, f"n={len(requests[0].sampling)} needs more decode slots than the server's "
                     f"{self.slots}", "n")
    with self._lock:
      if len(self._pending) + len(requests) > self.max_queue:
        raise ApiError(429, f"the server is at capacity ({self.max_queue} requests waiting); retry later",
                       kind="server_overloaded")
      self._pending.extend((r, handle) for r in requests)
    self._gauges()
    self._wake.set()

  # ------------------------------------------------------------ engine thread

  def _run(self) -> None:
    while not self._stopping:
      try:
        self._drop_cancelled()
        busy = self.occupied > 0
        self._admit(self.prefills_per_step if busy else self.slots)
        if self.occupied == 0:
          self._wake.wait(timeout=0.05)
          self._wake.clear()
          self.decoder.heartbeat()
          continue
        self._decode()
      except Exception:  # noqa: BLE001 - the step itself failed: its requests fail, the server goes on
        logger.exception("decode step failed; failing the requests in it")
        try:
          for row in [r for r in self.rows if r is not None]:
            self._fail(row.handle, "the decode step failed")
          self._reset_cache()
        except Exception:  # noqa: BLE001 - cannot recover: fail everything and stop taking requests
          logger.exception("the engine cannot recover; it stops")
          self._dead = True
          self._fail_all("the engine stopped", waiting_too=True)
          return
      self._gauges()
    self.decoder.stop_followers()

  def _gauges(self) -> None:
    if self.metrics:
      self.metrics.queue_depth.set(self.queue_depth)
      self.metrics.batch_occupancy.set(self.occupied / self.slots)

  def _drop_cancelled(self) -> None:
    for slot, row in enumerate(self.rows):
      if row is not None and row.handle.cancelled:
        self.rows[slot] = None

  def _admit(self, limit: int) -> None:
    for _ in range(limit):
      with self._lock:
        while self._pending and self._pending[0][1].cancelled:
          self._pending.popleft()
        free = [slot for slot, row in enumerate(self.rows) if row is None]
        if not self._pending or len(free) < len(self._pending[0][0].sampling):
          return  # first come, first served: a wide request is not overtaken
        request, handle = self._pending.popleft()
      try:
        self._prefill(request, handle, free)
      except Exception as e:  # noqa: BLE001 - this request fails alone
        logger.exception("request %s failed in prefill", handle.id)
        self._fail(handle, f"{type(e).__name__}: {e}")
        if any(x.is_deleted() for x in jax.tree.leaves(self.cache)):  # the failed prefill consumed the donated cache
          self._fail_all("the engine restarted its cache")
          self._reset_cache()

  def _prefill(self, request: GenRequest, handle: Handle, free: list[int]) -> None:
    for choice, sampling in enumerate(request.sampling):
      slot = free[choice]
      score = request.score_prompt and choice == 0
      self.cache, first = self.decoder.prefill(self.params, self.cache, request.prompt, slot, sampling, score)
      if score:
        handle.emit(dict(type="prompt", prompt_index=request.prompt_index, prompt=request.prompt,
                         logprobs=first.prompt_logprobs, top_ids=first.prompt_top_ids,
                         top_logprobs=first.prompt_top_logprobs))
      eos = None if request.ignore_eos else self.lm.tokenizer.eos_id
      stream = TextStream(self.lm.decode, request.stop, eos, self.guard, self._byte_ids)
      row = _Row(handle, request, choice, stream, position=len(request.prompt))
      if request.max_tokens == 0:  # echo-only scoring: nothing to generate
        handle.emit(dict(type="done", choice=request.first_choice + choice, finish="length", text=""))
        continue
      self.rows[slot] = row
      self._accept(slot, first.token, first.logprob, first.top_ids, first.top_logprobs)

  def _decode(self) -> None:
    token_S = np.zeros(self.slots, np.int32)
    position_S = np.zeros(self.slots, np.int32)
    index_S = np.zeros(self.slots, np.int32)
    sampling_S = dict(temperature=np.zeros(self.slots, np.float32), top_k=np.zeros(self.slots, np.int32),
                      top_p=np.ones(self.slots, np.float32), seed=np.zeros(self.slots, np.uint32),
                      choice=np.zeros(self.slots, np.int32))
    active = [(slot, row) for slot, row in enumerate(self.rows) if row is not None]
    for slot, row in active:
      token_S[slot], position_S[slot], index_S[slot] = row.stream.ids[-1], row.position, row.emitted
      s = row.sampling
      for name in sampling_S:
        sampling_S[name][slot] = getattr(s, name)
    self.cache, next_S, logprob_S, top_ids_SxK, top_lp_SxK = self.decoder.step(
        self.params, self.cache, token_S, position_S, sampling_S, index_S)
    for slot, row in active:
      if self.rows[slot] is not row:  # failed or cancelled meanwhile
        continue
      row.position += 1
      try:
        self._accept(slot, int(next_S[slot]), float(logprob_S[slot]), top_ids_SxK[slot], top_lp_SxK[slot])
      except Exception as e:  # noqa: BLE001
        logger.exception("request %s failed", row.handle.id)
        self._fail(row.handle, f"{type(e).__name__}: {e}")

  def _accept(self, slot: int, token: int, logprob: float, top_ids, top_logprobs) -> None:
    """A slot's new token: to its client as releasable text; the slot is freed when the choice ends."""
    row = self.rows[slot]
    now = time.perf_counter()
    if self.metrics:
      if row.emitted == 0 and row.handle.first_token_at is None:
        self.metrics.time_to_first_token.observe(now - row.handle.created)
      elif row.emitted > 0:
        self.metrics.inter_token_latency.observe(now - row.last_token_at)
      self.metrics.generation_tokens.inc()
    if row.handle.first_token_at is None:
      row.handle.first_token_at = now
    row.last_token_at = now
    row.emitted += 1
    text, finish = row.stream.push(token)
    if finish is None and row.emitted >= row.request.max_tokens:
      finish, text = "length", text + row.stream.close()
    elif finish is None and row.position >= self.context:  # no position left to feed this token at
      finish, text = "length", text + row.stream.close()
    choice = row.request.first_choice + row.choice
    row.handle.emit(dict(type="token", choice=choice, token=token, logprob=logprob, top_ids=top_ids,
                         top_logprobs=top_logprobs, text=text))
    if finish is not None:
      row.handle.emit(dict(type="done", choice=choice, finish=finish, text=""))
      self.rows[slot] = None

  def _fail(self, handle: Handle, message: str) -> None:
    for slot, row in enumerate(self.rows):
      if row is not None and row.handle is handle:
        self.rows[slot] = None
    handle.cancelled = True  # its other prompts leave the queue
    handle.emit(dict(type="error", message=message))
    if self.metrics:
      self.metrics.engine_errors.inc()

  def _fail_all(self, message: str, waiting_too: bool = False) -> None:
    """Fails every running request (and, with waiting_too, every queued one)."""
    for slot, row in enumerate(self.rows):
      if row is not None:
        self.rows[slot] = None
        row.handle.emit(dict(type="error", message=message))
    if waiting_too:
      with self._lock:
        pending, self._pending = list(self._pending), collections.deque()
      for _, handle in pending:
        handle.emit(dict(type="error", message=message))

  def _reset_cache(self) -> None:
    """A fresh KV cache (the old one is dropped first: two need not fit); on several processes, all reset."""
    self.cache = None
    self.cache = self.decoder.reset_cache()
