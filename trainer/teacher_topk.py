"""A distillation teacher's top-k logits, computed once over a dataset's packed rows (scripts/precompute_teacher.py).

`precompute` runs the teacher of a distillation config over the rows that config reads (data/teacher_topk.py
has the format and why the rows are packed once) and writes its k likeliest next tokens and their logits
per position. A run with config.train.distill.teacher_topk_dir reads them with its rows: the teacher never
sits beside the student, so it may be any size. `check_run` makes sure the run's rows are the ones the
logits were computed on, and `pin` that a resumed run reads the very same files.
"""

import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from configs.schema import RunConfig
from data import pipeline, prep_io, shards
from data import teacher_topk as topk_lib
from errors import UserError
from parallel import mesh as mesh_lib
from parallel import sharding
from trainer import preflight
from trainer.objectives.distill import logsumexp_outside
from trainer.teacher import Teacher

_UNPACKED = ("classification", "preference", "prompts")  # read one example per row, never packed
_MODEL_FIELDS = ("tokens", "segment_ids", "positions")
RECORD = "teacher.json"  # in a run's workdir, as for a live teacher


def _check_packed(data_dir: str, meta: dict) -> None:
  if meta.get("kind") in _UNPACKED:
    raise UserError(f"config.data.dir={data_dir} holds {meta['kind']} examples; distillation reads packed "
                    f"text or chat data (scripts/prepare_data.py, scripts/prepare_sft.py)")


def _topk_fn(teacher: Teacher, mesh, param_sh, top_k: int, temperature: float):
  """jitted (params, rows) -> ids and log-probabilities at T=1 [B, T, k]; at t = 1 and `temperature`, the
  logsumexp of all logits / t and of the others [B, T, 2, 2]; each row's top-k mass (at T=1) summed [B]."""
  apply_fn = teacher.apply_fn()

  def topk(params, batch):
    logits_BxTxV = apply_fn({"params": params}, batch).astype(jnp.float32)
    values_BxTxK, ids_BxTxK = jax.lax.top_k(logits_BxTxV, top_k)
    norms = [jnp.stack([jax.nn.logsumexp(logits_BxTxV / t, -1), logsumexp_outside(logits_BxTxV / t, ids_BxTxK)], -1)
             for t in (1.0, temperature)]
    norms_BxTx2x2 = jnp.stack(norms, -2)
    logps_BxTxK = values_BxTxK - norms_BxTx2x2[..., 0, 0, None]
    mass_BxT = jnp.exp(jax.nn.logsumexp(logps_BxTxK, -1))
    return ids_BxTxK, logps_BxTxK, norms_BxTx2x2, jnp.sum(mass_BxT * (batch["segment_ids"] > 0), axis=-1)

  repl = sharding.replicated(mesh)
  return jax.jit(topk, in_shardings=(param_sh, sharding.batch_sharding(mesh)), out_shardings=(repl,) * 4)


def _check_out_dir(out_dir: str) -> None:
  """Replacing a directory is only safe when it is an earlier precomputed teacher."""
  if os.path.exists(out_dir) and not os.path.isdir(out_dir):
    raise UserError(f"--out_dir={out_dir} is a file; expected a directory to write")
  if os.path.exists(out_dir) and os.listdir(out_dir):
    try:
      topk_lib.load(out_dir)
    except UserError:
      raise UserError(f"--out_dir={out_dir} exists and is not a precomputed teacher; choose a new directory "
                      f"(it would be replaced)") from None


def rows_read(config, train_rows: int = 0) -> dict[str, int]:
  """{split: rows} a run of `config` reads: steps x batch_size of train (or `train_rows`; -1: all of them),
  and what its evaluations read of val and of the final split."""
  t, ev = config.train, config.eval
  splits = preflight.rows_needed(config)
  rows = {"train": t.steps * t.batch_size if train_rows == 0 else train_rows}
  if "val" in splits:
    rows["val"] = ev.steps * t.batch_size
  if ev.final_split:
    rows[ev.final_split] = max(rows.get(ev.final_split, 0), ev.final_steps * t.batch_size)
  return rows


def precompute(config, out_dir: str, top_k: int, train_rows: int = 0, logps_dtype: str = "float16",
               batch_rows: int = 8, log=print) -> dict:
  """Writes the teacher top-k directory `out_dir` for the distillation run `config` (its data, packing,
  sequence length, teacher and mesh) over the rows it reads (rows_read); returns {split: {"rows", "topk_mass"}}."""
  from trainer.loop import take_init_architecture  # the loop imports this module
  take_init_architecture(config)  # a student started from a checkpoint has its architecture (vocabulary)
  cfg = RunConfig.from_config(config)
  d, seq_len = cfg.train.distill, cfg.train.seq_len
  if not d.teacher:
    raise UserError("scripts/precompute_teacher.py runs the teacher the config names: set "
                    "--config.train.distill.teacher_workdir or --config.train.distill.teacher_hf_dir")
  if logps_dtype not in ("float16", "float32"):
    raise UserError(f"--logps_dtype={logps_dtype!r}; expected float16 or float32")
  if not 0 < top_k <= cfg.model.vocab_size:
    raise UserError(f"--top_k={top_k}; expected 1 to the vocabulary's {cfg.model.vocab_size}")
  _check_out_dir(out_dir)
  rows_of = topk_lib.rows_of(cfg.data, seq_len)
  meta = pipeline.dataset_metadata(cfg.data)
  _check_packed(cfg.data.dir, meta)
  tok = preflight.load_dataset_tokenizer(meta)
  teacher = Teacher.from_config(d, cfg.model, seq_len)
  preflight.check_teacher_tokenizer(d, f"config.data.dir={cfg.data.dir}", tok, preflight.tokenizer_fingerprint(tok))
  mesh = mesh_lib.mesh_of_sizes(dataclasses.asdict(cfg.mesh))  # fixed sizes take the first devices
  abstract, param_sh = teacher.shardings(mesh)
  identity = teacher.identity()
  params = teacher.load(mesh, abstract, param_sh, identity["step"])
  topk = _topk_fn(teacher, mesh, param_sh, top_k, d.temperature)
  ids_dtype = np.uint16 if cfg.model.vocab_size <= np.iinfo(np.uint16).max + 1 else np.int32
  summary, splits = {}, {}
  with prep_io.atomic_directory(out_dir) as tmp:
    for split, wanted in rows_read(cfg, train_rows).items():
      if split not in meta["splits"]:
        raise UserError(f"config.data.dir={cfg.data.dir} has no split {split!r}, which the run reads")
      stream = pipeline.RowStream(cfg.data, split, seq_len, seed=0, shuffle=False)
      rows = stream.rows_per_epoch if wanted < 0 else min(wanted, stream.rows_per_epoch)
      shape = (rows, seq_len, top_k)
      ids_out = np.lib.format.open_memmap(os.path.join(tmp, f"{split}.ids.npy"), "w+", ids_dtype, shape)
      logps_out = np.lib.format.open_memmap(os.path.join(tmp, f"{split}.logps.npy"), "w+", logps_dtype, shape)
      norms_out = np.lib.format.open_memmap(os.path.join(tmp, f"{split}.norms.npy"), "w+", np.float32,
                                            (rows, seq_len, 2, 2))
      mass = tokens = 0.0
      for start, batch, (ids, logps, norms, mass_B) in sharding.map_rows(
          topk, params, stream.__getitem__, rows, batch_rows, _MODEL_FIELDS, mesh):
        stop = start + len(batch)
        ids_out[start:stop], logps_out[start:stop], norms_out[start:stop] = ids, logps, norms
        mass += float(mass_B.sum())
        tokens += sum(float((r["segment_ids"] > 0).sum()) for r in batch)
      for out in (ids_out, logps_out, norms_out):
        out.flush()
      del ids_out, logps_out, norms_out, out
      splits[split] = {"rows": rows, **{f: shards.file_record(tmp, f"{split}.{f}.npy") for f in topk_lib.FILES}}
      summary[split] = {"rows": rows, "topk_mass": mass / max(tokens, 1.0)}
      log(f"{split}: {rows} rows of {seq_len} tokens; the top {top_k} hold {summary[split]['topk_mass']:.3f} of "
          f"the teacher's probability")
    prep_io.write_json_atomic(os.path.join(tmp, shards.METADATA), {
        "kind": topk_lib.KIND, "top_k": top_k, "vocab_size": cfg.model.vocab_size, "rows_of": rows_of,
        "temperature": d.temperature,
        "teacher": identity, "splits": splits, "topk_mass": {s: v["topk_mass"] for s, v in summary.items()}})
  return summary


def check_run(config, data_meta: dict) -> None:
  """A run with config.train.distill.teacher_topk_dir reads logits computed on its own rows (`data_meta`:
  its dataset's metadata), over its vocabulary, for every split it reads, by the teacher it names (if any)."""
  d = config.train.distill
  directory = d.teacher_topk_dir
  meta = topk_lib.load(directory)
  topk_lib.check_rows_of(directory, meta, config.data, config.train.seq_len)  # refuses mixtures first
  _check_packed(config.data.dir, data_meta)
  if meta["vocab_size"] != config.model.vocab_size:
    raise UserError(f"config.train.distill.teacher_topk_dir={directory} predicts over {meta['vocab_size']} tokens "
                    f"but config.model.vocab_size={config.model.vocab_size}: the student must share the teacher's "
                    f"vocabulary")
  if d.temperature not in (1.0, meta["temperature"]):
    raise UserError(f"config.train.distill.temperature={d.temperature}, but {directory} was computed for "
                    f"temperature {meta['temperature']} (and 1); {topk_lib.HINT} with this temperature")
  for split, wanted in rows_read(config).items():
    topk_lib.verify(directory, meta, split)
    have = meta["splits"][split]["rows"]
    if split == "train":
      if have < config.train.batch_size:
        raise UserError(f"config.train.distill.teacher_topk_dir={directory} holds {have} train rows, fewer than "
                        f"one batch of config.train.batch_size={config.train.batch_size}; {topk_lib.HINT}")
      if have < wanted:  # epochs over them, as over a small dataset
        logging.warning("%s holds %d train rows; the run reads %d, so it repeats them", directory, have, wanted)
      continue
    if have < wanted and have < (packed := pipeline.rows_per_epoch(config.data, split, config.train.seq_len)):
      raise UserError(f"config.train.distill.teacher_topk_dir={directory} holds {have} rows of split {split!r}, "
                      f"but the run's evaluations read {min(wanted, packed)}; {topk_lib.HINT} with this config")
  teacher = Teacher.from_config(d, config.model, config.train.seq_len) if d.teacher else None
  if teacher is not None and teacher.identity() != meta["teacher"]:
    raise UserError(f"config.train.distill.teacher_topk_dir={directory} was computed with the teacher "
                    f"{meta['teacher']['source']} (step {meta['teacher']['step']}), not {teacher.field}="
                    f"{teacher.source} as it is now; recompute it, or set {teacher.field}='' to read it as it is")


def pin(workdir: str, directory: str, resuming: bool, write: bool) -> None:
  """Records the precomputed teacher a run starts with (its metadata's checksum) and refuses another on resume."""
  path = os.path.join(workdir, RECORD)
  now = {"teacher_topk_dir": os.path.abspath(directory),
         "metadata_sha256": shards.file_sha256(os.path.join(directory, shards.METADATA))}
  if resuming and os.path.isfile(path):
    with open(path) as f:
      recorded = json.load(f)
    if recorded != now:
      raise UserError(f"{workdir} was distilled from {recorded} ({path}), not config.train.distill."
                      f"teacher_topk_dir={directory} as it is now; resume with those logits or start a new --workdir")
    return
  if write:
    os.makedirs(workdir, exist_ok=True)
    prep_io.write_json_atomic(path, now)
