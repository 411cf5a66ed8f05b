"""Serve a model over an OpenAI-compatible HTTP API, with continuous batching and streaming.

  python scripts/serve.py --workdir=runs/sft                       # http://127.0.0.1:8000/v1
  python scripts/serve.py --hf_dir=exports/sft --port=9000 --api_key=$KEY --slots=16
  python scripts/serve.py --workdir=runs/sft --guardrails=configs/guardrails/default.py --request_log=serve_logs
  python scripts/serve.py --workdir=runs/sft --rag_index=indexes/docs --rag_top_k=4
  python scripts/serve.py --hf_dir=/models/big --mesh=tensor=8     # tensor-parallel
  python scripts/serve.py --hf_dir=/models/big --mesh=data=2,tensor=8 --coordinator_address=HOST0:1234 \
      --num_processes=2 --process_id=$RANK     # multi-host: process 0 serves HTTP, the others follow

Any OpenAI client works against it unchanged:

  client = openai.OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="KEY or anything")
  client.chat.completions.create(model="sft", messages=[...], stream=True)

Endpoints, engine, guardrails, feedback and retrieval: scripts/serving/ and the
README's "Serving" section. Binds to 127.0.0.1 unless --host says otherwise.
"""

import logging
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

import quiet_logs  # noqa: E402
from errors import UserError  # noqa: E402

_WORKDIR = flags.DEFINE_string("workdir", None, "A train.py --workdir (newest checkpoint).")
_HF_DIR = flags.DEFINE_string("hf_dir", None, "A Hugging Face model directory with its tokenizer.")
_HOST = flags.DEFINE_string("host", "127.0.0.1", "Interface to bind; 0.0.0.0 exposes the server to the network.")
_PORT = flags.DEFINE_integer("port", 8000, "TCP port.")
_MESH = flags.DEFINE_list("mesh", [], "Mesh sizes as AXIS=N (data, fsdp, tensor), e.g. tensor=8.")
_NAME = flags.DEFINE_string("served_model_name", None, "The model name clients send; default: the directory's.")
_API_KEY = flags.DEFINE_string("api_key", os.environ.get("STRATA_API_KEY"),
                               "Require `Authorization: Bearer KEY` (default: $STRATA_API_KEY; none = open).")
_SLOTS = flags.DEFINE_integer("slots", 8, "Decode slots: requests generated together.", lower_bound=1)
_MAX_QUEUE = flags.DEFINE_integer("max_queue", 256, "Requests waiting beyond the slots; past it: HTTP 429.",
                                  lower_bound=0)
_PREFILLS = flags.DEFINE_integer("prefills_per_step", 1, "New requests prefilled between two decode steps.",
                                 lower_bound=1)
_MAX_N = flags.DEFINE_integer("max_n", 8, "Most choices (`n`) one request may ask for.", lower_bound=1)
_GUARDRAILS = flags.DEFINE_string("guardrails", None, "A guardrails policy config (configs/guardrails/*.py).")
_LOG_DIR = flags.DEFINE_string("request_log", None, "Where responses and feedback are logged (JSONL); "
                               "enables POST /v1/feedback.")
_LOG_MAX_MB = flags.DEFINE_integer("log_max_mb", 64, "Rotate the request log past this size.", lower_bound=1)
_RAG_INDEX = flags.DEFINE_string("rag_index", None, "A scripts/build_index.py index: retrieve into chat prompts.")
_RAG_TOP_K = flags.DEFINE_integer("rag_top_k", 4, "Chunks retrieved per request.", lower_bound=1)
_COORDINATOR = flags.DEFINE_string("coordinator_address", "", "Multi-host: HOST:PORT of process 0.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", 0, "Multi-host: number of processes.")
_PROCESS_ID = flags.DEFINE_integer("process_id", -1, "Multi-host: this process's index (0 serves HTTP).")
_FLAGS = (_WORKDIR, _HF_DIR, _MESH, _NAME, _API_KEY, _SLOTS, _MAX_QUEUE, _PREFILLS, _MAX_N, _GUARDRAILS, _LOG_DIR,
          _LOG_MAX_MB, _RAG_INDEX, _RAG_TOP_K)


def main(argv):
  del argv
  quiet_logs.apply()
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
  import uvicorn
  from scripts.serving import app as app_lib
  import jax
  from parallel import distributed
  from scripts.serving.load import build_server, follow_leader
  distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  try:
    if jax.process_index() != 0:  # a follower: no HTTP, the leader's batches
      follow_leader(**{flag.name: flag.value for flag in _FLAGS})
      return
    server = build_server(**{flag.name: flag.value for flag in _FLAGS})
  except UserError as e:
    sys.exit(f"error: {e}")
  print(f"serving {server.model_name!r} on http://{_HOST.value}:{_PORT.value}/v1 "
        f"({server.engine.slots} slots, context {server.engine.context})", flush=True)
  uvicorn.run(app_lib.create_app(server), host=_HOST.value, port=_PORT.value, log_level="warning")
  server.close()


if __name__ == "__main__":
  app.run(main)
