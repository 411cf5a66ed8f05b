"""A Strata server running in this process (uvicorn on a thread, a free localhost port), for tests."""

import contextlib
import socket
import threading
import time

import uvicorn

from scripts.serving import app as app_lib
from scripts.serving.load import build_server


@contextlib.contextmanager
def running_server(**options):
  """Yields (base URL of the API, the Server); stops the engine and uvicorn on exit."""
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
      raise RuntimeError("the test server did not start")
    time.sleep(0.02)
  try:
    yield f"http://127.0.0.1:{port}", server
  finally:
    http.should_exit = True
    thread.join(timeout=10)
    server.engine.stop()
