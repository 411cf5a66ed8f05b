"""Input and output policies for the server: PII redaction (data/pii.py, the detectors the data
pipeline scrubs with), deny-listed terms and topics, a prompt-length limit and a fixed refusal.

A policy file is a Python config like every experiment's (configs/guardrails/default.py):

  def get_config():
    c = ml_collections.ConfigDict()
    c.refusal = "Sorry, I can't help with that."
    c.max_prompt_tokens = 1024               # 0 = the model's context is the only limit
    c.input = dict(pii=("email", "phone"), deny="weapons")   # redact PII in prompts; refuse denied topics
    c.output = dict(pii=("email", "phone"), deny="weapons")
    c.topics = dict(weapons=dict(keywords=["nerve agent"], patterns=[r"\\bbuild (a|an) bomb\\b"]))
    return c

Output checks run on the stream as it is produced (scripts/serving/textstream.py
holds back the last `hold` characters), so a redacted or denied string never
reaches a client, even split across chunks.
"""

import dataclasses
import importlib.util
import logging
import re

from data import pii
from errors import UserError

logger = logging.getLogger("strata.guardrails")
_KEYS = {"refusal", "max_prompt_tokens", "input", "output", "topics", "hold"}
_SIDE_KEYS = {"pii", "deny"}


@dataclasses.dataclass
class Side:
  pii_types: tuple[str, ...] = ()
  deny: tuple[str, ...] = ()  # topic names


@dataclasses.dataclass
class Guardrails:
  refusal: str = "Sorry, I can't help with that."
  max_prompt_tokens: int = 0
  input: Side = dataclasses.field(default_factory=Side)
  output: Side = dataclasses.field(default_factory=Side)
  topics: dict[str, re.Pattern] = dataclasses.field(default_factory=dict)
  hold: int = 128  # characters held back on a stream: longer than any PII string or denied phrase
  on_intervention: object = None  # called with (stage, kind, request id): /metrics counts them

  # ------------------------------------------------------------ checks

  def denied_topic(self, text: str, side: Side) -> str | None:
    for name in side.deny:
      if self.topics[name].search(text):
        return name
    return None

  def denies_output(self, text: str) -> bool:
    return self.denied_topic(text, self.output) is not None

  def redact(self, text: str, side: Side) -> tuple[str, dict[str, int]]:
    return pii.scrub(text, side.pii_types) if side.pii_types and text else (text, {})

  def redact_output(self, text: str) -> str:
    return self.redact(text, self.output)[0]

  def record(self, stage: str, kind: str, request_id: str, detail: str = "") -> None:
    logger.warning("guardrail %s/%s on request %s%s", stage, kind, request_id, f": {detail}" if detail else "")
    if self.on_intervention:
      self.on_intervention(stage, kind)

  def check_input(self, text: str, request_id: str) -> tuple[str, bool]:
    """(the text the model may see, whether to refuse), recording each intervention."""
    topic = self.denied_topic(text, self.input)
    if topic:
      self.record("input", "deny", request_id, topic)
      return text, True
    redacted, counts = self.redact(text, self.input)
    for kind, hits in counts.items():
      self.record("input", "pii", request_id, f"{hits} {kind}")
    return redacted, False


def _compile_topic(name: str, spec) -> re.Pattern:
  spec = dict(spec)
  unknown = set(spec) - {"keywords", "patterns"}
  if unknown:
    raise UserError(f"guardrails topic {name!r}: unknown keys {sorted(unknown)}; expected keywords, patterns")
  parts = [r"\b" + re.escape(k) + r"\b" for k in spec.get("keywords", ())]
  for p in spec.get("patterns", ()):
    try:
      re.compile(p)
    except re.error as e:
      raise UserError(f"guardrails topic {name!r}: pattern {p!r} is not a regular expression: {e}") from e
    parts.append(f"(?:{p})")
  if not parts:
    raise UserError(f"guardrails topic {name!r} has neither keywords nor patterns")
  return re.compile("|".join(parts), re.IGNORECASE)


def _side(raw, where: str, topics: dict) -> Side:
  raw = dict(raw or {})
  unknown = set(raw) - _SIDE_KEYS
  if unknown:
    raise UserError(f"{where}: unknown keys {sorted(unknown)}; expected {sorted(_SIDE_KEYS)}")
  types = raw.get("pii", ())
  types = tuple(pii.PII_TYPES) if types is True else (() if not types else
                                                       ((types,) if isinstance(types, str) else tuple(types)))
  bad = sorted(set(types) - set(pii.PII_TYPES))
  if bad:
    raise UserError(f"{where}.pii: unknown PII types {bad}; expected some of {list(pii.PII_TYPES)} or True")
  deny = raw.get("deny", ())
  deny = (deny,) if isinstance(deny, str) else tuple(deny)
  missing = sorted(set(deny) - set(topics))
  if missing:
    raise UserError(f"{where}.deny names topics {missing} that `topics` does not define")
  return Side(types, deny)


def from_config(c, path: str = "guardrails") -> Guardrails:
  c = c.to_dict() if hasattr(c, "to_dict") else dict(c)
  unknown = set(c) - _KEYS
  if unknown:
    raise UserError(f"{path}: unknown keys {sorted(unknown)}; expected some of {sorted(_KEYS)}")
  topics = {name: _compile_topic(name, spec) for name, spec in dict(c.get("topics") or {}).items()}
  g = Guardrails(topics=topics, input=_side(c.get("input"), f"{path}: input", topics),
                 output=_side(c.get("output"), f"{path}: output", topics))
  if "refusal" in c:
    g.refusal = str(c["refusal"])
  if int(c.get("max_prompt_tokens", 0)) < 0:
    raise UserError(f"{path}: max_prompt_tokens={c['max_prompt_tokens']}; expected 0 (off) or a positive count")
  g.max_prompt_tokens = int(c.get("max_prompt_tokens", 0))
  g.hold = int(c.get("hold", g.hold))
  return g


def load(path: str) -> Guardrails:
  """The policy in a config file's get_config()."""
  spec = importlib.util.spec_from_file_location("guardrails_config", path)
  if spec is None:
    raise UserError(f"--guardrails={path}: not a Python file")
  module = importlib.util.module_from_spec(spec)
  try:
    spec.loader.exec_module(module)
  except FileNotFoundError as e:
    raise UserError(f"--guardrails={path}: no such file") from e
  if not hasattr(module, "get_config"):
    raise UserError(f"--guardrails={path}: defines no get_config()")
  return from_config(module.get_config(), path)
