"""Sentencepiece tokenizers: training on a corpus and loading."""

import os

import sentencepiece as spm

from errors import UserError

BOS_ID, EOS_ID, UNK_ID = 1, 2, 0


def train_sentencepiece(lines_file: str, model_prefix: str, vocab_size: int, seed: int = 0,
                        model_type: str = "bpe", max_sentences: int = 300_000) -> str:
  """Trains a tokenizer for text or code; returns the path of the .model file.

  Whitespace is kept verbatim (identity normalization, no whitespace collapsing)
  and "\\n" is a piece of its own, so code round-trips exactly; byte fallback
  means nothing is ever <unk>.
  """
  spm.set_random_generator_seed(seed)
  spm.SentencePieceTrainer.train(
      input=lines_file,
      model_prefix=model_prefix,
      vocab_size=vocab_size,
      model_type=model_type,
      character_coverage=0.9995,
      byte_fallback=True,
      normalization_rule_name="identity",
      remove_extra_whitespaces=False,
      allow_whitespace_only_pieces=True,
      split_digits=True,
      user_defined_symbols=["\n"],
      input_sentence_size=max_sentences,
      shuffle_input_sentence=True,
      max_sentence_length=4096,
      unk_id=UNK_ID, bos_id=BOS_ID, eos_id=EOS_ID, pad_id=-1,
      num_threads=os.cpu_count() or 1,
      minloglevel=2,
  )
  return model_prefix + ".model"


def load(path: str) -> spm.SentencePieceProcessor:
  if not os.path.isfile(path):
    raise UserError(f"tokenizer file {path} does not exist")
  try:
    return spm.SentencePieceProcessor(model_file=path)
  except (OSError, RuntimeError) as e:
    raise UserError(f"tokenizer file {path} is not a sentencepiece model: {e}") from None
