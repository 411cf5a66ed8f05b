"""DPO's reference log-probabilities, computed once into a preference dataset (scripts/precompute_reference.py).

For every side of every pair, in every split: the sum of its completion tokens' log-probabilities under the
reference model, computed as the DPO loss computes them live (preference.sequence_logps, on the rows the
run reads). They are written beside the shards as SPLIT.ref_logps.npy, checksummed in metadata.json with the
reference model's fingerprint. A run with train.dpo.reference="precomputed" then reads them with its pairs
instead of holding the reference beside the policy: no memory and no forward pass for it. It checks that
they were computed from its own starting model.
"""

import os

import jax
import numpy as np

from data import shards
from data import tokenizer as tokenizer_lib
from data.pairs import PairRows
from data.prep_io import write_json_atomic
from errors import UserError
from model import base_reference, families, hf_weights
from parallel import mesh as mesh_lib
from parallel import sharding
from trainer import preflight
from trainer.objectives.preference import PAIR_FIELDS, pair_rows, sequence_logps

KEY = "ref_logps"


def _check_tokenizer(data_dir: str, meta: dict, model_dir: str) -> None:
  tok = tokenizer_lib.load(os.path.join(data_dir, meta["tokenizer"]))
  preflight.check_hf_tokenizer(f"--data_dir={data_dir}", tok, preflight.tokenizer_fingerprint(tok), "--model_dir", model_dir)


def precompute(data_dir: str, model_dir: str, batch_pairs: int = 8, vocab_chunk: int = 0,
               mesh_config: dict | None = None) -> dict:
  """Writes SPLIT.ref_logps.npy for every split of `data_dir` (a prepared preference dataset) under the HF
  model `model_dir`, and records them in its metadata.json; returns {split: mean log-probability}."""
  meta = shards.load_metadata(data_dir)
  if meta.get("kind") != "preference":
    raise UserError(f"--data_dir={data_dir} is a {meta.get('kind')!r} dataset; reference log-probabilities are "
                    f"for preference pairs (scripts/prepare_preferences.py)")
  _check_tokenizer(data_dir, meta, model_dir)
  mesh = mesh_lib.mesh_of_sizes(mesh_config)
  cfg, params = hf_weights.load(model_dir, mesh)
  if meta["vocab_size"] > cfg.vocab_size:
    raise UserError(f"--model_dir={model_dir} has {cfg.vocab_size} tokens, fewer than the dataset's tokenizer "
                    f"({meta['vocab_size']})")
  seq_len = meta["options"]["max_len"]
  apply_fn = families.batch_apply(families.build(cfg))
  logps = jax.jit(lambda p, rows: sequence_logps(apply_fn, {"params": p}, pair_rows(rows), vocab_chunk)[0]
                  .reshape(-1, 2),  # [pairs, (chosen, rejected)]
                  in_shardings=(jax.tree.map(lambda a: a.sharding, params), sharding.batch_sharding(mesh)),
                  out_shardings=sharding.replicated(mesh))
  means, files = {}, {}
  for split in meta["splits"]:
    source, lengths = shards.open_split(data_dir, split, meta)
    pairs = PairRows(source, lengths, seq_len, seed=0, shuffle=False)  # pair k: records 2k and 2k + 1
    out = np.zeros(len(lengths), np.float32)
    for start, rows, values in sharding.map_rows(logps, params, pairs.__getitem__, pairs.rows_per_epoch,
                                                  batch_pairs, PAIR_FIELDS, mesh):
      out[2 * start:2 * (start + len(rows))] = values.reshape(-1)
    files[split] = out
    means[split] = float(out.mean())
  for split, values in files.items():  # each file whole before metadata.json names it
    path = os.path.join(data_dir, f"{split}.{KEY}.npy")
    with open(path + ".tmp", "wb") as f:
      np.save(f, values)
    os.replace(path + ".tmp", path)
    meta["splits"][split][KEY] = shards.file_record(data_dir, f"{split}.{KEY}.npy")
  meta[KEY] = {"model": base_reference.fingerprint(model_dir), "vocab_chunk": vocab_chunk}
  write_json_atomic(os.path.join(data_dir, shards.METADATA), meta)
  return means


def check_dataset(config, meta: dict, data_dir: str) -> None:
  """A run with train.dpo.reference="precomputed": its data holds reference log-probabilities of its own
  starting model (config.init.hf_dir)."""
  if config.data.mixture:
    raise UserError("config.train.dpo.reference='precomputed' reads one dataset's log-probabilities; "
                    "config.data.mixture is not supported with it")
  recorded = meta.get(KEY)
  missing = [s for s in ("train", "val") if KEY not in meta["splits"].get(s, {KEY: None})]
  if recorded is None or missing:
    raise UserError(f"config.train.dpo.reference='precomputed', but {data_dir} holds no reference "
                    f"log-probabilities{' for split(s) ' + str(missing) if recorded else ''}; compute them with "
                    f"scripts/precompute_reference.py --data_dir={data_dir} --model_dir={config.init.hf_dir}")
  if not config.init.hf_dir:
    raise UserError("config.train.dpo.reference='precomputed' needs config.init.hf_dir: the starting model the "
                    "log-probabilities were computed with")
  if not base_reference.same_weights(recorded["model"], base_reference.fingerprint(config.init.hf_dir)):
    raise UserError(f"the reference log-probabilities in {data_dir} were computed with {recorded['model']['hf_dir']}, "
                    f"whose weights differ from config.init.hf_dir={config.init.hf_dir}; recompute them with "
                    f"scripts/precompute_reference.py --data_dir={data_dir} --model_dir={config.init.hf_dir}")
