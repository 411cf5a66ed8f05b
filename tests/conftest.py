"""Shared fixtures. Every test process sees 8 CPU devices, set before JAX loads."""

import os

os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import json  # noqa: E402
import sys  # noqa: E402

import jax  # noqa: E402
import pytest  # noqa: E402
from absl import flags  # noqa: E402

# Library code (grain's workers) reads absl flags; pytest never parses them.
flags.FLAGS.mark_as_parsed()

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from configs import quickstart  # noqa: E402
from data import corpus, prepare  # noqa: E402


def stdlib_data_config(num_files: int = 80, vocab_size: int = 512):
  """A quick data config: the first standard-library modules, a small tokenizer."""
  from configs.data import stdlib
  c = stdlib.get_config()
  c.sources.stdlib.inputs = ",".join(corpus.stdlib_files()[:num_files])
  c.tokenizer.vocab_size = vocab_size
  c.split.val_fraction = c.split.test_fraction = 0.1
  c.num_workers = 1
  return c


@pytest.fixture(scope="session")
def dataset_dir(tmp_path_factory):
  """A small real dataset: 80 standard-library modules through the full pipeline."""
  out = str(tmp_path_factory.mktemp("data") / "stdlib80")
  prepare.prepare(stdlib_data_config(), out)
  return out


def small_config(dataset_dir: str, **overrides):
  """The quickstart model on short sequences, logging every step, no extras."""
  c = quickstart.get_config()
  c.data.dir = dataset_dir
  c.data.prepare_config = ""
  c.train.steps = 5
  c.train.batch_size = 8
  c.train.seq_len = 64
  c.optimizer.warmup_steps = 2
  c.log.every_steps = 1
  c.log.tensorboard = False
  c.eval.at_start = False
  c.eval.every_steps = 1000
  c.eval.final_split = ""
  c.eval.num_samples = 0
  c.checkpoint.every_steps = 1000
  c.checkpoint.async_save = False
  for key, value in overrides.items():
    node = c
    *parents, leaf = key.split(".")
    for p in parents:
      node = node[p]
    node[leaf] = value
  return c


def read_metrics(workdir: str, split: str = "train") -> dict[int, dict]:
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f]
  return {r["step"]: r for r in rows if r["split"] == split}


def train_losses(workdir: str) -> dict[int, float]:
  return {s: r["loss"] for s, r in read_metrics(workdir).items()}


@pytest.fixture
def devices():
  return jax.devices()
