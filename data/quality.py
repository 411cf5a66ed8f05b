"""Document quality filters: Gopher's heuristics, language id and a stop-word rule.

The rules and their default thresholds follow Gopher (Rae et al. 2021,
"Scaling Language Models: Methods, Analysis & Insights from Training Gopher",
appendix A.1.1 and table A1) as implemented by datatrove's
GopherQualityFilter and GopherRepetitionFilter: documents that are mostly
non-alphabetic, full of hashtags or ellipses, made of repeated paragraphs or
lines, or dominated by repeated word n-grams are usually boilerplate, spam or
machine-generated lists; documents without English stop words or without a
confidently identified language are usually word salad. `THRESHOLDS` names
the source of every default, and report.md prints it.

Definitions (as in datatrove). "Words" are whitespace-separated, for every
rule but the stop words. Datatrove's n-gram rules read NLTK tokens, which
split punctuation off; on prose docstrings of the standard library that made
more false positives (punctuation n-grams such as ", and" repeat), so words
stay whole here. The stop-word rule reads `_TOKEN`s, words with punctuation
split off, so that "the," counts as "the".
- duplicate paragraphs/lines: a paragraph (split on blank lines) or a line
  equal to an earlier one; the fraction is of paragraphs/lines, and the
  character fraction is their characters over all characters of the text.
- top n-gram (n = 2, 3, 4): characters of the most common n-gram (words
  joined by spaces) times its count, over all characters. Datatrove charges a
  most common n-gram seen once as well; here it is no repetition, else short
  documents whose every word pair is distinct would fail.
- duplicate n-grams (n = 5..10): reading left to right, an n-gram seen before
  charges its word characters and the scan jumps past it; so the first
  occurrence is never charged and no character is charged twice. Over all
  characters.

`quality_reason` runs the checks in the order of `REASONS` -- cheapest first,
each one a linear pass at most -- and returns the name of the first that
fails, so the caller can count removals by reason. Statistics shared by
several checks are computed once, on first use.

Three defaults are looser than Gopher's, each measured on real text: the
standard library's docstrings (technical documentation) and Shakespeare's
plays (literary dialogue; scripts/benchmark_data_quality.py says where from):
- duplicate line fraction 0.5, not 0.3: a play gives each speech's speaker a
  line of its own ("HORATIO."), so 4.4% of 1,873 scenes of Shakespeare
  (2,500-character documents) had 0.30-0.42 of their lines repeated, while
  their repeated characters stayed at most 0.27. Repeated boilerplate lines
  still fail Gopher's character rule (0.2, kept) and lists that are mostly
  repeats fail at 0.5.
- duplicate 5-gram fraction 0.2, not 0.15 (the 6..10-gram limits follow, 0.19
  down to 0.15): short documentation states a clause once per parameter
  ("if specified, will be called with the result of every JSON object
  decoded"); 3 of 787 prose docstrings of the standard library scored 0.15-0.18.
  Spam and pasted repeats score far higher (a repeated line: about 1.0).
- mean word length 12, not 10: identifiers are long words
  (`ALERT_DESCRIPTION_BAD_CERTIFICATE_HASH_VALUE`); the ssl module's overview,
  mostly a list of its constants, has 10.97. Prose has 4-6; what the rule is
  for, runs of hashes, URLs or base64, has 20 and more.
Gopher's 80% of words with a letter stands, though it removes documentation
that quotes symbols (`=`, `->`, `"-"`, each a word without letters):
urllib.parse.quote's docstring, prose around a five-line ABNF grammar, has
0.7996. At 0.75 it would pass, but so would operator-heavy source (stat.py).
Measured with these defaults: 0.90% of 887 prose docstrings (those with 50+
words of prose, code examples aside, and no option lists) and 0.1% of 1,873
2,500-character scenes of Shakespeare are removed (tests/test_quality.py);
Gopher's values removed 1.3% and 4.5%.

The rules but the length rules read the document's prose: `read_prose` sets
aside the code examples that markup marks (reST literal blocks, doctests,
Markdown fences) and list bullets (data/prose.py). Judged whole, 13 of the 101
of those docstrings with examples or lists failed, mostly on words without
letters and repeated example lines; judged by their prose, 1.

Every threshold is disabled by 0 ("" for `languages`: any language). The
defaults suit English prose; source code needs its own profile
(configs/data/stdlib.py: several thresholds relaxed, language id off).
"""

import functools
import re
from collections import Counter
from itertools import accumulate, islice

import ml_collections

from data import prose
from errors import UserError

REASONS = ("too_short", "too_long", "low_alpha", "high_symbol", "high_digit", "low_alpha_words",
           "duplicate_paragraphs", "duplicate_paragraph_chars", "duplicate_lines",
           "duplicate_line_chars", "top_ngram", "duplicate_ngrams", "word_length", "line_length",
           "language", "stop_words")

# Gopher lowers the n-gram thresholds as n grows: longer repeats are rarer in
# good text. Each family is driven by one knob, its first value (table A1:
# top 2/3/4-gram 0.20/0.18/0.16; duplicate 5..10-gram 0.15 down to 0.10).
TOP_NGRAM_STEPS = {2: 0.0, 3: 0.02, 4: 0.04}
DUP_NGRAM_STEPS = {n: 0.01 * (n - 5) for n in range(5, 11)}
# Gopher section A.1.1: "at least two of the following English words".
STOP_WORDS = frozenset(("the", "be", "to", "of", "and", "that", "have", "with"))
# py3langid's label for text with no linguistic content (letter or symbol soup).
NO_LANGUAGE = "zxx"
# Language id reads a prefix: its accuracy saturates long before 2,000 chars.
_LANGID_CHARS = 2000
_PARAGRAPH_BREAK = re.compile(r"\n{2,}")
# A word (with inner hyphens, dots, apostrophes: "bytes-like", "1.0", "don't"),
# an ellipsis, or one other non-space character.
_TOKEN = re.compile(r"\w+(?:[-.'\u2019]\w+)*|\.\.\.|[^\w\s]")

_ASCII_NON_ALPHA = bytes(b for b in range(128) if not chr(b).isalpha())
_ASCII_NON_DIGIT = bytes(b for b in range(128) if not chr(b).isdigit())

# key -> where its default comes from (report.md prints this table).
THRESHOLDS = {
    "min_chars": "this repo (too little text to judge)",
    "max_chars": "this repo (a cap on pathological documents)",
    "min_alpha_fraction": "this repo (alphabetic share of non-space characters)",
    "max_symbol_fraction": "Gopher A.1.1; datatrove max_symbol_word_ratio=0.1 ('#' and ellipsis, each per word)",
    "max_digit_fraction": "this repo (tables of numbers)",
    "min_alpha_word_fraction": "Gopher A.1.1; datatrove max_non_alpha_words_ratio=0.8",
    "max_duplicate_paragraph_fraction": "Gopher table A1; datatrove dup_para_frac=0.3",
    "max_duplicate_paragraph_char_fraction": "Gopher table A1; datatrove dup_para_char_frac=0.2",
    "max_duplicate_line_fraction": ("this repo (Gopher table A1 and datatrove: 0.3; plays give each speaker's "
                                    "name a line, up to 0.42 of lines in Shakespeare, see module docstring)"),
    "max_duplicate_line_char_fraction": "Gopher table A1; datatrove dup_line_char_frac=0.2",
    "max_top_ngram_char_fraction": "Gopher table A1; datatrove top_n_grams 2:0.20, 3:0.18, 4:0.16",
    "max_dup_ngram_char_fraction": ("this repo (Gopher table A1 and datatrove: dup_n_grams 5:0.15 ... 10:0.10; "
                                    "short documentation repeats a clause, see module docstring)"),
    "min_mean_word_length": "Gopher A.1.1; datatrove min_avg_word_length=3",
    "max_mean_word_length": ("this repo (Gopher A.1.1 and datatrove max_avg_word_length: 10; "
                             "identifiers are long words, see module docstring)"),
    "min_mean_line_length": "this repo (off by default)",
    "max_mean_line_length": "this repo (off by default)",
    "language_id": "this repo (on for prose; off in the code profile, configs/data/stdlib.py)",
    "languages": "this repo (English prose, as Gopher's MassiveWeb)",
    "min_language_confidence": "this repo (py3langid normalized probability; gibberish scores below)",
    "min_stop_words": "Gopher A.1.1; datatrove min_stop_words=2 (English only)",
    "read_prose": ("this repo (rules read prose: reST literal, doctest and fenced code blocks and list "
                   "bullets set aside, data/prose.py)"),
}


def default_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.min_chars = 50
  c.max_chars = 1_000_000
  c.min_alpha_fraction = 0.5                 # of non-whitespace characters
  c.max_symbol_fraction = 0.1                # '#', or '...'/'…', per word
  c.max_digit_fraction = 0.3                 # of non-whitespace characters
  c.min_alpha_word_fraction = 0.8            # words with at least one letter
  c.max_duplicate_paragraph_fraction = 0.3   # of paragraphs
  c.max_duplicate_paragraph_char_fraction = 0.2  # of all characters
  c.max_duplicate_line_fraction = 0.5        # of non-empty lines (Gopher: 0.3; speaker names repeat)
  c.max_duplicate_line_char_fraction = 0.2   # of all characters
  c.max_top_ngram_char_fraction = 0.2        # n=2; n=3, 4 use 0.02, 0.04 less
  c.max_dup_ngram_char_fraction = 0.2        # n=5; n=6..10 use 0.01 less per step (Gopher: 0.15)
  c.min_mean_word_length = 3
  c.max_mean_word_length = 12                # Gopher: 10
  c.min_mean_line_length = 0                 # characters per non-blank line
  c.max_mean_line_length = 0
  c.language_id = True                       # False: no language and stop-word rules
  c.languages = "en"                         # e.g. "en,fr"; "" keeps any language
  c.min_language_confidence = 0.5
  c.min_stop_words = 2                       # distinct STOP_WORDS, English documents only
  c.read_prose = True                        # rules but length read the prose: code blocks, bullets set aside
  return c


# --- Statistics ---------------------------------------------------------------

def _count_chars(text: str, ascii_rejects: bytes, predicate) -> int:
  """Characters of `text` satisfying `predicate` (str.isalpha, str.isdigit)."""
  if text.isascii():
    # bytes.translate deletes in C: ~30x faster than a Python-level loop.
    return len(text.encode("ascii").translate(None, ascii_rejects))
  return sum(map(predicate, text))


class _Doc:
  """A document and its statistics, each computed on first use.

  `raw` is the document; `text`, which every rule but the length rules reads,
  is its prose (data/prose.py) when `read_prose` is on and the prose is long
  enough to judge (`min_chars`), else the whole document, so a document that is
  all code example is still judged, as a whole.
  """

  def __init__(self, raw: str, cfg):
    self.raw = raw
    self._cfg = cfg

  @functools.cached_property
  def text(self) -> str:
    if not self._cfg.get("read_prose"):
      return self.raw
    text = prose.prose(self.raw)
    return text if len(text) >= self._cfg.min_chars else self.raw

  @functools.cached_property
  def words(self) -> list[str]:
    return self.text.split()

  @functools.cached_property
  def tokens(self) -> list[str]:
    return _TOKEN.findall(self.text)

  @functools.cached_property
  def word_chars(self) -> int:
    # Words are the maximal runs of non-whitespace, so this also counts the
    # document's non-whitespace characters.
    return sum(map(len, self.words))

  @functools.cached_property
  def lines(self) -> list[str]:
    """Non-empty lines, as datatrove's split on runs of newlines."""
    return [line for line in self.text.split("\n") if line]

  @functools.cached_property
  def nonblank_lines(self) -> list[str]:
    """Lines with content, stripped: for the mean line length."""
    return [line for line in map(str.strip, self.lines) if line]

  @functools.cached_property
  def paragraphs(self) -> list[str]:
    return _PARAGRAPH_BREAK.split(self.text.strip())

  @functools.cached_property
  def paragraph_duplicates(self) -> tuple[int, int]:
    return duplicates(self.paragraphs)

  @functools.cached_property
  def line_duplicates(self) -> tuple[int, int]:
    return duplicates(self.lines)

  @functools.cached_property
  def language(self) -> tuple[str, float]:
    return identify_language(self.text)


def duplicates(items: list[str]) -> tuple[int, int]:
  """(items equal to an earlier item, characters in those items)."""
  seen, count, chars = set(), 0, 0
  for item in items:
    if item in seen:
      count += 1
      chars += len(item)
    else:
      seen.add(item)
  return count, chars


def ngrams(words: list[str], n: int) -> list[tuple[str, ...]]:
  # islice, not words[i:]: no n copies of a long word list.
  return list(zip(*(islice(words, i, None) for i in range(n))))


def top_ngram_chars(words: list[str], n: int) -> int:
  """Characters (words joined by spaces) of all occurrences of the most common n-gram; 0 if none repeats."""
  counts = Counter(ngrams(words, n))
  if not counts:
    return 0
  ngram, count = counts.most_common(1)[0]
  return count * (sum(map(len, ngram)) + n - 1) if count > 1 else 0


def duplicate_ngram_chars(words: list[str], n: int) -> int:
  """Word characters of the n-grams equal to an earlier one, each character charged once.

  Left to right: a repeated n-gram is charged and skipped whole (its inner
  n-grams are neither charged nor remembered); a new one is remembered and
  the scan moves one word. The first occurrence is never charged.
  """
  offsets = [0, *accumulate(map(len, words))]
  seen, chars, i = set(), 0, 0
  while i + n <= len(words):
    ngram = tuple(words[i:i + n])
    if ngram in seen:
      chars += offsets[i + n] - offsets[i]
      i += n
    else:
      seen.add(ngram)
      i += 1
  return chars


def stop_word_count(tokens: list[str]) -> int:
  """Distinct STOP_WORDS among `tokens`, ignoring case (datatrove's match is case-sensitive)."""
  return len(STOP_WORDS.intersection(map(str.lower, tokens)))


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
  # `not raw or raw.isspace()` is `not words` without splitting yet: a huge
  # document should be rejected by the length check before anything is split.
  return not doc.raw or doc.raw.isspace() or len(doc.raw) < cfg.min_chars


def _too_long(doc: _Doc, cfg) -> bool:
  return bool(cfg.max_chars) and len(doc.raw) > cfg.max_chars


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


def _low_alpha_words(doc: _Doc, cfg) -> bool:
  if not cfg.min_alpha_word_fraction:
    return False
  alpha_words = sum(any(map(str.isalpha, word)) for word in doc.words)
  return alpha_words < cfg.min_alpha_word_fraction * len(doc.words)


def _duplicate_paragraphs(doc: _Doc, cfg) -> bool:
  limit = cfg.max_duplicate_paragraph_fraction
  return bool(limit) and doc.paragraph_duplicates[0] > limit * len(doc.paragraphs)


def _duplicate_paragraph_chars(doc: _Doc, cfg) -> bool:
  limit = cfg.max_duplicate_paragraph_char_fraction
  return bool(limit) and doc.paragraph_duplicates[1] > limit * len(doc.text)


def _duplicate_lines(doc: _Doc, cfg) -> bool:
  limit = cfg.max_duplicate_line_fraction
  return bool(limit) and doc.line_duplicates[0] > limit * len(doc.lines)


def _duplicate_line_chars(doc: _Doc, cfg) -> bool:
  limit = cfg.max_duplicate_line_char_fraction
  return bool(limit) and doc.line_duplicates[1] > limit * len(doc.text)


def _top_ngram(doc: _Doc, cfg) -> bool:
  limit = cfg.max_top_ngram_char_fraction
  if not limit:
    return False
  for n, step in TOP_NGRAM_STEPS.items():
    chars = top_ngram_chars(doc.words, n)
    if not chars:
      return False  # no repeated n-gram, so no repeated longer one either
    if chars > (limit - step) * len(doc.text):
      return True
  return False


def _duplicate_ngrams(doc: _Doc, cfg) -> bool:
  limit = cfg.max_dup_ngram_char_fraction
  if not limit:
    return False
  for n, step in DUP_NGRAM_STEPS.items():
    chars = duplicate_ngram_chars(doc.words, n)
    if not chars:
      return False  # no repeated n-gram, so no repeated longer one either
    if chars > (limit - step) * len(doc.text):
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
  lines = doc.nonblank_lines
  return _outside(sum(map(len, lines)) / len(lines), cfg.min_mean_line_length,
                  cfg.max_mean_line_length)


def _language(doc: _Doc, cfg) -> bool:
  if not cfg.language_id:
    return False
  keep = parse_languages(cfg.languages) if cfg.languages else None
  language, confidence = doc.language
  return (language == NO_LANGUAGE or (keep is not None and language not in keep)
          or confidence < cfg.min_language_confidence)


def _stop_words(doc: _Doc, cfg) -> bool:
  # Language-aware: the list is English, so only English documents are held to it.
  if not (cfg.language_id and cfg.min_stop_words) or doc.language[0] != "en":
    return False
  return stop_word_count(doc.tokens) < cfg.min_stop_words


_CHECKS = (_too_short, _too_long, _low_alpha, _high_symbol, _high_digit, _low_alpha_words,
           _duplicate_paragraphs, _duplicate_paragraph_chars, _duplicate_lines,
           _duplicate_line_chars, _top_ngram, _duplicate_ngrams, _word_length, _line_length,
           _language, _stop_words)
assert len(_CHECKS) == len(REASONS)


def quality_reason(text: str, cfg) -> str | None:
  """None if `text` passes every enabled filter of `cfg`, else the first failed one (in REASONS)."""
  doc = _Doc(text, cfg)
  for reason, failed in zip(REASONS, _CHECKS):
    if failed(doc, cfg):
      return reason
  return None
