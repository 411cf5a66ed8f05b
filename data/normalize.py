"""Text normalization: the first cleaning stage of data preparation.

Every step is a cheap, linear pass, switched by a field of the config:

  1. strip_html      HTML -> its visible text (<script>/<style> bodies dropped).
  2. unicode_form    NFC (canonical composition, e.g. "e" + U+0301 -> "é") or
                     NFKC (also folds compatibility forms: "ﬁ" -> "fi",
                     full-width letters, superscripts...). NFC is the default
                     because NFKC changes meaning in code and math ("x²" -> "x2").
  3. remove_control_chars
                     C0/C1 control characters (but tab and line breaks) and
                     invisible format characters (zero-width space/joiners,
                     word joiner, BOM, soft hyphen). They carry no text and
                     split otherwise identical words into different tokens.
  4. normalize_whitespace
                     one newline convention, plain spaces, no trailing
                     whitespace, at most two blank lines in a row, no blank
                     lines at either end. Runs of spaces inside a line are
                     kept: indentation is meaningful in code.
"""

import re
import unicodedata

import ml_collections

from errors import UserError

UNICODE_FORMS = ("NFC", "NFKC", "")

# Zero-width space/non-joiner/joiner, word joiner, BOM (zero-width no-break
# space) and soft hyphen: invisible, so only noise for a tokenizer.
_INVISIBLE = "\u200b\u200c\u200d\u2060\ufeff\u00ad"
# \r and NEL (U+0085) are control characters but also line breaks: they are
# kept here so that whitespace normalization turns them into "\n" instead of
# gluing two lines together.
_KEPT_CONTROLS = "\t\n\r\x85"
_CONTROL_RE = re.compile(
    "[" + "".join(re.escape(chr(c)) for c in (*range(0x20), *range(0x7f, 0xa0))
                  if chr(c) not in _KEPT_CONTROLS) + _INVISIBLE + "]")

# Every line-break convention -> "\n".
_NEWLINE_RE = re.compile("\r\n?|[\u2028\u2029\x85]")
# No-break, ideographic, en/em/thin... spaces (Unicode category Zs) -> " ".
# Listed rather than computed: scanning all code points costs ~0.3 s per import.
_SPACES = "\u00a0\u1680" + "".join(chr(c) for c in range(0x2000, 0x200b)) + "\u202f\u205f\u3000"
_SPACES_RE = re.compile(f"[{_SPACES}]")  # a regex scan beats str.translate's per-char dict lookups
# Three or more blank lines (after trailing whitespace is gone) -> two.
_BLANK_RUN_RE = re.compile("\n{4,}")


def default_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.unicode_form = "NFC"            # "NFC", "NFKC", or "" to leave as is
  c.remove_control_chars = True
  c.normalize_whitespace = True
  c.strip_html = False
  return c


def strip_html(text: str) -> str:
  """The visible text of an HTML document, one text node per line."""
  from bs4 import BeautifulSoup  # only needed by HTML corpora
  soup = BeautifulSoup(text, "html.parser")
  for tag in soup(["script", "style"]):
    tag.decompose()
  return soup.get_text("\n")


def unicode_normalize(text: str, form: str) -> str:
  if form not in UNICODE_FORMS:
    raise UserError(f"normalize.unicode_form must be one of {UNICODE_FORMS}, got {form!r}")
  return unicodedata.normalize(form, text) if form else text


def remove_control_chars(text: str) -> str:
  return _CONTROL_RE.sub("", text)


def normalize_whitespace(text: str) -> str:
  text = _SPACES_RE.sub(" ", _NEWLINE_RE.sub("\n", text))
  # Per-line rstrip rather than a regex like "[ \t]+$": that regex is
  # quadratic on long runs of spaces that do not end a line.
  text = "\n".join(line.rstrip() for line in text.split("\n"))
  text = _BLANK_RUN_RE.sub("\n\n\n", text)
  # Only newlines: the first line's indentation is content.
  return text.strip("\n")


def normalize(text: str, cfg) -> str:
  """Applies the enabled steps of `cfg` (see `default_config`) in order."""
  if cfg.strip_html:
    text = strip_html(text)
  text = unicode_normalize(text, cfg.unicode_form)
  if cfg.remove_control_chars:
    text = remove_control_chars(text)
  if cfg.normalize_whitespace:
    text = normalize_whitespace(text)
  return text
