"""Builds the server scripts/serve.py runs (model, engine, guardrails, logs, retrieval), and runs one on a
thread of this process (benchmarks and tests)."""

import contextlib
import os
import socket
import threading
import time

from errors import UserError
from parallel import mesh as mesh_lib


def load_model(workdir: str | None, hf_dir: str | None, mesh=()):
  """The served model; on several processes the default mesh spans all their devices (data axis)."""
  import jax
  from evals.lm import LanguageModel
  sizes = mesh_lib.sizes_from_flag(list(mesh or []))
  if sizes is None and jax.process_count() > 1:
    sizes = {"data": -1, "fsdp": 1, "tensor": 1}
  return LanguageModel.load(workdir=workdir, hf_dir=hf_dir, batch_size=1, mesh_config=sizes)


def follow_leader(workdir: str | None = None, hf_dir: str | None = None, mesh=(), slots: int = 8, **_) -> None:
  """A process other than 0 of a multi-host server: the same model and device calls as process 0's engine,
  in the same order, until process 0 stops (scripts/serving/lockstep.py)."""
  from scripts.serving import lockstep
  from scripts.serving.engine import make_slot_decoder
  lm = load_model(workdir, hf_dir, mesh)
  decoder = make_slot_decoder(lm, slots)
  params = decoder.prepare_params(lm.params)
  lockstep.follow(decoder, params, decoder.empty_cache())


def build_server(workdir: str | None = None, hf_dir: str | None = None, mesh=(), served_model_name=None,
                 api_key=None, slots: int = 8, max_queue: int = 256, prefills_per_step: int = 1, max_n: int = 8,
                 guardrails=None, request_log=None, log_max_mb: int = 64, rag_index=None, rag_top_k: int = 4):
  """A Server (model, engine, options) from scripts/serve.py's flags; tests call it directly."""
  from scripts.serving import app as app_lib
  from scripts.serving import guardrails as guardrails_lib
  from scripts.serving import metrics
  from scripts.serving import request_log as log_lib
  from scripts.serving.engine import Engine
  lm = load_model(workdir, hf_dir, mesh)
  if lm.text_to_text:
    raise UserError("serving encoder-decoders (T5) is not supported yet; serve a decoder")
  guard = guardrails_lib.load(guardrails) if guardrails else None
  m = metrics.Metrics()
  if guard is not None:
    guard.on_intervention = lambda stage, kind: m.guardrail_interventions.labels(stage, kind).inc()
  rag = None
  if rag_index:
    from scripts.serving import rag as rag_lib
    rag = rag_lib.Retriever.open(rag_index, top_k=rag_top_k)
  engine = Engine(lm, slots=slots, max_queue=max_queue,
                  prefills_per_step=prefills_per_step, metrics=m, guard=guard).start()
  log_dir = request_log
  max_bytes = log_max_mb << 20
  source = (workdir or hf_dir).rstrip("/")
  return app_lib.Server(
      lm=lm, engine=engine, model_name=served_model_name or os.path.basename(source), metrics=m,
      api_key=api_key, max_n=max_n, guard=guard, rag=rag,
      request_log=log_lib.JsonlLog(log_dir, "requests", max_bytes) if log_dir else None,
      feedback_log=log_lib.JsonlLog(log_dir, "feedback", max_bytes) if log_dir else None)


@contextlib.contextmanager
def running_server(**options):
  """A server on a free localhost port, uvicorn on a thread of this process: yields (base URL, Server) and
  stops the engine and uvicorn on exit. `options` are build_server's."""
  import uvicorn
  from scripts.serving import app as app_lib
  server = build_server(**options)
  sock = socket.socket()
  sock.bind(("127.0.0.1", 0))
  port = sock.getsockname()[1]
  sock.close()
  http = uvicorn.Server(uvicorn.Config(app_lib.create_app(server), host="127.0.0.1", port=port,
                                       log_level="warning"))
  thread = threading.Thread(target=http.run, daemon=True)
  thread.start()
  deadline = time.time() + 60
  while not http.started:
    if time.time() > deadline or not thread.is_alive():
      server.close()
      raise RuntimeError("the server did not start")
    time.sleep(0.02)
  try:
    yield f"http://127.0.0.1:{port}", server
  finally:
    http.should_exit = True
    thread.join(timeout=10)
    server.close()
