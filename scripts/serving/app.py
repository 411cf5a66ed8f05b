"""The OpenAI-compatible HTTP API (FastAPI) over the engine thread.

/v1/completions, /v1/chat/completions (streamed as server-sent events in
OpenAI's chunk format, ending `data: [DONE]`), /v1/models, /v1/feedback,
/health, /metrics (Prometheus), and vLLM's /tokenizer_info, /tokenize and
/detokenize (lm-evaluation-harness's remote tokenizer). Every client error is
a 4xx with an OpenAI error body naming the field; a request that fails inside
the engine is a 500 with its id; the server keeps serving either way.
"""

import asyncio
import dataclasses
import json
import logging
import secrets
import time
import uuid

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse

from data import chat as chat_lib
from errors import UserError
from model.slots import RowSampling
from scripts.serving import protocol
from scripts.serving.engine import Engine, GenRequest, Handle
from scripts.serving.protocol import ApiError

logger = logging.getLogger("strata.serve")
DISCONNECT_POLL_S = 0.25


@dataclasses.dataclass
class Server:
  """What the endpoints need: the loaded model, its engine and the deployment's options."""
  lm: object  # evals.lm.LanguageModel
  engine: Engine
  model_name: str
  metrics: object
  api_key: str | None = None
  max_n: int = 8
  guard: object = None       # scripts/serving/guardrails.Guardrails
  request_log: object = None  # scripts/serving/request_log.JsonlLog
  feedback_log: object = None
  rag: object = None         # scripts/serving/rag.Retriever

  def close(self) -> None:
    self.engine.stop()
    if self.rag is not None:
      self.rag.close()

  def __post_init__(self):
    self.known_ids = set()
    if self.request_log is not None:  # feedback may name responses from before a restart
      self.known_ids = {r.get("id") for r in self.request_log.records()}


def _id(prefix: str) -> str:
  return f"{prefix}-{uuid.uuid4().hex}"


def create_app(server: Server) -> FastAPI:
  app = FastAPI(title="Strata", docs_url=None, redoc_url=None)
  lm, engine, metrics = server.lm, server.engine, server.metrics

  @app.exception_handler(ApiError)
  async def _api_error(request: Request, exc: ApiError):
    return _error_response(request, exc)

  @app.exception_handler(RequestValidationError)
  async def _invalid(request: Request, exc: RequestValidationError):
    return _error_response(request, protocol.validation_error(exc, exc.errors()))

  @app.exception_handler(UserError)
  async def _user_error(request: Request, exc: UserError):
    return _error_response(request, ApiError(400, str(exc)))

  def _error_response(request: Request, exc: ApiError) -> JSONResponse:
    metrics.requests.labels(request.url.path, str(exc.status)).inc()
    return JSONResponse(exc.body(), status_code=exc.status)

  @app.middleware("http")
  async def _auth_and_count(request: Request, call_next):
    open_paths = {"/health", "/metrics"}
    if server.api_key and request.url.path not in open_paths:
      header = request.headers.get("authorization", "")
      if not secrets.compare_digest(header, f"Bearer {server.api_key}"):
        metrics.requests.labels(request.url.path, "401").inc()
        return JSONResponse(ApiError(401, "missing or wrong API key: send `Authorization: Bearer KEY`",
                                     kind="authentication_error", code="invalid_api_key").body(), status_code=401)
    try:
      response = await call_next(request)
    except Exception as e:  # noqa: BLE001 - one request's bug is its own 500
      logger.exception("unhandled error in %s", request.url.path)
      response = JSONResponse(ApiError(500, f"internal error: {type(e).__name__}", kind="server_error").body(),
                              status_code=500)
    if response.status_code < 400:
      metrics.requests.labels(request.url.path, str(response.status_code)).inc()
    return response

  # ------------------------------------------------------------ plain endpoints

  @app.get("/health")
  async def health():
    if not engine.alive:
      return JSONResponse({"status": "engine stopped"}, status_code=503)
    return {"status": "ok", "slots": engine.slots, "occupied": engine.occupied, "queue_depth": engine.queue_depth}

  @app.get("/metrics")
  async def prometheus():
    return Response(metrics.exposition(), media_type="text/plain; version=0.0.4; charset=utf-8")

  @app.get("/v1/models")
  async def models():
    return {"object": "list", "data": [_model_card(server)]}

  @app.get("/v1/models/{name}")
  async def model(name: str):
    _check_model(server, name)
    return _model_card(server)

  @app.get("/tokenizer_info")
  async def tokenizer_info():
    tok = lm.tokenizer
    piece = lambda i: None if i is None else tok.id_to_token(i)  # noqa: E731
    return {"tokenizer_class": "strata", "eos_token": piece(tok.eos_id), "bos_token": piece(tok.bos_id),
            "pad_token": None, "add_bos_token": bool(tok.add_bos), "model_max_length": engine.context,
            "chat_template": lm.chat.source if lm.chat else None}

  @app.post("/tokenize")
  async def tokenize(body: protocol.TokenizeRequest):
    ids = lm.encode(body.prompt, add_bos=body.add_special_tokens)
    return {"tokens": ids, "count": len(ids), "max_model_len": engine.context}

  @app.post("/detokenize")
  async def detokenize(body: protocol.DetokenizeRequest):
    if any(not 0 <= t < lm.tokenizer.vocab_size for t in body.tokens):
      raise ApiError(400, f"tokens: ids must be in [0, {lm.tokenizer.vocab_size})", "tokens")
    return {"prompt": lm.decode(body.tokens)}

  # ------------------------------------------------------------ generation

  @app.post("/v1/completions")
  async def completions(body: protocol.CompletionRequest, request: Request):
    _check_model(server, body.model)
    rid = _id("cmpl")
    prompts = _completion_prompts(lm, body.prompt)
    texts = [p if isinstance(p, str) else lm.decode(p) for p in prompts]
    ids = [lm.encode(p, add_bos=True) if isinstance(p, str) else list(p) for p in prompts]
    refused = [False] * len(ids)
    if server.guard is not None:
      ids, texts, refused = _guard_inputs(server, ids, texts, rid, [isinstance(p, str) for p in prompts])
    max_tokens = _max_tokens(engine, ids, body.max_tokens, "max_tokens", default=16)
    score = bool(body.echo and body.logprobs is not None)
    gens = _gen_requests(server, body, ids, max_tokens, score)
    return await _respond(server, request, rid, "text_completion", body, gens, refused, texts,
                          echo=body.echo, logprobs=body.logprobs, chat=False)

  @app.post("/v1/chat/completions")
  async def chat_completions(body: protocol.ChatRequest, request: Request):
    _check_model(server, body.model)
    if lm.chat is None:
      raise ApiError(400, "this model has no chat template; use /v1/completions", "messages")
    rid = _id("chatcmpl")
    messages = [m.model_dump(exclude_none=True) for m in body.messages]
    sources = None
    if server.rag is not None:  # embedding and search block: off the event loop
      messages, sources = await asyncio.to_thread(server.rag.augment, messages)
    text = lm.chat.render(messages, add_generation_prompt=True)
    ids = [lm.tokenizer.encode(text)]
    refused = [False]
    if server.guard is not None:
      ids, _, refused = _guard_inputs(server, ids, [text], rid, [True], chat=True)
    limit = body.max_completion_tokens or body.max_tokens
    max_tokens = _max_tokens(engine, ids, limit, "max_completion_tokens" if body.max_completion_tokens else
                             "max_tokens", default=None)
    # The built-in template ends a turn with text, not one token (as scripts/generate.py --chat stops).
    body.stop = body.stops + [chat_lib.END_OF_TURN]
    top = (body.top_logprobs or 0) if body.logprobs else None
    gens = _gen_requests(server, body, ids, max_tokens, False)
    return await _respond(server, request, rid, "chat.completion", body, gens, refused, [text], echo=False,
                          logprobs=top, chat=True, messages=messages, sources=sources)

  # ------------------------------------------------------------ feedback

  @app.post("/v1/feedback")
  async def feedback(request: Request):
    if server.feedback_log is None:
      raise ApiError(404, "this server keeps no request log; start it with --log_dir", kind="not_found_error")
    try:
      raw = await request.json()
    except json.JSONDecodeError as e:
      raise ApiError(400, f"malformed JSON in the request body: {e}") from None
    if not isinstance(raw, dict):
      raise ApiError(400, "the request body must be a JSON object")
    model = protocol.PairFeedback if "chosen" in raw or "rejected" in raw else protocol.RatingFeedback
    try:
      item = model.model_validate(raw)
    except protocol.pydantic.ValidationError as e:
      raise protocol.validation_error(e, e.errors()) from None
    named = [item.id] if model is protocol.RatingFeedback else [item.chosen, item.rejected]
    for field, response_id in zip(["id"] if len(named) == 1 else ["chosen", "rejected"], named):
      if response_id not in server.known_ids:
        raise ApiError(404, f"{field}: no logged response has id {response_id!r}", field, kind="not_found_error")
    record = {"time": time.time(), **item.model_dump(exclude_none=True)}
    await asyncio.to_thread(server.feedback_log.append, record)
    return {"status": "recorded"}

  return app


# ---------------------------------------------------------------- request handling

def _model_card(server: Server) -> dict:
  return {"id": server.model_name, "object": "model", "created": 0, "owned_by": "strata",
          "max_model_len": server.engine.context}


def _check_model(server: Server, name: str) -> None:
  if name != server.model_name:
    raise ApiError(404, f"model {name!r} does not exist; this server serves {server.model_name!r}", "model",
                   code="model_not_found")


def _completion_prompts(lm, prompt) -> list:
  """A list of prompts, each a string or a list of token ids."""
  if isinstance(prompt, str):
    prompts = [prompt]
  elif prompt and isinstance(prompt[0], int):
    prompts = [prompt]
  else:
    prompts = list(prompt)
  if not prompts:
    raise ApiError(400, "prompt: an empty list; send a string, a list of strings or token ids", "prompt")
  vocab = min(lm.cfg.vocab_size, lm.tokenizer.vocab_size)
  for p in prompts:
    if not isinstance(p, str) and any(not 0 <= t < vocab for t in p):
      raise ApiError(400, f"prompt: token ids must be in [0, {vocab})", "prompt")
  return prompts


def _guard_inputs(server: Server, ids, texts, rid, from_text, chat: bool = False):
  """The input policy: denied prompts are refused, PII is redacted before the model sees it.
  Returns (token ids, texts, refused) per prompt."""
  guard, lm = server.guard, server.lm
  out, shown, refused = [], [], []
  for prompt_ids, text, is_text in zip(ids, texts, from_text):
    if guard.max_prompt_tokens and len(prompt_ids) > guard.max_prompt_tokens:
      guard.record("input", "length", rid, f"{len(prompt_ids)} tokens")
      raise ApiError(400, f"{'messages' if chat else 'prompt'}: {len(prompt_ids)} tokens, over the guardrail's "
                     f"limit of {guard.max_prompt_tokens}", "messages" if chat else "prompt")
    redacted, refuse = guard.check_input(text, rid)
    if redacted != text:
      prompt_ids = lm.tokenizer.encode(redacted) if chat else lm.encode(redacted, add_bos=is_text)
    out.append(prompt_ids)
    shown.append(redacted)
    refused.append(refuse)
  return out, shown, refused


def _max_tokens(engine: Engine, ids, requested: int | None, field: str, default: int | None) -> int:
  longest = max(len(p) for p in ids)
  if min(len(p) for p in ids) == 0:
    raise ApiError(400, "prompt: empty; send at least one token", "prompt")
  if longest >= engine.context:
    raise ApiError(400, f"prompt: {longest} tokens, but the model's context is {engine.context} tokens; "
                   f"shorten it to at most {engine.context - 1}", "prompt")
  room = engine.context - longest
  if requested is None:
    return room if default is None else min(default, room)
  if requested > room:
    raise ApiError(400, f"{field}={requested}: the prompt's {longest} tokens leave {room} of the model's "
                   f"{engine.context} positions", field)
  return requested


def _gen_requests(server: Server, body, ids, max_tokens: int, score: bool) -> list[GenRequest]:
  if body.n > server.max_n:
    raise ApiError(400, f"n={body.n}: this server returns at most {server.max_n} choices per prompt", "n")
  seed = body.seed % 2**32 if body.seed is not None else secrets.randbits(32)  # the sampler's keys are 32-bit
  top_k = max(body.top_k, 0)
  return [GenRequest(prompt=p, max_tokens=max_tokens, stop=body.stops, score_prompt=score, ignore_eos=body.ignore_eos,
                     first_choice=i * body.n, prompt_index=i,
                     sampling=[RowSampling(body.temperature, top_k, body.top_p, seed, c) for c in range(body.n)])
          for i, p in enumerate(ids)]


@dataclasses.dataclass
class _Choice:
  text: str = ""
  tokens: list = dataclasses.field(default_factory=list)
  logprobs: list = dataclasses.field(default_factory=list)
  tops: list = dataclasses.field(default_factory=list)
  finish: str | None = None


async def _respond(server: Server, request: Request, rid: str, kind: str, body, gens, refused, texts, echo: bool,
                   logprobs: int | None, chat: bool, messages=None, sources=None):
  created = int(time.time())
  n_choices = sum(len(g.sampling) for g in gens)
  choices = [_Choice() for _ in range(n_choices)]
  prompt_scores = {}
  live = [g for g, r in zip(gens, refused) if not r]
  for g, r in zip(gens, refused):  # refused prompts get the refusal, and never reach the model
    if r:
      for c in range(len(g.sampling)):
        choices[g.first_choice + c] = _Choice(text=server.guard.refusal, finish="content_filter")
  server.metrics.prompt_tokens.inc(sum(len(g.prompt) for g in live))
  handle = Handle(rid)
  if live:
    server.engine.submit(live, handle)
  pending = sum(len(g.sampling) for g in live)
  usage = lambda: {"prompt_tokens": sum(len(g.prompt) for g in gens),  # noqa: E731
                   "completion_tokens": sum(len(c.tokens) for c in choices),
                   "total_tokens": sum(len(g.prompt) for g in gens) + sum(len(c.tokens) for c in choices)}

  async def events():
    """The engine's events for this request until every choice is done; cancels on disconnect."""
    nonlocal pending
    checked = time.monotonic()
    while pending:
      try:
        event = await asyncio.wait_for(handle.events.get(), DISCONNECT_POLL_S)
      except asyncio.TimeoutError:
        event = None
      if time.monotonic() - checked >= DISCONNECT_POLL_S:  # also while tokens keep arriving
        checked = time.monotonic()
        if await request.is_disconnected():
          handle.cancelled = True
          return
        if not server.engine.alive:
          raise ApiError(503, f"request {rid}: the engine has stopped", kind="server_error")
      if event is None:
        continue
      if event["type"] == "error":
        raise ApiError(500, f"request {rid} failed in the engine: {event['message']}", kind="server_error")
      if event["type"] == "prompt":
        prompt_scores[event["prompt_index"]] = event
      elif event["type"] == "token":
        c = choices[event["choice"]]
        c.text += event["text"]
        c.tokens.append(event["token"])
        c.logprobs.append(event["logprob"])
        c.tops.append((event["top_ids"], event["top_logprobs"]))
      elif event["type"] == "done":
        choices[event["choice"]].finish = event["finish"]
        pending -= 1
      yield event

  def log_response():
    if server.request_log is None:
      return
    record = {"id": rid, "created": created, "endpoint": "chat" if chat else "completions",
              "model": server.model_name, "prompt": messages if chat else (texts[0] if len(texts) == 1 else texts),
              "choices": [c.text for c in choices], "finish_reasons": [c.finish for c in choices], "usage": usage()}
    if sources:
      record["sources"] = sources
    server.request_log.append(record)
    server.known_ids.add(rid)

  fmt = _Formatter(server.lm, rid, created, server.model_name, chat, logprobs, texts if echo else None, gens,
                   prompt_scores, body.return_token_ids, sources)
  if body.stream:
    include_usage = bool(body.stream_options and body.stream_options.include_usage)

    async def sse():
      try:
        if chat:
          for i in range(n_choices):
            yield _sse(fmt.chunk(i, {"role": "assistant", "content": ""}, None))
        if echo:
          for i in range(n_choices):
            yield _sse(fmt.chunk(i, texts[fmt.prompt_of(i).prompt_index], None))
        for i, c in enumerate(choices):  # refused choices
          if c.finish:
            yield _sse(fmt.chunk(i, fmt.delta_text(c.text), c.finish))
        async for event in events():
          if event["type"] == "token" and (event["text"] or logprobs is not None or body.return_token_ids):
            yield _sse(fmt.chunk(event["choice"], fmt.delta_text(event["text"]), None, event))
          elif event["type"] == "done":
            yield _sse(fmt.chunk(event["choice"], fmt.delta_text(""), event["finish"]))
        if include_usage:
          yield _sse(fmt.base("chat.completion.chunk" if chat else "text_completion") | {"choices": [],
                                                                                           "usage": usage()})
        if pending == 0:  # logged before [DONE]: feedback sent right after the stream finds the id
          await asyncio.to_thread(log_response)
        yield "data: [DONE]\n\n"
      except ApiError as e:
        yield _sse(e.body())
        yield "data: [DONE]\n\n"
      finally:
        handle.cancelled = handle.cancelled or pending > 0
    return StreamingResponse(sse(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Request-Id": rid})

  try:
    async for _ in events():
      pass
  finally:
    if pending:
      handle.cancelled = True
  if pending:  # the client went away
    return Response(status_code=499)
  await asyncio.to_thread(log_response)
  return fmt.response(kind, choices, usage())


def _sse(payload: dict) -> str:
  return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"


class _Formatter:
  """OpenAI's response and chunk bodies for completions and chat completions."""

  def __init__(self, lm, rid, created, model, chat, logprobs, echo_texts, gens, prompt_scores, token_ids, sources):
    self.lm, self.rid, self.created, self.model, self.chat = lm, rid, created, model, chat
    self.logprobs, self.echo_texts, self.gens, self.prompt_scores = logprobs, echo_texts, gens, prompt_scores
    self.token_ids, self.sources = token_ids, sources
    self.n = len(gens[0].sampling) if gens else 1

  def base(self, kind: str) -> dict:
    return {"id": self.rid, "object": kind, "created": self.created, "model": self.model}

  def delta_text(self, text: str) -> dict | str:
    return {"content": text} if self.chat else text

  def _piece(self, token: int) -> str:
    return self.lm.decode([int(token)])

  def _top(self, ids, lps) -> dict:
    return {self._piece(i): float(lp) for i, lp in zip(ids[:self.logprobs], lps[:self.logprobs])}

  def _completion_logprobs(self, tokens, lps, tops, prompt_event=None) -> dict:
    out = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
    offset = 0
    if prompt_event is not None:
      prompt = prompt_event["prompt"]
      out["tokens"].append(self._piece(prompt[0]))
      out["token_logprobs"].append(None)
      out["top_logprobs"].append(None)
      for t, lp, ids, top_lps in zip(prompt[1:], prompt_event["logprobs"], prompt_event["top_ids"],
                                     prompt_event["top_logprobs"]):
        out["tokens"].append(self._piece(t))
        out["token_logprobs"].append(float(lp))
        out["top_logprobs"].append(self._top(ids, top_lps))
    for t, lp, (ids, top_lps) in zip(tokens, lps, tops):
      out["tokens"].append(self._piece(t))
      out["token_logprobs"].append(float(lp))
      out["top_logprobs"].append(self._top(ids, top_lps))
    for piece in out["tokens"]:
      out["text_offset"].append(offset)
      offset += len(piece)
    return out

  def _chat_logprobs(self, tokens, lps, tops) -> dict:
    entry = lambda t, lp: {"token": self._piece(t), "logprob": float(lp),  # noqa: E731
                           "bytes": list(self._piece(t).encode("utf-8"))}
    return {"content": [entry(t, lp) | {"top_logprobs": [entry(i, v) for i, v in zip(ids[:self.logprobs],
                                                                                     top_lps[:self.logprobs])]}
                        for t, lp, (ids, top_lps) in zip(tokens, lps, tops)]}

  def prompt_of(self, choice: int):
    return self.gens[min(choice // self.n, len(self.gens) - 1)] if self.gens else None

  def response(self, kind: str, choices, usage) -> dict:
    out = []
    for i, c in enumerate(choices):
      gen = self.prompt_of(i)
      if self.chat:
        item = {"index": i, "message": {"role": "assistant", "content": c.text}, "finish_reason": c.finish,
                "logprobs": self._chat_logprobs(c.tokens, c.logprobs, c.tops) if self.logprobs is not None
                else None}
      else:
        prompt_event = self.prompt_scores.get(gen.prompt_index) if gen is not None else None
        text = (self.echo_texts[gen.prompt_index] if self.echo_texts and gen is not None else "") + c.text
        item = {"index": i, "text": text, "finish_reason": c.finish,
                "logprobs": self._completion_logprobs(c.tokens, c.logprobs, c.tops, prompt_event)
                if self.logprobs is not None else None}
      if self.token_ids:
        item["token_ids"] = list(map(int, c.tokens))
        if gen is not None:
          item["prompt_token_ids"] = list(map(int, gen.prompt))
      out.append(item)
    body = self.base(kind) | {"choices": out, "usage": usage}
    if self.sources is not None:
      body["sources"] = self.sources
    return body

  def chunk(self, choice: int, delta, finish, event=None) -> dict:
    kind = "chat.completion.chunk" if self.chat else "text_completion"
    item = {"index": choice, "finish_reason": finish}
    if self.chat:
      item["delta"] = delta if finish is None or delta.get("content") else {}
      item["logprobs"] = (self._chat_logprobs([event["token"]], [event["logprob"]],
                                              [(event["top_ids"], event["top_logprobs"])])
                          if event is not None and self.logprobs is not None else None)
    else:
      item["text"] = delta
      item["logprobs"] = (self._completion_logprobs([event["token"]], [event["logprob"]],
                                                    [(event["top_ids"], event["top_logprobs"])])
                          if event is not None and self.logprobs is not None else None)
    if event is not None and self.token_ids:
      item["token_ids"] = [int(event["token"])]
    body = self.base(kind) | {"choices": [item]}
    if self.sources is not None and finish is not None:
      body["sources"] = self.sources
    return body
