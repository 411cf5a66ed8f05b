"""HF checkpoint import/export: logits match transformers (live) and committed golden logits."""

import os

import jax
import numpy as np
import pytest

from hf_models import CASES, PROMPTS
from model import hf_weights
from model import families
from parallel import mesh as mesh_lib
from ml_collections import ConfigDict

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "hf")


def _mesh(data=1, fsdp=1, tensor=1):
  n = data * fsdp * tensor
  return mesh_lib.make_mesh(ConfigDict(dict(data=data, fsdp=fsdp, tensor=tensor)), jax.devices()[:n])


def _our_logits(cfg, params):
  positions = np.broadcast_to(np.arange(PROMPTS.shape[1], dtype=np.int32), PROMPTS.shape)
  return np.asarray(families.build(cfg).apply({"params": params}, PROMPTS, positions, np.ones_like(PROMPTS)))


@pytest.mark.parametrize("case", sorted(CASES))
def test_golden_logits(case):
  """Committed fixtures (scripts/make_hf_fixtures.py): no torch needed."""
  hf_dir = os.path.join(FIXTURES, case)
  cfg, params = hf_weights.load(hf_dir, _mesh())
  golden = np.load(os.path.join(hf_dir, "golden_logits.npy"))
  np.testing.assert_allclose(_our_logits(cfg, params), golden, atol=1e-4, rtol=0)


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("scan", [True, False])
def test_live_parity_and_roundtrip(case, scan, tmp_path):
  pytest.importorskip("transformers")
  import hf_models
  want = hf_models.make(case, str(tmp_path / "hf"))
  mesh = _mesh(fsdp=4, tensor=2) if scan else _mesh()
  cfg, params = hf_weights.load(str(tmp_path / "hf"), mesh, scan_layers=scan)
  np.testing.assert_allclose(_our_logits(cfg, params), want, atol=1e-4, rtol=0)
  hf_weights.save(params, cfg, str(tmp_path / "out"), bos_id=1, eos_id=2)
  again = hf_models.hf_logits(str(tmp_path / "out"))
  np.testing.assert_allclose(again, want, atol=1e-5, rtol=0)


def _copy_fixture(case, tmp_path):
  import shutil
  dst = tmp_path / case
  shutil.copytree(os.path.join(FIXTURES, case), dst)
  return dst


def _edit_config(hf_dir, **changes):
  import json
  path = hf_dir / "config.json"
  cfg = json.loads(path.read_text())
  cfg.update(changes)
  path.write_text(json.dumps(cfg))


def test_bad_hf_directories(tmp_path):
  from errors import UserError
  d = _copy_fixture("llama_tied", tmp_path)
  _edit_config(d, architectures=["MistralForCausalLM"], model_type="mistral")
  with pytest.raises(UserError, match="architecture \\['MistralForCausalLM'\\] is not supported"):
    hf_weights.load(str(d), _mesh())
  _edit_config(d, architectures=["LlamaForCausalLM"], model_type="llama", sliding_window=4096)
  with pytest.raises(UserError, match=r"sliding_window=4096 is not supported"):
    hf_weights.load(str(d), _mesh())
  _edit_config(d, sliding_window=None, intermediate_size=128)
  cfg_json = (d / "config.json").read_text().replace('"sliding_window": null, ', "")
  (d / "config.json").write_text(cfg_json.replace(', "sliding_window": null', ""))
  with pytest.raises(UserError, match=r"tensor 'model.layers.0.mlp.gate_proj.weight' has shape \(96, 64\) but "
                                      r"config.json implies \(128, 64\)"):
    hf_weights.load(str(d), _mesh())
  g = _copy_fixture("gpt2", tmp_path)
  _edit_config(g, activation_function="relu")
  with pytest.raises(UserError, match='activation_function="relu" is not supported'):
    hf_weights.load(str(g), _mesh())


def test_untied_checkpoint_into_tied_config_is_refused(tmp_path):
  from errors import UserError
  d = _copy_fixture("llama_gqa_untied_llama3rope", tmp_path)
  _edit_config(d, tie_word_embeddings=True)
  with pytest.raises(UserError, match=r"tensors \['lm_head.weight'\] are not used"):
    hf_weights.load(str(d), _mesh())


def _language_model(hf_dir, mesh):
  from data.tokenizer import Tokenizer
  from evals.lm import LanguageModel
  cfg, params = hf_weights.load(hf_dir, mesh)
  ids_only = Tokenizer(path=hf_dir, kind="hf", impl=None, vocab_size=cfg.vocab_size, bos_id=1, eos_id=2)
  return LanguageModel(cfg, params, ids_only, mesh, batch_size=4)


@pytest.mark.parametrize("case", sorted(CASES))
def test_windowed_perplexity_matches_transformers(case):
  """Acceptance: held-out perplexity with sliding windows equals transformers' within 1e-4 relative."""
  import json
  import math
  import hf_models
  hf_dir = os.path.join(FIXTURES, case)
  mesh = _mesh(fsdp=2, tensor=2) if case == "llama_tied" else _mesh()
  lm = _language_model(hf_dir, mesh)
  with open(os.path.join(hf_dir, "golden_rolling.json")) as f:
    golden = json.load(f)
  try:
    import transformers  # noqa: F401
    live = True
  except ImportError:
    live = False
  n = len(hf_models.ROLLING_DOC)
  for g in golden:
    (logprob, tokens), = lm.rolling_loglikelihood([hf_models.ROLLING_DOC], g["window"], g["stride"])
    assert tokens == n
    want = hf_models.hf_rolling_logprob(hf_dir, hf_models.ROLLING_DOC, g["window"], g["stride"]) if live else g["logprob"]
    assert logprob == pytest.approx(want, rel=1e-4)
    assert math.exp(-logprob / n) == pytest.approx(math.exp(-want / n), rel=1e-4)
  # Windows change the score (less context), so the comparison above would catch a wrong scheme.
  assert abs(golden[0]["logprob"] - golden[1]["logprob"]) > 1.0
