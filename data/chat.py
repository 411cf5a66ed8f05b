"""Chat formatting for supervised fine-tuning: a model's own jinja2 chat template, or ours.

Templates render the way `transformers`' apply_chat_template renders them: a
sandboxed jinja2 environment with trim_blocks and lstrip_blocks, loop
controls, `raise_exception` and a `tojson` that does not escape HTML.

Loss masks come from prefix renders: the text an assistant turn adds is
render(messages[:k+1]) minus render(messages[:k], add_generation_prompt=True),
which covers its content and end-of-turn marker (so the model learns to stop)
and nothing of the prompt. This works for any template that renders a
conversation's prefix as a prefix of the whole; other templates are refused.
"""

import datetime
import json
import os

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from errors import UserError

ROLES = ("system", "user", "assistant")

# Used when the model ships no template: the BOS token, then ChatML (as used by
# many open models). A turn ends with END_OF_TURN, where generation stops.
DEFAULT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
DEFAULT_SPECIAL_TOKENS = ("<|im_start|>", "<|im_end|>")
END_OF_TURN = "<|im_end|>"


def _raise(message):
  raise jinja2.exceptions.TemplateError(message)


def _tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
  return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def compile_template(source: str) -> jinja2.Template:
  env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
  env.filters["tojson"] = _tojson
  env.globals["raise_exception"] = _raise
  env.globals["strftime_now"] = lambda fmt: datetime.datetime.now().strftime(fmt)
  try:
    return env.from_string(source)
  except jinja2.exceptions.TemplateSyntaxError as e:
    raise UserError(f"chat template does not compile: {e}") from None


def template_from_dir(model_dir: str) -> str | None:
  """A model directory's chat template: chat_template.jinja, or tokenizer_config.json's chat_template."""
  jinja_file = os.path.join(model_dir, "chat_template.jinja")
  if os.path.isfile(jinja_file):
    with open(jinja_file) as f:
      return f.read()
  config = os.path.join(model_dir, "tokenizer_config.json")
  if os.path.isfile(config):
    with open(config) as f:
      template = json.load(f).get("chat_template")
    if isinstance(template, list):  # named templates: take "default"
      template = next((t["template"] for t in template if t.get("name") == "default"), None)
    return template
  return None


class ChatFormatter:

  def __init__(self, template: str | None = None, bos_token: str = "", eos_token: str = ""):
    self.source = template or DEFAULT_TEMPLATE
    self.template = compile_template(self.source)
    self.special = {"bos_token": bos_token, "eos_token": eos_token}

  def render(self, messages: list[dict], add_generation_prompt: bool = False) -> str:
    try:
      return self.template.render(messages=messages, add_generation_prompt=add_generation_prompt, **self.special)
    except jinja2.exceptions.TemplateError as e:
      raise UserError(f"chat template failed: {e}") from None

  def render_with_spans(self, messages: list[dict]) -> tuple[str, list[tuple[int, int]]]:
    """(the whole conversation, [start, end) character spans of the assistant turns)."""
    text = self.render(messages)
    spans = []
    for k, message in enumerate(messages):
      if message["role"] != "assistant":
        continue
      before = self.render(messages[:k], add_generation_prompt=True)
      through = self.render(messages[:k + 1])
      if not (text.startswith(through) and through.startswith(before)):
        raise UserError("the chat template does not render a conversation's prefix as a prefix of the "
                        "whole, so assistant tokens cannot be located; use the built-in template")
      spans.append((len(before), len(through)))
    return text, spans


def parse_example(record, where: str) -> list[dict]:
  """Validated messages from {"messages": [...]} or {"prompt", "completion"}; errors name `where`."""
  if not isinstance(record, dict):
    raise UserError(f"{where}: expected a JSON object")
  if "messages" in record:
    messages = record["messages"]
    if not isinstance(messages, list) or not messages:
      raise UserError(f"{where}: 'messages' must be a non-empty list")
    for i, m in enumerate(messages):
      if not isinstance(m, dict) or m.get("role") not in ROLES:
        raise UserError(f"{where}: message {i} has role {m.get('role') if isinstance(m, dict) else m!r}; "
                        f"expected one of {ROLES}")
      if not isinstance(m.get("content"), str):
        raise UserError(f"{where}: message {i} has no string 'content'")
      if m["role"] == "assistant" and not m["content"].strip():
        raise UserError(f"{where}: message {i} is an empty assistant turn")
    if not any(m["role"] == "assistant" for m in messages):
      raise UserError(f"{where}: no assistant turn to learn from")
    return [{"role": m["role"], "content": m["content"]} for m in messages]
  if "prompt" in record or "completion" in record:
    prompt, completion = record.get("prompt"), record.get("completion")
    if not isinstance(prompt, str) or not isinstance(completion, str) or not completion.strip():
      raise UserError(f"{where}: 'prompt' and a non-empty 'completion' must both be strings")
    return [{"role": "user", "content": prompt}, {"role": "assistant", "content": completion}]
  raise UserError(f"{where}: expected 'messages' or 'prompt'/'completion' fields, got {sorted(record)}")


def tokenize_with_mask(tokenizer, text: str, spans: list[tuple[int, int]]) -> tuple[list[int], list[int]]:
  """Token ids of the whole conversation and a 0/1 mask of the tokens that start inside a span.

  The text is tokenized once, exactly as it will be seen at inference;
  tokenizing turn by turn would insert spurious pieces (e.g. sentencepiece's
  dummy-prefix space) at every boundary.
  """
  ids, starts = tokenizer.encode_with_offsets(text)
  mask = [int(any(a <= start < b for a, b in spans)) for start in starts]
  return ids, mask
