"""Document quality filters: Gopher-style heuristics plus optional language id.

The heuristics follow the "quality filtering" rules of Gopher (Rae et al.
2021, "Scaling Language Models: Methods, Analysis & Insights from Training
Gopher", appendix A.1.1): documents that are too short or too long, mostly
non-alphabetic, full of hashtags or ellipses, made of repeated lines, or
dominated by a few repeated word n-grams are usually boilerplate, spam or
machine-generated lists, and cost training tokens without teaching language.
Language id uses py3langid (langid.py's naive Bayes model, shipped inside the
package) on the first characters of the document.

`quality_reason` runs the checks in the order of `REASONS` -- cheapest first,
each one a linear pass at most -- and returns the name of the first that
fails, so the caller can count removals by reason. Statistics shared by
several checks (words, lines, character counts) are computed once, on first
use, so a document rejected early pays only for what rejected it.

Every threshold is disabled by 0 ("" for `languages`). The defaults suit
natural-language text; source code needs several of them relaxed (see
tests/test_quality.py for a configuration under which Python source passes).
"""

import functools
from collections import Counter
from itertools import accumulate, islice

import ml_collections

from errors import UserError

REASONS = ("too_short", "too_long", "low_alpha", "high_symbol", "high_digit", "duplicate_lines",
           "duplicate_line_chars", "top_ngram", "duplicate_ngrams", "word_length", "line_length",
           "language")

# Gopher lowers the n-gram thresholds as n grows: longer repeats are rarer in
# good text. Both families are driven by one knob, their first value.
_TOP_NGRAM_STEPS = {2: 0.0, 3: 0.02, 4: 0.04}
_DUP_NGRAM_STEPS = {n: 0.01 * (n - 5) for n in range(5, 11)}
# Language id reads a prefix: its accuracy saturates long before 2,000 chars.
_LANGID_CHARS = 2000

_ASCII_NON_ALPHA = bytes(b for b in range(128) if not chr(b).isalpha())
_ASCII_NON_DIGIT = bytes(b for b in range(128) if not chr(b).isdigit())


def default_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.min_chars = 50
  c.max_chars = 1_000_000
  c.min_alpha_fraction = 0.5                 # of non-whitespace characters
  c.max_symbol_fraction = 0.1                # '#', or '...'/'…', per word
  c.max_digit_fraction = 0.3                 # of non-whitespace characters
  c.max_duplicate_line_fraction = 0.3        # of non-blank lines
  c.max_duplicate_line_char_fraction = 0.2   # of characters in non-blank lines
  c.max_top_ngram_char_fraction = 0.2        # n=2; n=3, 4 use 0.02, 0.04 less
  c.max_dup_ngram_char_fraction = 0.15       # n=5; n=6..10 use 0.01 less per step
  c.min_mean_word_length = 3
  c.max_mean_word_length = 10
  c.min_mean_line_length = 0                 # characters per non-blank line
  c.max_mean_line_length = 0
  c.languages = ""                           # e.g. "en,fr"; "" keeps every language
  c.min_language_confidence = 0.5
  return c


# --- Statistics ---------------------------------------------------------------

def _count_chars(text: str, ascii_rejects: bytes, predicate) -> int:
  """Characters of `text` satisfying `predicate` (str.isalpha, str.isdigit)."""
  if text.isascii():
    # bytes.translate deletes in C: ~30x faster than a Python-level loop.
    return len(text.encode("ascii").translate(None, ascii_rejects))
  return sum(map(predicate, text))


class _Doc:
  """A document and its statistics, each computed on first use."""

  def __init__(self, text: str):
    self.text = text

  @functools.cached_property
  def words(self) -> list[str]:
    return self.text.split()

  @functools.cached_property
  def word_chars(self) -> int:
    # Words are the maximal runs of non-whitespace, so this also counts the
    # document's non-whitespace characters.
    return sum(map(len, self.words))

  @functools.cached_property
  def lines(self) -> list[str]:
    """Non-blank lines, stripped: indentation and blank lines are layout, not content."""
    return [line for line in map(str.strip, self.text.splitlines()) if line]

  @functools.cached_property
  def line_chars(self) -> int:
    return sum(map(len, self.lines))

  @functools.cached_property
  def duplicate_lines(self) -> tuple[int, int]:
    return duplicate_lines(self.lines)

  @functools.cached_property
  def word_offsets(self) -> list[int]:
    """offsets[i] = characters in words[:i], so any word span sums in O(1)."""
    return [0, *accumulate(map(len, self.words))]


def duplicate_lines(lines: list[str]) -> tuple[int, int]:
  """(lines equal to an earlier line, characters in those lines)."""
  seen, count, chars = set(), 0, 0
  for line in lines:
    if line in seen:
      count += 1
      chars += len(line)
    else:
      seen.add(line)
  return count, chars


def ngrams(words: list[str], n: int) -> list[tuple[str, ...]]:
  # islice, not words[i:]: no n copies of a long word list.
  return list(zip(*(islice(words, i, None) for i in range(n))))


def top_ngram_chars(words: list[str], n: int) -> int:
  """Word characters in all occurrences of the most common n-gram; 0 if no n-gram repeats."""
  counts = Counter(ngrams(words, n))
  if not counts:
    return 0
  ngram, count = counts.most_common(1)[0]
  # A most common n-gram seen once is no repetition (it would otherwise reject
  # every short document).
  return count * sum(map(len, ngram)) if count > 1 else 0


def duplicate_ngram_chars(words: list[str], offsets: list[int], n: int) -> int:
  """Word characters covered by the n-grams that occur more than once.

  Every occurrence counts, the first included, and each word at most once
  even where repeated n-grams overlap: a word is only charged from where the
  previous repeated n-gram ended.
  """
  grams = ngrams(words, n)
  counts = Counter(grams)
  chars, covered_to = 0, 0
  for i, ngram in enumerate(grams):
    if counts[ngram] > 1:
      start = max(i, covered_to)
      covered_to = i + n
      chars += offsets[covered_to] - offsets[start]
  return chars


# --- Language id ----------------------------------------------------------------

@functools.cache
def _identifier():
  """py3langid's model, loaded on first use (~0.6 s) and shared by the process.

  Probabilities are normalized so that the confidence is comparable across
  documents. The model is never restricted with `set_languages`: that would
  force every document into one of the kept languages, and the confidence
  would no longer say whether it is in any of them.
  """
  from py3langid import langid
  return langid.LanguageIdentifier.from_model_file(langid.MODEL_FILE, norm_probs=True)


@functools.lru_cache(maxsize=64)
def parse_languages(languages: str) -> frozenset[str]:
  """Comma-separated ISO 639 codes -> a set; an unknown code is an error, not a silent reject-all."""
  codes = frozenset(code.strip() for code in languages.split(",") if code.strip())
  unknown = codes - set(_identifier().labels)
  if unknown:
    raise UserError(f"quality.languages has codes py3langid does not know: {sorted(unknown)}")
  return codes


def identify_language(text: str) -> tuple[str, float]:
  """(ISO 639 code, probability) of the most likely language of `text`."""
  return _identifier().classify(text[:_LANGID_CHARS])


# --- Checks: each returns True when the document fails ------------------------

def _too_short(doc: _Doc, cfg) -> bool:
  # `not text or text.isspace()` is `not words` without splitting yet: a huge
  # document should be rejected by the length check before anything is split.
  return not doc.text or doc.text.isspace() or len(doc.text) < cfg.min_chars


def _too_long(doc: _Doc, cfg) -> bool:
  return bool(cfg.max_chars) and len(doc.text) > cfg.max_chars


def _low_alpha(doc: _Doc, cfg) -> bool:
  if not cfg.min_alpha_fraction:
    return False
  alpha = _count_chars(doc.text, _ASCII_NON_ALPHA, str.isalpha)
  return alpha < cfg.min_alpha_fraction * doc.word_chars


def _high_symbol(doc: _Doc, cfg) -> bool:
  # As in Gopher, hashes and ellipses are two separate ratios; either fails.
  if not cfg.max_symbol_fraction:
    return False
  text = doc.text
  symbols = max(text.count("#"), text.count("...") + text.count("…"))
  return symbols > cfg.max_symbol_fraction * len(doc.words)


def _high_digit(doc: _Doc, cfg) -> bool:
  if not cfg.max_digit_fraction:
    return False
  digits = _count_chars(doc.text, _ASCII_NON_DIGIT, str.isdigit)
  return digits > cfg.max_digit_fraction * doc.word_chars


def _duplicate_lines(doc: _Doc, cfg) -> bool:
  if not cfg.max_duplicate_line_fraction:
    return False
  count, _ = doc.duplicate_lines
  return count > cfg.max_duplicate_line_fraction * len(doc.lines)


def _duplicate_line_chars(doc: _Doc, cfg) -> bool:
  if not cfg.max_duplicate_line_char_fraction:
    return False
  _, chars = doc.duplicate_lines
  return chars > cfg.max_duplicate_line_char_fraction * doc.line_chars


def _top_ngram(doc: _Doc, cfg) -> bool:
  limit = cfg.max_top_ngram_char_fraction
  if not limit:
    return False
  for n, step in _TOP_NGRAM_STEPS.items():
    chars = top_ngram_chars(doc.words, n)
    if not chars:
      return False  # no repeated n-gram, so no repeated longer one either
    if chars > (limit - step) * doc.word_chars:
      return True
  return False


def _duplicate_ngrams(doc: _Doc, cfg) -> bool:
  limit = cfg.max_dup_ngram_char_fraction
  if not limit:
    return False
  for n, step in _DUP_NGRAM_STEPS.items():
    chars = duplicate_ngram_chars(doc.words, doc.word_offsets, n)
    if not chars:
      return False  # no repeated n-gram, so no repeated longer one either
    if chars > (limit - step) * doc.word_chars:
      return True
  return False


def _outside(value: float, low: float, high: float) -> bool:
  """value < low or value > high, where a bound of 0 is no bound."""
  return (bool(low) and value < low) or (bool(high) and value > high)


def _word_length(doc: _Doc, cfg) -> bool:
  return _outside(doc.word_chars / len(doc.words), cfg.min_mean_word_length,
                  cfg.max_mean_word_length)


def _line_length(doc: _Doc, cfg) -> bool:
  if not (cfg.min_mean_line_length or cfg.max_mean_line_length):
    return False
  return _outside(doc.line_chars / len(doc.lines), cfg.min_mean_line_length,
                  cfg.max_mean_line_length)


def _language(doc: _Doc, cfg) -> bool:
  if not cfg.languages:
    return False
  keep = parse_languages(cfg.languages)
  language, confidence = identify_language(doc.text)
  return language not in keep or confidence < cfg.min_language_confidence


_CHECKS = (_too_short, _too_long, _low_alpha, _high_symbol, _high_digit, _duplicate_lines,
           _duplicate_line_chars, _top_ngram, _duplicate_ngrams, _word_length, _line_length,
           _language)
assert len(_CHECKS) == len(REASONS)


def quality_reason(text: str, cfg) -> str | None:
  """None if `text` passes every enabled filter of `cfg`, else the first failed one (in REASONS)."""
  doc = _Doc(text)
  for reason, failed in zip(REASONS, _CHECKS):
    if failed(doc, cfg):
      return reason
  return None
