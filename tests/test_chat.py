"""Chat templates and assistant-only loss masks."""

import json
import os

import pytest

from data import chat
from errors import UserError

CONVERSATION = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there"},
                {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "Bye"},
                {"role": "assistant", "content": "Goodbye."}]

# A Llama-2 style template: bos/eos, [INST] markers, raise_exception on bad order.
LLAMA2 = ("{{ bos_token }}{% for message in messages %}"
          "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
          "{% elif message['role'] == 'assistant' %}{{ ' ' + message['content'] + eos_token }}"
          "{% elif message['role'] == 'system' %}{{ '<<SYS>>' + message['content'] + '<</SYS>>' }}"
          "{% else %}{{ raise_exception('bad role') }}{% endif %}{% endfor %}")


def test_default_template_spans_cover_exactly_the_assistant_turns():
  text, spans = chat.ChatFormatter().render_with_spans(CONVERSATION)
  assert [text[a:b] for a, b in spans] == ["Hello!<|im_end|>\n", "Goodbye.<|im_end|>\n"]
  assert text.startswith("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi there")


def test_model_template_with_special_tokens():
  f = chat.ChatFormatter(LLAMA2, bos_token="<s>", eos_token="</s>")
  text, spans = f.render_with_spans(CONVERSATION)
  assert text == "<s><<SYS>>Be brief.<</SYS>>[INST] Hi there [/INST] Hello!</s>[INST] Bye [/INST] Goodbye.</s>"
  assert [text[a:b] for a, b in spans] == [" Hello!</s>", " Goodbye.</s>"]


def test_matches_transformers_apply_chat_template(tmp_path):
  transformers = pytest.importorskip("transformers")
  from tokenizers import Tokenizer, models
  Tokenizer(models.WordLevel({"[UNK]": 0, "<s>": 1, "</s>": 2}, unk_token="[UNK]")).save(str(tmp_path / "tokenizer.json"))
  (tmp_path / "tokenizer_config.json").write_text(json.dumps({
      "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<s>", "eos_token": "</s>", "chat_template": LLAMA2}))
  tok = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
  want = tok.apply_chat_template(CONVERSATION, tokenize=False)
  got = chat.ChatFormatter(chat.template_from_dir(str(tmp_path)), "<s>", "</s>").render(CONVERSATION)
  assert got == want


def test_masks_follow_spans(dataset_dir):
  from data import tokenizer
  tok = tokenizer.load(os.path.join(dataset_dir, "tokenizer.model"))
  text, spans = chat.ChatFormatter().render_with_spans(CONVERSATION)
  ids, mask = chat.tokenize_with_mask(tok, text, spans)
  assert len(ids) == len(mask) and 0 < sum(mask) < len(mask)
  assert tok.decode([i for i, m in zip(ids, mask) if m]) == "Hello!<|im_end|>\nGoodbye.<|im_end|>\n"


@pytest.mark.parametrize("record,message", [
    ({"messages": [{"role": "robot", "content": "x"}]}, "role 'robot'"),
    ({"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "  "}]}, "empty assistant"),
    ({"messages": [{"role": "user", "content": "x"}]}, "no assistant turn"),
    ({"prompt": "x"}, "non-empty 'completion'"),
    ({"text": "x"}, "expected 'messages' or 'prompt'"),
])
def test_bad_examples_name_the_line(record, message):
  with pytest.raises(UserError, match=f"data.jsonl:7: .*{message}"):
    chat.parse_example(record, "data.jsonl:7")


def test_prompt_completion_becomes_two_turns():
  assert chat.parse_example({"prompt": "2+2?", "completion": "4"}, "x") == [
      {"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]


def test_masks_with_an_hf_tokenizer(tmp_path):
  from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
  from data import tokenizer
  hf = Tokenizer(models.BPE(unk_token="[UNK]"))
  hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  hf.decoder = decoders.ByteLevel()
  text, spans = chat.ChatFormatter().render_with_spans(CONVERSATION)
  hf.train_from_iterator([text] * 20, trainers.BpeTrainer(vocab_size=300, special_tokens=["[UNK]"]))
  hf.save(str(tmp_path / "tokenizer.json"))
  tok = tokenizer.load(str(tmp_path / "tokenizer.json"))
  ids, mask = chat.tokenize_with_mask(tok, text, spans)
  assert tok.decode(ids) == text
  assert tok.decode([i for i, m in zip(ids, mask) if m]) == "Hello!<|im_end|>\nGoodbye.<|im_end|>\n"
