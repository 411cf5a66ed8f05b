"""LoRA: sharded vs single-device equivalence, adapter-only checkpoints, merged and PEFT export."""

import dataclasses
import json
import os
import re
import shutil

import jax
import numpy as np
import pytest

from conftest import sft_config, train_losses
from errors import UserError
from model import base_reference, families, hf_weights, lora
from parallel import restore as restore_lib
from parallel import sharding
from trainer import export, loop

LORA = {"lora.rank": 4, "lora.alpha": 8.0, "lora.dropout": 0.1, "lora.targets": "q,k,v,o,gate,up,down",
        "train.steps": 4, "optimizer.learning_rate": 1e-2}
PROMPTS = np.array([[1, 40, 41, 42, 43, 44, 45, 46], [1, 300, 301, 7, 8, 9, 10, 11]], np.int32)


@pytest.fixture(scope="module")
def single_device_run(tiny_hf_base, chat_dataset, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("lora") / "single")
  cfg = sft_config(tiny_hf_base, chat_dataset, **LORA, **{"mesh.data": 1, "mesh.fsdp": 1, "mesh.tensor": 1})
  loop.run(cfg, workdir, devices=jax.devices()[:1])
  return workdir


def test_sharded_lora_matches_single_device(tiny_hf_base, chat_dataset, single_device_run, tmp_path):
  cfg = sft_config(tiny_hf_base, chat_dataset, **LORA, **{"mesh.data": 1, "mesh.fsdp": 4, "mesh.tensor": 2})
  loop.run(cfg, str(tmp_path / "sharded"))
  single, sharded = train_losses(single_device_run), train_losses(str(tmp_path / "sharded"))
  assert sorted(single) == [1, 2, 3, 4]
  for step in single:
    assert sharded[step] == pytest.approx(single[step], rel=1e-4), (step, single, sharded)
  assert single[4] < single[1]  # the adapters learn


def test_checkpoint_holds_only_adapters_and_names_its_base(single_device_run, tiny_hf_base):
  from parallel.checkpoint import Checkpointer
  ckpt = Checkpointer(os.path.join(single_device_run, "checkpoints"), keep=10, async_save=False)
  saved = ckpt._manager.item_metadata(4)["state"].tree
  ckpt.close()
  leaves = jax.tree_util.tree_flatten_with_path(saved["params"])[0]
  assert leaves and all(jax.tree_util.keystr(p).split("'")[-2].endswith(("_lora_a", "_lora_b")) for p, _ in leaves)
  with open(os.path.join(single_device_run, base_reference.FILE)) as f:
    assert json.load(f)["hf_dir"] == os.path.abspath(tiny_hf_base)


def _logits(model, variables):
  pos = np.broadcast_to(np.arange(PROMPTS.shape[1], dtype=np.int32), PROMPTS.shape)
  return np.asarray(model.apply(variables, PROMPTS, pos, np.ones_like(PROMPTS)))


def test_merged_export_equals_unmerged_model(single_device_run, tmp_path):
  r = export.restore(single_device_run)
  base_model = families.build(r.cfg)
  unmerged = families.build(dataclasses.replace(r.cfg, lora=r.lora))
  mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]).reshape(1, 1, 1), ("data", "fsdp", "tensor"))
  with sharding.activate(mesh):
    _, base = hf_weights.load(r.config.init.hf_dir, mesh)
  base_bf16 = jax.tree.map(lambda x: x.astype(r.config.lora.base_dtype), base)
  want = _logits(unmerged, {"params": base_bf16, lora.COLLECTION: r.adapters})
  assert np.abs(want - _logits(base_model, {"params": base})).max() > 1e-3  # the adapters matter
  out = str(tmp_path / "merged")
  export.export(single_device_run, out)
  cfg, merged = hf_weights.load(out, mesh)
  np.testing.assert_allclose(_logits(families.build(cfg), {"params": merged}), want, atol=1e-5, rtol=0)


def test_run_restores_straight_onto_a_sharded_mesh(single_device_run):
  """Evaluation and generation read a run onto their own mesh: each array lands on its shards
  (no whole copy on one device first) with the values a one-device restore gives."""
  from evals.lm import LanguageModel
  from parallel import mesh as mesh_lib
  from ml_collections import ConfigDict
  one = export.restore(single_device_run)
  mesh = mesh_lib.make_mesh(ConfigDict({"data": 2, "fsdp": 2, "tensor": 2}))
  many = restore_lib.restore(single_device_run, mesh)
  assert many.step == one.step == 4
  for got, want in zip(jax.tree.leaves(many.adapters), jax.tree.leaves(one.adapters)):  # read as saved
    assert got.sharding.mesh.size == 8
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
  for got, want in zip(jax.tree.leaves(many.params), jax.tree.leaves(one.params)):  # merged on each mesh
    assert got.sharding.mesh.size == 8
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-6, atol=1e-8)
  sharded = [x for x in jax.tree.leaves(many.params) if not x.sharding.is_fully_replicated]
  assert sharded and all(s.data.nbytes < x.nbytes for x in sharded for s in x.addressable_shards[:1])
  lm = LanguageModel.load(workdir=single_device_run, mesh_config={"data": 1, "fsdp": 4, "tensor": 2})
  assert {x.sharding.mesh.size for x in jax.tree.leaves(lm.params)} == {8}


def test_peft_export_matches_merged(single_device_run, tmp_path):
  """PEFT's B A, scaled, added to the base weights in torch layout, gives the merged export."""
  from safetensors.numpy import load_file
  r = export.restore(single_device_run)
  export.export(single_device_run, str(tmp_path / "peft"), as_peft=True)
  export.export(single_device_run, str(tmp_path / "merged"))
  with open(tmp_path / "peft" / "adapter_config.json") as f:
    adapter_config = json.load(f)
  assert adapter_config["r"] == 4 and adapter_config["peft_type"] == "LORA"
  tensors = load_file(str(tmp_path / "peft" / "adapter_model.safetensors"))
  base = load_file(os.path.join(r.config.init.hf_dir, "model.safetensors"))
  merged = load_file(str(tmp_path / "merged" / "model.safetensors"))
  scale = adapter_config["lora_alpha"] / adapter_config["r"]
  for name in ("model.layers.1.self_attn.q_proj.weight", "model.layers.0.self_attn.o_proj.weight",
               "model.layers.1.mlp.down_proj.weight"):
    module = "base_model.model." + name[:-len(".weight")]
    delta = tensors[module + ".lora_B.weight"] @ tensors[module + ".lora_A.weight"]
    base_w = base[name].astype(r.config.lora.base_dtype).astype(np.float32)  # trained on the bf16 base
    np.testing.assert_allclose(base_w + scale * delta, merged[name], atol=1e-6)


def test_changed_base_is_refused(single_device_run, tmp_path):
  current = base_reference.fingerprint(restore_lib.load_run_config(single_device_run).init.hf_dir)
  current["config_sha256"] = "0" * 64
  with pytest.raises(UserError, match="were trained on the base model"):
    base_reference.check(single_device_run, current)


def _finetuned_copy(base_dir: str, out: str) -> None:
  """The base with one tensor's values moved, as a fine-tune moves them: the same config.json and
  the same file sizes, so only the weights tell the two apart."""
  from safetensors.numpy import load_file
  shutil.copytree(base_dir, out)
  path = os.path.join(out, "model.safetensors")
  tensors = load_file(path)
  tensors["model.layers.1.mlp.down_proj.weight"] *= np.float32(1.01)
  hf_weights.save_safetensors(tensors, path)
  assert os.path.getsize(path) == os.path.getsize(os.path.join(base_dir, "model.safetensors"))


def test_base_with_other_weights_is_refused_on_resume_and_export(single_device_run, tiny_hf_base,
                                                                 chat_dataset, tmp_path):
  changed = str(tmp_path / "finetuned-base")
  _finetuned_copy(tiny_hf_base, changed)
  run = str(tmp_path / "run")
  shutil.copytree(single_device_run, run, ignore=shutil.ignore_patterns(".lock"))
  with open(os.path.join(run, "config.json")) as f:
    saved = json.load(f)
  saved["init"]["hf_dir"] = changed
  with open(os.path.join(run, "config.json"), "w") as f:
    json.dump(saved, f)
  names_both = (rf"adapters in {re.escape(run)} were trained on the base model "
                rf"{re.escape(os.path.abspath(tiny_hf_base))}, but {re.escape(changed)} differs from it "
                r"\(weight values\)")
  with pytest.raises(UserError, match=names_both):
    export.export(run, str(tmp_path / "merged"))
  resume = sft_config(changed, chat_dataset, **{**LORA, "train.steps": 6, "mesh.data": 1, "mesh.fsdp": 1,
                                                 "mesh.tensor": 1})
  with pytest.raises(UserError, match=names_both):
    loop.run(resume, run, devices=jax.devices()[:1])
  same = str(tmp_path / "same-base-elsewhere")  # the path is not the identity: a copy is the same base
  shutil.copytree(tiny_hf_base, same)
  base_reference.check(run, base_reference.fingerprint(same))


def test_reference_without_content_fingerprint_is_refused(tiny_hf_base, tmp_path):
  with open(tmp_path / base_reference.FILE, "w") as f:  # as written before content fingerprints
    json.dump({"hf_dir": tiny_hf_base, "config_sha256": "0" * 64, "weights": {"model.safetensors": 1}}, f)
  with pytest.raises(UserError, match=rf"{base_reference.FILE} records no content fingerprint of the base "
                                      rf"model {re.escape(tiny_hf_base)}.*delete"):
    base_reference.check(str(tmp_path), base_reference.fingerprint(tiny_hf_base))


def test_lora_needs_a_base(chat_dataset, tmp_path):
  cfg = sft_config("", chat_dataset, **LORA)
  with pytest.raises(UserError, match="set config.init.hf_dir"):
    loop.run(cfg, str(tmp_path / "x"))
