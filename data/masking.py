"""Dynamic BERT masking of packed rows, seeded per row so that runs resume exactly.

Of a row's maskable tokens (not padding, segment 0, and not a special token
such as [CLS], [SEP], [PAD], [MASK], BOS, EOS), a fraction `rate` is chosen.
Each chosen token becomes [MASK] with probability 0.8, a random non-special
token with 0.1, and stays itself with 0.1 (Devlin et al. 2019). The model
predicts the original token at every chosen position (`target_weights` 1).
The count is rate * maskable tokens, rounded up or down at random so that its
expectation is exact even for short rows.

Whole-word masking chooses words instead of tokens: a word is a token that
starts one (a "▁" or "Ġ" prefix, or for WordPiece no "##" prefix), with the
tokens that continue it; whitespace-only pieces are words of their own.
Words are taken in random order while they fit into the token count, and the
80/10/10 choice is then made per token, as Google's BERT whole-word masking does.

Randomness is drawn from a Philox generator keyed by (seed, stream, the row's
global index in the packed stream). That index already counts epochs (row g is
epoch g // rows_per_epoch of the packing), so:
  * a row gets the same masking whichever process, device or grain worker reads it;
  * a resumed run (grain's iterator state restored) re-draws exactly the masks a
    straight run drew;
  * evaluation rows (stream "eval") get one fixed masking, the same every evaluation;
  * a document meets a new masking every epoch (it lands in other rows), i.e.
    RoBERTa's dynamic masking.
"""

import dataclasses
import functools
import os

import grain
import numpy as np

from errors import UserError

STREAMS = ("train", "eval")
_MASK64 = (1 << 64) - 1
# Characters of whitespace in sentencepiece ("▁") and byte-level BPE ("Ġ" space, "Ċ" newline, "ĉ" tab, "č" CR).
_WHITESPACE = set(" \t\r\n\u2581\u0120\u010a\u0109\u010d")


@dataclasses.dataclass(frozen=True)
class MaskSpec:
  """How rows are masked. Ids index the dataset tokenizer's vocabulary [0, vocab_size)."""
  mask_id: int
  vocab_size: int
  special_ids: tuple[int, ...]      # never masked, never drawn as a random replacement
  rate: float = 0.15                # fraction of maskable tokens chosen
  whole_word: bool = False
  seed: int = 0
  mask_fraction: float = 0.8        # of chosen tokens: replaced by mask_id
  random_fraction: float = 0.1      # replaced by a random non-special token; the rest stay
  # Whole-word masking: pieces that continue the previous token's word, and pieces that are a word
  # by themselves (whitespace only, after which a new word starts). Computed once from the vocabulary.
  continuation_ids: tuple[int, ...] = dataclasses.field(default=(), repr=False)
  standalone_ids: tuple[int, ...] = dataclasses.field(default=(), repr=False)

  def __post_init__(self):
    if not 0.0 < self.rate <= 1.0:
      raise ValueError(f"MaskSpec.rate={self.rate}; expected 0 < rate <= 1")
    if self.mask_fraction < 0 or self.random_fraction < 0 or self.mask_fraction + self.random_fraction > 1:
      raise ValueError(f"MaskSpec mask_fraction={self.mask_fraction}, random_fraction={self.random_fraction}; "
                       f"expected non-negative fractions summing to at most 1")
    if not 0 <= self.mask_id < self.vocab_size:
      raise ValueError(f"MaskSpec.mask_id={self.mask_id} is outside the vocabulary of {self.vocab_size}")

  # Lookup tables, built once per process (cached_property writes the instance's __dict__ directly).
  def source_len(self, seq_len: int) -> int:
    """Tokens per packed row the pipeline reads: masking keeps a row's length."""
    return seq_len

  def rows_map(self, stream: str) -> "MaskRows":
    """The grain transform that masks rows of `stream` (the pipeline's protocol, shared with SpanSpec)."""
    return MaskRows(self, stream)

  @functools.cached_property
  def _special(self) -> np.ndarray:
    return _flags(self.vocab_size, self.special_ids + (self.mask_id,))

  @functools.cached_property
  def _candidates(self) -> np.ndarray:
    return np.flatnonzero(~self._special).astype(np.int32)

  @functools.cached_property
  def _continues(self) -> np.ndarray:
    return _flags(self.vocab_size, self.continuation_ids)

  @functools.cached_property
  def _standalone(self) -> np.ndarray:
    return _flags(self.vocab_size, self.standalone_ids) | self._special


def _flags(n: int, ids) -> np.ndarray:
  flags = np.zeros(n, bool)
  ids = np.asarray([i for i in ids if 0 <= i < n], np.int64)
  flags[ids] = True
  return flags


def _lookup(table: np.ndarray, tokens: np.ndarray, outside: bool) -> np.ndarray:
  """table[tokens], with `outside` for ids beyond the table (never in a well-formed dataset)."""
  inside = (tokens >= 0) & (tokens < table.size)
  return np.where(inside, table[np.clip(tokens, 0, table.size - 1)], outside)


def generator(spec: MaskSpec, row_index: int, stream: str = "train") -> np.random.Generator:
  """The row's own random generator: Philox keyed by (seed, stream, global row index)."""
  if stream not in STREAMS:
    raise ValueError(f"stream={stream!r}; expected one of {STREAMS}")
  if not 0 <= row_index < 1 << 63:
    raise ValueError(f"row_index={row_index} out of range")
  key = ((spec.seed & _MASK64) << 64) | (STREAMS.index(stream) << 63) | int(row_index)
  return np.random.Generator(np.random.Philox(key=key))


def maskable(tokens_T: np.ndarray, segment_ids_T: np.ndarray, spec: MaskSpec) -> np.ndarray:
  """Positions that may be chosen: inside a document and not a special token."""
  return (segment_ids_T != 0) & ~_lookup(spec._special, tokens_T, outside=True)


def word_starts(tokens_T: np.ndarray, segment_ids_T: np.ndarray, spec: MaskSpec) -> np.ndarray:
  """Maskable positions that begin a word (whole-word masking)."""
  can = maskable(tokens_T, segment_ids_T, spec)
  prev = np.concatenate([[-1], tokens_T[:-1]])
  prev_can = np.concatenate([[False], can[:-1]])
  same_segment = np.concatenate([[False], segment_ids_T[1:] == segment_ids_T[:-1]])
  joins = (_lookup(spec._continues, tokens_T, outside=False) & ~_lookup(spec._standalone, tokens_T, outside=True)
           & prev_can & same_segment & ~_lookup(spec._standalone, prev, outside=True))
  return can & ~joins


def _choose_tokens(can_T: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
  positions = np.flatnonzero(can_T)
  return np.sort(positions[rng.permutation(positions.size)[:k]])


def _choose_words(tokens_T, segment_ids_T, can_T, k: int, spec: MaskSpec, rng) -> np.ndarray:
  """Positions of whole words, taken in random order while they fit into k tokens."""
  starts = word_starts(tokens_T, segment_ids_T, spec)
  word_T = np.where(can_T, np.cumsum(starts) - 1, -1)  # a non-maskable token ends a word
  lengths = np.bincount(word_T[can_T], minlength=int(starts.sum()))
  order = rng.permutation(lengths.size)
  lengths_in_order = lengths[order]
  # A scan that takes each word that still fits, vectorized: a word too long for the budget left
  # stays too long, so each round takes fitting words in order until one overflows, then the budget shrinks.
  take = np.zeros(order.size, bool)
  left, start = k, 0
  while left > 0:
    fits = start + np.flatnonzero(lengths_in_order[start:] <= left)
    if fits.size == 0:
      break
    cumulative = np.cumsum(lengths_in_order[fits])
    n = int(np.searchsorted(cumulative, left, side="right"))
    take[fits[:n]] = True
    left -= int(cumulative[n - 1])
    if n == fits.size:
      break
    start = int(fits[n]) + 1
  return np.flatnonzero(np.isin(word_T, order[take]) & can_T)


def mask_tokens(tokens_T: np.ndarray, segment_ids_T: np.ndarray, spec: MaskSpec,
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(corrupted tokens, targets = original tokens, target weights) of one row; int32, int32, float32."""
  tokens_T = np.asarray(tokens_T, np.int32)
  can_T = maskable(tokens_T, segment_ids_T, spec)
  k = int(np.floor(spec.rate * can_T.sum() + rng.random()))  # expectation exactly rate * maskable
  if spec.whole_word:
    chosen = _choose_words(tokens_T, segment_ids_T, can_T, k, spec, rng)
  else:
    chosen = _choose_tokens(can_T, k, rng)
  u = rng.random(chosen.size)
  to_mask = chosen[u < spec.mask_fraction]
  to_random = chosen[(u >= spec.mask_fraction) & (u < spec.mask_fraction + spec.random_fraction)]
  inputs_T = tokens_T.copy()
  inputs_T[to_mask] = spec.mask_id
  inputs_T[to_random] = spec._candidates[rng.integers(spec._candidates.size, size=to_random.size)]
  weights_T = np.zeros(tokens_T.shape, np.float32)
  weights_T[chosen] = 1.0
  return inputs_T, tokens_T, weights_T


def mask_row(row: dict, spec: MaskSpec, row_index: int, stream: str = "train") -> dict:
  """A packed row with `tokens` corrupted and `targets`, `target_weights` added; other fields kept."""
  inputs, targets, weights = mask_tokens(row["tokens"], row["segment_ids"], spec,
                                         generator(spec, row_index, stream))
  return {**row, "tokens": inputs, "targets": targets, "target_weights": weights}


class MaskRows(grain.transforms.Map):
  """grain transform: a row carrying its global index as "row_index" -> the masked row (index dropped)."""

  def __init__(self, spec: MaskSpec, stream: str = "train"):
    if stream not in STREAMS:
      raise ValueError(f"stream={stream!r}; expected one of {STREAMS}")
    self.spec, self.stream = spec, stream

  def map(self, element: dict) -> dict:
    row = dict(element)
    return mask_row(row, self.spec, int(row.pop("row_index")), self.stream)


def _word_tables(tok, vocab_size: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
  """(continuation ids, whitespace-only ids) from the pieces' spelling, decided once per vocabulary.

  sentencepiece marks a word's first piece with "▁", byte-level BPE with "Ġ",
  WordPiece marks the other pieces with "##": whichever convention the
  vocabulary uses most is the one it follows.
  """
  pieces = [tok.id_to_token(i) or "" for i in range(vocab_size)]
  count = lambda prefix: sum(p.startswith(prefix) for p in pieces)  # noqa: E731
  wordpiece, metaspace, bytelevel = count("##"), count("\u2581"), count("\u0120")
  if wordpiece > max(metaspace, bytelevel):
    continues = [p.startswith("##") for p in pieces]
  else:
    marker = "\u2581" if metaspace >= bytelevel else "\u0120"
    continues = [not p.startswith(marker) for p in pieces]
  standalone = [bool(p) and set(p) <= _WHITESPACE for p in pieces]
  return (tuple(i for i, c in enumerate(continues) if c), tuple(i for i, s in enumerate(standalone) if s))


def spec_for_dataset(meta: dict, rate: float = 0.15, whole_word: bool = False, seed: int = 0,
                     mask_fraction: float = 0.8, random_fraction: float = 0.1) -> MaskSpec:
  """The MaskSpec of a dataset (pipeline.dataset_metadata's dict, which carries `tokenizer_path`).

  The mask id comes from metadata.json (`mask_id`, written for tokenizers with
  encoder specials) or, for a dataset prepared before that, its tokenizer's
  [MASK]/<mask> token.
  """
  from data import tokenizer as tokenizer_lib  # sentencepiece/tokenizers load only where masking is used
  path = meta.get("tokenizer_path")
  if not path:
    raise ValueError("spec_for_dataset needs pipeline.dataset_metadata's dict (with tokenizer_path)")
  tok = tokenizer_lib.load(path)
  named = {k: meta[k] for k in ("mask_id", "cls_id", "sep_id", "pad_id") if meta.get(k) is not None}
  named = {**tokenizer_lib.encoder_special_ids(tok), **named}
  if "mask_id" not in named:
    raise UserError(f"the dataset at {os.path.dirname(path)} has no [MASK] token; prepare it with "
                    f"scripts/prepare_data.py --config.tokenizer.encoder_specials=True (or a "
                    f"--config.tokenizer.path whose tokenizer has one)")
  vocab_size = int(meta["vocab_size"])
  specials = set(tokenizer_lib.special_ids(tok)) | set(named.values())
  specials |= {meta[k] for k in ("bos_id", "eos_id") if meta.get(k) is not None}
  continuation, standalone = _word_tables(tok, vocab_size) if whole_word else ((), ())
  return MaskSpec(mask_id=int(named["mask_id"]), vocab_size=vocab_size, special_ids=tuple(sorted(specials)),
                  rate=rate, whole_word=whole_word, seed=seed, mask_fraction=mask_fraction,
                  random_fraction=random_fraction, continuation_ids=continuation, standalone_ids=standalone)
