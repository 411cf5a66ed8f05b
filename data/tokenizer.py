"""Tokenizers: train a sentencepiece model, or load sentencepiece / HF `tokenizer.json`.

Everything downstream sees one small interface (`Tokenizer`), so a dataset can
be tokenized with a model we trained or with an existing model's tokenizer.

Texts are encoded exactly as `transformers` (5.x) `AutoTokenizer` encodes them
for the same files, so data, SFT examples, prompts and chat turns prepared here
are what every `transformers` user feeds the model:
- tokenizer.model (LlamaTokenizer): a `tokenizers` BPE over the model's pieces
  (merges ranked by piece id), no normalizer, Metaspace with prepend_scheme
  "first" -- a "▁" only at the very start of the text, not after special
  tokens ("always" with `legacy: true`, none with `add_prefix_space: false`),
  byte fallback. Control pieces (<s>, </s>) are special added tokens,
  user-defined pieces (e.g. "\n") plain added tokens; the config's bos/eos/unk
  (default <s>, </s>, <unk>) are matched in text too. BOS is added only with
  `add_bos_token: true` (LlamaTokenizer's default in transformers 5 is off).
- tokenizer.json: used as it is, plus the config's special tokens; BOS/EOS as
  its post-processor adds them, unless the config sets add_bos_token /
  add_eos_token (then those decide). With tokenizer_class LlamaTokenizer,
  transformers keeps only its vocabulary and merges and rebuilds the pipeline
  above; so do we.
- a file with a tokenizer_config.json beside it (a model's, or a dataset
  prepared with a model's tokenizer, which keeps that config): as its directory.
- a bare file (our datasets' tokenizers): a sentencepiece model adds BOS, as our
  datasets and exports do; a tokenizer.json adds what its post-processor adds.
Documents (`encode_batch`, pretraining data) never match special tokens: a
literal "</s>" in a source file stays text, as sentencepiece encodes it.
"""

import dataclasses
import functools
import json
import os

import sentencepiece as spm

from errors import UserError

# Ids of the special pieces in tokenizers we train.
UNK_ID, BOS_ID, EOS_ID = 0, 1, 2
# With `encoder_specials` (masked-LM encoders), BOS/EOS are [CLS]/[SEP] (ids 1, 2), so packed documents
# read "[CLS] doc [SEP]", and [PAD], [MASK] follow as control pieces (ids 3, 4).
CLS, SEP, PAD, MASK = "[CLS]", "[SEP]", "[PAD]", "[MASK]"
PAD_ID = 3
# How tokenizers spell them: BERT's WordPiece and ours ("[MASK]"), RoBERTa's BPE ("<mask>").
_ENCODER_SPECIALS = {"mask_id": (MASK, "<mask>"), "cls_id": (CLS, "<s>"), "sep_id": (SEP, "</s>"),
                     "pad_id": (PAD, "<pad>")}


def train_sentencepiece(lines_file: str, model_prefix: str, vocab_size: int, seed: int = 0,
                        model_type: str = "bpe", byte_fallback: bool = True,
                        user_defined_symbols: tuple[str, ...] = (), max_sentences: int = 300_000,
                        encoder_specials: bool = False, sentinels: int = 0) -> str:
  """Trains a tokenizer for text or code; returns the path of the .model file.

  Whitespace is kept verbatim (identity normalization, no whitespace collapsing)
  and "\\n" is a piece of its own, so code round-trips exactly; with byte
  fallback nothing is ever <unk>. `user_defined_symbols` (e.g. chat markers)
  are always single pieces. `encoder_specials` reserves what a masked-LM encoder
  needs: BOS/EOS become [CLS]/[SEP], plus [PAD] and [MASK] -- control pieces, so a
  literal "[MASK]" in a document stays text. `sentinels` reserves T5's span-corruption
  sentinels at the end of the vocabulary, <extra_id_0> = vocab_size - 1 and down (as T5's
  tokenizer has them), out of the `vocab_size` pieces.
  """
  if model_type not in ("bpe", "unigram"):
    raise UserError(f"tokenizer model_type={model_type!r}; expected 'bpe' or 'unigram'")
  spm.set_random_generator_seed(seed)
  symbols = ["\n"] + [s for s in user_defined_symbols if s and s != "\n"]
  specials = dict(bos_piece=CLS, eos_piece=SEP, pad_piece=PAD, pad_id=PAD_ID, control_symbols=[MASK]) \
      if encoder_specials else dict(pad_id=-1)
  try:
    spm.SentencePieceTrainer.train(
        input=lines_file, model_prefix=model_prefix, vocab_size=vocab_size - sentinels, model_type=model_type,
        character_coverage=0.9995, byte_fallback=byte_fallback, normalization_rule_name="identity",
        remove_extra_whitespaces=False, allow_whitespace_only_pieces=True, split_digits=True,
        user_defined_symbols=symbols, input_sentence_size=max_sentences, shuffle_input_sentence=True,
        max_sentence_length=4096, unk_id=UNK_ID, bos_id=BOS_ID, eos_id=EOS_ID, **specials,
        num_threads=os.cpu_count() or 1, minloglevel=2)
  except RuntimeError as e:
    raise UserError(f"sentencepiece training failed: {e}") from None
  _strip_paths(model_prefix + ".model", sentinels)
  return model_prefix + ".model"


def encoder_special_ids(tok: "Tokenizer") -> dict:
  """{"mask_id", "cls_id", "sep_id", "pad_id"} of a tokenizer with a mask token (those it has); {} without one.

  A dataset's metadata records them, so masked-LM training finds its mask id there.
  """
  found = {}
  for key, pieces in _ENCODER_SPECIALS.items():
    ids = [i for i in (tok.token_to_id(p) for p in pieces) if i is not None]
    if ids:
      found[key] = ids[0]
  return found if "mask_id" in found else {}


def special_ids(tok: "Tokenizer") -> list[int]:
  """Ids of the tokenizer's special tokens (control pieces, special added tokens, unk, bos, eos), sorted."""
  ids = {i for i, t in tok.backend.get_added_tokens_decoder().items() if t.special}
  ids |= {i for i in (tok.unk_id, tok.bos_id, tok.eos_id) if i is not None}
  return sorted(ids)


def _strip_paths(model_file: str, sentinels: int = 0) -> None:
  """Drops the (temporary) training paths sentencepiece records in the model, so the
  same data always gives a byte-identical tokenizer; appends `sentinels` sentinel pieces,
  the last one <extra_id_0>."""
  from sentencepiece import sentencepiece_model_pb2
  proto = sentencepiece_model_pb2.ModelProto()
  with open(model_file, "rb") as f:
    proto.ParseFromString(f.read())
  del proto.trainer_spec.input[:]
  proto.trainer_spec.model_prefix = ""
  for i in reversed(range(sentinels)):
    proto.pieces.add(piece=f"<extra_id_{i}>", score=0.0, type=_USER_DEFINED)
  proto.trainer_spec.vocab_size = len(proto.pieces)
  with open(model_file, "wb") as f:
    f.write(proto.SerializeToString())


# sentencepiece piece types (sentencepiece_model.proto): CONTROL pieces (<s>, </s>)
# and USER_DEFINED ones (e.g. "\n", chat markers) are matched in text as whole tokens.
_CONTROL, _USER_DEFINED = 3, 4
_SP_BPE = 2
# What transformers' LlamaTokenizer takes when tokenizer_config.json names no token.
_LLAMA_SPECIALS = {"unk_token": "<unk>", "bos_token": "<s>", "eos_token": "</s>"}
_LLAMA_CLASSES = ("LlamaTokenizer", "LlamaTokenizerFast")
# A tokenizer.json alone does not say which token is BOS/EOS: the usual names.
_BOS_CANDIDATES = ("<s>", "<|begin_of_text|>", "<bos>", "[CLS]")
_EOS_CANDIDATES = ("</s>", "<|end_of_text|>", "<|endoftext|>", "<eos>", "[SEP]")


@dataclasses.dataclass
class Tokenizer:
  """A loaded tokenizer: sentencepiece (`.model`) or HF tokenizers (`tokenizer.json`).

  Every text is encoded by `backend`, a `tokenizers.Tokenizer` built the way
  `transformers` (5.x) builds it for the same files, so ids agree with
  `AutoTokenizer` token for token: a sentencepiece model becomes
  LlamaTokenizer's pipeline (BPE over the model's pieces, Metaspace with the
  "first" prepend scheme, control and user-defined pieces as added tokens), and
  the special tokens of tokenizer_config.json are matched in text. `impl` is
  the file's own reader (a SentencePieceProcessor, or the backend itself).

  `add_bos`: whether the tokenizer itself starts a text with BOS (the
  post-processor's, as `tok(text)` does; `add_bos_token` in tokenizer_config.json).
  """
  path: str
  kind: str  # "sentencepiece" | "hf": the file's format
  impl: object
  vocab_size: int
  bos_id: int | None
  eos_id: int | None
  backend: object = None
  add_bos: bool = False

  def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
    """Token ids; with add_special_tokens, what the tokenizer adds around a text (BOS where it does)."""
    return list(self.backend.encode(text, add_special_tokens=add_special_tokens).ids)

  def encode_batch(self, texts: list[str]) -> list[list[int]]:
    """Documents' ids (no BOS added). A document's text is only text: a literal "<s>" or "</s>"
    (HTML, docs about tokenizers) is characters, never a control id; non-special added
    tokens (e.g. sentencepiece's user-defined "\n") are still matched."""
    # One thread: data preparation parallelizes over processes, and tokenizers'
    # thread pool would be disabled (with a warning) in every forked worker.
    backend = self._document_backend
    return [list(backend.encode(text, add_special_tokens=False).ids) for text in texts]

  @functools.cached_property
  def _document_backend(self):
    return _plain_text_backend(self.backend)

  def encode_with_offsets(self, text: str) -> tuple[list[int], list[int]]:
    """Token ids of the whole text (no BOS added) and each token's start as a character index."""
    enc = self.backend.encode(text, add_special_tokens=False)
    return list(enc.ids), [start for start, _ in enc.offsets]

  def decode(self, ids: list[int]) -> str:
    return self.backend.decode(list(ids), skip_special_tokens=False)

  def token_to_id(self, token: str) -> int | None:
    return self.backend.token_to_id(token)

  def id_to_token(self, i: int) -> str | None:
    return self.backend.id_to_token(i)

  @property
  def unk_id(self) -> int | None:
    if self.kind == "sentencepiece":
      return self.impl.unk_id()
    unk = getattr(self.backend.model, "unk_token", None)
    return self.backend.token_to_id(unk) if unk else None


# Appended to a special token's piece in a document backend's model: text never holds it.
_UNREACHABLE = "\u0000\uffff"


def _plain_text_backend(backend):
  """A copy of `backend` that makes no special token out of text, as sentencepiece never does.

  Special added tokens are not matched (`encode_special_tokens`), and their pieces are renamed
  in the model, where they may also sit (sentencepiece's control pieces, score 0: a unigram
  lattice would pick "<s>" from the text "<s>") or be a merge's result. Non-special added
  tokens (user-defined "\n") are still matched.
  """
  from tokenizers import Tokenizer as Backend
  spec = json.loads(backend.to_str())
  specials = {t["content"] for t in spec.get("added_tokens", []) if t.get("special")}
  hide = lambda piece: piece + _UNREACHABLE if piece in specials else piece
  model = spec["model"]
  if model.get("type") == "Unigram":
    model["vocab"] = [[hide(piece), score] for piece, score in model["vocab"]]
  elif model.get("type") == "BPE":
    model["vocab"] = {hide(piece): i for piece, i in model["vocab"].items()}
    pairs = [m.split(" ", 1) if isinstance(m, str) else m for m in model.get("merges", [])]
    model["merges"] = [m for m in pairs if not specials & {m[0], m[1], m[0] + m[1]}]
    if model.get("unk_token"):
      model["unk_token"] = hide(model["unk_token"])
  plain = Backend.from_str(json.dumps(spec))
  plain.encode_special_tokens = True
  return plain


def _hf_special_id(tok, candidates) -> int | None:
  for piece in candidates:
    i = tok.token_to_id(piece)
    if i is not None:
      return i
  return None


def _sentencepiece_proto(path: str):
  from sentencepiece import sentencepiece_model_pb2
  proto = sentencepiece_model_pb2.ModelProto()
  try:
    with open(path, "rb") as f:
      proto.ParseFromString(f.read())
  except Exception as e:  # protobuf's DecodeError, or a truncated file
    raise UserError(f"tokenizer file {path} is not a sentencepiece model: {e}") from None
  if not proto.pieces:
    raise UserError(f"tokenizer file {path} is not a sentencepiece model: it has no pieces")
  return proto


def _bpe_merges(vocab: dict[str, int]) -> list[tuple[str, str]]:
  """Merges that make a BPE over sentencepiece's pieces tokenize as sentencepiece does.

  transformers' generate_merges: every split of a piece into two pieces, ranked
  by the merged piece's id (sentencepiece scores BPE pieces by rank), then by
  the pieces' lengths and ids.
  """
  merges = []
  for piece, rank in vocab.items():
    local = [(piece[:k], piece[k:], rank) for k in range(1, len(piece))
             if piece[:k] in vocab and piece[k:] in vocab]
    merges += sorted(local, key=lambda m: (vocab[m[0]], vocab[m[1]]))
  merges.sort(key=lambda m: (m[2], len(m[0]), len(m[1])))
  return [(left, right) for left, right, _ in merges]


def _sentencepiece_backend(proto, legacy: bool = False, add_prefix_space: bool = True):
  """LlamaTokenizer's tokenizers pipeline for a sentencepiece model (unigram models keep unigram).

  Control and user-defined pieces become added tokens (special and not), as
  transformers' SentencePieceExtractor makes them.
  """
  from tokenizers import AddedToken, Tokenizer as Backend, models
  spec = proto.trainer_spec
  unk = proto.pieces[spec.unk_id].piece if 0 <= spec.unk_id < len(proto.pieces) else None
  if spec.model_type == _SP_BPE:
    vocab = {p.piece: i for i, p in enumerate(proto.pieces)}
    model = models.BPE(vocab, _bpe_merges(vocab), unk_token=unk, fuse_unk=True, byte_fallback=True)
  else:
    model = models.Unigram([(p.piece, p.score) for p in proto.pieces], unk_id=spec.unk_id,
                           byte_fallback=spec.byte_fallback)
  backend = Backend(model)
  _llama_pipeline(backend, legacy, add_prefix_space)
  backend.add_tokens([AddedToken(p.piece, special=p.type == _CONTROL, normalized=False)
                      for p in proto.pieces if p.type in (_CONTROL, _USER_DEFINED)])
  return backend


def _added_token(value, special: bool = True):
  """An AddedToken from a token string or tokenizer_config.json's {"content", "lstrip", ...} form."""
  from tokenizers import AddedToken
  if isinstance(value, dict):
    flags = {k: value[k] for k in ("single_word", "lstrip", "rstrip", "normalized", "special") if k in value}
    return AddedToken(value["content"], **{"special": special, "normalized": False, **flags})
  return AddedToken(value, special=special, normalized=False)


def _add_special_strings(backend, tokens) -> None:
  """Tokens named in tokenizer_config.json are matched in text, as transformers adds them."""
  known = {t.content for t in backend.get_added_tokens_decoder().values()}
  new = [_added_token(t) for t in tokens if t and _token_string(t) and _token_string(t) not in known]
  backend.add_tokens(new)


def _set_post_processor(backend, bos: str | None, eos: str | None, add_bos: bool, add_eos: bool) -> None:
  """transformers' update_post_processor: BOS and/or EOS around every text, as configured."""
  from tokenizers import processors
  bos = bos if add_bos and bos and backend.token_to_id(bos) is not None else None
  eos = eos if add_eos and eos and backend.token_to_id(eos) is not None else None
  single = " ".join(([f"{bos}:0"] if bos else []) + ["$A:0"] + ([f"{eos}:0"] if eos else []))
  pair = single + " " + " ".join(([f"{bos}:1"] if bos else []) + ["$B:1"] + ([f"{eos}:1"] if eos else []))
  backend.post_processor = processors.TemplateProcessing(
      single=single, pair=pair, special_tokens=[(t, backend.token_to_id(t)) for t in (bos, eos) if t])


def _prefix(backend) -> list[int]:
  """The ids the post-processor puts before a text."""
  plain = backend.encode("x", add_special_tokens=False).ids
  full = backend.encode("x", add_special_tokens=True).ids
  for k in range(len(full) - len(plain) + 1):
    if full[k:k + len(plain)] == plain:
      return list(full[:k])
  return []


def _finish(path: str, kind: str, impl, backend, vocab_size: int, bos_id, eos_id) -> Tokenizer:
  """A Tokenizer whose add_bos (and, if unnamed, bos_id) follow the backend's post-processor."""
  prefix = _prefix(backend)
  if len(prefix) == 1 and bos_id is None:
    bos_id = prefix[0]
  return Tokenizer(path, kind, impl, vocab_size, bos_id, eos_id, backend,
                   add_bos=bos_id is not None and prefix[:1] == [bos_id])


def _load_json(path: str):
  import tokenizers
  try:
    return tokenizers.Tokenizer.from_file(path)
  except Exception as e:  # tokenizers raises a bare Exception on bad JSON
    raise UserError(f"tokenizer file {path} is not an HF tokenizer.json: {e}") from None


def _load_sentencepiece(path: str):
  try:
    sp = spm.SentencePieceProcessor(model_file=path)
  except (OSError, RuntimeError) as e:
    raise UserError(f"tokenizer file {path} is not a sentencepiece model: {e}") from None
  return sp, _sentencepiece_proto(path)


def load(path: str) -> Tokenizer:
  """A tokenizer file. With a tokenizer_config.json beside it (a model directory's file, or a
  dataset prepared with one), exactly as `load_dir` (transformers) loads it with that config.
  On its own: a sentencepiece model adds BOS (as our datasets are made); a tokenizer.json adds
  what its post-processor adds."""
  if not os.path.isfile(path):
    raise UserError(f"tokenizer file {path} does not exist")
  config_file = os.path.join(os.path.dirname(path), "tokenizer_config.json")
  if os.path.isfile(config_file):
    return _load_configured(path, tokenizer_config(os.path.dirname(path) or "."))
  if path.endswith(".json"):
    backend = _load_json(path)
    return _finish(path, "hf", backend, backend, backend.get_vocab_size(with_added_tokens=True),
                   _hf_special_id(backend, _BOS_CANDIDATES), _hf_special_id(backend, _EOS_CANDIDATES))
  sp, proto = _load_sentencepiece(path)
  backend = _sentencepiece_backend(proto)
  unk, bos, eos = (sp.id_to_piece(i) if i >= 0 else None for i in (sp.unk_id(), sp.bos_id(), sp.eos_id()))
  _add_special_strings(backend, [unk, bos, eos])  # as the exported model's tokenizer_config.json names them
  _set_post_processor(backend, bos, eos, add_bos=True, add_eos=False)
  return _finish(path, "sentencepiece", sp, backend, sp.vocab_size(),
                 sp.bos_id() if bos else None, sp.eos_id() if eos else None)


def _token_string(value) -> str | None:
  """tokenizer_config.json writes special tokens as strings or as {"content": ...}."""
  return value.get("content") if isinstance(value, dict) else value


def tokenizer_config(model_dir: str) -> dict:
  path = os.path.join(model_dir, "tokenizer_config.json")
  if not os.path.isfile(path):
    return {}
  try:
    with open(path) as f:
      config = json.load(f)
  except (OSError, ValueError) as e:
    raise UserError(f"{path} is not valid JSON: {e}") from None
  if not isinstance(config, dict):
    raise UserError(f"{path}: expected a JSON object")
  return config


def special_token_strings(model_dir: str) -> dict:
  """{"bos_token", "eos_token"} strings a chat template sees: tokenizer_config.json's, or for a
  sentencepiece-only directory LlamaTokenizer's defaults ("<s>", "</s>"), as transformers renders."""
  config = tokenizer_config(model_dir)
  if not os.path.isfile(os.path.join(model_dir, "tokenizer.json")):
    config = {**_LLAMA_SPECIALS, **config}
  return {k: _token_string(config.get(k)) or "" for k in ("bos_token", "eos_token")}


def _config_specials(config: dict) -> list:
  """Every token tokenizer_config.json names (added_tokens_decoder, the special tokens), in transformers' order."""
  decoder = config.get("added_tokens_decoder") or {}
  added = [t for _, t in sorted(decoder.items(), key=lambda kv: int(kv[0]))] if isinstance(decoder, dict) else []
  named = [config.get(k) for k in
           ("bos_token", "eos_token", "unk_token", "pad_token", "sep_token", "cls_token", "mask_token")]
  extra = config.get("additional_special_tokens") or config.get("extra_special_tokens") or []
  extra = list(extra.values()) if isinstance(extra, dict) else list(extra)
  return [t for t in added + named + extra if isinstance(_token_string(t), str)]


def load_dir(model_dir: str) -> Tokenizer:
  """The tokenizer of a Hugging Face model directory, as `transformers.AutoTokenizer` loads it.

  tokenizer.json is used as it is (with LlamaTokenizer's pre-tokenizer when
  tokenizer_config.json names that class, which transformers rebuilds);
  tokenizer.model becomes LlamaTokenizer's pipeline. bos/eos come from
  tokenizer_config.json when it names them, and BOS is added where the
  tokenizer adds it: `add_bos_token` (LlamaTokenizer's default is False), else
  tokenizer.json's post-processor.
  """
  json_file, model_file = (os.path.join(model_dir, n) for n in ("tokenizer.json", "tokenizer.model"))
  found = [f for f in (json_file, model_file) if os.path.isfile(f)]
  if not found:
    raise UserError(f"{model_dir} has neither tokenizer.json nor tokenizer.model")
  return _load_configured(found[0], tokenizer_config(model_dir))


def _load_configured(path: str, config: dict) -> Tokenizer:
  """A tokenizer file (tokenizer.json, else a sentencepiece model) as transformers loads it with `config`."""
  llama = config.get("tokenizer_class") in _LLAMA_CLASSES
  legacy, prefix_space = bool(config.get("legacy", False)), config.get("add_prefix_space") is not False
  if path.endswith(".json"):
    kind, backend = "hf", _load_json(path)
    impl = backend
    if llama and type(backend.model).__name__ == "BPE":
      backend.model = _llama_bpe(path)
      _llama_pipeline(backend, legacy, prefix_space)
  else:
    kind = "sentencepiece"
    impl, proto = _load_sentencepiece(path)
    backend = _sentencepiece_backend(proto, legacy, prefix_space)
    config = {**_LLAMA_SPECIALS, **config}
  _add_special_strings(backend, _config_specials(config))
  bos, eos = (_token_string(config.get(k)) for k in ("bos_token", "eos_token"))
  if kind == "sentencepiece" or "add_bos_token" in config or "add_eos_token" in config or backend.post_processor is None:
    _set_post_processor(backend, bos, eos, bool(config.get("add_bos_token", False)),
                        bool(config.get("add_eos_token", False)))
  bos_id = backend.token_to_id(bos) if bos else _hf_special_id(backend, _BOS_CANDIDATES)
  eos_id = backend.token_to_id(eos) if eos else _hf_special_id(backend, _EOS_CANDIDATES)
  vocab_size = impl.vocab_size() if kind == "sentencepiece" else backend.get_vocab_size(with_added_tokens=True)
  return _finish(path, kind, impl, backend, vocab_size, bos_id, eos_id)


def _llama_bpe(json_file: str):
  """The BPE transformers' LlamaTokenizer rebuilds from a tokenizer.json's vocabulary and merges:
  byte fallback and no unknown token (a character with neither a piece nor byte pieces is dropped)."""
  from tokenizers import models
  with open(json_file, encoding="utf-8") as f:
    model = json.load(f)["model"]
  merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model.get("merges", [])]
  return models.BPE(model["vocab"], merges, fuse_unk=True, byte_fallback=True)


def _llama_pipeline(backend, legacy: bool, add_prefix_space: bool) -> None:
  """LlamaTokenizer's normalizer, pre-tokenizer and decoder around `backend`'s model.

  legacy=True prepends "\u2581" to every text segment between added tokens, as
  sentencepiece itself and transformers' legacy Llama tokenizer do; otherwise
  (transformers' default) only the very start of the text gets it.
  """
  from tokenizers import decoders, pre_tokenizers
  backend.normalizer = None
  scheme = ("always" if legacy else "first") if add_prefix_space else "never"
  backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme=scheme, split=False)
  steps = [decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse()]
  backend.decoder = decoders.Sequence(steps + ([decoders.Strip(content=" ", left=1)] if add_prefix_space else []))
