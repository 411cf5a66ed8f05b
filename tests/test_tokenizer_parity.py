"""Token-for-token agreement with `transformers`: chat templates, prompts and BOS.

Every tokenizer here is built locally: the test dataset's sentencepiece model
exported as the quickstart export writes it, and tokenizer.json files trained
with `tokenizers` in the Llama-3 style (a post-processor adds
<|begin_of_text|>) and the ChatML style (no BOS, whatever bos_token says).
The references are transformers' AutoTokenizer on the same directories.
"""

import json
import os
import shutil

import pytest
import transformers

from data import chat, sft, shards
from data import tokenizer as tokenizer_lib

SAMPLE_FILES = 3  # standard-library modules a tiny BPE is trained on

LLAMA3_SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
CHATML_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

LLAMA3_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}")
# Llama-2 / Zephyr style: the eos string right after the reply's text, [INST] markers as text.
INST_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' ' + message['content'] + eos_token }}"
    "{% else %}{{ '<<SYS>>\n' + message['content'] + '\n<</SYS>>\n\n' }}{% endif %}{% endfor %}")
TEMPLATES = {"chatml": chat.DEFAULT_TEMPLATE, "llama3": LLAMA3_TEMPLATE, "inst": INST_TEMPLATE}

CONVERSATIONS = {
    "system": [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "What is 2+2?"},
               {"role": "assistant", "content": "4"}],
    "multi_turn": [{"role": "user", "content": "Name a module."}, {"role": "assistant", "content": "json."},
                   {"role": "user", "content": "Another?"}, {"role": "assistant", "content": "os.path"}],
    "non_ascii": [{"role": "user", "content": "Grüße aus Köln, 日本語 — ça va? ✓"},
                  {"role": "assistant", "content": "Très bien 👍"}, {"role": "user", "content": "Ünïcødé"}],
    "whitespace": [{"role": "user", "content": "  indented\n\n    def f():\n        pass"},
                   {"role": "assistant", "content": "\nstarts with a newline  "},
                   {"role": "user", "content": " leading space\t"}],
}
PROMPTS = ["Hello world", " leading space", "\n\nnewlines first", "Grüße 日本 👍", "x = 1</s> after eos",
           "text<|im_start|>user\nhi<|im_end|>", "def f():\n    return 1  "]


def _write_config(directory, **config):
  with open(os.path.join(directory, "tokenizer_config.json"), "w") as f:
    json.dump(config, f)


def _byte_level_bpe(specials):
  """A tiny byte-level BPE (the GPT-2 / Llama-3 / Qwen kind) trained on a few standard-library modules."""
  from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
  from data import corpus
  tok = Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  texts = [open(f, encoding="utf-8").read()[:20_000] for f in corpus.stdlib_files()[:SAMPLE_FILES]]
  tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=400, special_tokens=specials,
                                                     initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
  return tok


def _llama2_bpe():
  """A tiny BPE in the form of Llama-2's tokenizer.json: Prepend/Replace normalizer, no pre-tokenizer."""
  from tokenizers import Tokenizer, decoders, models, normalizers, processors, trainers
  from data import corpus
  tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
  tok.normalizer = normalizers.Sequence([normalizers.Prepend("\u2581"), normalizers.Replace(" ", "\u2581")])
  tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse(),
                                   decoders.Strip(" ", 1, 0)])
  lines = [line for f in corpus.stdlib_files()[:SAMPLE_FILES]
           for line in open(f, encoding="utf-8").read()[:20_000].splitlines() if line.strip()]
  tok.train_from_iterator(lines, trainers.BpeTrainer(vocab_size=400, special_tokens=["<unk>", "<s>", "</s>"]))
  tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)])
  return tok


@pytest.fixture(scope="module")
def tokenizer_dirs(dataset_dir, tmp_path_factory):
  """{kind: model directory} for every tokenizer kind under test."""
  from tokenizers import processors
  from trainer import export
  root = tmp_path_factory.mktemp("tokenizers")
  dirs = {}
  # The quickstart export: the dataset's sentencepiece model with the config export writes.
  d = dirs["sentencepiece"] = str(root / "sentencepiece")
  os.makedirs(d)
  _write_config(d, **export._dataset_tokenizer_files(
      {"tokenizer_path": os.path.join(dataset_dir, "tokenizer.model")}, d))
  # A sentencepiece model whose config leaves add_bos_token out (transformers then adds no BOS).
  d = dirs["sentencepiece_no_add_bos"] = str(root / "sentencepiece_no_add_bos")
  os.makedirs(d)
  shutil.copyfile(os.path.join(dataset_dir, "tokenizer.model"), os.path.join(d, "tokenizer.model"))
  _write_config(d, tokenizer_class="LlamaTokenizer", bos_token="<s>", eos_token="</s>")
  # Llama-3 style: the post-processor adds <|begin_of_text|>.
  tok = _byte_level_bpe(LLAMA3_SPECIALS)
  bos = tok.token_to_id("<|begin_of_text|>")
  tok.post_processor = processors.Sequence([
      processors.ByteLevel(trim_offsets=False),
      processors.TemplateProcessing(single="<|begin_of_text|> $A", pair="<|begin_of_text|> $A <|begin_of_text|> $B",
                                    special_tokens=[("<|begin_of_text|>", bos)])])
  d = dirs["llama3"] = str(root / "llama3")
  os.makedirs(d)
  tok.save(os.path.join(d, "tokenizer.json"))
  _write_config(d, tokenizer_class="PreTrainedTokenizerFast", bos_token="<|begin_of_text|>", eos_token="<|eot_id|>")
  # Llama-2 style tokenizer.json (a normalizer prepends "▁" to every segment), which transformers
  # rebuilds as LlamaTokenizer: "▁" at the very start only, unless legacy=True.
  tok = _llama2_bpe()
  for kind, legacy in (("llama_json", False), ("llama_json_legacy", True)):
    d = dirs[kind] = str(root / kind)
    os.makedirs(d)
    tok.save(os.path.join(d, "tokenizer.json"))
    _write_config(d, tokenizer_class="LlamaTokenizer", bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                  add_bos_token=True, legacy=legacy)
  # ChatML, Qwen style: no BOS added, though bos_token names the turn marker (or nothing).
  tok = _byte_level_bpe(CHATML_SPECIALS)
  tok.post_processor = processors.ByteLevel(trim_offsets=False)
  for kind, config in (("chatml", dict(bos_token="<|im_start|>")), ("chatml_null_bos", dict(bos_token=None, add_bos_token=False))):
    d = dirs[kind] = str(root / kind)
    os.makedirs(d)
    tok.save(os.path.join(d, "tokenizer.json"))
    _write_config(d, tokenizer_class="PreTrainedTokenizerFast", eos_token="<|im_end|>", pad_token="<|endoftext|>", **config)
  return dirs


def _language_model(model_dir, template=None):
  """A LanguageModel with the directory's tokenizer and chat template (its weights are never used)."""
  import jax
  from ml_collections import ConfigDict
  from conftest import tiny_llama_config
  from evals.lm import LanguageModel
  from model.config import ModelConfig
  from parallel import mesh as mesh_lib
  specials = tokenizer_lib.special_token_strings(model_dir)
  mesh = mesh_lib.make_mesh(ConfigDict(dict(data=1, fsdp=1, tensor=1)), jax.devices()[:1])
  return LanguageModel(ModelConfig.from_config(tiny_llama_config().model), {}, tokenizer_lib.load_dir(model_dir),
                       mesh, chat=chat.ChatFormatter(template, specials["bos_token"], specials["eos_token"]))


def _reference(model_dir):
  return transformers.AutoTokenizer.from_pretrained(model_dir)


@pytest.mark.parametrize("kind", ["sentencepiece", "llama3", "chatml", "llama_json"])
@pytest.mark.parametrize("template", sorted(TEMPLATES))
def test_chat_template_ids_equal_transformers(tokenizer_dirs, kind, template):
  """3 templates x 4 conversations, special strings right after text, on each tokenizer kind."""
  ref = _reference(tokenizer_dirs[kind])
  lm = _language_model(tokenizer_dirs[kind], TEMPLATES[template])
  for name, conversation in CONVERSATIONS.items():
    open_turn = conversation[-1]["role"] == "user"
    want = ref.apply_chat_template(conversation, chat_template=TEMPLATES[template], tokenize=True,
                                   add_generation_prompt=open_turn, return_dict=False)
    text = ref.apply_chat_template(conversation, chat_template=TEMPLATES[template], tokenize=False,
                                   add_generation_prompt=open_turn)
    assert lm.chat.render(conversation, add_generation_prompt=open_turn) == text, name
    if open_turn:  # generate.py --chat
      assert lm.chat_prompt(conversation) == want, name
    ids, _ = chat.tokenize_with_mask(lm.tokenizer, text, [])  # prepare_sft
    assert ids == want, name


@pytest.mark.parametrize("kind", ["sentencepiece", "sentencepiece_no_add_bos", "llama3", "chatml", "chatml_null_bos",
                                  "llama_json", "llama_json_legacy"])
def test_prompt_ids_equal_transformers(tokenizer_dirs, kind):
  """Prompts get BOS exactly where the tokenizer adds it; scoring contexts as lm-evaluation-harness encodes them."""
  ref = _reference(tokenizer_dirs[kind])
  lm = _language_model(tokenizer_dirs[kind])
  adds_bos = kind in ("sentencepiece", "llama3", "llama_json", "llama_json_legacy")
  assert lm.tokenizer.add_bos == adds_bos
  for text in PROMPTS:
    want = ref(text)["input_ids"]
    assert (want[:1] == [ref.bos_token_id]) == adds_bos
    assert lm.encode(text, add_bos=True) == want, text
    assert lm.encode(text) == ref(text, add_special_tokens=False)["input_ids"], text
    assert lm.decode(lm.encode(text)) == ref.decode(want[int(adds_bos):]), text
  context, continuation = "Review: great film\nSentiment:", " positive"
  context_ids, continuation_ids = lm.encode_pair(context, continuation)
  assert context_ids == ref(context)["input_ids"]
  assert continuation_ids == ref(context + continuation)["input_ids"][len(context_ids):]  # lm_eval's split
  # An empty context is the prefix token alone: BOS, as lm-evaluation-harness's prefix_token_id.
  assert lm.encode_pair("", "positive")[0] == [ref.bos_token_id if ref.bos_token_id is not None
                                               else ref.eos_token_id]


def test_sft_prepare_stores_transformers_chat_ids(tokenizer_dirs, tmp_path):
  """prepare_sft's stored examples are apply_chat_template's ids, with a model template and the built-in one."""
  jsonl = tmp_path / "chat.jsonl"
  jsonl.write_text("".join(json.dumps({"messages": c}) + "\n" for c in CONVERSATIONS.values()))
  template = tmp_path / "inst.jinja"
  template.write_text(INST_TEMPLATE)
  for kind, choice, source in (("sentencepiece", str(template), INST_TEMPLATE), ("chatml", "builtin", chat.DEFAULT_TEMPLATE)):
    ref = _reference(tokenizer_dirs[kind])
    out = str(tmp_path / kind)
    sft.prepare_sft([str(jsonl)], tokenizer_dirs[kind], out, sft.SftOptions(template=choice, val_fraction=0.25))
    stored = []
    for split in sft.SPLITS:
      source_records, lengths = shards.open_split(out, split)
      stored += [shards.decode_record(source_records[i], has_mask=True)[0].tolist() for i in range(len(lengths))]
    want = [ref.apply_chat_template(c, chat_template=source, tokenize=True, return_dict=False)
            for c in CONVERSATIONS.values()]
    assert sorted(stored) == sorted(want), kind


def test_dataset_tokenizer_decides_bos(dataset_dir, tokenizer_dirs):
  """Pretraining data: our sentencepiece tokenizers keep BOS; a tokenizer.json adds what its post-processor adds."""
  assert shards.load_metadata(dataset_dir)["add_bos"] is True
  assert tokenizer_lib.load(os.path.join(dataset_dir, "tokenizer.model")).add_bos
  llama3 = tokenizer_lib.load(os.path.join(tokenizer_dirs["llama3"], "tokenizer.json"))
  assert llama3.add_bos and llama3.id_to_token(llama3.bos_id) == "<|begin_of_text|>"
  assert not tokenizer_lib.load(os.path.join(tokenizer_dirs["chatml"], "tokenizer.json")).add_bos


# A document quoting special-token strings (HTML's <s>, a page about tokenizers), and code.
DOCUMENT = "<s>x</s> <unk> is <s>struck</s>\ndef f():\n  return '</s>'\n"


def _special_ids(tok):
  return {tok.bos_id, tok.eos_id, tok.unk_id} - {None}


def test_sentencepiece_documents_are_plain_text(dataset_dir, tmp_path):
  """Pretraining documents: special strings are characters, as sentencepiece itself encodes them;
  user-defined pieces ("\\n") are still single pieces. BPE (the dataset's) and unigram models."""
  from data import corpus
  lines = tmp_path / "lines.txt"
  lines.write_text(open(corpus.stdlib_files()[0], encoding="utf-8").read()[:20_000])
  unigram = tokenizer_lib.train_sentencepiece(str(lines), str(tmp_path / "unigram"), 400, model_type="unigram")
  for path in (os.path.join(dataset_dir, "tokenizer.model"), unigram):
    tok = tokenizer_lib.load(path)
    ids = tok.encode_batch([DOCUMENT])[0]
    assert ids == tok.impl.encode(DOCUMENT), path
    assert not _special_ids(tok) & set(ids) and tok.token_to_id("\n") in ids, path
    assert tok.encode(DOCUMENT)[:1] == [tok.bos_id]  # prompts still match them, as transformers does


@pytest.mark.parametrize("kind", ["llama_json", "llama3", "sentencepiece"])
def test_documents_are_plain_text_as_transformers_splits_them(tokenizer_dirs, tmp_path, kind):
  """encode_batch is transformers' split_special_tokens=True, with and without the model's config."""
  ref = _reference(tokenizer_dirs[kind])
  want = ref(DOCUMENT, add_special_tokens=False, split_special_tokens=True)["input_ids"]
  name = "tokenizer.model" if kind == "sentencepiece" else "tokenizer.json"
  tok = tokenizer_lib.load(os.path.join(tokenizer_dirs[kind], name))
  assert tok.encode_batch([DOCUMENT]) == [want]
  assert not {ref.bos_token_id, ref.eos_token_id, ref.unk_token_id} & set(want)
  assert tok.encode(DOCUMENT) == ref(DOCUMENT, add_special_tokens=False)["input_ids"]
  bare = tmp_path / name
  shutil.copyfile(os.path.join(tokenizer_dirs[kind], name), bare)
  bare_tok = tokenizer_lib.load(str(bare))  # as a dataset prepared before configs were kept
  assert not {bare_tok.bos_id, bare_tok.eos_id} & set(bare_tok.encode_batch([DOCUMENT])[0])


@pytest.mark.parametrize("kind", ["sentencepiece_no_add_bos", "llama_json_legacy"])
def test_dataset_from_model_tokenizer_encodes_as_transformers(tokenizer_dirs, tmp_path, kind):
  """Data prepared with --config.tokenizer.path=<model dir>/<file> keeps the directory's
  tokenizer_config.json: the dataset's tokenizer then encodes as AutoTokenizer on the model dir
  (no BOS with add_bos_token unset; a LlamaTokenizer tokenizer.json rebuilt, legacy spaces)."""
  from conftest import stdlib_data_config
  from data import corpus, prepare, prepare_config
  src = tmp_path / "src"
  src.mkdir()
  for i, f in enumerate(corpus.stdlib_files()[:12]):
    (src / f"{i}.txt").write_text(open(f, encoding="utf-8").read()[:3000])
  (src / "quoting.txt").write_text(DOCUMENT + open(corpus.stdlib_files()[12], encoding="utf-8").read()[:3000])
  cfg = stdlib_data_config()
  with cfg.sources.unlocked():
    del cfg.sources["stdlib"]
  prepare_config.add_source(cfg, "in", str(src), "text")
  cfg.quality.min_chars, cfg.near_dedup.enabled = 10, False
  cfg.split.val_fraction = cfg.split.test_fraction = 0.25
  name = "tokenizer.model" if kind.startswith("sentencepiece") else "tokenizer.json"
  cfg.tokenizer.path = os.path.join(tokenizer_dirs[kind], name)
  out = str(tmp_path / "data")
  meta = prepare.prepare(cfg, out, write_text=True)
  ref = _reference(tokenizer_dirs[kind])
  tok = tokenizer_lib.load(os.path.join(out, meta["tokenizer"]))
  assert meta["add_bos"] == tok.add_bos == (ref("x")["input_ids"][:1] == [ref.bos_token_id])
  for text in PROMPTS + [DOCUMENT]:
    assert tok.encode(text, add_special_tokens=True) == ref(text)["input_ids"], text
  import gzip
  stored, want, all_texts = [], [], []
  for split in ("train", "val", "test"):
    records, lengths = shards.open_split(out, split)
    stored += [shards.decode_record(records[i], has_mask=False)[0].tolist() for i in range(len(lengths))]
    with gzip.open(os.path.join(out, "text", f"{split}.jsonl.gz"), "rt", encoding="utf-8") as f:
      texts = [json.loads(line)["text"] for line in f]
    want += [ref(t, add_special_tokens=False, split_special_tokens=True)["input_ids"] for t in texts]
    all_texts += texts
  assert stored == want and any("<s>x</s>" in t for t in all_texts)
