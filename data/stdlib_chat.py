"""A real instruction dataset with no download: questions about the standard library.

Every public, documented function or method of the interpreter's standard library gives
one conversation: the user asks what `module.function(signature)` does, the
assistant answers with the first paragraph of its docstring. Source files are
parsed with `ast`, never imported.
"""

import ast
import os
import random
import zlib
import sysconfig

_QUESTIONS = ("What does `{name}` do?", "Explain `{name}` in Python.", "What is `{name}` for?")


def _module_name(path: str, root: str) -> str:
  rel = os.path.relpath(path, root)[:-len(".py")].replace(os.sep, ".")
  return rel[:-len(".__init__")] if rel.endswith(".__init__") else rel


def _first_paragraph(doc: str) -> str:
  return " ".join(doc.strip().split("\n\n")[0].split())


def _public_functions(tree: ast.Module):
  """(qualified name, node) of public top-level functions and public methods of public classes."""
  for node in tree.body:
    if isinstance(node, ast.FunctionDef) and not node.name.startswith("_"):
      yield node.name, node
    elif isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
      for item in node.body:
        if isinstance(item, ast.FunctionDef) and not item.name.startswith("_"):
          yield f"{node.name}.{item.name}", item


def examples(files: list[str], min_answer_chars: int = 40) -> list[dict]:
  """{"messages": [user, assistant]} for each documented public function or method."""
  root = sysconfig.get_paths()["stdlib"]
  out = []
  for path in files:
    try:
      with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read())
    except (SyntaxError, UnicodeDecodeError, ValueError):
      continue
    module = _module_name(path, root)
    for qualname, node in _public_functions(tree):
      doc = ast.get_docstring(node)
      if not doc or len(_first_paragraph(doc)) < min_answer_chars:
        continue
      name = f"{module}.{qualname}({ast.unparse(node.args)})"
      question = _QUESTIONS[len(out) % len(_QUESTIONS)].format(name=name)
      out.append({"messages": [{"role": "user", "content": question},
                               {"role": "assistant", "content": _first_paragraph(doc)}]})
  return out


REJECTED = ("shuffled", "other")


def _shuffled_words(text: str, seed: int) -> str:
  """The same words in another order (a different one whenever the words allow)."""
  words = text.split()
  order = random.Random(seed).sample(range(len(words)), len(words))
  if order == sorted(order) and len(set(words)) > 1:
    order = order[1:] + order[:1]
  return " ".join(words[i] for i in order)


def preference_pairs(files: list[str], rejected: str = "shuffled", min_answer_chars: int = 40) -> list[dict]:
  """{"prompt", "chosen", "rejected"}: each question about a function with its own docstring's answer
  chosen, and rejected either
    "shuffled": the same answer with its words in a random order (same length and words: only the
      language differs, which a pretrained model knows), or
    "other": the answer about another function (from half the list away: usually another module;
      only the meaning differs, a much harder preference for a small model)."""
  if rejected not in REJECTED:
    raise ValueError(f"rejected={rejected!r}; expected one of {REJECTED}")
  conversations = examples(files, min_answer_chars)
  n = len(conversations)
  pairs = []
  for i, conv in enumerate(conversations):
    question, answer = conv["messages"][0]["content"], conv["messages"][1]["content"]
    worse = _shuffled_words(answer, i) if rejected == "shuffled" else conversations[(i + n // 2) % n]["messages"][1]["content"]
    if worse != answer:
      pairs.append({"prompt": question, "chosen": answer, "rejected": worse})
  return pairs


def prompts(files: list[str], min_answer_chars: int = 40) -> list[dict]:
  """{"prompt", "answer"} for online RL with a verifiable reward: each question, with the first word of its
  function's docstring as the answer -- the verb the documentation opens with ("Return", "Set", "Create"...,
  as PEP 257 asks), which the exact-match reward compares with the completion's first word."""
  out = []
  for conv in examples(files, min_answer_chars):
    question, answer = conv["messages"][0]["content"], conv["messages"][1]["content"]
    first = answer.split()[0].strip(".,:;`'\"()")
    if first.isalpha():
      out.append({"prompt": question, "answer": first})
  return out


def _summary_line(doc: str) -> str:
  """The docstring's first sentence (of its first paragraph)."""
  paragraph = _first_paragraph(doc)
  end = paragraph.find(". ")
  return paragraph if end < 0 else paragraph[:end + 1]


def _held_out(module: str, eval_fraction: float) -> bool:
  """A module's examples all go to evaluation or all to training, by a hash of its name."""
  return zlib.crc32(module.encode()) % 1000 < eval_fraction * 1000


def summaries(files: list[str], eval_fraction: float = 0.1, max_code_chars: int = 800) -> tuple[list, list]:
  """(train, eval) {"input": a function's code without its docstring, "target": the docstring's first
  sentence, "module"} for each documented public function or method; whole modules are held out."""
  root = sysconfig.get_paths()["stdlib"]
  train, held = [], []
  for path in files:
    try:
      with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read())
    except (SyntaxError, UnicodeDecodeError, ValueError):
      continue
    module = _module_name(path, root)
    for _, node in _public_functions(tree):
      doc = ast.get_docstring(node)
      summary = _summary_line(doc) if doc else ""
      if not 15 <= len(summary) <= 120 or len(node.body) < 2:
        continue
      node.body = node.body[1:]  # the docstring is the target
      code = ast.unparse(node)[:max_code_chars]
      (held if _held_out(module, eval_fraction) else train).append(
          {"input": code, "target": summary, "module": module})
  return train, held
