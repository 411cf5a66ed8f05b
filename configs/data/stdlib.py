"""The quickstart corpus: the running interpreter's standard library source.

Quality filters are relaxed for code (symbols, short words and repeated lines
are normal in source files); deduplication, boilerplate removal and PII
scrubbing run as for any corpus.
"""

from data import prepare_config


def get_config():
  c = prepare_config.default_config()
  prepare_config.add_source(c, "stdlib", "stdlib")
  q = c.quality
  q.min_chars = 200
  q.min_alpha_fraction = 0.4            # operators and brackets are not letters
  q.max_symbol_fraction = 0.5           # every comment starts with '#'
  q.max_duplicate_line_fraction = 0.5   # `else:` and `return None` repeat
  q.max_duplicate_line_char_fraction = 0.4
  q.max_top_ngram_char_fraction = 0.3   # code repeats its idioms
  q.max_dup_ngram_char_fraction = 0.6
  q.max_mean_word_length = 15           # dotted names make long "words"
  q.min_alpha_word_fraction = 0         # `=`, `(`, `0` are words of code
  q.language_id = False                 # code is no language: no language or stop-word rule
  q.read_prose = False                  # judged whole: in code, `::` and `- ` are not markup
  c.boilerplate.line_prefixes = "#"  # license and header comments, never code lines
  c.tokenizer.vocab_size = 4096
  c.split.val_fraction = 0.03
  c.split.test_fraction = 0.03
  return c
