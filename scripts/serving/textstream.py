"""A generated choice's text, released to the client only once it is safe to show.

Text is held back while its end could still turn into something the client
must not see: the start of a stop string, half of a multi-byte character, or
(with guardrails) a string the output policy redacts or denies, even when it
arrives split over many tokens. Released text is never taken back, so a
streamed answer and the same answer sent whole read the same.
"""

import os
from typing import Callable


class TextStream:
  """Feed it tokens with `push`; each call returns (newly releasable text, finish reason or None)."""

  def __init__(self, decode: Callable[[list[int]], str], stop: list[str], eos_id: int | None, guard=None,
               byte_ids: frozenset = frozenset()):
    self.decode, self.stop, self.eos_id, self.guard = decode, list(stop), eos_id, guard
    self.byte_ids = byte_ids
    self.ids: list[int] = []
    self.released = ""
    self._hold = max([len(s) - 1 for s in self.stop] + [guard.hold if guard else 0])
    self._searched = 0  # stop strings cannot start before this offset of the text

  def push(self, token: int) -> tuple[str, str | None]:
    if token == self.eos_id:
      return self._release(self.decode(self.ids), final=True), "stop"
    self.ids.append(token)
    text = self.decode(self.ids)
    finish = None
    hits = [i for i in (text.find(s, self._searched) for s in self.stop) if i >= 0]
    if hits:
      text, finish = text[:min(hits)], "stop"
    else:
      self._searched = max(0, len(text) - self._hold)
    if self.guard is not None and self.guard.denies_output(text):
      return self._refuse(), "content_filter"
    if finish is None and self.ids[-1] in self.byte_ids:
      text = self._settled(text)
    return self._release(text, final=finish is not None), finish

  def _settled(self, text: str) -> str:
    """The text up to the trailing run of byte-fallback tokens: their bytes decode only once the run
    ends (a sentencepiece decoder replaces an invalid run as a whole), so what they show now may change."""
    end = len(self.ids)
    while end and self.ids[end - 1] in self.byte_ids:
      end -= 1
    return text[:min(len(text), len(self.decode(self.ids[:end])))]

  def close(self) -> str:
    """Everything still held, when generation ends for another reason (max_tokens, the context's end)."""
    text = self.decode(self.ids)
    if self.guard is not None and self.guard.denies_output(text):
      return self._refuse()
    return self._release(text, final=True)

  def _refuse(self) -> str:
    delta = ("\n" if self.released else "") + self.guard.refusal
    self.released += delta
    return delta

  def _release(self, text: str, final: bool) -> str:
    whole = text
    if not final:
      cut = len(text.rstrip("\ufffd")) if text.endswith("\ufffd") else len(text)  # a character still arriving
      text = text[:max(0, min(cut, len(text) - self._hold))]
    if self.guard is not None:
      text = self.guard.redact_output(text)
      if not final:  # the cut may split a string that the whole text shows is personal data: stop before it
        text = os.path.commonprefix([text, self.guard.redact_output(whole)])
    if not text.startswith(self.released):  # a redaction reached back over released text: wait for the end
      if not final:
        return ""
      text = self.released + text[len(os.path.commonprefix([text, self.released])):]
    delta = text[len(self.released):]
    self.released = text
    return delta
