"""The quickstart corpus (configs/data/stdlib.py) with T5's span-corruption sentinels.

The tokenizer reserves 100 sentinels at the end of its vocabulary
(<extra_id_0> = vocab_size - 1 and down), as T5's does.
"""

from configs.data import stdlib


def get_config():
  c = stdlib.get_config()
  c.tokenizer.sentinels = 100
  return c
