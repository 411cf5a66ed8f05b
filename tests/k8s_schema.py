"""Kubernetes manifests checked against the official Python client's models (kubernetes.client), the
API's OpenAPI schema in code: every field must exist on its object with a value of its type, and every
required field must be there."""

import re

from kubernetes import client

_PRIMITIVES = {"str": str, "int": int, "float": (int, float), "bool": bool, "object": object}
_KINDS = {("v1", "Service"): "V1Service", ("batch/v1", "Job"): "V1Job", ("v1", "Pod"): "V1Pod",
          ("v1", "ConfigMap"): "V1ConfigMap"}


def _check(value, type_name: str, path: str, errors: list[str]) -> None:
  if type_name in _PRIMITIVES:
    expected = _PRIMITIVES[type_name]
    if not isinstance(value, expected) or (type_name == "int" and isinstance(value, bool)):
      errors.append(f"{path}: {value!r} is not {type_name}")
    return
  if match := re.fullmatch(r"[lL]ist\[(.+)\]", type_name):
    if not isinstance(value, list):
      errors.append(f"{path}: expected a list")
      return
    for i, item in enumerate(value):
      _check(item, match.group(1), f"{path}[{i}]", errors)
    return
  if match := re.fullmatch(r"dict\(str, (.+)\)|Dict\[str, (.+)\]", type_name):
    if not isinstance(value, dict):
      errors.append(f"{path}: expected a mapping")
      return
    for key, item in value.items():
      _check(item, match.group(1) or match.group(2), f"{path}.{key}", errors)
    return
  model = getattr(client.models, type_name)
  if not isinstance(value, dict):
    errors.append(f"{path}: expected a {type_name} mapping")
    return
  by_json = {json_name: attr for attr, json_name in model.attribute_map.items()}
  for key, item in value.items():
    if key not in by_json:
      errors.append(f"{path}.{key}: not a field of {type_name} (fields: {', '.join(sorted(by_json))})")
    else:
      _check(item, model.openapi_types[by_json[key]], f"{path}.{key}", errors)


def validate(manifest: dict) -> None:
  """Raises ValueError listing every field that the API's schema does not accept."""
  kind = _KINDS.get((manifest.get("apiVersion"), manifest.get("kind")))
  if kind is None:
    raise ValueError(f"unknown apiVersion/kind {manifest.get('apiVersion')}/{manifest.get('kind')}")
  errors: list[str] = []
  _check(manifest, kind, manifest["kind"], errors)
  if errors:
    raise ValueError("; ".join(errors))
  # The models' constructors refuse a missing required field (e.g. a container without a name).
  client.ApiClient()._ApiClient__deserialize(manifest, kind)  # noqa: SLF001 -- the client's own reader
