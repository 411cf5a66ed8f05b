"""The prose of a document: its code examples and list bullets set aside.

Gopher's quality rules measure natural language: the share of words with a
letter, repeated lines and n-grams, stop words. Technical documentation mixes
that language with code examples, where an `@overload` line repeats by design
and `-> None: ...` has no letters, and with lists whose bullets are words
without letters. Judged whole, such documents fail rules meant for spam. The
rules therefore read `prose(text)`: the document without the code its markup
marks as code, and without list bullets. Only explicit markup counts, so
indentation alone (which prose uses too) never hides text from the rules:
- reStructuredText literal blocks: the lines indented under a paragraph that
  ends in "::" ("For example::"), which then reads as ending in ":";
- doctest blocks: from a line starting ">>>" to the next blank line;
- Markdown fenced code: from a ``` or ~~~ line to the closing one;
- list bullets ("- ", "* ", "+ ", "• ", "1. ", "2) ") at the start of a line:
  the marker goes, the item's text stays.
Blank lines stay, so paragraphs keep their boundaries. Linear in the length.
"""

import re

_BULLET = re.compile(r"^(\s*)(?:[-*+\u2022]|\d{1,3}[.)])\s+")
_FENCES = ("```", "~~~")


def prose(text: str) -> str:
  """`text` without literal, doctest and fenced code blocks, and without list bullets."""
  kept = []
  fence = None          # the opening fence while inside fenced code
  literal_indent = -1   # indentation of the "::" line while inside its literal block
  in_doctest = False
  for line in text.split("\n"):
    stripped = line.lstrip()
    if fence:
      if stripped.startswith(fence):
        fence = None
      continue
    if not stripped:
      in_doctest = False
      kept.append("")
      continue
    indent = len(line) - len(stripped)
    if literal_indent >= 0 and indent > literal_indent:
      continue
    literal_indent = -1
    if in_doctest or stripped.startswith(">>>"):
      in_doctest = True
      continue
    if stripped.startswith(_FENCES):
      fence = stripped[:3]
      continue
    if line.rstrip().endswith("::"):
      literal_indent = indent
      line = line.rstrip()[:-1]
      if line.strip() == ":":  # a bare "::" introduces the block and says nothing
        continue
    kept.append(_BULLET.sub(r"\1", line, count=1))
  return "\n".join(kept)
