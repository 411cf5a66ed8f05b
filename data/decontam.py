"""Decontamination: drop training documents sharing a long word n-gram with an eval set.

As in GPT-3 and later reports: words are lowercased and stripped of
punctuation, and any shared n-gram (13 words by default) marks a document.
"""

import hashlib
import re

_WORD = re.compile(r"\w+")


def _ngram_keys(text: str, n: int):
  words = _WORD.findall(text.lower())
  for i in range(len(words) - n + 1):
    yield hashlib.blake2b(" ".join(words[i:i + n]).encode(), digest_size=8).digest()


class NgramIndex:

  def __init__(self, n: int):
    self.n = n
    self.keys: set[bytes] = set()

  def add(self, text: str) -> None:
    self.keys.update(_ngram_keys(text, self.n))

  def contaminated(self, text: str) -> bool:
    return any(k in self.keys for k in _ngram_keys(text, self.n))
