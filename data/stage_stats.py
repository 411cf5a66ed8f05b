"""Per-stage accounting: documents and characters in and out, and removals by reason."""

import collections


def new_stage() -> dict:
  return {"docs_in": 0, "docs_out": 0, "chars_in": 0, "chars_out": 0, "removed": {}, "examples": {}, "counts": {}}


def record(stage: dict, text_in: str, text_out: str | None, reason: str | None = None,
           doc_id: str = "", max_examples: int = 3) -> None:
  """One document passed through a stage; `text_out=None` means it was removed for `reason`."""
  stage["docs_in"] += 1
  stage["chars_in"] += len(text_in)
  if text_out is None:
    stage["removed"][reason] = stage["removed"].get(reason, 0) + 1
    examples = stage["examples"].setdefault(reason, [])
    if len(examples) < max_examples:
      examples.append({"id": doc_id, "text": text_in[:400]})
  else:
    stage["docs_out"] += 1
    stage["chars_out"] += len(text_out)


def count(stage: dict, what: str, n: int = 1) -> None:
  stage["counts"][what] = stage["counts"].get(what, 0) + n


def merge(stats_list: list[dict], max_examples: int = 3) -> dict:
  """Adds up {stage name: stage dict} from several shards, in order."""
  out = collections.OrderedDict()
  for stats in stats_list:
    for name, s in stats.items():
      m = out.setdefault(name, new_stage())
      for key in ("docs_in", "docs_out", "chars_in", "chars_out"):
        m[key] += s[key]
      for key in ("removed", "counts"):
        for k, v in s[key].items():
          m[key][k] = m[key].get(k, 0) + v
      for reason, examples in s["examples"].items():
        slot = m["examples"].setdefault(reason, [])
        slot.extend(examples[: max_examples - len(slot)])
  return dict(out)
