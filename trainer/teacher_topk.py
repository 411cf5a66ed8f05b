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
    in_top_BxTxV = jnp.put_along_axis(jnp.zeros(logits_BxTxV.shape, bool), ids_BxTxK, True, axis=-1, inplace=False)
    norms = []
    for t in (1.0, temperature):
      scaled_BxTxV = logits_BxTxV / t
      norms.append(jnp.stack([jax.nn.logsumexp(scaled_BxTxV, -1),
                              jax.nn.logsumexp(jnp.where(in_top_BxTxV, -jnp.inf, scaled_BxTxV), -1)], -1))
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
  meta = shards.load_metadata(cfg.data.dir)
  _check_packed(cfg.data.dir, meta)
  meta["tokenizer_path"] = os.path.join(cfg.data.dir, meta["tokenizer"])
  tok = preflight.load_dataset_tokenizer(meta)
  teacher = Teacher.from_config(d, cfg.model, seq_len)
  preflight.check_teacher_tokenizer(d, f"config.data.dir={cfg.data.dir}", tok, preflight.tokenizer_fingerprint(tok))
  mesh = mesh_lib.mesh_of_sizes(dataclasses.asdict(cfg.mesh))  # fixed sizes take the first devices
  abstract, param_sh = teacher.shardings(mesh)
  identity = teacher.identity()
  params = teacher.load(mesh, abstract, param_sh, identity["step"])
  topk = _topk_fn(teacher, mesh, param_sh, top_k, d.temperature)
  batch_sh = sharding.batch_sharding(mesh)
  batch_rows = sharding.round_to_batch_axes(mesh, batch_rows)
  ids_dtype = np.uint16 if cfg.model.vocab_size <= np.iinfo(np.uint16).max + 1 else np.int32
  summary, splits = {}, {}
  with prep_io.atomic_directory(out_dir) as tmp, sharding.activate(mesh):
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
      for start in range(0, rows, batch_rows):
        count = min(batch_rows, rows - start)
        batch = [stream[g] for g in range(start, start + count)]
        batch += batch[:1] * (batch_rows - count)  # the last batch padded with a copy, dropped below
        ids, logps, norms, mass_B = topk(params, {f: sharding.from_host(np.stack([r[f] for r in batch]), batch_sh)
                                              for f in _MODEL_FIELDS})
        ids_out[start:start + count] = np.asarray(ids)[:count]
        logps_out[start:start + count] = np.asarray(logps)[:count]
        norms_out[start:start + count] = np.asarray(norms)[:count]
        mass += float(np.asarray(mass_B)[:count].sum())
        tokens += sum(float((r["segment_ids"] > 0).sum()) for r in batch[:count])
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


def check_run(config) -> None:
  """A run with config.train.distill.teacher_topk_dir reads logits computed on its own rows, over its
  vocabulary, for every split it reads, by the teacher it names (if it names one)."""
  d = config.train.distill
  directory = d.teacher_topk_dir
  teacher = Teacher.from_config(d, config.model, config.train.seq_len) if d.teacher else None
  meta = topk_lib.load(directory)
  _check_packed(config.data.dir, shards.load_metadata(config.data.dir) if not config.data.mixture else {})
  topk_lib.check_rows_of(directory, meta, config.data, config.train.seq_len)
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
    if have >= wanted:
      continue
    packed = pipeline.rows_per_epoch(config.data, split, config.train.seq_len)
    if split == "train":  # fewer rows than steps x batch_size: epochs over them, as over a small dataset
      logging.warning("%s holds %d train rows; the run reads %d, so it repeats them", directory, have, wanted)
    elif have < min(wanted, packed):
      raise UserError(f"config.train.distill.teacher_topk_dir={directory} holds {have} rows of split {split!r}, "
                      f"but the run's evaluations read {min(wanted, packed)}; {topk_lib.HINT} with this config")
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
