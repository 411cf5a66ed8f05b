"""Task specs: a YAML or JSON file that names a task type, its data and its prompt.

    # evals/tasks/sentiment.yaml
    type: classification
    data: sentiment.jsonl             # JSONL, relative to this file
    prompt: "Review: {text}\\nSentiment:"
    labels: {positive: " positive", negative: " negative"}
    num_fewshot: 2                    # optional; drawn from fewshot_data or the task's own data
    fewshot_data: sentiment_fewshot.jsonl

`load` validates the spec and every data line up front, so a typo fails with
`FILE:LINE: what is wrong` before any model work. The `fields` table lists the
keys each type accepts; the task modules (`task_*.py`) score loaded tasks.
"""

import dataclasses
import json
import os
import random
import re
import string

import yaml
from absl import logging

from errors import UserError

TASK_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tasks")
SPEC_SUFFIXES = (".yaml", ".yml", ".json")

COMMON_KEYS = ("type", "name", "description", "data", "prompt")
FEWSHOT_KEYS = ("num_fewshot", "fewshot_data", "fewshot_separator", "fewshot_seed")
TYPE_KEYS = {
    "perplexity": ("dataset", "split", "documents", "text_field", "window", "stride"),
    "classification": FEWSHOT_KEYS + ("labels", "scoring", "max_new_tokens"),
    "multiple_choice": FEWSHOT_KEYS + ("choice_prefix",),
    "generation": FEWSHOT_KEYS + ("max_new_tokens", "stop", "target_prefix"),
    "ranking": FEWSHOT_KEYS + ("normalize", "k"),
    "retrieval": ("index", "k"),
}
DEFAULT_PROMPTS = {
    "classification": "{text}",
    "multiple_choice": "Question: {question}\nAnswer:",
    "generation": "{prompt}",
    "ranking": "{query}\n",
    "retrieval": "{query}",
}
DOCUMENT_MODES = ("file", "lines", "blank_line")
SCORINGS = ("loglikelihood", "generate")


@dataclasses.dataclass
class Task:
  """A validated task: its spec (defaults filled in) and examples with their data lines."""
  name: str
  type: str
  path: str  # the spec file, as shown in messages
  spec: dict
  examples: list[dict]
  lines: list[int]  # data-file line of each example (1-based)
  data_path: str | None
  fewshot_pool: list[dict] | None = None  # None: draw shots from `examples`
  notes: list[str] = dataclasses.field(default_factory=list)

  def where(self, index: int) -> str:
    """`data_file:line` of example `index`, for messages."""
    return f"{self.data_path}:{self.lines[index]}"


def display_path(path: str) -> str:
  """A path relative to the current directory when it is inside it (shorter messages)."""
  rel = os.path.relpath(path)
  return path if rel.startswith("..") else rel


def resolve(name_or_path: str) -> str:
  """The spec file for a task name (`evals/tasks/NAME.yaml|.json`) or a spec path."""
  if name_or_path.endswith(SPEC_SUFFIXES) or os.sep in name_or_path or "/" in name_or_path:
    if not os.path.isfile(name_or_path):
      raise UserError(f"task file {name_or_path} does not exist")
    return name_or_path
  for suffix in SPEC_SUFFIXES:
    path = os.path.join(TASK_DIR, name_or_path + suffix)
    if os.path.isfile(path):
      return path
  raise UserError(f"unknown task {name_or_path!r}: no {name_or_path}.yaml or .json in "
                  f"{display_path(TASK_DIR)}; known tasks: {available()}; or give a path to a spec file")


def available() -> list[str]:
  """Names of the tasks shipped in evals/tasks/."""
  if not os.path.isdir(TASK_DIR):
    return []
  return sorted(os.path.splitext(f)[0] for f in os.listdir(TASK_DIR) if f.endswith(SPEC_SUFFIXES))


# ---------------------------------------------------------------- spec file


def _read_spec(path: str) -> tuple[dict, dict[str, int]]:
  """(spec mapping, line of each top-level key) of a YAML or JSON spec file."""
  try:
    with open(path, encoding="utf-8") as f:
      text = f.read()
  except (OSError, UnicodeDecodeError) as e:
    raise UserError(f"cannot read task file {path}: {e}") from None
  if path.endswith(".json"):
    try:
      spec = json.loads(text)
    except json.JSONDecodeError as e:
      raise UserError(f"{path}:{e.lineno}: not valid JSON: {e.msg} (column {e.colno})") from None
    key_lines = {}
    for m in re.finditer(r'"([^"\\]+)"\s*:', text):  # the first occurrence in the file: close enough to point at
      key_lines.setdefault(m.group(1), text.count("\n", 0, m.start()) + 1)
  else:
    try:
      spec = yaml.safe_load(text)
      node = yaml.compose(text)
    except yaml.YAMLError as e:
      mark = getattr(e, "problem_mark", None)
      line = f":{mark.line + 1}" if mark is not None else ""
      raise UserError(f"{path}{line}: not valid YAML: {getattr(e, 'problem', None) or e}") from None
    key_lines = {}
    if isinstance(node, yaml.MappingNode):
      key_lines = {k.value: k.start_mark.line + 1 for k, _ in node.value if isinstance(k, yaml.ScalarNode)}
  if not isinstance(spec, dict):
    raise UserError(f"{path}: a task spec must be a mapping of fields (type, data, prompt, ...), "
                    f"got {type(spec).__name__}")
  return spec, key_lines


class _SpecChecker:
  """Field checks that name the spec file and the field's line."""

  def __init__(self, path: str, spec: dict, key_lines: dict[str, int]):
    self.path, self.spec, self.key_lines = path, spec, key_lines

  def fail(self, key: str, message: str):
    line = self.key_lines.get(key)
    where = f"{self.path}:{line}" if line else self.path
    raise UserError(f"{where}: field {key!r} {message}")

  def string(self, key: str, default=None, allow_empty=True) -> str | None:
    value = self.spec.get(key, default)
    if value is not None and (not isinstance(value, str) or (not allow_empty and not value)):
      self.fail(key, f"must be a {'non-empty ' if not allow_empty else ''}string, got {value!r}")
    return value

  def integer(self, key: str, default=None, minimum: int = 0) -> int | None:
    value = self.spec.get(key, default)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < minimum):
      self.fail(key, f"must be an integer >= {minimum}, got {value!r}")
    return value

  def choice(self, key: str, options: tuple, default) -> str:
    value = self.spec.get(key, default)
    if value not in options:
      self.fail(key, f"must be one of {list(options)}, got {value!r}")
    return value

  def boolean(self, key: str, default: bool) -> bool:
    value = self.spec.get(key, default)
    if not isinstance(value, bool):
      self.fail(key, f"must be true or false, got {value!r}")
    return value

  def string_list(self, key: str, default: list) -> list[str]:
    value = self.spec.get(key, default)
    if isinstance(value, str):
      value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
      self.fail(key, f"must be a string or a list of non-empty strings, got {value!r}")
    return value

  def template(self, key: str, default: str) -> str:
    value = self.string(key, default)
    try:
      list(string.Formatter().parse(value))
    except ValueError as e:
      self.fail(key, f"is not a valid format template ({e}); write literal braces as {{{{ and }}}}")
    return value


def _check_spec(path: str, spec: dict, key_lines: dict) -> dict:
  """The spec with its type's defaults filled in; raises UserError on a bad field."""
  check = _SpecChecker(path, spec, key_lines)
  task_type = check.choice("type", tuple(TYPE_KEYS), None)
  allowed = COMMON_KEYS + TYPE_KEYS[task_type]
  for key in spec:
    if key not in allowed:
      check.fail(key, f"is not a {task_type} task field; expected one of {sorted(allowed)}")
  out = {"type": task_type, "name": check.string("name", os.path.splitext(os.path.basename(path))[0], False),
         "description": check.string("description", "")}
  if task_type == "perplexity":
    out.update(_check_perplexity(check))
  else:
    out["data"] = check.string("data", allow_empty=False)
    if out["data"] is None:
      check.fail("data", "is missing: give the JSONL file of examples (relative to the spec file)")
    out["prompt"] = check.template("prompt", DEFAULT_PROMPTS[task_type])
    out["num_fewshot"] = check.integer("num_fewshot", 0)
    out["fewshot_data"] = check.string("fewshot_data", allow_empty=False)
    out["fewshot_separator"] = check.string("fewshot_separator", "\n\n")
    out["fewshot_seed"] = check.integer("fewshot_seed", 1234)
    out.update(_TYPE_CHECKS[task_type](check))
  return out


def _check_perplexity(check: _SpecChecker) -> dict:
  out = {"data": check.string("data", allow_empty=False), "dataset": check.string("dataset", allow_empty=False),
         "split": check.string("split", "val", False), "documents": check.choice("documents", DOCUMENT_MODES, "file"),
         "text_field": check.string("text_field", "text", False),
         "window": check.integer("window", None, 2), "stride": check.integer("stride", None, 1)}
  if bool(out["data"]) == bool(out["dataset"]):
    check.fail("data", "or 'dataset': give exactly one (a .txt/.jsonl file, or a prepared dataset "
               "directory with 'split')")
  if out["data"] and not out["data"].endswith((".txt", ".jsonl")):
    check.fail("data", f"must be a .txt or .jsonl file, got {out['data']!r}")
  if out["window"] and out["stride"] and out["stride"] > out["window"]:
    check.fail("stride", f"({out['stride']}) must not exceed window ({out['window']}), or tokens go unscored")
  return out


def _check_classification(check: _SpecChecker) -> dict:
  labels = check.spec.get("labels")
  if not isinstance(labels, dict) or not labels:
    check.fail("labels", f"must map each label to its verbalization, e.g. {{positive: ' positive'}}; got {labels!r}")
  for label, verbalization in labels.items():
    if isinstance(label, bool):  # YAML reads bare yes/no/true/false keys as booleans
      check.fail("labels", f"has the boolean label {label}; quote it (e.g. 'yes': ' yes') to make it text")
    if not isinstance(verbalization, str) or not verbalization.strip():
      check.fail("labels", f"gives label {label!r} the verbalization {verbalization!r}; expected non-empty text")
  verbalizations = [v.strip().lower() for v in labels.values()]
  if len(set(verbalizations)) < len(verbalizations):
    check.fail("labels", f"has two labels with the same verbalization: {labels}")
  return {"labels": {str(k): v for k, v in labels.items()},
          "scoring": check.choice("scoring", SCORINGS, "loglikelihood"),
          "max_new_tokens": check.integer("max_new_tokens", 8, 1)}


def _check_multiple_choice(check: _SpecChecker) -> dict:
  return {"choice_prefix": check.string("choice_prefix", " ")}


def _check_generation(check: _SpecChecker) -> dict:
  return {"max_new_tokens": check.integer("max_new_tokens", 32, 1),
          "stop": check.string_list("stop", ["\n"]),
          "target_prefix": check.string("target_prefix", " ")}


def _check_ranking(check: _SpecChecker) -> dict:
  return {"normalize": check.boolean("normalize", False), "k": _check_ks(check)}


def _check_ks(check: _SpecChecker) -> list[int]:
  ks = check.spec.get("k", [1, 5])
  ks = [ks] if isinstance(ks, int) and not isinstance(ks, bool) else ks
  if not isinstance(ks, list) or not ks or not all(isinstance(k, int) and not isinstance(k, bool) and k > 0
                                                   for k in ks):
    check.fail("k", f"must be a positive integer or a list of them (recall@k), got {ks!r}")
  return ks


def _check_retrieval(check: _SpecChecker) -> dict:
  index = check.string("index", allow_empty=False)
  if index is None:
    check.fail("index", "is missing: give the index directory scripts/build_index.py wrote (relative to the spec)")
  return {"index": index, "k": _check_ks(check)}


_TYPE_CHECKS = {"classification": _check_classification, "multiple_choice": _check_multiple_choice,
                "generation": _check_generation, "ranking": _check_ranking, "retrieval": _check_retrieval}


# ---------------------------------------------------------------- data files


def read_jsonl(path: str) -> list[tuple[int, dict]]:
  """(line number, object) for every non-blank line of a JSONL file."""
  try:
    with open(path, encoding="utf-8") as f:
      raw_lines = f.read().split("\n")
  except FileNotFoundError:
    raise UserError(f"data file {path} does not exist") from None
  except (OSError, UnicodeDecodeError) as e:
    raise UserError(f"cannot read data file {path}: {e}") from None
  rows = []
  for number, line in enumerate(raw_lines, start=1):
    if not line.strip():
      continue
    try:
      row = json.loads(line)
    except json.JSONDecodeError as e:
      raise UserError(f"{path}:{number}: not valid JSON: {e.msg} (column {e.colno})") from None
    if not isinstance(row, dict):
      raise UserError(f"{path}:{number}: expected a JSON object, got {type(row).__name__}")
    rows.append((number, row))
  return rows


def read_documents(path: str, mode: str, text_field: str) -> list[tuple[int, dict]]:
  """(line, {"text": ...}) per document of a perplexity task's .txt or .jsonl file."""
  if path.endswith(".jsonl"):
    docs = []
    for number, row in read_jsonl(path):
      if not isinstance(row.get(text_field), str):
        raise UserError(f"{path}:{number}: missing field {text_field!r} (a string)" if text_field not in row else
                        f"{path}:{number}: field {text_field!r} must be a string, got {type(row[text_field]).__name__}")
      docs.append((number, {"text": row[text_field]}))
    return docs
  try:
    with open(path, encoding="utf-8") as f:
      text = f.read()
  except FileNotFoundError:
    raise UserError(f"data file {path} does not exist") from None
  except (OSError, UnicodeDecodeError) as e:
    raise UserError(f"cannot read data file {path}: {e}") from None
  if mode == "file":
    return [(1, {"text": text})] if text else []
  if mode == "lines":
    return [(i, {"text": line}) for i, line in enumerate(text.split("\n"), start=1) if line.strip()]
  docs, start = [], 0
  for match in list(re.finditer(r"\n[ \t]*\n\s*", text)) + [None]:  # blank_line: paragraphs
    end = match.start() if match else len(text)
    paragraph = text[start:end].strip("\n")
    if paragraph.strip():
      docs.append((text.count("\n", 0, start) + 1, {"text": paragraph}))
    start = match.end() if match else end
  return docs


def render(template: str, example: dict, where: str) -> str:
  """`template` formatted with the example's fields; a missing field names the data line."""
  try:
    return template.format(**example)
  except KeyError as e:
    raise UserError(f"{where}: missing field {e.args[0]!r} used by the prompt template "
                    f"(the example has {sorted(example)})") from None
  except (IndexError, AttributeError, ValueError) as e:
    raise UserError(f"{where}: cannot fill the prompt template {template!r}: {e}") from None


def _require(example: dict, field: str, where: str, kind, description: str):
  if field not in example:
    raise UserError(f"{where}: missing field {field!r}")
  value = example[field]
  if not isinstance(value, kind) or isinstance(value, bool):
    raise UserError(f"{where}: field {field!r} must be {description}, got {value!r}")
  return value


def _check_classification_example(spec: dict, example: dict, where: str) -> dict:
  if "label" not in example:
    raise UserError(f"{where}: missing field 'label'")
  label = str(example["label"])
  if label not in spec["labels"]:
    raise UserError(f"{where}: label {label!r} is not in labels {list(spec['labels'])}")
  return {**example, "label": label}


def _check_multiple_choice_example(spec: dict, example: dict, where: str) -> dict:
  choices = _require(example, "choices", where, list, "a list of strings")
  if len(choices) < 2 or not all(isinstance(c, str) for c in choices):
    raise UserError(f"{where}: field 'choices' must be a list of at least 2 strings, got {choices!r}")
  answer = _require(example, "answer", where, (int, str), "a choice index or one of the choices")
  if isinstance(answer, str):
    if answer not in choices:
      raise UserError(f"{where}: answer {answer!r} is not one of the choices {choices}")
    answer = choices.index(answer)
  elif not 0 <= answer < len(choices):
    raise UserError(f"{where}: answer index {answer} is out of range for {len(choices)} choices")
  return {**example, "answer": answer}


def _check_generation_example(spec: dict, example: dict, where: str) -> dict:
  if "references" in example:
    refs = example["references"]
    if not isinstance(refs, list) or not refs or not all(isinstance(r, str) for r in refs):
      raise UserError(f"{where}: field 'references' must be a non-empty list of strings, got {refs!r}")
  elif "reference" in example:
    refs = [_require(example, "reference", where, str, "a string")]
  else:
    raise UserError(f"{where}: missing field 'reference' (a string) or 'references' (a list of strings)")
  return {**example, "references": refs}


def _check_ranking_example(spec: dict, example: dict, where: str) -> dict:
  raw = _require(example, "candidates", where, list, "a list of {id, text} objects or strings")
  candidates = []
  for i, c in enumerate(raw):
    if isinstance(c, str):
      candidates.append({"id": i, "text": c})
    elif isinstance(c, dict) and "id" in c and isinstance(c.get("text"), str):
      candidates.append({"id": c["id"], "text": c["text"]})
    else:
      raise UserError(f"{where}: candidate {i} must be a string or {{\"id\": ..., \"text\": \"...\"}}, got {c!r}")
  ids = [c["id"] for c in candidates]
  if len(set(map(repr, ids))) < len(ids):
    raise UserError(f"{where}: candidate ids repeat: {ids}")
  relevant = _require(example, "relevant", where, list, "a list of candidate ids")
  unknown = [r for r in relevant if r not in ids]
  if not relevant or unknown:
    raise UserError(f"{where}: field 'relevant' must list candidate ids from {ids}; "
                    f"{'it is empty' if not relevant else f'unknown: {unknown}'}")
  return {**example, "candidates": candidates}


def _check_retrieval_example(spec: dict, example: dict, where: str) -> dict:
  relevant = _require(example, "relevant", where, list, "a list of source ids")
  if not relevant or not all(isinstance(r, str) for r in relevant):
    raise UserError(f"{where}: field 'relevant' must be a non-empty list of source ids (strings), got {relevant!r}")
  return example


_EXAMPLE_CHECKS = {"classification": _check_classification_example,
                   "multiple_choice": _check_multiple_choice_example,
                   "generation": _check_generation_example, "ranking": _check_ranking_example,
                   "retrieval": _check_retrieval_example}


def _load_examples(spec: dict, path: str) -> tuple[list[int], list[dict]]:
  """(lines, examples) of a JSONL data file, each checked against the task type."""
  lines, examples = [], []
  for number, row in read_jsonl(path):
    where = f"{path}:{number}"
    example = _EXAMPLE_CHECKS[spec["type"]](spec, row, where)
    render(spec["prompt"], example, where)  # a missing template field fails now, not mid-run
    lines.append(number)
    examples.append(example)
  if not examples:
    raise UserError(f"data file {path} has no examples")
  return lines, examples


def _data_path(spec_path: str, relative: str) -> str:
  """A data path from a spec: absolute, or relative to the spec file's directory."""
  return display_path(os.path.join(os.path.dirname(os.path.abspath(spec_path)), relative))


def dataset_path(task: Task) -> str:
  """A perplexity task's `dataset:` directory: relative to the spec file if it exists
  there, else to the current directory (where prepare_data.py usually wrote it)."""
  beside = _data_path(task.path, task.spec["dataset"])
  return beside if os.path.isdir(beside) else task.spec["dataset"]


def load(name_or_path: str) -> Task:
  """Reads, validates and returns a task; every problem is a UserError naming file:line."""
  path = display_path(resolve(name_or_path))
  spec = _check_spec(path, *_read_spec(path))
  if spec["type"] == "perplexity":
    if spec["dataset"]:  # read with the model's tokenizer at hand, in task_perplexity
      return Task(spec["name"], "perplexity", path, spec, [], [], None)
    data_path = _data_path(path, spec["data"])
    rows = read_documents(data_path, spec["documents"], spec["text_field"])
    if not rows:
      raise UserError(f"data file {data_path} has no documents")
    return Task(spec["name"], "perplexity", path, spec, [r for _, r in rows], [n for n, _ in rows], data_path)
  data_path = _data_path(path, spec["data"])
  lines, examples = _load_examples(spec, data_path)
  task = Task(spec["name"], spec["type"], path, spec, examples, lines, data_path)
  if spec["fewshot_data"]:
    task.fewshot_pool = _load_examples(spec, _data_path(path, spec["fewshot_data"]))[1]
  pool_size = len(task.fewshot_pool) if task.fewshot_pool is not None else len(examples) - 1
  if spec["num_fewshot"] > pool_size:
    raise UserError(f"{path}: num_fewshot {spec['num_fewshot']} needs that many examples besides the one "
                    f"scored, but the few-shot pool has {pool_size}")
  return task


# ---------------------------------------------------------------- few-shot and limits


def fewshot_examples(task: Task, index: int) -> list[dict]:
  """The `num_fewshot` shots for example `index`: seeded by (fewshot_seed, index) so they do
  not depend on --limit or run order, and never the example itself."""
  k = task.spec.get("num_fewshot", 0)
  if not k:
    return []
  example = task.examples[index]
  if task.fewshot_pool is None:
    pool = [e for j, e in enumerate(task.examples) if j != index and e != example]
  else:  # a separate file may still contain a copy of the example
    pool = [e for e in task.fewshot_pool if e != example]
  if len(pool) < k:
    raise UserError(f"{task.where(index)}: only {len(pool)} few-shot examples differ from this one; "
                    f"num_fewshot is {k}")
  rng = random.Random(f"{task.spec['fewshot_seed']}/{index}")
  return rng.sample(pool, k)


def fewshot_prefix(task: Task, index: int, shot_text) -> str:
  """The few-shot shots of example `index` rendered by `shot_text(example)`, each followed by
  the separator, to put in front of the example's prompt ("" for zero-shot)."""
  shots = fewshot_examples(task, index)
  separator = task.spec.get("fewshot_separator", "\n\n")
  return "".join(shot_text(shot) + separator for shot in shots)


def prompt(task: Task, example: dict) -> str:
  """The example's prompt from the spec's template (validated at load)."""
  return task.spec["prompt"].format(**example)


def take(task: Task, items: list, limit: int | None) -> list:
  """The first `limit` items (all for None or 0); a limit beyond the task is noted, not an error."""
  if not limit:
    return items
  if limit > len(items):
    note = f"limit {limit} > {len(items)} examples in {task.name}; using all {len(items)}"
    logging.warning(note)
    task.notes.append(note)
  return items[:limit]
