"""The quickstart corpus (configs/data/stdlib.py) with an encoder's special tokens.

The tokenizer reserves [CLS], [SEP], [PAD] and [MASK]; documents pack as
"[CLS] doc [SEP]" and metadata.json records the ids masked-LM training needs.
"""

from configs.data import stdlib


def get_config():
  c = stdlib.get_config()
  c.tokenizer.encoder_specials = True
  return c
