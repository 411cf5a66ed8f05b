"""Tokenizers: train a sentencepiece model, or load sentencepiece / HF `tokenizer.json`.

Everything downstream sees one small interface (`Tokenizer`), so a dataset can
be tokenized with a model we trained or with an existing model's tokenizer.
"""

import dataclasses
import json
import os
import re

import sentencepiece as spm

from errors import UserError

# Ids of the special pieces in tokenizers we train.
UNK_ID, BOS_ID, EOS_ID = 0, 1, 2


def train_sentencepiece(lines_file: str, model_prefix: str, vocab_size: int, seed: int = 0,
                        model_type: str = "bpe", byte_fallback: bool = True,
                        user_defined_symbols: tuple[str, ...] = (), max_sentences: int = 300_000) -> str:
  """Trains a tokenizer for text or code; returns the path of the .model file.

  Whitespace is kept verbatim (identity normalization, no whitespace collapsing)
  and "\\n" is a piece of its own, so code round-trips exactly; with byte
  fallback nothing is ever <unk>. `user_defined_symbols` (e.g. chat markers)
  are always single pieces.
  """
  if model_type not in ("bpe", "unigram"):
    raise UserError(f"tokenizer model_type={model_type!r}; expected 'bpe' or 'unigram'")
  spm.set_random_generator_seed(seed)
  symbols = ["\n"] + [s for s in user_defined_symbols if s and s != "\n"]
  try:
    spm.SentencePieceTrainer.train(
        input=lines_file, model_prefix=model_prefix, vocab_size=vocab_size, model_type=model_type,
        character_coverage=0.9995, byte_fallback=byte_fallback, normalization_rule_name="identity",
        remove_extra_whitespaces=False, allow_whitespace_only_pieces=True, split_digits=True,
        user_defined_symbols=symbols, input_sentence_size=max_sentences, shuffle_input_sentence=True,
        max_sentence_length=4096, unk_id=UNK_ID, bos_id=BOS_ID, eos_id=EOS_ID, pad_id=-1,
        num_threads=os.cpu_count() or 1, minloglevel=2)
  except RuntimeError as e:
    raise UserError(f"sentencepiece training failed: {e}") from None
  _strip_paths(model_prefix + ".model")
  return model_prefix + ".model"


def _strip_paths(model_file: str) -> None:
  """Drops the (temporary) training paths sentencepiece records in the model, so the
  same data always gives a byte-identical tokenizer."""
  from sentencepiece import sentencepiece_model_pb2
  proto = sentencepiece_model_pb2.ModelProto()
  with open(model_file, "rb") as f:
    proto.ParseFromString(f.read())
  del proto.trainer_spec.input[:]
  proto.trainer_spec.model_prefix = ""
  with open(model_file, "wb") as f:
    f.write(proto.SerializeToString())


@dataclasses.dataclass
class Tokenizer:
  """A loaded tokenizer: sentencepiece (`.model`) or HF tokenizers (`tokenizer.json`)."""
  path: str
  kind: str  # "sentencepiece" | "hf"
  impl: object
  vocab_size: int
  bos_id: int | None
  eos_id: int | None

  def encode_batch(self, texts: list[str]) -> list[list[int]]:
    if self.kind == "sentencepiece":
      return self.impl.encode(texts, num_threads=1)
    return [e.ids for e in self.impl.encode_batch(texts, add_special_tokens=False)]

  def encode_with_offsets(self, text: str) -> tuple[list[int], list[int]]:
    """Token ids of the whole text and each token's start as a character index."""
    if self.kind == "hf":
      enc = self.impl.encode(text, add_special_tokens=False)
      return list(enc.ids), [start for start, _ in enc.offsets]
    ids, starts = [], []
    # sentencepiece reads "<s>" in text as characters; a chat template's bos/eos
    # strings must become the control ids, as HF tokenizers' special tokens do.
    specials = {self.impl.id_to_piece(i): i for i in (self.bos_id, self.eos_id) if i is not None}
    pattern = "(" + "|".join(re.escape(p) for p in specials) + ")" if specials else None
    offset = 0
    for part in (re.split(pattern, text) if pattern else [text]):
      if part in specials:
        ids.append(specials[part])
        starts.append(offset)
      elif part:
        part_ids, part_starts = self._sentencepiece_offsets(part)
        ids += part_ids
        starts += [offset + s for s in part_starts]
      offset += len(part)
    return ids, starts

  def _sentencepiece_offsets(self, text: str) -> tuple[list[int], list[int]]:
    proto = self.impl.encode(text, return_type="proto")
    byte_to_char = {}  # sentencepiece reports UTF-8 byte offsets
    position = 0
    for i, ch in enumerate(text):
      byte_to_char[position] = i
      position += len(ch.encode())
    byte_to_char[position] = len(text)
    starts, last = [], 0
    for piece in proto.pieces:
      last = byte_to_char.get(piece.begin, last)  # byte-fallback pieces inside a character keep its start
      starts.append(last)
    return [piece.id for piece in proto.pieces], starts

  def decode(self, ids: list[int]) -> str:
    if self.kind == "sentencepiece":
      return self.impl.decode(ids)
    return self.impl.decode(ids, skip_special_tokens=False)


def _hf_special_id(tok, candidates) -> int | None:
  for piece in candidates:
    i = tok.token_to_id(piece)
    if i is not None:
      return i
  return None


def load(path: str) -> Tokenizer:
  if not os.path.isfile(path):
    raise UserError(f"tokenizer file {path} does not exist")
  if path.endswith(".json"):
    import tokenizers
    try:
      tok = tokenizers.Tokenizer.from_file(path)
    except Exception as e:  # tokenizers raises a bare Exception on bad JSON
      raise UserError(f"tokenizer file {path} is not an HF tokenizer.json: {e}") from None
    return Tokenizer(path, "hf", tok, tok.get_vocab_size(with_added_tokens=True),
                     _hf_special_id(tok, ("<s>", "<|begin_of_text|>", "<bos>", "[CLS]")),
                     _hf_special_id(tok, ("</s>", "<|end_of_text|>", "<|endoftext|>", "<eos>", "[SEP]")))
  try:
    sp = spm.SentencePieceProcessor(model_file=path)
  except (OSError, RuntimeError) as e:
    raise UserError(f"tokenizer file {path} is not a sentencepiece model: {e}") from None
  return Tokenizer(path, "sentencepiece", sp, sp.vocab_size(),
                   sp.bos_id() if sp.bos_id() >= 0 else None, sp.eos_id() if sp.eos_id() >= 0 else None)


def _token_string(value) -> str | None:
  """tokenizer_config.json writes special tokens as strings or as {"content": ...}."""
  return value.get("content") if isinstance(value, dict) else value


def special_token_strings(model_dir: str) -> dict:
  """{"bos_token", "eos_token"} strings from a model directory's tokenizer_config.json."""
  path = os.path.join(model_dir, "tokenizer_config.json")
  config = {}
  if os.path.isfile(path):
    with open(path) as f:
      config = json.load(f)
  return {k: _token_string(config.get(k)) or "" for k in ("bos_token", "eos_token")}


def load_dir(model_dir: str) -> Tokenizer:
  """The tokenizer of a Hugging Face model directory (tokenizer.json or tokenizer.model).

  bos/eos come from tokenizer_config.json when it names them.
  """
  for name in ("tokenizer.json", "tokenizer.model"):
    if os.path.isfile(os.path.join(model_dir, name)):
      tok = load(os.path.join(model_dir, name))
      break
  else:
    raise UserError(f"{model_dir} has neither tokenizer.json nor tokenizer.model")
  for field, token in special_token_strings(model_dir).items():
    if token:
      i = tok.impl.token_to_id(token) if tok.kind == "hf" else tok.impl.piece_to_id(token)
      if i is not None and (tok.kind == "hf" or tok.impl.id_to_piece(i) == token):
        setattr(tok, field.replace("_token", "_id"), i)
  return tok
