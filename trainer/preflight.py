"""Checks made once before step 1, so a bad input fails in seconds rather than after the run.

  * the dataset's tokenizer file loads (task evaluations and the final samples use it);
  * every split the run reads is intact: each shard's size, sha256 and record
    count against metadata.json (data/shards.py `verify_split`);
  * every split holds what the run reads from it: one batch of
    train.batch_size x train.seq_len (one row for the test prompts of the samples);
  * the dataset was tokenized with the model's tokenizer: that of
    config.init.hf_dir when it has one, that config.init.workdir's run trained
    with, a distillation teacher's, and on resume the one the run started with (recorded in
    WORKDIR/data_tokenizer.json at the first start).

Each failure is one UserError naming the file, split or config field.
"""

import hashlib
import json
import os

from data import pipeline, prep_io, shards
from data import tokenizer as tokenizer_lib
from errors import UserError

DATA_TOKENIZER = "data_tokenizer.json"
HF_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model")


def check(config, meta: dict, workdir: str, is_main: bool) -> None:
  """All the checks; `meta` is the (first) dataset's metadata from pipeline.dataset_metadata."""
  tok = load_dataset_tokenizer(meta)
  needs = rows_needed(config)
  for split in needs:
    pipeline.verify(config.data, split)
  for split, rows in needs.items():
    check_split_size(config, meta, split, rows)
  fingerprint = tokenizer_fingerprint(tok)
  data = f"config.data.dir={config.data.mixture or config.data.dir}"
  if config.init.hf_dir:
    check_hf_tokenizer(data, tok, fingerprint, "config.init.hf_dir", config.init.hf_dir)
  if config.init.workdir:
    check_start_run_tokenizer(data, tok, fingerprint, "config.init.workdir", config.init.workdir)
  if config.train.objective == "distill":
    check_teacher_tokenizer(config.train.distill, data, tok, fingerprint)
  record_or_check_run_tokenizer(workdir, config, tok, fingerprint, write=is_main)


def check_teacher_tokenizer(distill, data_label: str, tok, fingerprint: str) -> None:
  """A distillation teacher's predictions are over the data's token ids: it has the data's tokenizer."""
  if distill.teacher_hf_dir:
    check_hf_tokenizer(data_label, tok, fingerprint, "config.train.distill.teacher_hf_dir", distill.teacher_hf_dir)
  if distill.teacher_workdir:
    check_start_run_tokenizer(data_label, tok, fingerprint, "config.train.distill.teacher_workdir",
                              distill.teacher_workdir)


def load_dataset_tokenizer(meta: dict) -> tokenizer_lib.Tokenizer:
  try:
    return tokenizer_lib.load(meta["tokenizer_path"])
  except UserError as e:
    raise UserError(f"the dataset's tokenizer cannot be loaded: {e}; re-create the dataset (it is named "
                    f"by 'tokenizer' in its metadata.json)") from None


def rows_needed(config) -> dict[str, int]:
  """{split: packed rows the run reads at least}, for every split it will read."""
  t, ev = config.train, config.eval
  needs = {"train": t.batch_size}
  if ev.steps > 0 and (ev.at_start or ev.every_steps <= t.steps):  # the loop evaluates val
    needs["val"] = t.batch_size
  if ev.final_split:
    needs[ev.final_split] = t.batch_size
    if ev.num_samples > 0:  # prompts of the final samples: the first rows of the test split
      needs["test"] = max(needs.get("test", 0), ev.num_samples)
  return needs


def _source_len(config) -> int:
  """Tokens per packed row the pipeline reads: span corruption reads longer raw rows than it writes."""
  t = config.train
  if t.objective != "span_corruption":
    return t.seq_len
  from data.span_corruption import row_lengths
  return row_lengths(t.seq_len, t.span_corruption.noise_density, t.span_corruption.mean_span_length)[0]


def check_split_size(config, meta: dict, split: str, rows: int) -> None:
  seq_len = _source_len(config)
  group = config.train.grpo.num_generations if config.train.objective == "grpo" else 1
  have = pipeline.rows_per_epoch(config.data, split, seq_len, repeats=group, target_len=config.train.target_len)
  if have >= rows:
    return
  if group > 1:  # GRPO: a batch is batch_size / num_generations prompts
    raise UserError(f"split {split!r} of {config.data.dir} has {have // group} prompts; the run needs "
                    f"config.train.batch_size / config.train.grpo.num_generations = {rows // group} from it "
                    f"({_why(config, split)})")
  where = config.data.mixture or config.data.dir
  info = meta["splits"].get(split, {})
  tokens = f"{info['num_tokens']} tokens in {info['num_docs']} documents, " if info else ""
  t = config.train
  what = (f"one batch of config.train.batch_size={t.batch_size} x config.train.seq_len={t.seq_len}"
          if rows == t.batch_size else f"{rows} row(s) of config.train.seq_len={t.seq_len} tokens")
  raise UserError(f"split {split!r} of {where} is too small: {tokens}{have} packed row(s) of {seq_len} tokens; "
                  f"the run needs {what} from it ({_why(config, split)})")


def _why(config, split: str) -> str:
  ev = config.eval
  if split == "train":
    return "training"
  reasons = []
  if split == "val":
    reasons.append(f"config.eval.steps={ev.steps}")
  if split == ev.final_split:
    reasons.append(f"config.eval.final_split={split!r}")
  if split == "test" and ev.num_samples > 0 and ev.final_split:
    reasons.append(f"config.eval.num_samples={ev.num_samples}")
  return ", ".join(reasons)


def tokenizer_fingerprint(tok: tokenizer_lib.Tokenizer) -> str:
  """sha256 of the vocabulary (every piece, in id order).

  The same vocabulary gives the same ids for the same text, whatever the file
  format (a model's tokenizer.model and its tokenizer.json agree); a tokenizer
  trained on other text, even of the same size, does not.
  """
  if tok.kind == "sentencepiece":
    pieces = [tok.impl.id_to_piece(i) for i in range(tok.vocab_size)]
  else:
    vocab = tok.impl.get_vocab(with_added_tokens=True)
    pieces = sorted(vocab, key=vocab.get)
  return hashlib.sha256(json.dumps(pieces).encode()).hexdigest()


def check_hf_tokenizer(data: str, tok: tokenizer_lib.Tokenizer, fingerprint: str, field: str, hf_dir: str) -> None:
  """The dataset's tokenizer must be that of the HF directory `hf_dir`, config `field` (when it has one);
  `data` names the dataset in the message ("config.data.dir=...")."""
  found = [os.path.join(hf_dir, n) for n in HF_TOKENIZER_FILES if os.path.isfile(os.path.join(hf_dir, n))]
  if not found:
    return  # weights only: nothing to compare against
  if any(_same_file(p, tok.path) for p in found):
    return
  model_tok = tokenizer_lib.load(found[0])
  if tokenizer_fingerprint(model_tok) != fingerprint:
    raise UserError(f"{data} was tokenized with {tok.path}, "
                    f"not with the tokenizer of {field}={hf_dir} ({found[0]}): their vocabularies differ; "
                    f"prepare the data with that tokenizer")


def check_start_run_tokenizer(data: str, tok: tokenizer_lib.Tokenizer, fingerprint: str, field: str,
                              workdir: str) -> None:
  """The dataset's tokenizer must be the one the run in `workdir`, config `field`, trained with (its record)."""
  recorded = _recorded_tokenizer(workdir)
  if recorded is None:
    raise UserError(f"{field}={workdir} has no {DATA_TOKENIZER}; is it a train.py --workdir?")
  if recorded.get("vocab_sha256") != fingerprint:
    raise UserError(f"{data} was tokenized with {tok.path}, "
                    f"not with the tokenizer {field}={workdir} trained with "
                    f"({recorded.get('tokenizer')}): their vocabularies differ; prepare the data with that tokenizer")


def _recorded_tokenizer(workdir: str) -> dict | None:
  """What a run recorded of the tokenizer its data was made with (None before its first start)."""
  path = os.path.join(workdir, DATA_TOKENIZER)
  if not os.path.isfile(path):
    return None
  with open(path) as f:
    return json.load(f)


def _same_file(a: str, b: str) -> bool:
  return shards.file_sha256(a) == shards.file_sha256(b)


def _has_checkpoint(workdir: str) -> bool:
  directory = os.path.join(workdir, "checkpoints")
  return os.path.isdir(directory) and any(name.isdigit() for name in os.listdir(directory))


def record_or_check_run_tokenizer(workdir: str, config, tok: tokenizer_lib.Tokenizer, fingerprint: str,
                                  write: bool) -> None:
  """A resumed run must read data tokenized as at its first start; a new run records its tokenizer."""
  path = os.path.join(workdir, DATA_TOKENIZER)
  recorded = _recorded_tokenizer(workdir)
  if _has_checkpoint(workdir) and recorded is not None:
    if recorded.get("vocab_sha256") != fingerprint:
      raise UserError(f"{workdir} was trained on data tokenized with {recorded.get('tokenizer')} ({path}); "
                      f"config.data.dir={config.data.mixture or config.data.dir} uses {tok.path}, a different "
                      f"vocabulary; resume with the original dataset or start a new --workdir")
    return
  if write:
    os.makedirs(workdir, exist_ok=True)
    prep_io.write_json_atomic(path, {"tokenizer": os.path.abspath(tok.path), "vocab_size": tok.vocab_size,
                                     "vocab_sha256": fingerprint})
