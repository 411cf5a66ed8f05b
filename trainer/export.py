"""Export a training run's checkpoint as a Hugging Face model directory.

A LoRA run exports its adapters merged into the base weights (a plain model),
or with `peft=True` the adapters alone in PEFT's format. Fine-tuned models keep
their base's tokenizer files; the chat template they were trained with is
written into tokenizer_config.json when the base had none.
"""

import json
import os
import shutil
import tempfile

import ml_dtypes
import numpy as np

from data import pipeline
from data import tokenizer as tokenizer_lib
from errors import UserError
from model import hf_weights, peft
from parallel import mesh as mesh_lib
from parallel import restore as restore_lib

DTYPES = {"float32": np.float32, "bfloat16": ml_dtypes.bfloat16, "float16": np.float16}
# Tokenizer files a fine-tuned model takes over from its base model directory.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json",
                   "chat_template.jinja", "generation_config.json")


def restore(workdir: str, step: int | None = None, best: bool = False) -> restore_lib.Restored:
  """A run's checkpoint on one device: exporting writes host arrays, tensor by tensor."""
  return restore_lib.restore(workdir, mesh_lib.mesh_of_sizes(), step, best)


def _write_tokenizer(config, meta: dict, out_dir: str) -> tuple[int | None, int | None]:
  """Tokenizer files (the base model's, or those of the dataset `meta` describes); returns (bos_id, eos_id)."""
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
  # An encoder's tokenizer: [CLS], [SEP], [PAD] and [MASK] by their roles (fill-mask pipelines find the mask).
  encoder = tokenizer_lib.encoder_special_ids(tok)
  names.update({f"{key.removesuffix('_id')}_token": tok.id_to_token(i) for key, i in encoder.items()})
  if tok.kind == "hf":
    shutil.copyfile(tok.path, os.path.join(out_dir, "tokenizer.json"))
    return {"tokenizer_class": "PreTrainedTokenizerFast", **names}  # BOS: as its post-processor adds it
  shutil.copyfile(tok.path, os.path.join(out_dir, "tokenizer.model"))
  config = {"tokenizer_class": "LlamaTokenizer", **names, "unk_token": tok.id_to_token(tok.unk_id),
            "add_bos_token": tok.add_bos, "add_eos_token": bool(encoder)}  # an encoder's text ends in [SEP]
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
  run_config = restore_lib.load_run_config(workdir)
  if as_peft and not run_config.lora.enabled:
    raise UserError(f"--peft exports LoRA adapters, but {workdir} is not a LoRA run (config.lora.rank=0)")
  if as_peft and run_config.model.num_labels:
    raise UserError(f"--peft exports adapters alone, but {workdir} is a LoRA classifier whose head trained "
                    f"in full; export the merged classifier (without --peft)")
  r = restore(workdir, step, best)
  parent = os.path.dirname(os.path.abspath(output))
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=".tmp-export-", dir=parent)
  try:
    meta = pipeline.dataset_metadata(r.config.data)
    bos, eos = _write_tokenizer(r.config, meta, tmp)
    if as_peft:
      peft.save(r.adapters, r.cfg, r.lora, r.config.init.hf_dir, tmp, DTYPES[dtype])
    else:
      labels = meta.get("labels")  # a classifier's class names
      hf_weights.save(r.params, r.cfg, tmp, DTYPES[dtype], bos_id=bos, eos_id=eos, labels=labels)
    os.chmod(tmp, hf_weights.umask_mode(directory=True))  # mkdtemp makes it 0700
    os.rename(tmp, output)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return r.step
