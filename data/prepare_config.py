"""Every knob of scripts/prepare_data.py, with defaults.

Dataset configs (configs/data/*.py) start from `default_config()` and change
what differs; flags override as `--config.near_dedup.threshold=0.8`.
"""

import ml_collections

from data import normalize, pii, quality


def default_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  # name -> {inputs: comma-separated files/dirs/globs, or "stdlib"; text_field for JSONL/Parquet}
  c.sources = ml_collections.ConfigDict()
  c.read = ml_collections.ConfigDict(dict(on_decode_error="fail"))  # "fail" | "skip" (and count)

  c.normalize = normalize.default_config()
  c.normalize.enabled = True
  c.quality = quality.default_config()
  c.quality.enabled = True
  c.pii = ml_collections.ConfigDict(dict(
      enabled=True,
      types=",".join(pii.PII_TYPES),
      phone_regions=pii.DEFAULT_PHONE_REGIONS,  # national formats tried, in order; +country code always works
  ))
  c.boilerplate = ml_collections.ConfigDict(dict(
      enabled=True,
      min_line_chars=30,       # shorter lines are never boilerplate (`else:`, `}`)
      min_docs=10,             # a line must appear in at least this many documents...
      min_doc_fraction=0.01,   # ...and in at least this fraction of them
      line_prefixes="",        # only lines starting with one of these (comma-separated) count,
                               # e.g. "#,//" for code, where repeated code lines are not boilerplate
  ))
  c.exact_dedup = ml_collections.ConfigDict(dict(enabled=True))
  c.near_dedup = ml_collections.ConfigDict(dict(
      enabled=True,
      threshold=0.7,           # estimated Jaccard similarity of character shingles
      num_perm=128,
      lsh_recall=0.95,         # chance that a pair at the threshold is compared; sets bands and rows
      bands=0,                 # explicit LSH banding (bands * rows == num_perm); 0 and 0 = choose
      rows=0,                  # from threshold and lsh_recall (25 x 5 for 0.7 and 128)
      verify="exact",          # "exact": candidates compared on their shingle sets; "minhash": on
                               # the signatures (an estimate, +-0.04 at 128; no text re-read)
      shingle_chars=5,
      seed=1,
  ))
  c.decontam = ml_collections.ConfigDict(dict(
      eval_sets="",            # files/globs of eval text (plain or JSONL); "" disables the stage
      text_field="text",
      ngram=13,
  ))
  c.split = ml_collections.ConfigDict(dict(val_fraction=0.02, test_fraction=0.02))
  c.tokenizer = ml_collections.ConfigDict(dict(
      path="",                 # an existing sentencepiece .model or HF tokenizer.json; "" trains one
      model_type="bpe",        # "bpe" | "unigram"
      vocab_size=8192,
      byte_fallback=True,
      user_defined_symbols="", # comma-separated, e.g. "<|user|>,<|assistant|>"
      sample_chars=50_000_000, # train the tokenizer on at most this much train text
      seed=0,
      # Masked-LM encoders: reserve [CLS], [SEP], [PAD], [MASK] (ids 1-4; BOS/EOS become [CLS]/[SEP],
      # so documents pack as "[CLS] doc [SEP]") and record their ids in metadata.json. With `path`,
      # that tokenizer must already have a [MASK] (or <mask>) token.
      encoder_specials=False,
      # T5's span corruption: this many sentinels at the end of the vocabulary, <extra_id_0> = vocab_size - 1
      # and down, out of vocab_size pieces. With `path`, that tokenizer must already have them.
      sentinels=0,
  ))
  c.output = ml_collections.ConfigDict(dict(docs_per_shard=4096, examples_per_reason=3))
  c.num_workers = 0            # processes for the per-file stages; 0 = one per CPU
  c.lock()
  return c


def add_source(c: ml_collections.ConfigDict, name: str, inputs: str, text_field: str = "text") -> None:
  with c.unlocked():
    c.sources[name] = ml_collections.ConfigDict(dict(inputs=inputs, text_field=text_field))
