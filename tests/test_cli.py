"""The scripts as a user meets them: generate.py's prompt checks, output and timings; quiet logs; file modes."""

import json
import logging
import os
import stat
import subprocess
import sys

import jax
import pytest
from conftest import REPO

LONG_LINE = "def f(x): return x; " * 400  # ~4,000 tokens for the test tokenizer: beyond the 2048 context


def _generate(hf_dir: str, *args, stdin: str | None = None):
  return subprocess.run([sys.executable, os.path.join(REPO, "scripts", "generate.py"), f"--hf_dir={hf_dir}", *args],
                        cwd=REPO, input=stdin, capture_output=True, text=True, timeout=180,
                        env=dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1"))


def _last_line(text: str) -> str:
  return text.strip().splitlines()[-1]


@pytest.mark.parametrize("args,message", [
    ((), "error: no --prompt: give --prompt=TEXT to continue, or --chat"),
    (("--prompt=",), "error: --prompt is empty"),
    (("--chat", "--prompt="), "error: --prompt is empty"),
])
def test_generate_refuses_missing_and_empty_prompts(tiny_hf_base, args, message):
  out = _generate(tiny_hf_base, *args)
  assert out.returncode == 1
  assert _last_line(out.stderr).startswith(message)
  assert out.stdout == ""


def test_generate_refuses_prompt_beyond_context(tiny_hf_base):
  out = _generate(tiny_hf_base, f"--prompt={LONG_LINE}", "--verbose")
  assert out.returncode == 1
  error = _last_line(out.stderr)
  assert error.startswith("error: the prompt is ") and "context is 2048 tokens" in error, error
  assert f"max_position_embeddings in {tiny_hf_base}/config.json" in error
  prompt_tokens = int(error.split("the prompt is ")[1].split()[0])
  assert prompt_tokens > 2048
  assert out.stdout == ""


def _tokens_of_text(hf_dir: str, n: int) -> str:
  """Text of about n tokens (one line) for the tiny base's tokenizer."""
  from data import tokenizer
  tok = tokenizer.load_dir(hf_dir)
  return tok.decode(tok.encode_batch([LONG_LINE])[0][:n])


def test_generate_chat_prints_replies_only_and_times_compilation_apart(tiny_hf_base):
  """Two turns in the same length bucket, then one too long for the context: stdout holds the two
  replies and nothing else; the first turn compiled, the second reused its programs."""
  turns = [_tokens_of_text(tiny_hf_base, 1500), "ok", LONG_LINE]
  out = _generate(tiny_hf_base, "--chat", "--stats", "--max_new_tokens=4", stdin="".join(t + "\n" for t in turns))
  assert out.returncode == 1, out.stderr[-2000:]
  assert _last_line(out.stderr).startswith("error: the conversation is ")
  stats = [json.loads(line) for line in out.stderr.splitlines() if line.startswith("{")]
  assert len(stats) == 2
  assert out.stdout == "".join(turn["completion"] + "\n" for turn in stats)
  first, second = stats
  assert 1024 < len(first["prompt_ids"]) < len(second["prompt_ids"]) < 2048 - 4  # one bucket: no recompile
  assert 0 < len(first["completion_ids"]) <= 4
  # Compilation is reported apart: the warm prefill and decode times exclude it.
  assert first["compile_s"] > 0.1 and first["compile_s"] > first["prefill_s"] + first["decode_s"]
  assert second["compile_s"] == 0
  assert first["decode_tokens_per_sec"] == pytest.approx(len(first["completion_ids"]) / first["decode_s"], rel=0.05)
  assert not [line for line in out.stderr.splitlines() if line[:1] == "I" and line[1:5].isdigit()]  # no INFO logs


def test_generate_caps_max_new_tokens_to_the_context(tiny_hf_base):
  """A prompt that leaves fewer positions than --max_new_tokens: the count is capped, with a note."""
  out = _generate(tiny_hf_base, f"--prompt={_tokens_of_text(tiny_hf_base, 2040)}", "--max_new_tokens=64")
  assert out.returncode == 0, out.stderr[-2000:]
  stats = json.loads(_last_line(out.stdout))
  room = 2048 - len(stats["prompt_ids"])
  assert 0 < room < 64
  assert f"note: --max_new_tokens=64 capped to {room}" in out.stderr
  assert len(stats["completion_ids"]) <= room
  assert stats["compile_s"] > stats["prefill_s"] + stats["decode_s"]


def test_quiet_logs_drop_library_info_only():
  import orbax.checkpoint

  import quiet_logs
  quiet = quiet_logs.LibraryInfoFilter()
  record = lambda path, level: logging.LogRecord("x", level, path, 1, "m", None, None)  # noqa: E731
  assert not quiet.filter(record(orbax.checkpoint.__file__, logging.INFO))
  assert not quiet.filter(record(jax.__file__, logging.DEBUG))
  assert quiet.filter(record(orbax.checkpoint.__file__, logging.WARNING))
  assert quiet.filter(record(os.path.join(REPO, "data", "prepare.py"), logging.INFO))


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_hf_export_files_respect_the_umask(tiny_hf_base, tmp_path, umask):
  from model import hf_weights
  from ml_collections import ConfigDict
  from parallel import mesh as mesh_lib
  cfg, params = hf_weights.load(tiny_hf_base, mesh_lib.make_mesh(ConfigDict(dict(data=1, fsdp=1, tensor=1)),
                                                                 jax.devices()[:1]))
  old = os.umask(umask)
  try:
    hf_weights.save(params, cfg, str(tmp_path / "out"))
  finally:
    os.umask(old)
  for name in ("model.safetensors", "config.json"):
    assert stat.S_IMODE(os.stat(tmp_path / "out" / name).st_mode) == 0o666 & ~umask, name
  old = os.umask(umask)
  try:
    assert hf_weights.umask_mode(directory=True) == 0o777 & ~umask
  finally:
    os.umask(old)
