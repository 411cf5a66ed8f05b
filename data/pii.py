"""Scrubbing of personally identifiable information and secrets from documents.

`scrub(text)` replaces every hit with a typed placeholder such as `<EMAIL>` and
counts the hits per type. The detectors run one after another in PII_TYPES
order, each over the output of the previous one. Placeholders contain no
digits, '@', ':' or '.', so a later detector never matches an earlier one's
placeholder, and the most specific detectors run first (a PEM block is
swallowed whole before anything inside it can look like a secret; IPs and card
numbers are gone before the phone matcher can misread them).

Every detector is "candidate regex, then check": regexes (compiled once at
import) find cheap candidates, and a validator decides which ones are real:
  private_key  PEM BEGIN...END blocks (or a truncated header plus base64 lines)
  secret       known token formats, then `name = value` assignments whose name
               says secret and whose value looks random (only the value goes)
  email        local@domain.tld
  iban         country + check digits + body, kept if stdnum.iban.is_valid
  credit_card  13-19 digits in groups, kept if stdnum.luhn.is_valid
  ip_address   IPv6 and IPv4 shapes, kept if the ipaddress module parses them
               and they do not read as section or version numbers
  phone        runs of digits and separators, kept if phonenumbers'
               PhoneNumberMatcher at Leniency.STRICT_GROUPING reads all their
               digits as numbers of one of the configured regions; a bare
               run of digits also needs a phone word ("call", "tel", "fax",
               "mobile", ...) in the 60 characters before it
A validator that rejects a candidate leaves its text as it was, uncounted.
"""

import collections
import functools
import ipaddress
import itertools
import math
import re
from typing import Callable

import phonenumbers
from stdnum import iban as stdnum_iban
from stdnum import luhn

from errors import UserError

PII_TYPES = ("private_key", "secret", "email", "iban", "credit_card", "ip_address", "phone")

PLACEHOLDERS = {t: f"<{t.upper()}>" for t in PII_TYPES}

# ---------------------------------------------------------------------------
# Shared helpers.

# A replacer gets a match and returns its new text, or None to keep the match.
Replacer = Callable[[re.Match], str | None]


def _sub(pattern: re.Pattern, text: str, replace: Replacer) -> tuple[str, int]:
  """pattern.sub that counts only the matches `replace` actually changed."""
  hits = 0

  def one(m: re.Match) -> str:
    nonlocal hits
    new = replace(m)
    if new is None:
      return m.group(0)
    hits += 1
    return new

  return pattern.sub(one, text), hits


def _replace_group(m: re.Match, group: str, placeholder: str) -> str:
  """The match with only `group` replaced: `api_key = "x"` keeps `api_key = "`."""
  start, end = m.start(group) - m.start(), m.end(group) - m.start()
  whole = m.group(0)
  return whole[:start] + placeholder + whole[end:]


def _replace_spans(text: str, spans: list[tuple[int, int]], placeholder: str) -> str:
  """Replaces sorted, non-overlapping (start, end) spans of text."""
  out, pos = [], 0
  for start, end in spans:
    out += [text[pos:start], placeholder]
    pos = end
  out.append(text[pos:])
  return "".join(out)


# ---------------------------------------------------------------------------
# private_key

_PEM_BEGIN = re.compile(r"-----BEGIN [A-Z0-9 ]*?PRIVATE KEY(?: BLOCK)?-----")
_PEM_END = re.compile(r"-----END [A-Z0-9 ]*?PRIVATE KEY(?: BLOCK)?-----")
# A block cut off before its END line: the base64 lines after the header are
# still key material.
_PEM_TRUNCATED_BODY = re.compile(r"(?:\s+[A-Za-z0-9+/=]{16,})*")


def _scrub_private_key(text: str) -> tuple[str, int]:
  # A loop rather than one BEGIN.*?END regex: that regex rescans to the end of
  # the text for every BEGIN without an END, quadratic on hostile input. Here
  # each END search either consumes what it scanned or proves there is no END
  # further on.
  spans, pos, has_end = [], 0, True
  while begin := _PEM_BEGIN.search(text, pos):
    end = _PEM_END.search(text, begin.end()) if has_end else None
    if end is None:
      has_end = False
      end = _PEM_TRUNCATED_BODY.match(text, begin.end())
    spans.append((begin.start(), end.end()))
    pos = end.end()
  return _replace_spans(text, spans, PLACEHOLDERS["private_key"]), len(spans)


# ---------------------------------------------------------------------------
# secret

# Token formats whose prefix alone identifies them. `(?<![\w-])` and the
# trailing lookahead keep us from matching inside a longer token.
# Patterns here open with a lookahead on their possible first characters: it
# rejects most positions before the costlier lookbehind runs (2-3x faster).
_KNOWN_TOKEN = re.compile(
    r"(?=[Agxsrpe])(?<![\w-])(?P<v>"
    r"(?:AKIA|ASIA)[A-Z0-9]{16}"                         # AWS access key id
    r"|gh[pousr]_[A-Za-z0-9]{20,255}"                    # GitHub tokens
    r"|github_pat_[A-Za-z0-9_]{20,255}"                  # GitHub fine-grained
    r"|xox[baprs]-[A-Za-z0-9-]{10,}"                     # Slack
    r"|AIza[A-Za-z0-9_-]{35}"                            # Google API key
    r"|(?:sk|rk|pk)_live_[A-Za-z0-9]{10,}"               # Stripe
    r"|sk-[A-Za-z0-9_-]{32,}"                            # OpenAI-style
    r"|eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}"  # JWT
    r")(?![\w-])")

# AWS secret keys are 40 base64 characters with no prefix of their own, so
# they are only recognisable by the name they are assigned to.
_AWS_SECRET = re.compile(
    r"(?=[AaSs])(?i:aws_?secret(?:_access)?_key|secret_?access_?key)[\"']?[ \t]*[=:][ \t]*[\"']?"
    r"(?P<v>[A-Za-z0-9/+]{40})(?![A-Za-z0-9/+=])")

# scheme://user:password@host -- the password part.
_URL_PASSWORD = re.compile(r"(?<=://)[^\s:/@]+:(?P<v>[^\s:/@]+)@(?=[\w.-])")

# Generic `name = value` where the name ends in a secret-ish word (`db_password`,
# `githubToken`, `x-api-key`); only the value is replaced, so where the name
# starts does not matter. The name may be quoted (JSON) or annotated
# (`api_key: str = ...`); `=(?!=)` keeps comparisons out. Values are a quoted
# literal or a bare token; both are then checked by _looks_random.
_SECRET_NAME = (r"(?:api[_-]?key|apikey|access[_-]?key|secret(?:[_-]?key)?|token"
                r"|passw(?:or)?d|passphrase|pwd)")
_TOKEN_CHARS = r"A-Za-z0-9_\-+/=.~!@#$%^&*?"
_BARE_CHARS = r"A-Za-z0-9_\-+/=.~"
_ASSIGNMENT = re.compile(
    r"(?=[AaSsTtPp])(?i:" + _SECRET_NAME + r")(?![\w-])[\"']?"
    r"(?:[ \t]*:[ \t]*[A-Za-z_][\w.]*(?:\[[^\]\n]*\])?)?"          # type annotation
    r"[ \t]*(?:=>|:=|=(?!=)|:)[ \t]*"
    r"(?:(?P<q>[\"'`])(?P<qv>[" + _TOKEN_CHARS + r"]{16,})(?P=q)"
    # A bare value must end where a value ends, not at `(`, `[` or `.attr`.
    r"|(?P<bv>[" + _BARE_CHARS + r"]{16,})(?=[\s,;&\"'})\]]|$))")

# Dotted attribute paths and snake_case names are code, not secrets.
_CODE_LIKE = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+|[a-z0-9]*_[a-z0-9_]*")


def _entropy(s: str) -> float:
  """Shannon entropy in bits per character."""
  counts = collections.Counter(s)
  return -sum(c / len(s) * math.log2(c / len(s)) for c in counts.values())


def _looks_random(value: str) -> bool:
  # Real keys and passwords mix letters and digits; names like
  # "YOUR_API_KEY_HERE" and fillers like "xxxxxxxxxxxxxxx1" do not pass.
  return (any(c.isalpha() for c in value) and any(c.isdigit() for c in value)
          and _entropy(value) >= 2.5)


def _replace_value(m: re.Match) -> str:
  return _replace_group(m, "v", PLACEHOLDERS["secret"])


def _replace_assignment(m: re.Match) -> str | None:
  if m.group("qv") is not None:
    return _replace_group(m, "qv", PLACEHOLDERS["secret"]) if _looks_random(m.group("qv")) else None
  bare = m.group("bv")
  if _CODE_LIKE.fullmatch(bare) or not _looks_random(bare):
    return None
  return _replace_group(m, "bv", PLACEHOLDERS["secret"])


def _scrub_secret(text: str) -> tuple[str, int]:
  total = 0
  # Known formats first: a GitHub token assigned to `token = ...` is one hit,
  # and the generic rule then sees only the placeholder.
  for pattern, replace in ((_KNOWN_TOKEN, _replace_value), (_AWS_SECRET, _replace_value),
                           (_URL_PASSWORD, _replace_value), (_ASSIGNMENT, _replace_assignment)):
    text, hits = _sub(pattern, text, replace)
    total += hits
  return text, total


# ---------------------------------------------------------------------------
# email

_EMAIL = re.compile(
    r"(?<![\w.%+-])[A-Za-z0-9][A-Za-z0-9._%+-]*@"
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}(?![\w-])")


def _scrub_email(text: str) -> tuple[str, int]:
  if "@" not in text:  # most documents; a substring test is far cheaper than the regex
    return text, 0
  return _sub(_EMAIL, text, lambda m: PLACEHOLDERS["email"])


# ---------------------------------------------------------------------------
# iban

# Electronic form (DE89370400440532013000) or printed in groups of four
# (DE89 3704 0044 0532 0130 00).
_IBAN = re.compile(
    r"(?=[A-Z])(?<!\w)[A-Z]{2}\d{2}"
    r"(?:[A-Z0-9]{11,30}|(?: [A-Z0-9]{4}){2,7}(?: [A-Z0-9]{1,3})?)(?!\w)")


def _replace_iban(m: re.Match) -> str | None:
  # The grouped form can run into a following all-caps word ("... 7034 THEN"),
  # so drop trailing groups until the rest validates.
  parts = m.group(0).split(" ")
  for k in range(len(parts), 0, -1):
    candidate = " ".join(parts[:k])
    if stdnum_iban.is_valid(candidate):
      return PLACEHOLDERS["iban"] + m.group(0)[len(candidate):]
  return None


def _scrub_iban(text: str) -> tuple[str, int]:
  return _sub(_IBAN, text, _replace_iban)


# ---------------------------------------------------------------------------
# credit_card

# A run of >= 13 digits with single spaces or dashes between them, starting
# and ending at a number boundary (not inside a word, a longer number or a
# decimal fraction). Which part of it is a card is decided in _card_spans.
_DIGIT_RUN = re.compile(r"(?=\d)(?<![\w.])\d(?:[ -]?\d){12,}(?!\w)(?!\.\d)")
_DIGIT_GROUP = re.compile(r"\d+")


def _is_card(digits: str) -> bool:
  # Major industry identifiers 2-6 cover Visa, Mastercard, Amex, Discover,
  # JCB, Diners, UnionPay and Maestro; excluding 1 keeps Unix timestamps in ms
  # or ns (13/19 digits, 10% of them Luhn-valid) out. One repeated digit
  # (0000 0000 0000 0000) passes Luhn but is filler.
  return (13 <= len(digits) <= 19 and digits[0] in "23456" and len(set(digits)) > 1
          and luhn.is_valid(digits))


def _card_grouping(lengths: list[int]) -> bool:
  # Cards print as 4-4-4-4(-3), 4-6-5 or 4-6-4: a group of 4 first and no
  # group under 4 but the last, so rows of 3-digit readings are not cards.
  return lengths[0] == 4 and all(4 <= n <= 6 for n in lengths[1:-1]) and 2 <= lengths[-1] <= 6


def _card_spans(run: str) -> list[tuple[int, int]]:
  """Spans of `run` that are card numbers: a whole 13-19 digit group, or
  consecutive groups in a card's grouping (4-4-4-4, 4-6-5, ...), longest first."""
  groups = [(g.start(), g.end()) for g in _DIGIT_GROUP.finditer(run)]
  spans, i = [], 0
  while i < len(groups):
    for j in range(min(len(groups), i + 6), i, -1):
      window = groups[i:j]
      if j - i > 1 and not _card_grouping([e - s for s, e in window]):
        continue
      if _is_card("".join(run[s:e] for s, e in window)):
        spans.append((window[0][0], window[-1][1]))
        i = j
        break
    else:
      i += 1
  return spans


def _scrub_credit_card(text: str) -> tuple[str, int]:
  spans = [(run.start() + start, run.start() + end)
           for run in _DIGIT_RUN.finditer(text) for start, end in _card_spans(run.group(0))]
  return _replace_spans(text, spans, PLACEHOLDERS["credit_card"]), len(spans)


# ---------------------------------------------------------------------------
# ip_address

# IPv6: 2-7 `group:` then a last group or an embedded IPv4 (::ffff:1.2.3.4).
# Not glued to a word, a colon or a dot on either side, so `std::map`,
# `2023-01-15T12:30:45` and `a::b` never start a candidate.
_IPV6 = re.compile(
    r"(?=[0-9A-Fa-f]{0,4}:)(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}"
    r"(?:\d{1,3}(?:\.\d{1,3}){3}|[0-9A-Fa-f]{0,4})(?![\w:]|\.\d)")
# IPv4: exactly four dotted numbers; `v1.2.3.4` and `1.2.3.4.5` are excluded.
_IPV4 = re.compile(r"(?=\d)(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?!\w|\.\d)")

# Dotted numbers after these words are section, version or standard numbers
# ("Section 2.1.1.4", "Version 1.9.4.3", "§ 4.1.2.3", "RFC 2.1.3.4"), also in
# lists ("sections 2.1.1.4 and 2.1.1.5"). Matched against the text before a
# candidate, so it anchors at the end.
_NUMBERING_WORD = re.compile(
    r"(?i)(?:\b(?:sections?|sect?|chapters?|ch|clauses?|paragraphs?|para|parts?|appendix|figures?|fig"
    r"|tables?|steps?|versions?|ver|releases?|builds?|revisions?|rev|v|rfcs?)\.?|§)\s*§?\s*"
    r"(?:[\d.]+\s*(?:,|and|or|to|-|–)\s*)*$")
_NUMBERING_LOOKBEHIND = 60  # characters of context searched for _NUMBERING_WORD
# A dotted quad opening a line and followed by a capitalised word is a
# numbered heading ("2.1.1.4 Overview", "1.2.3.4. Scope").
_LINE_START = re.compile(r"(?:^|\n)[ \t#*>-]*$")
_HEADING_TITLE = re.compile(r"\.?[ \t]+[A-Z]")


def _after_numbering_word(text: str, start: int) -> bool:
  return bool(_NUMBERING_WORD.search(text, max(0, start - _NUMBERING_LOOKBEHIND), start))


def _is_heading_number(text: str, start: int, end: int) -> bool:
  return bool(_LINE_START.search(text, max(0, start - 20), start) and _HEADING_TITLE.match(text, end))


def _plausible_ipv6(s: str) -> bool:
  # `ipaddress` accepts `::`, `1::2`, `a::b` and `9350::`, which in text are
  # Python slices (x[1::2]), C++ scopes and `host::port` typos far more often
  # than addresses. Ask for at least two non-empty groups (an embedded IPv4
  # counts as one), a digit and some address-like shape. Costs `::1` and
  # one-group forms such as `fe80::`.
  if not any(c.isdigit() for c in s):
    return False
  groups = [g for g in s.split(":") if g]
  if len(groups) < 2:
    return False
  if "." in s:
    return True
  return len(groups) >= 3 or any(len(g) == 4 or not g.isdigit() for g in groups)


def _valid_ip(s: str, kind: type) -> bool:
  try:
    kind(s)
  except ValueError:
    return False
  return True


def _ipv4_replacement(text: str, m: re.Match) -> str | None:
  if not _valid_ip(m.group(0), ipaddress.IPv4Address):
    return None
  if _after_numbering_word(text, m.start()) or _is_heading_number(text, m.start(), m.end()):
    return None
  return PLACEHOLDERS["ip_address"]


def _scrub_ip_address(text: str) -> tuple[str, int]:
  placeholder = PLACEHOLDERS["ip_address"]
  # IPv6 first: its IPv4-mapped form contains a dotted quad.
  text, v6 = _sub(_IPV6, text, lambda m: placeholder if (
      _plausible_ipv6(m.group(0)) and _valid_ip(m.group(0), ipaddress.IPv6Address)) else None)
  text, v4 = _sub(_IPV4, text, lambda m: _ipv4_replacement(text, m))
  return text, v6 + v4


# ---------------------------------------------------------------------------
# phone

# Regions whose national formats are tried, in order; numbers written with
# +country code parse under any of them. The English-speaking countries plus
# the largest EU ones; each extra region is one more way for a plain number to
# read as valid, so keep the list to where the corpus comes from.
DEFAULT_PHONE_REGIONS = "US,GB,CA,AU,NZ,IE,IN,ZA,DE,FR"

_DIGIT = re.compile(r"\d")
# Fewer digits than this is never a phone number here: the shortest national
# numbers of the default regions (IE `(022) 12345`, DE `030 123456`) have 8
# or 9 digits, while years, counts and short local numbers have fewer.
_MIN_PHONE_DIGITS = 8
# A candidate: digits joined by up to three spaces, dashes, dots or
# parentheses, or one slash (`030/1234567`); optionally opened by `+` or `(`.
# It is maximal, so a phone number glued to more digits lies inside a longer
# candidate, which then has digits the matcher did not cover.
_PHONE_CANDIDATE = re.compile(
    r"(?=[+(\d])(?<![\w.+])(?:\+|\(\+?)?\d(?:(?:[ \t\-.()]{1,3}|/)?\d)*\)?")
_DECIMAL = re.compile(r"[+-]?\d+\.\d+")
_DIGIT_ALPHABET = "01234567890"
# A number written as one run of digits (`2147483647`, `(3644798167)`) has no
# phone formatting: in text it is far more often a constant, a timestamp or an
# id; digits in columns (`01  012 0123`) are a table. Either counts as a phone
# number only after a word that says so, in the characters before it.
_BARE_DIGITS = re.compile(r"\(?\d+\)?")
_COLUMN_GAP = re.compile(r"\d[ \t]{2,}\d")
_PHONE_WORD = re.compile(
    r"(?i)\b(?:tel|tele|telephone|telefon|t\u00e9l\u00e9phone|phones?|ph|call(?:s|ed|ing)?|fax|mobile|mob|cell"
    r"|cellphone|ring|dial|contact|hotline|helpline|whatsapp|sms)\b")
_PHONE_WORD_LOOKBEHIND = 60


def phone_regions(spec: str | tuple[str, ...]) -> tuple[str, ...]:
  """`pii.phone_regions` ("US,GB" or a tuple) as region codes, checked."""
  codes = tuple(c.strip().upper() for c in (spec.split(",") if isinstance(spec, str) else spec) if c.strip())
  unknown = [c for c in codes if c not in phonenumbers.SUPPORTED_REGIONS]
  if unknown or not codes:
    raise UserError(f"pii.phone_regions={spec!r}: unknown region code(s) {unknown or '(none given)'}; "
                    f"valid codes are {','.join(sorted(phonenumbers.SUPPORTED_REGIONS))}")
  return codes


@functools.lru_cache(maxsize=64)
def _matcher_regions(spec: str | tuple[str, ...]) -> tuple[str, ...]:
  """One region per country calling code: US and CA read national numbers
  identically (+1), so trying both would only double the cost."""
  seen, regions = set(), []
  for code in phone_regions(spec):
    cc = phonenumbers.country_code_for_region(code)
    if cc not in seen:
      seen.add(cc)
      regions.append(code)
  return tuple(regions)


def _balanced(text: str, start: int, end: int) -> tuple[int, int]:
  """The span without an unpaired bracket at either end: in `(+61 2 1234 5678)`
  the matcher's match opens with `(` but stops before `)`."""
  span = text[start:end]
  if span[0] == "(" and span.count("(") > span.count(")"):
    start += 1
  elif span[-1] == ")" and span.count(")") > span.count("("):
    end -= 1
  return start, end


_MOBILE_TYPES = (phonenumbers.PhoneNumberType.MOBILE, phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE)


def _written_plausibly(match: phonenumbers.PhoneNumberMatch, region: str) -> bool:
  """Rejects shapes that valid numbers take but people do not write:
  4+ groups of 1-2 digits without a leading 0 or + (readings such as
  `60 55 58 35 53`, which India reads as a mobile; French `01 42 68 53 00`
  passes), and outside +1 a national number without its trunk prefix unless
  it is a mobile (India writes mobiles bare, `98100 10299`, but a bare
  `1896500744` is a timestamp, not a landline)."""
  raw = match.raw_string.lstrip("(")
  if raw.startswith("+"):
    return True
  groups = re.findall(r"\d+", raw)
  if len(groups) >= 4 and all(len(g) <= 2 for g in groups) and not raw.startswith("0"):
    return False
  prefix = phonenumbers.PhoneMetadata.metadata_for_region(region).national_prefix
  if not prefix or match.number.country_code == 1 or "".join(groups).startswith(prefix):
    return True
  return phonenumbers.number_type(match.number) in _MOBILE_TYPES


def _phone_spans_in(candidate: str, regions: tuple[str, ...], named: bool = False) -> list[tuple[int, int]]:
  """Phone numbers making up all of `candidate`'s digits, under the first
  region that reads them so; none if any digit is left over (a phone number
  inside a longer run of numbers, a table row, an ISBN) or if a match is a
  decimal (the ten digits of 0.5772156649).

  STRICT_GROUPING: valid numbers grouped as the region groups them, which keeps
  readings such as `42 42 45 41 36` (a US area code and line) out. After a phone
  word (`named`), any valid number counts, however grouped: people write
  landlines in mobile grouping (India's `071745 67041` for `07174 567041`)."""
  digits = [i for i, c in enumerate(candidate) if c.isdigit()]
  leniency = phonenumbers.Leniency.VALID if named else phonenumbers.Leniency.STRICT_GROUPING
  for region in regions:
    matches = phonenumbers.PhoneNumberMatcher(candidate, region, leniency=leniency)
    matches = list(matches)
    spans = [_balanced(candidate, m.start, m.end) for m in matches]
    if (not spans or any(_DECIMAL.fullmatch(candidate, s, e) for s, e in spans)
        or not all(_written_plausibly(m, region) for m in matches)):
      continue
    if all(any(s <= i < e for s, e in spans) for i in digits):
      return spans
  return []


def _scrub_phone(text: str, regions: str | tuple[str, ...]) -> tuple[str, int]:
  # Matching is by far the slowest detector; most code and prose have too few
  # digits for any phone number and skip it.
  if sum(1 for _ in itertools.islice(_DIGIT.finditer(text), _MIN_PHONE_DIGITS)) < _MIN_PHONE_DIGITS:
    return text, 0
  regions = _matcher_regions(regions)
  spans = []
  for m in _PHONE_CANDIDATE.finditer(text):
    candidate = m.group(0)
    # "0123456789" is valid in France, but in text it is the digit alphabet of code.
    if sum(c.isdigit() for c in candidate) < _MIN_PHONE_DIGITS or candidate in _DIGIT_ALPHABET:
      continue
    # Glued to a word or a decimal part (`4155552671abc`, `...2671.5`), or
    # after "version"/"section": not a phone number.
    if re.match(r"\w|\.\d", text[m.end():m.end() + 2]) or _after_numbering_word(text, m.start()):
      continue
    named = _named_phone(text, m.start())
    spans += [(m.start() + s, m.start() + e) for s, e in _phone_spans_in(candidate, regions, named)
              if named or _formatted(text, m.start() + s, m.start() + e)]
  return _replace_spans(text, spans, PLACEHOLDERS["phone"]), len(spans)


def _formatted(text: str, start: int, end: int) -> bool:
  """Written as a phone number: separators or a `+`, neither one bare run of digits nor table columns."""
  return not (_BARE_DIGITS.fullmatch(text, start, end) or _COLUMN_GAP.search(text, start, end))


def _named_phone(text: str, start: int) -> bool:
  """A phone word ("call", "tel", "fax", ...) shortly before `start`."""
  return bool(_PHONE_WORD.search(text, max(0, start - _PHONE_WORD_LOOKBEHIND), start))


# ---------------------------------------------------------------------------

_DETECTORS = {
    "private_key": _scrub_private_key,
    "secret": _scrub_secret,
    "email": _scrub_email,
    "iban": _scrub_iban,
    "credit_card": _scrub_credit_card,
    "ip_address": _scrub_ip_address,
}


def scrub(text: str, types: tuple[str, ...] = PII_TYPES,
          phone_regions: str | tuple[str, ...] = DEFAULT_PHONE_REGIONS) -> tuple[str, dict[str, int]]:
  """Returns (scrubbed text, {type: number of replacements}) -- only types with >0 hits in the dict.

  `types` selects detectors; they always run in PII_TYPES order.
  `phone_regions` ("US,GB,..." or a tuple of codes) are the regions whose
  national formats numbers without a +country code are read in; an unknown
  code raises UserError.
  """
  if isinstance(types, str):  # scrub(text, "email") means one type, not five letters
    types = (types,)
  unknown = sorted(set(types) - set(PII_TYPES))
  if unknown:
    raise ValueError(f"unknown PII type(s) {unknown}; valid types are {list(PII_TYPES)}")
  counts = {}
  for kind in PII_TYPES:
    if kind not in types:
      continue
    if kind == "phone":
      text, hits = _scrub_phone(text, phone_regions)
    else:
      text, hits = _DETECTORS[kind](text)
    if hits:
      counts[kind] = hits
  return text, counts
