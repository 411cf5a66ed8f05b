"""Asynchronous checkpoints (parallel/checkpoint.py, async_save=True), in-process.

The training loop saves and goes straight on to the next step, which donates
the state's buffers; the checkpoint must still hold the state as it was at
save() time. A save the process never finished (killed before commit) must
stay invisible: Orbax writes to a temporary directory and commits by rename.
"""

import os
import subprocess
import sys
import time

import grain
import jax
import jax.numpy as jnp
import numpy as np

from conftest import REPO
from parallel.checkpoint import Checkpointer


def _state(seed: int, n: int = 1 << 16) -> dict:
  rng = np.random.default_rng(seed)
  return {"params": {"w": jnp.asarray(rng.standard_normal((n // 256, 256)), jnp.float32),
                     "b": jnp.asarray(rng.standard_normal(256), jnp.float32)},
          "step": jnp.int32(seed)}


def _iterator(skip: int = 0):
  it = iter(grain.MapDataset.range(100).to_iter_dataset())
  for _ in range(skip):
    next(it)
  return it


def _abstract(state):
  return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=a.sharding), state)


def test_async_save_keeps_the_saved_state_although_the_caller_donates_it(tmp_path):
  directory = str(tmp_path / "ckpt")
  ckpt = Checkpointer(directory, keep=3, async_save=True)
  state = _state(1)
  saved = jax.tree.map(np.array, state)  # host copies: what the checkpoint must hold
  it = _iterator(skip=7)

  # A train step: overwrites every value, in the buffers of the state it is given (donated).
  donating = jax.jit(lambda s: jax.tree.map(lambda x: x * 3 + 1, s), donate_argnums=0)

  start = time.perf_counter()
  ckpt.save(5, state, it)
  returned_after = time.perf_counter() - start
  committed_at_return = ckpt.latest_step() == 5 and os.path.isdir(os.path.join(directory, "5"))
  given = state
  state = donating(state)  # the caller goes on at once: the arrays it saved are donated and overwritten
  assert given["params"]["w"].is_deleted()  # really donated: the saved array's buffer went to the step
  state = donating(state)
  next(it)  # and the data iterator moves on
  jax.block_until_ready(state)
  ckpt.wait()
  assert ckpt.latest_step() == 5 and ckpt.all_steps() == [5]
  restored_it = _iterator()
  restored = ckpt.restore(5, _abstract(_state(0)), restored_it)
  jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, restored), saved)
  assert next(restored_it) == 7  # the iterator's position at save() time, not after
  # The caller's arrays really were overwritten (the checkpoint did not just read the current values).
  np.testing.assert_allclose(np.asarray(state["params"]["b"]), saved["params"]["b"] * 9 + 4, rtol=1e-5, atol=1e-5)
  ckpt.close()
  # Informational: whether save() returned before the write was committed (it should, being async).
  print(f"save() returned after {returned_after:.3f}s; committed at return: {committed_at_return}")


# A process that saves step 1 and waits, then starts saving step 2 (large) and dies at once, unclean.
_KILLED_MID_SAVE = r"""
import os, sys
sys.path.insert(0, {repo!r}); sys.path.insert(0, os.path.join({repo!r}, "tests"))
import jax, numpy as np
from parallel.checkpoint import Checkpointer
import test_async_checkpoint as t
ckpt = Checkpointer({directory!r}, keep=3, async_save=True)
ckpt.save(1, t._state(1), t._iterator(skip=1))
ckpt.wait()
ckpt.save(2, t._state(2, n=1 << 23), t._iterator(skip=2))
print("committed at return:", os.path.isdir(os.path.join({directory!r}, "2")), flush=True)
os._exit(0)  # no wait, no close: the write in flight is cut off
"""


def test_a_save_cut_off_before_commit_is_invisible(tmp_path):
  directory = str(tmp_path / "ckpt")
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1", JAX_PLATFORMS="cpu")
  proc = subprocess.run([sys.executable, "-c", _KILLED_MID_SAVE.format(repo=REPO, directory=directory)],
                        env=env, capture_output=True, text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr[-3000:]
  cut_before_commit = "committed at return: False" in proc.stdout
  leftovers = sorted(os.listdir(directory))
  ckpt = Checkpointer(directory, keep=3, async_save=True)
  try:
    if cut_before_commit and not os.path.isdir(os.path.join(directory, "2")):
      assert ckpt.latest_step() == 1 and ckpt.all_steps() == [1], leftovers
    # Whatever is listed restores completely (a half-written step would fail here).
    for step in ckpt.all_steps():
      it = _iterator()
      n = 1 << 23 if step == 2 else 1 << 16
      restored = ckpt.restore(step, _abstract(_state(0, n=n)), it)
      jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, restored),
                   jax.tree.map(np.asarray, _state(step, n=n)))
      assert next(it) == step
    # A resumed run saves that step again over the leftovers, and it restores.
    ckpt.save(2, _state(3), _iterator(skip=3))
    ckpt.wait()
    assert ckpt.all_steps() == [1, 2]
    it = _iterator()
    restored = ckpt.restore(2, _abstract(_state(0)), it)
    jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, restored),
                 jax.tree.map(np.asarray, _state(3)))
    assert next(it) == 3
  finally:
    ckpt.close()
  print(f"leftovers after the cut-off save: {leftovers}")
