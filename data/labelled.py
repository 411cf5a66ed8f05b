"""Labelled text JSONL -> tokenized train/val shards with a label per example, for classifiers.

Each line is {"text": ..., "label": ...}, or {"text", "text_pair", "label"} for
pairs (entailment, paraphrase). Labels are strings (numbers are read as their
text). The label set is `labels` when given (its order is the class order),
else the sorted labels of the training files; once fixed, a label outside it
is an error naming its file and line, so a validation file can never bring a
class the classifier has no output for. metadata.json records the set.

An example is encoded as its model expects a sequence to classify:
- a tokenizer whose post-processor closes a sequence with a special token
  (BERT's `[CLS] a [SEP] b [SEP]`, RoBERTa's `<s> a </s></s> b </s>`) encodes
  the text (and pair) with it, and the token types it assigns are stored;
- any other (a decoder's: `<s> a`) encodes the text, a blank line and the pair,
  then EOS: a decoder's classification head reads the last token, which has
  then seen the whole example.
Over-long examples are truncated or dropped: a post-processor's pair loses
tokens from its longer sequence first; a decoder's joined text is cut at its
end (keeping the EOS the head reads), so put the part that decides first.
Every record holds int32 tokens then one uint8 token type per token (data/shards.py).
"""

import collections
import contextlib
import dataclasses
import json
import os
import shutil


from data import sft, shards, sources
from data import tokenizer as tokenizer_lib
from data.corpus import expand_inputs
from data.prep_io import atomic_directory, file_sha256, write_json_atomic
from errors import UserError

SPLITS = ("train", "val")
PAIR_SEPARATOR = "\n\n"


@dataclasses.dataclass(frozen=True)
class LabelledOptions:
  labels: tuple[str, ...] = ()  # the class order; () = the sorted labels of the training files
  val_fraction: float = 0.1     # of the training files, when no validation files are given
  max_len: int = 128            # tokens per example
  overlong: str = "truncate"    # "truncate" | "drop"
  seed: int = 0

  def check(self):
    if self.overlong not in ("truncate", "drop"):
      raise UserError(f"--overlong={self.overlong!r}; expected one of ('truncate', 'drop')")
    if not 0 < self.val_fraction < 1:
      raise UserError(f"--val_fraction={self.val_fraction}; expected a fraction in (0, 1)")
    if self.max_len < 3:
      raise UserError(f"--max_len={self.max_len}; expected at least 3 tokens")
    if len(set(self.labels)) != len(self.labels):
      raise UserError(f"--labels={','.join(self.labels)} names a label twice")


@dataclasses.dataclass(frozen=True)
class Example:
  where: str   # file:line
  text: str
  pair: str | None
  label: str


def read_examples(files: list[str]) -> list[Example]:
  """Every non-blank line of `files`, validated: a clear error names the file, line and field."""
  out = []
  for path in files:
    for where, record in sources.jsonl_records(path):
      if isinstance(record, json.JSONDecodeError):
        raise UserError(f"{where}: not valid JSON ({record.msg})")
      out.append(_example(record, where))
  return out


def _example(record, where: str) -> Example:
  if not isinstance(record, dict):
    raise UserError(f"{where}: expected an object with \"text\" and \"label\", got {type(record).__name__}")
  for field in ("text", "label"):
    if field not in record:
      raise UserError(f"{where}: no {field!r} field (expected {{\"text\", \"label\"}} or "
                      f"{{\"text\", \"text_pair\", \"label\"}})")
  text, pair, label = record["text"], record.get("text_pair"), record["label"]
  if not isinstance(text, str) or (pair is not None and not isinstance(pair, str)):
    raise UserError(f"{where}: \"text\" and \"text_pair\" must be strings")
  if isinstance(label, bool) or not isinstance(label, (str, int)):
    raise UserError(f"{where}: \"label\" must be a string or an integer, got {json.dumps(label)}")
  return Example(where, text, pair, str(label))


def label_set(examples: list[Example], given: tuple[str, ...]) -> list[str]:
  """The classes in output order: `given`, or the sorted labels seen in training."""
  labels = list(given) or sorted({e.label for e in examples})
  if len(labels) < 2:
    raise UserError(f"the training data has {len(labels)} label(s) ({labels}); a classifier needs at least 2")
  return labels


def label_ids(examples: list[Example], labels: list[str], what: str) -> list[int]:
  index = {label: i for i, label in enumerate(labels)}
  for e in examples:
    if e.label not in index:
      raise UserError(f"{e.where}: label {e.label!r} is not in the label set of {what} {labels}; "
                      f"the label set is fixed once (pass --labels to choose it)")
  return [index[e.label] for e in examples]


def closes_with_special(tok) -> bool:
  """Whether the tokenizer's post-processor ends a sequence with a special token (encoders do)."""
  ids = tok.encode("a", add_special_tokens=True)
  return bool(ids) and ids[-1] in set(tokenizer_lib.special_ids(tok))


@contextlib.contextmanager
def _plain(backend):
  """`backend` without the truncation and padding a tokenizer.json may set (MiniLM's pads every
  text to 128): as transformers encodes by default. Restored afterwards."""
  truncation, padding = backend.truncation, backend.padding
  backend.no_truncation()
  backend.no_padding()
  try:
    yield backend
  finally:
    backend.no_truncation()
    if truncation:
      backend.enable_truncation(**truncation)
    if padding:
      backend.enable_padding(**padding)


class Encoder:
  """Example -> (token ids, token types), as the model behind `tok` reads one sequence to classify."""

  def __init__(self, tok, max_len: int):
    self.tok, self.max_len = tok, max_len
    self.native = closes_with_special(tok)
    if not self.native and tok.eos_id is None:
      raise UserError(f"tokenizer {tok.path} has no EOS token to close an example with")

  def __call__(self, e: Example) -> tuple[list[int], list[int], bool]:
    """(ids, token types, truncated)."""
    if self.native:
      with _plain(self.tok.backend) as backend:
        full = backend.encode(e.text, e.pair, add_special_tokens=True)
        if len(full.ids) <= self.max_len:
          return list(full.ids), list(full.type_ids), False
        backend.enable_truncation(self.max_len, strategy="longest_first")
        cut = backend.encode(e.text, e.pair, add_special_tokens=True)
      return list(cut.ids), list(cut.type_ids), True
    text = e.text if e.pair is None else e.text + PAIR_SEPARATOR + e.pair
    with _plain(self.tok.backend):
      ids = self.tok.encode(text, add_special_tokens=True)
    truncated = len(ids) + 1 > self.max_len
    ids = ids[:self.max_len - 1] + [self.tok.eos_id]
    return ids, [0] * len(ids), truncated


def load_tokenizer(source: str):
  """The tokenizer of an HF model directory, or of a dataset prepared by scripts/prepare_data.py."""
  if os.path.isfile(os.path.join(source, shards.METADATA)):
    meta = shards.load_metadata(source)
    return tokenizer_lib.load(os.path.join(source, meta["tokenizer"])), meta
  if not os.path.isdir(source):
    raise UserError(f"--tokenizer_from={source}: not a directory (expected an HF model directory or a "
                    f"dataset prepared by scripts/prepare_data.py)")
  return tokenizer_lib.load_dir(source), None


def prepare_labelled(train_inputs: list[str], val_inputs: list[str], tokenizer_from: str, output: str,
                     opts: LabelledOptions = LabelledOptions(), overwrite: bool = False) -> dict:
  """Writes OUTPUT (atomically) and returns its metadata."""
  opts.check()
  if os.path.exists(output) and not overwrite:
    raise UserError(f"output directory {output} already exists; pass --overwrite to replace it")
  train_files = expand_inputs(train_inputs)
  val_files = expand_inputs(val_inputs) if val_inputs else []
  if not train_files:
    raise UserError(f"--input={','.join(train_inputs)} names no files")
  if val_inputs and not val_files:
    raise UserError(f"--val_input={','.join(val_inputs)} names no files")
  train = read_examples(train_files)
  labels = label_set(train, opts.labels)
  train_ids = label_ids(train, labels, "the training data" if not opts.labels else "--labels")
  if val_files:
    val = read_examples(val_files)
    val_ids = label_ids(val, labels, "the training data" if not opts.labels else "--labels")
    examples = [(e, y, "train") for e, y in zip(train, train_ids)] + [(e, y, "val") for e, y in zip(val, val_ids)]
  else:
    is_val = sft.val_split(len(train), opts.val_fraction, opts.seed)
    examples = [(e, y, "val" if v else "train") for e, y, v in zip(train, train_ids, is_val)]
  tok, source_meta = load_tokenizer(tokenizer_from)
  encode = Encoder(tok, opts.max_len)
  stats = collections.Counter()
  with atomic_directory(output) as tmp:
    writers = {s: shards.SplitWriter(tmp, s) for s in SPLITS}
    per_class = {s: collections.Counter() for s in SPLITS}
    for e, y, split in examples:
      ids, types, truncated = encode(e)
      if truncated and opts.overlong == "drop":
        stats["dropped_overlong"] += 1
        continue
      stats["truncated"] += truncated
      stats["examples"] += 1
      writers[split].write(ids, types, label=y)
      per_class[split][labels[y]] += 1
    for split, writer in writers.items():
      if not writer.lengths:
        raise UserError(f"no {split} examples are left (after dropping {stats['dropped_overlong']} over "
                        f"--max_len={opts.max_len}); give more data or a larger --max_len")
    splits = {s: {**w.close(), "per_label": dict(sorted(per_class[s].items()))} for s, w in writers.items()}
    tokenizer_file = os.path.basename(tok.path)
    shutil.copyfile(tok.path, os.path.join(tmp, tokenizer_file))
    config_file = os.path.join(os.path.dirname(tok.path), "tokenizer_config.json")
    if os.path.isfile(config_file):  # how the model's tokenizer is configured travels with it
      shutil.copyfile(config_file, os.path.join(tmp, "tokenizer_config.json"))
    meta = {
        "format": shards.FORMAT,
        "kind": "classification",
        "fields": ["tokens", "token_types", "label"],
        "labels": labels,
        "tokenizer": tokenizer_file,
        "tokenizer_kind": tok.kind,
        "vocab_size": tok.vocab_size,
        "bos_id": tok.bos_id,
        "add_bos": tok.add_bos,
        "eos_id": tok.eos_id,
        "encoding": "post_processor" if encode.native else "text_then_eos",
        "tokenizer_from": os.path.abspath(tokenizer_from),
        "splits": splits,
        "counts": dict(stats),
        "inputs": {f: file_sha256(f) for f in train_files + val_files},
        "options": {**dataclasses.asdict(opts), "labels": list(opts.labels)},
    }
    if source_meta is not None:  # a tokenizer of ours: its special ids, as the dataset recorded them
      meta.update({k: source_meta[k] for k in ("mask_id", "cls_id", "sep_id", "pad_id") if k in source_meta})
    write_json_atomic(os.path.join(tmp, shards.METADATA), meta)
  return meta
