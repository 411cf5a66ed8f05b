"""Typed config sections.

Every section of an experiment config (`config.model`, `config.train`, ...) is
a frozen dataclass deriving from `Section`, defined once, next to the code
that reads it, with its defaults and a comment per field. `configs/schema.py`
gathers them; `configs/base.py` turns their defaults into the locked
`ml_collections.ConfigDict` that experiment files and `--config.a.b=value`
overrides edit; and `from_config` turns that ConfigDict back into typed,
validated sections, so a run reads `cfg.train.batch_size` from an object whose
fields are known to exist and to make sense.

Validation has two parts, both run by `from_config`: the field types
(`typing.Literal` fields list their choices) are checked here for every
section; each section's `check()` adds its own rules (ranges, fields that
depend on each other) and raises through `self.require`, which names the
field. A bad value therefore fails before anything runs, in one clear line.
"""

import dataclasses
import typing
from collections.abc import Mapping
from typing import Any, ClassVar

from errors import UserError

# Marks a field that a run derives (e.g. ModelConfig.lora from config.lora): never in the ConfigDict.
DERIVED = {"derived": True}


def _config_fields(cls) -> list[dataclasses.Field]:
  return [f for f in dataclasses.fields(cls) if not f.metadata.get("derived")]


def _describe(kind) -> str:
  if typing.get_origin(kind) is typing.Literal:
    return "one of " + ", ".join(repr(c) for c in typing.get_args(kind))
  return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(kind, str(kind))


def _convert(kind, value, where: str):
  """`value` as the field type `kind`, or a UserError naming `where`."""
  if isinstance(kind, type) and issubclass(kind, Section):
    return kind.from_config(value)
  if typing.get_origin(kind) is typing.Literal:
    ok = value in typing.get_args(kind)
  elif kind is float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    value = float(value) if ok else value
  elif kind is int:
    ok = isinstance(value, int) and not isinstance(value, bool)
  else:
    ok = isinstance(value, kind)
  if not ok:
    raise UserError(f"{where}={value!r}; expected {_describe(kind)}")
  return value


class Section:
  """A frozen dataclass of config fields: subclasses set PATH ("config.train") and may add check()."""
  PATH: ClassVar[str] = "config"

  @classmethod
  def defaults(cls) -> dict[str, Any]:
    """The default values as a nested dict: what the ConfigDict starts from."""
    out = {}
    for f in _config_fields(cls):
      if f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
      else:
        value = f.default
      out[f.name] = value.to_dict() if isinstance(value, Section) else value
    return out

  @classmethod
  def from_config(cls, values):
    """The typed section of a ConfigDict (or a plain mapping); keys it lacks take their defaults.

    Unknown keys, values of the wrong type and values the section's rules refuse each raise a
    UserError naming the field.
    """
    if hasattr(values, "to_dict"):
      values = values.to_dict()
    if not isinstance(values, Mapping):
      raise UserError(f"{cls.PATH}={values!r}; expected a section of fields")
    known = {f.name: f for f in _config_fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
      raise UserError(f"unknown config key {cls.PATH}.{unknown[0]}; valid keys of {cls.PATH}: "
                      f"{', '.join(sorted(known))}")
    hints = typing.get_type_hints(cls)
    kwargs = {name: _convert(hints[name], value, f"{cls.PATH}.{name}") for name, value in values.items()}
    section = cls(**kwargs)
    section.check()
    return section

  def to_dict(self) -> dict[str, Any]:
    """The section's values, as the ConfigDict and a run's config.json hold them."""
    return {f.name: (v.to_dict() if isinstance(v := getattr(self, f.name), Section) else v)
            for f in _config_fields(type(self))}

  def check(self) -> None:
    """The section's own rules; raise through self.require."""

  def require(self, ok: bool, field: str, expected: str) -> None:
    if not ok:
      raise UserError(f"{self.PATH}.{field}={getattr(self, field)!r}; expected {expected}")
