"""Training from an HF directory, and exporting a run to one."""

import os
import stat

import jax
import numpy as np
import pytest
import torch
import transformers

from conftest import small_config, train_losses
from model import hf_weights
from model.config import ModelConfig
from model import families
from trainer import export, loop
from trainer import optimizer as optimizer_lib
from trainer import state as state_lib

PROMPTS = np.array([[1, 40, 41, 42, 43, 44, 45, 46], [1, 300, 301, 7, 8, 9, 10, 11]], np.int32)


def _logits(cfg, params):
  pos = np.broadcast_to(np.arange(PROMPTS.shape[1], dtype=np.int32), PROMPTS.shape)
  return np.asarray(jax.jit(families.build(cfg).apply)({"params": params}, PROMPTS, pos, np.ones_like(PROMPTS)))


@pytest.fixture(scope="module")
def exported_run(dataset_dir, tmp_path_factory):
  """One short run on the default 8-device mesh, exported to an HF directory; shared by the tests
  below. (run dir, export dir, the step export reported)."""
  root = tmp_path_factory.mktemp("hf_run")
  cfg = small_config(dataset_dir, **{"train.steps": 12, "model.vocab_size": 512, "optimizer.learning_rate": 3e-3})
  loop.run(cfg, str(root / "run"))
  out = str(root / "export")
  return str(root / "run"), out, export.export(str(root / "run"), out)


def test_run_starts_from_hf_weights(dataset_dir, exported_run, tmp_path):
  """A run initialised from an HF export of the seed-0 weights sees the same first loss as a
  run initialised from seed 0 itself (the shared run: same mesh, data and seed; its first loss is
  taken before any update, so its learning rate and length do not enter)."""
  cfg = small_config(dataset_dir, **{"train.steps": 1, "model.vocab_size": 512})
  model_cfg = ModelConfig.from_config(cfg.model)
  model = families.build(model_cfg)
  tx, _ = optimizer_lib.make_optimizer(cfg.optimizer, cfg.train.steps)
  abstract, shardings = state_lib.state_shardings(model, tx, _single_mesh(), cfg.train.seq_len)
  params = state_lib.create(model, tx, shardings, cfg.train.seq_len, jax.random.key(cfg.train.seed)).params
  hf_weights.save(params, model_cfg, str(tmp_path / "hf"), bos_id=1, eos_id=2)

  from_hf = small_config(dataset_dir, **{"train.steps": 1, "init.hf_dir": str(tmp_path / "hf")})
  loop.run(from_hf, str(tmp_path / "from_hf"))
  a, b = train_losses(exported_run[0]), train_losses(str(tmp_path / "from_hf"))
  assert sorted(b) == [1]
  assert a[1] == pytest.approx(b[1], rel=1e-6)


def _single_mesh():
  from ml_collections import ConfigDict
  from parallel import mesh as mesh_lib
  return mesh_lib.make_mesh(ConfigDict(dict(data=1, fsdp=1, tensor=1)), jax.devices()[:1])


def test_export_run_to_hf(exported_run):
  run, out, exported_step = exported_run
  assert exported_step == 12
  assert sorted(os.listdir(out)) == ["config.json", "model.safetensors", "tokenizer.model", "tokenizer_config.json"]
  umask = os.umask(0)
  os.umask(umask)
  assert stat.S_IMODE(os.stat(out).st_mode) == 0o777 & ~umask  # mkdtemp's 0700 does not leak out
  for name in os.listdir(out):  # nor safetensors' 0600
    assert stat.S_IMODE(os.stat(os.path.join(out, name)).st_mode) == 0o666 & ~umask, name
  restored = export.restore(run)
  model_cfg, params = restored.cfg, restored.params
  ours = _logits(model_cfg, params)
  reloaded_cfg, reloaded = hf_weights.load(out, _single_mesh())
  np.testing.assert_allclose(_logits(reloaded_cfg, reloaded), ours, atol=1e-5, rtol=0)

  model, info = transformers.AutoModelForCausalLM.from_pretrained(out, output_loading_info=True)
  assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
  with torch.no_grad():
    theirs = model(torch.tensor(PROMPTS, dtype=torch.long)).logits.numpy()
  np.testing.assert_allclose(theirs, ours, atol=1e-5, rtol=0)
  tok = transformers.AutoTokenizer.from_pretrained(out)
  assert tok.decode(tok("def f(x):\n    return x")["input_ids"], skip_special_tokens=True).strip().startswith("def")


def test_export_errors(tmp_path):
  from errors import UserError
  with pytest.raises(UserError, match="no config.json"):
    export.export(str(tmp_path), str(tmp_path / "out"))


def test_greedy_generate_matches_transformers(exported_run):
  """scripts/generate.py on an exported run equals transformers generate(do_sample=False)."""
  import json
  import subprocess
  import sys
  from conftest import REPO
  out = exported_run[1]
  result = subprocess.run([sys.executable, os.path.join(REPO, "scripts", "generate.py"), f"--hf_dir={out}",
                           "--prompt=def __init__(self", "--max_new_tokens=24", "--temperature=0"],
                          capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1"))
  assert result.returncode == 0, result.stderr[-2000:]
  ours = json.loads(result.stdout.strip().splitlines()[-1])
  assert len(ours["completion_ids"]) > 0
  assert ours["compile_s"] > ours["prefill_s"] + ours["decode_s"]  # warm timings: compilation reported apart
  model = transformers.AutoModelForCausalLM.from_pretrained(out)
  with torch.no_grad():
    theirs = model.generate(torch.tensor([ours["prompt_ids"]]), do_sample=False, max_new_tokens=24,
                            eos_token_id=2, pad_token_id=2)[0, len(ours["prompt_ids"]):].tolist()
  assert ours["completion_ids"] == theirs
