"""T5's span corruption (Raffel et al. 2020), applied to packed rows on the fly, seeded per row.

A raw row of `raw_len` tokens (documents concatenated with EOS, as T5 packs its
corpus) loses round(raw_len * noise_density) tokens in num_spans spans of mean
length `mean_span_length`. The encoder reads the rest, each dropped span
replaced by one sentinel; the decoder predicts, for each span, its sentinel and
its tokens. Both end with EOS:

    original  The quick brown fox jumps over the lazy dog
    inputs    The quick <X> jumps over <Y> dog </s>          X = <extra_id_0> = V-1
    targets   <X> brown fox <Y> the lazy </s>                Y = <extra_id_1> = V-2

Sentinels count down from the end of the tokenizer's vocabulary (V = its size).
Span lengths are a random composition of the noise count into num_spans parts
(and of the kept count likewise), the kept part first, as T5's
random_spans_noise_mask draws them. `raw_len` is the longest raw row whose
corrupted inputs fit the encoder's `inputs_len` (T5's random_spans_helper);
`targets_len` follows from it.

Randomness comes from a Philox generator keyed by (seed, stream, the row's
global index), as for masked-LM masking (data/masking.py), so the draws do not
depend on the processes, workers or resumption.
"""

import dataclasses
import functools

import grain
import numpy as np

from data import masking as masking_lib
from errors import UserError

SENTINEL_FORMAT = "<extra_id_{}>"


def noise_counts(length: int, noise_density: float, mean_span_length: float) -> tuple[int, int]:
  """(noise tokens, noise spans) of a row of `length` tokens; at least one of each, and a kept token."""
  num_noise = min(max(int(round(length * noise_density)), 1), length - 1)
  num_spans = max(int(round(num_noise / mean_span_length)), 1)
  return num_noise, num_spans


def corrupted_lengths(length: int, noise_density: float, mean_span_length: float) -> tuple[int, int]:
  """(encoder tokens, decoder tokens) that a row of `length` tokens becomes, EOS included on both sides."""
  num_noise, num_spans = noise_counts(length, noise_density, mean_span_length)
  return length - num_noise + num_spans + 1, num_noise + num_spans + 1


def row_lengths(inputs_len: int, noise_density: float, mean_span_length: float) -> tuple[int, int, int]:
  """(raw row length, decoder row length, most spans) for encoder rows of `inputs_len` tokens: the longest
  raw row whose inputs, and every shorter row's, fit (T5's random_spans_helper), and the longest targets
  and most spans of any row up to it. (0, 0, 0) when not even two tokens fit."""
  raw = 0
  for length in range(2, 4 * inputs_len):
    if corrupted_lengths(length, noise_density, mean_span_length)[0] > inputs_len:
      break
    raw = length
  rows = range(2, raw + 1)
  return (raw, max((corrupted_lengths(n, noise_density, mean_span_length)[1] for n in rows), default=0),
          max((noise_counts(n, noise_density, mean_span_length)[1] for n in rows), default=0))


@dataclasses.dataclass(frozen=True)
class SpanSpec:
  """How rows are corrupted. `inputs_len` is the encoder's row length (config.train.seq_len)."""
  inputs_len: int
  vocab_size: int                 # the tokenizer's: sentinel i is vocab_size - 1 - i
  eos_id: int
  decoder_start_id: int = 0       # the decoder's first input (T5: the pad id)
  noise_density: float = 0.15
  mean_span_length: float = 3.0
  seed: int = 0
  pad_targets_to: int = 0         # a longer decoder row than the targets need (config.train.target_len)

  def __post_init__(self):
    if not 0.0 < self.noise_density < 1.0:
      raise UserError(f"config.train.span_corruption.noise_density={self.noise_density}; expected a fraction in (0, 1)")
    if self.mean_span_length < 1:
      raise UserError(f"config.train.span_corruption.mean_span_length={self.mean_span_length}; expected 1 or more")
    if self.raw_len < 2:
      raise UserError(f"config.train.seq_len={self.inputs_len} is too short to corrupt spans of mean length "
                      f"{self.mean_span_length} at noise density {self.noise_density}")

  @functools.cached_property
  def _lengths(self) -> tuple[int, int, int]:
    return row_lengths(self.inputs_len, self.noise_density, self.mean_span_length)

  @property
  def raw_len(self) -> int:
    """The longest raw row whose inputs, and every shorter row's, fit `inputs_len` tokens."""
    return self._lengths[0]

  @property
  def targets_len(self) -> int:
    """Decoder row length: the longest targets of any row up to raw_len tokens (or pad_targets_to)."""
    return max(self._lengths[1], self.pad_targets_to)

  @property
  def max_spans(self) -> int:
    return self._lengths[2]

  def source_len(self, seq_len: int) -> int:
    """Tokens per packed row the pipeline reads (pipeline.RowStream's seq_len)."""
    return self.raw_len

  def rows_map(self, stream: str) -> grain.transforms.Map:
    return CorruptRows(self, stream)


def _random_composition(total: int, parts: int, rng: np.random.Generator) -> np.ndarray:
  """`parts` positive integers summing to `total`, uniformly among all such compositions."""
  cuts = np.sort(rng.permutation(np.arange(1, total))[:parts - 1])
  return np.diff(np.concatenate([[0], cuts, [total]]))


def noise_mask(length: int, spec: SpanSpec, rng: np.random.Generator) -> np.ndarray:
  """[length] bool: True on the tokens to drop; kept and noise spans alternate, kept first."""
  num_noise, num_spans = noise_counts(length, spec.noise_density, spec.mean_span_length)
  num_spans = min(num_spans, num_noise, length - num_noise)
  noise = _random_composition(num_noise, num_spans, rng)
  kept = _random_composition(length - num_noise, num_spans, rng)
  spans = np.stack([kept, noise], axis=1).reshape(-1)
  return np.repeat(np.tile([False, True], num_spans), spans)


def corrupt(tokens_L: np.ndarray, mask_L: np.ndarray, spec: SpanSpec) -> tuple[np.ndarray, np.ndarray]:
  """(inputs, targets) of one raw row: each noise span becomes its sentinel in the inputs, and its sentinel
  then its tokens in the targets; both end with EOS."""
  tokens_L = np.asarray(tokens_L, np.int32)
  starts_L = mask_L & ~np.concatenate([[False], mask_L[:-1]])
  sentinel_L = spec.vocab_size - np.cumsum(starts_L)  # span i (from 0) starts with V - 1 - i
  inputs = np.where(starts_L, sentinel_L, tokens_L)[~mask_L | starts_L]
  noise = np.flatnonzero(mask_L)
  first = np.flatnonzero(starts_L[noise])  # where each span's tokens begin among the noise tokens
  targets = np.insert(tokens_L[noise], first, sentinel_L[noise[first]])
  return (np.append(inputs, spec.eos_id).astype(np.int32), np.append(targets, spec.eos_id).astype(np.int32))


def _pad(x: np.ndarray, length: int) -> np.ndarray:
  return np.pad(x, (0, length - x.size))


def corrupt_row(tokens_L: np.ndarray, segment_ids_L: np.ndarray, spec: SpanSpec, rng: np.random.Generator) -> dict:
  """An encoder-decoder row from a raw packed row (its padding dropped): the encoder's tokens, the
  decoder's inputs (targets shifted right after the start token), targets and their weights."""
  tokens_L = np.asarray(tokens_L)[np.asarray(segment_ids_L) != 0]
  if tokens_L.size < 2:  # an empty row (never in a packed stream): nothing to predict
    inputs, targets = np.asarray([spec.eos_id], np.int32), np.zeros(0, np.int32)
  else:
    inputs, targets = corrupt(tokens_L, noise_mask(tokens_L.size, spec, rng), spec)
  S, T = spec.inputs_len, spec.targets_len
  decoder_in = np.concatenate([[spec.decoder_start_id], targets[:-1]]) if targets.size else targets
  return {
      "encoder_tokens": _pad(inputs, S).astype(np.int32),
      "encoder_positions": _pad(np.arange(inputs.size, dtype=np.int32), S),
      "encoder_segment_ids": _pad(np.ones(inputs.size, np.int32), S),
      "tokens": _pad(decoder_in, T).astype(np.int32),
      "positions": _pad(np.arange(targets.size, dtype=np.int32), T),
      "segment_ids": _pad(np.ones(targets.size, np.int32), T),
      "targets": _pad(targets, T).astype(np.int32),
      "target_weights": _pad(np.ones(targets.size, np.float32), T),
  }


class CorruptRows(grain.transforms.Map):
  """grain transform: a raw row with its global index ("row_index") -> the encoder-decoder row."""

  def __init__(self, spec: SpanSpec, stream: str = "train"):
    if stream not in masking_lib.STREAMS:
      raise ValueError(f"stream={stream!r}; expected one of {masking_lib.STREAMS}")
    self.spec, self.stream = spec, stream

  def map(self, element: dict) -> dict:
    rng = masking_lib.generator(self.spec, int(element["row_index"]), self.stream)
    out = corrupt_row(element["tokens"], element["segment_ids"], self.spec, rng)
    return {**out, **{k: element[k] for k in ("dataset",) if k in element}}


def sentinel_count(tok, vocab_size: int) -> int:
  """How many sentinels the tokenizer has where span corruption puts them: <extra_id_i> at V - 1 - i."""
  n = 0
  while n < vocab_size and tok.id_to_token(vocab_size - 1 - n) == SENTINEL_FORMAT.format(n):
    n += 1
  return n


def spec_for_dataset(meta: dict, inputs_len: int, noise_density: float, mean_span_length: float, seed: int,
                     decoder_start_id: int, targets_len: int = 0) -> SpanSpec:
  """The SpanSpec of a dataset (pipeline.dataset_metadata's dict), after checking that its tokenizer
  has a sentinel for every span a row can have."""
  from data import tokenizer as tokenizer_lib  # loads sentencepiece/tokenizers only where used
  vocab_size = int(meta["vocab_size"])
  if meta.get("eos_id") is None:
    raise UserError(f"the tokenizer of {meta['tokenizer_path']} has no EOS token; span corruption ends "
                    f"inputs and targets with one")
  spec = SpanSpec(inputs_len=inputs_len, vocab_size=vocab_size, eos_id=int(meta["eos_id"]),
                  decoder_start_id=decoder_start_id, noise_density=noise_density,
                  mean_span_length=mean_span_length, seed=seed, pad_targets_to=targets_len)
  have = sentinel_count(tokenizer_lib.load(meta["tokenizer_path"]), vocab_size)
  if have < spec.max_spans:
    raise UserError(f"the tokenizer {meta['tokenizer_path']} has {have} sentinel tokens (<extra_id_0> = id "
                    f"{vocab_size - 1} and down), but rows of {spec.raw_len} tokens at noise density "
                    f"{noise_density} and mean span length {mean_span_length} need {spec.max_spans}; prepare the "
                    f"data with --config.tokenizer.sentinels={max(spec.max_spans, 100)}, or lower "
                    f"config.train.seq_len or raise the mean span length")
  return spec
