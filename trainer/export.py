"""Export a training run's checkpoint as a Hugging Face model directory.

A LoRA run exports its adapters merged into the base weights (a plain model),
or with `peft=True` the adapters alone in PEFT's format. Fine-tuned models keep
their base's tokenizer files; the chat template they were trained with is
written into tokenizer_config.json when the base had none.
"""

import dataclasses
import json
import os
import shutil
import tempfile

import jax
import ml_dtypes
import numpy as np

from configs import base
from data import pipeline
from data import tokenizer as tokenizer_lib
from errors import UserError
from model import families, hf_weights, lora, peft
from model.config import ModelConfig
from parallel import mesh as mesh_lib
from parallel import sharding
from trainer import base_reference
from trainer import optimizer as optimizer_lib
from trainer import state as state_lib
from trainer.checkpoint import Checkpointer

DTYPES = {"float32": np.float32, "bfloat16": ml_dtypes.bfloat16, "float16": np.float16}
# Tokenizer files a fine-tuned model takes over from its base model directory.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json",
                   "chat_template.jinja", "generation_config.json")


def load_run_config(workdir: str):
  path = os.path.join(workdir, "config.json")
  if not os.path.isfile(path):
    raise UserError(f"{workdir} has no config.json; is it a train.py --workdir?")
  with open(path) as f:
    saved = json.load(f)
  config = base.base_config()
  for section, values in saved.items():
    config[section].update(values)
  return config


@dataclasses.dataclass
class Restored:
  config: object          # the run's config
  cfg: ModelConfig        # the plain model (no adapters)
  params: dict            # plain parameters (LoRA merged in), on one device
  step: int
  adapters: dict | None   # the LoRA adapters alone, for a LoRA run
  lora: lora.LoraConfig | None


def restore(workdir: str, step: int | None = None, best: bool = False) -> Restored:
  """A run's checkpoint (newest, `step`, or the best by config.eval.best_metric) on one device."""
  config = load_run_config(workdir)
  adapters_cfg = lora.LoraConfig.from_config(config.lora)
  cfg = dataclasses.replace(ModelConfig.from_config(config.model), lora=adapters_cfg)
  config.mesh.update(dict(data=1, fsdp=1, tensor=1))
  mesh = mesh_lib.make_mesh(config.mesh, jax.devices()[:1])
  model = families.build(cfg)
  tx, _ = optimizer_lib.make_optimizer(config.optimizer, config.train.steps)
  where = "best" if best else "checkpoints"
  ckpt = Checkpointer(os.path.abspath(os.path.join(workdir, where)), keep=1000, async_save=False)
  step = ckpt.latest_step() if step is None else step
  if step is None or step not in ckpt.all_steps():
    raise UserError(f"{workdir}/{where} has no checkpoint {'at all' if step is None else f'for step {step}'}"
                    + (" (best checkpoints need config.checkpoint.keep_best=True)" if best else ""))
  with sharding.activate(mesh):
    abstract, shardings = state_lib.state_shardings(model, tx, mesh, config.train.seq_len)
    state = ckpt.restore_state(step, state_lib.with_shardings(abstract, shardings))
    ckpt.close()
    if adapters_cfg is None:
      return Restored(config, cfg, state.params, step, None, None)
    base_reference.check(workdir, base_reference.fingerprint(config.init.hf_dir))
    base_abstract, base_sh = sharding.abstract_variables(model, mesh, "params")
    dtype = np.dtype(DTYPES[config.lora.base_dtype]) if config.lora.base_dtype in DTYPES else np.float32
    base_abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, dtype), base_abstract)
    base_params = hf_weights.load_params(config.init.hf_dir, cfg, base_abstract, base_sh)
    merged = jax.jit(lambda b, a: lora.merge(b, a, adapters_cfg))(base_params, state.params)
  return Restored(config, dataclasses.replace(cfg, lora=None), merged, step, state.params, adapters_cfg)


def restore_params(workdir: str, step: int | None = None):
  """(config, ModelConfig, plain params on one device, step)."""
  r = restore(workdir, step)
  return r.config, r.cfg, r.params, r.step


def _write_tokenizer(config, out_dir: str) -> tuple[int | None, int | None]:
  """Tokenizer files (the base model's, or the dataset's); returns (bos_id, eos_id)."""
  meta = pipeline.dataset_metadata(config.data)
  hf_dir = config.init.hf_dir
  if hf_dir and any(os.path.isfile(os.path.join(hf_dir, f)) for f in ("tokenizer.json", "tokenizer.model")):
    for name in TOKENIZER_FILES:
      if os.path.isfile(os.path.join(hf_dir, name)):
        shutil.copyfile(os.path.join(hf_dir, name), os.path.join(out_dir, name))
    tok_config = {}
    if os.path.isfile(os.path.join(out_dir, "tokenizer_config.json")):
      with open(os.path.join(out_dir, "tokenizer_config.json")) as f:
        tok_config = json.load(f)
  else:
    tok_config = _dataset_tokenizer_files(meta, out_dir)
  has_template = "chat_template" in tok_config or os.path.isfile(os.path.join(out_dir, "chat_template.jinja"))
  if meta.get("chat_template") and not has_template:  # the template the model was fine-tuned with
    tok_config["chat_template"] = meta["chat_template"]
  with open(os.path.join(out_dir, "tokenizer_config.json"), "w") as f:
    json.dump(tok_config, f, indent=2)
  return meta.get("bos_id"), meta.get("eos_id")


def _dataset_tokenizer_files(meta: dict, out_dir: str) -> dict:
  """The dataset's tokenizer for transformers, which must tokenize as training did; returns its config.

  A dataset prepared with a model's tokenizer carries that model's tokenizer_config.json: both go as they are.

  A BPE sentencepiece model goes as tokenizer.model with LlamaTokenizer, which
  rebuilds exactly our pipeline; a unigram one also gets the tokenizer.json we
  encode with, since LlamaTokenizer would read its pieces as BPE merges.
  """
  config_file = os.path.join(os.path.dirname(meta["tokenizer_path"]), "tokenizer_config.json")
  if os.path.isfile(config_file):  # prepared with a model's tokenizer: export it as that model has it
    shutil.copyfile(meta["tokenizer_path"], os.path.join(out_dir, os.path.basename(meta["tokenizer_path"])))
    with open(config_file) as f:
      return json.load(f)
  tok = tokenizer_lib.load(meta["tokenizer_path"])
  names = {k: tok.id_to_token(i) for k, i in (("bos_token", tok.bos_id), ("eos_token", tok.eos_id)) if i is not None}
  if tok.kind == "hf":
    shutil.copyfile(tok.path, os.path.join(out_dir, "tokenizer.json"))
    return {"tokenizer_class": "PreTrainedTokenizerFast", **names}  # BOS: as its post-processor adds it
  shutil.copyfile(tok.path, os.path.join(out_dir, "tokenizer.model"))
  config = {"tokenizer_class": "LlamaTokenizer", **names, "unk_token": tok.id_to_token(tok.unk_id),
            "add_bos_token": tok.add_bos, "add_eos_token": False}
  if type(tok.backend.model).__name__ != "BPE":
    with open(os.path.join(out_dir, "tokenizer.json"), "w") as f:
      f.write(tok.backend.to_str())
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
  return config


def export(workdir: str, output: str, step: int | None = None, dtype: str = "float32", best: bool = False,
           as_peft: bool = False) -> int:
  """Writes OUTPUT atomically; returns the exported step."""
  if dtype not in DTYPES:
    raise UserError(f"--dtype={dtype!r}; expected one of {sorted(DTYPES)}")
  if os.path.exists(output):
    raise UserError(f"{output} already exists; remove it or choose another --output")
  r = restore(workdir, step, best)
  if as_peft and r.lora is None:
    raise UserError(f"--peft exports LoRA adapters, but {workdir} is not a LoRA run (config.lora.rank=0)")
  parent = os.path.dirname(os.path.abspath(output))
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=".tmp-export-", dir=parent)
  try:
    bos, eos = _write_tokenizer(r.config, tmp)
    if as_peft:
      peft.save(r.adapters, r.cfg, r.lora, r.config.init.hf_dir, tmp, DTYPES[dtype])
    else:
      hf_weights.save(r.params, r.cfg, tmp, DTYPES[dtype], bos_id=bos, eos_id=eos)
    os.chmod(tmp, hf_weights.umask_mode(directory=True))  # mkdtemp makes it 0700
    os.rename(tmp, output)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return r.step
