"""Shared fixtures. Every test process sees 8 CPU devices, set before JAX loads.

The suite compiles hundreds of tiny programs, so compiling is most of its time: XLA's backend
optimization level 0 compiles them about a fifth faster overall (the same computations, less
optimized machine code), and subprocesses inherit it through XLA_FLAGS.
"""

import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
                           " --xla_backend_optimization_level=0")
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


# Modules that each take over a minute (serial seconds on 2 cores: slurm 175, prepare 100, sweep 90,
# t5_training 55, multiprocess 45): started first, so that with xdist's workers (one module per worker)
# no worker is left running one of them alone at the end.
SLOW_MODULES_FIRST = ("test_slurm.py", "test_sweep.py", "test_prepare.py", "test_multiprocess.py",
                      "test_t5_training.py", "test_serve_multihost.py")


def pytest_collection_modifyitems(items):
  rank = {name: i for i, name in enumerate(SLOW_MODULES_FIRST)}
  items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: order within a module kept


@pytest.fixture(scope="session", autouse=True)
def compilation_cache(tmp_path_factory):
  """One persistent compilation cache for the session. Each training run builds new jitted functions,
  so the in-memory cache never hits across runs; runs of the same shapes (one device, straight,
  stopped, resumed) then compile once and read the program back after. Speed only: same programs."""
  jax.config.update("jax_compilation_cache_dir", str(tmp_path_factory.mktemp("jax_cache")))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
  yield


@pytest.fixture(scope="session")
def dataset_dir(tmp_path_factory):
  """A small real dataset: 80 standard-library modules through the full pipeline."""
  out = str(tmp_path_factory.mktemp("data") / "stdlib80")
  prepare.prepare(stdlib_data_config(), out)
  return out


@pytest.fixture(scope="session")
def encoder_dataset_dir(tmp_path_factory):
  """20 standard-library modules, tokenized with an encoder's [CLS]/[SEP]/[PAD]/[MASK] (ids 1-4)."""
  cfg = stdlib_data_config(num_files=20)
  cfg.tokenizer.encoder_specials = True
  out = str(tmp_path_factory.mktemp("enc") / "stdlib20")
  prepare.prepare(cfg, out)
  return out


@pytest.fixture(scope="session")
def t5_dataset_dir(tmp_path_factory):
  """20 standard-library modules, tokenized with 100 T5 sentinels at the end of a 512-piece vocabulary."""
  cfg = stdlib_data_config(num_files=20)
  cfg.tokenizer.sentinels = 100
  out = str(tmp_path_factory.mktemp("t5") / "stdlib20")
  prepare.prepare(cfg, out)
  return out


def apply_overrides(c, overrides: dict):
  """Sets dotted keys ({"train.steps": 5}) on a config, as --config.train.steps=5 would."""
  for key, value in overrides.items():
    node = c
    *parents, leaf = key.split(".")
    for p in parents:
      node = node[p]
    node[leaf] = value
  return c


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
  return apply_overrides(c, overrides)


def read_metrics(workdir: str, split: str = "train") -> dict[int, dict]:
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f]
  return {r["step"]: r for r in rows if r["split"] == split}


def train_losses(workdir: str) -> dict[int, float]:
  return {s: r["loss"] for s, r in read_metrics(workdir).items()}


@pytest.fixture
def devices():
  return jax.devices()


def tiny_llama_config(vocab_size: int = 512):
  """A 2-layer Llama (GQA, untied head) small enough to fine-tune in seconds on CPU."""
  c = quickstart.get_config()
  c.model.update(dict(vocab_size=vocab_size, d_model=64, num_layers=2, num_heads=4, num_kv_heads=2,
                      head_dim=16, mlp_dim=128, tie_embeddings=False))
  return c


@pytest.fixture(scope="session")
def tiny_hf_base(dataset_dir, tmp_path_factory):
  """An HF model directory: a random tiny Llama plus the test dataset's sentencepiece tokenizer."""
  import shutil
  import flax.linen as nn
  from ml_collections import ConfigDict
  from model import hf_weights
  from model.config import ModelConfig
  from model import families
  from parallel import mesh as mesh_lib
  from parallel import sharding
  out = str(tmp_path_factory.mktemp("hf") / "tiny-llama")
  cfg = ModelConfig.from_config(tiny_llama_config().model)
  model = families.build(cfg)
  mesh = mesh_lib.make_mesh(ConfigDict(dict(data=1, fsdp=1, tensor=1)), jax.devices()[:1])
  _, shardings = sharding.abstract_variables(model, mesh)
  x = jax.numpy.zeros((1, 8), jax.numpy.int32)
  params = jax.jit(lambda r: model.init(r, x, x, x + 1)["params"], out_shardings=shardings)(jax.random.key(7))
  is_box = lambda x: isinstance(x, nn.meta.AxisMetadata)  # noqa: E731
  params = jax.tree.map(lambda x: x.value if is_box(x) else x, params, is_leaf=is_box)
  hf_weights.save(params, cfg, out, bos_id=1, eos_id=2)
  shutil.copyfile(os.path.join(dataset_dir, "tokenizer.model"), os.path.join(out, "tokenizer.model"))
  with open(os.path.join(out, "tokenizer_config.json"), "w") as f:
    json.dump({"tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>"}, f)
  return out


@pytest.fixture(scope="session")
def chat_dataset(tiny_hf_base, tmp_path_factory):
  """Questions about 80 standard-library modules, prepared for SFT with the tiny base's tokenizer."""
  from data import sft, stdlib_chat
  root = tmp_path_factory.mktemp("chat")
  jsonl = root / "chat.jsonl"
  with open(jsonl, "w") as f:
    for row in stdlib_chat.examples(corpus.stdlib_files()[:80]):
      f.write(json.dumps(row) + "\n")
  out = str(root / "prepared")
  sft.prepare_sft([str(jsonl)], tiny_hf_base, out, sft.SftOptions(max_len=128, val_fraction=0.1))
  return out


def sft_config(base_dir: str, data_dir: str, **overrides):
  """configs/sft.py on the tiny base and chat data, short and quiet."""
  from configs import sft as sft_config_module
  c = sft_config_module.get_config()
  c.init.hf_dir, c.data.dir = base_dir, data_dir
  c.train.update(dict(steps=6, batch_size=8, seq_len=128))
  c.optimizer.update(dict(warmup_steps=2, learning_rate=3e-3))
  c.log.update(dict(every_steps=1, tensorboard=False))
  c.eval.update(dict(every_steps=1000, steps=2, at_start=False, patience=0))
  c.checkpoint.update(dict(every_steps=1000, async_save=False, keep_best=False))
  return apply_overrides(c, overrides)
