"""A loaded model with its tokenizer: the scoring and generation calls every evaluation uses.

    lm = LanguageModel.load(workdir="runs/quickstart")        # or hf_dir="exports/quickstart"
    lm.loglikelihood([lm.encode_pair("Review: great\\nSentiment:", " positive")])
    lm.rolling_loglikelihood([lm.encode(text)], window=512, stride=256)
    lm.generate([lm.encode("def parse(", add_bos=True)], max_new_tokens=32, stop=["\\n\\n"])

Scoring runs one jitted forward per batch of `batch_size` sequences, right-padded
to a power-of-two length, so a new request length rarely compiles anything.

Truncation: a (context, continuation) pair longer than `max_len + 1` tokens loses
its oldest context tokens (lm-evaluation-harness does the same); a continuation
that alone does not fit is an error. Generation prompts keep their newest
`max_len - max_new_tokens` tokens. Documents longer than a window are scored
with sliding windows, every token exactly once.

BOS follows the tokenizer, as `transformers` and lm-evaluation-harness (0.4.13,
HFLM's defaults) tokenize: prompts and scoring contexts start with BOS only
where the tokenizer adds one (`add_bos_token`, tokenizer.json's
post-processor); chat prompts are the rendered template alone; an empty
context and a rolling document's first token are conditioned on `prefix_id`.
"""

import dataclasses
import functools
import unicodedata

import jax
import jax.numpy as jnp
import numpy as np

from data import chat as chat_lib
from data import sft
from data import tokenizer as tokenizer_lib
from errors import UserError
from model import decode as decode_lib
from model import families
from model.config import ModelConfig
from model.sampling import SamplingConfig
from parallel import mesh as mesh_lib
from parallel import sharding


def _pairs_to_rows(requests, max_len: int) -> list[tuple[list[int], int]]:
  """(tokens, index of the first scored target) per (context, continuation); left-truncated."""
  rows = []
  for context, continuation in requests:
    if not context:
      raise UserError("a loglikelihood request needs at least one context token (BOS will do)")
    if len(continuation) > max_len:
      raise UserError(f"a continuation of {len(continuation)} tokens does not fit in max_len {max_len}")
    seq = (list(context) + list(continuation))[-(max_len + 1):]
    rows.append((seq, len(seq) - len(continuation)))
  return rows


def windows(seq_len: int, window: int, stride: int) -> list[tuple[int, int, int]]:
  """(begin, end, first_target) slices of a sequence that score positions 1..seq_len-1 once each.

  A slice seq[begin:end] feeds end-begin-1 <= window tokens and predicts
  seq[begin+1:end]; only targets from first_target on count. Consecutive
  windows start `stride` apart, so every scored token after the first window
  sees at least window - stride tokens of context.
  """
  if not 1 <= stride <= window:
    raise UserError(f"stride must be in [1, window={window}], got {stride}")
  out, begin, scored_until = [], 0, 1
  while scored_until < seq_len:
    end = min(begin + window + 1, seq_len)
    out.append((begin, end, scored_until))
    scored_until, begin = end, begin + stride
  return out


@dataclasses.dataclass
class LanguageModel:
  """A model, its parameters on `mesh`, and its tokenizer; `params` may be swapped between calls."""
  cfg: ModelConfig
  params: dict
  tokenizer: tokenizer_lib.Tokenizer
  mesh: jax.sharding.Mesh
  batch_size: int = 8
  max_len: int = 0  # 0: the model's max_seq_len
  chat: chat_lib.ChatFormatter | None = None
  progress: object = None  # called with each batch's sequence count (evaluate.py's progress bar)

  def __post_init__(self):
    self.max_len = self.max_len or self.cfg.max_seq_len
    self.model = families.build(self.cfg)
    self.batch_size = sharding.round_to_batch_axes(self.mesh, self.batch_size)
    self._score_fn = None
    if self.tokenizer.vocab_size > self.cfg.vocab_size:
      raise UserError(f"tokenizer {self.tokenizer.path} has {self.tokenizer.vocab_size} tokens but the model's "
                      f"vocab_size is {self.cfg.vocab_size}; they do not belong together")

  @property
  def text_to_text(self) -> bool:
    """An encoder-decoder (T5): a prompt is the encoder's input, and generation writes a new sequence."""
    return self.cfg.family == "encoder_decoder"

  @functools.cached_property
  def decoder(self) -> decode_lib.Decoder:
    """Built on first generation, so scoring-only evaluations never set it up."""
    return decode_lib.make_decoder(self.cfg, self.mesh)

  # ------------------------------------------------------------ loading

  @classmethod
  def load(cls, workdir: str | None = None, hf_dir: str | None = None, batch_size: int = 8,
           mesh_config: dict | None = None) -> "LanguageModel":
    """From a train.py workdir (newest checkpoint) or an HF model directory.

    mesh_config: {"data", "fsdp", "tensor"} sizes (one may be -1: all devices);
    default: one device. Tensor parallelism shards heads and MLP across devices.
    """
    if bool(workdir) == bool(hf_dir):
      raise UserError("give exactly one of workdir (--workdir) and hf_dir (--hf_dir)")
    mesh = mesh_lib.mesh_of_sizes(mesh_config)
    if hf_dir:
      from model import hf_weights
      cfg, params = hf_weights.load(hf_dir, mesh)
      tok, formatter = sft.model_chat(hf_dir)
    else:
      cfg, params, tok, formatter = _restore_run(workdir, mesh)
    if cfg.family == "encoder" or cfg.num_labels:
      what = "a classifier" if cfg.num_labels else f"an {cfg.family}"
      raise UserError(f"{workdir or hf_dir} holds {what}, not a language model that scores and generates text"
                      + ("; score it with scripts/evaluate.py --labelled" if cfg.num_labels else ""))
    return cls(cfg, params, tok, mesh, batch_size=batch_size, chat=formatter)

  # ------------------------------------------------------------ text

  @property
  def prefix_id(self) -> int:
    """What scoring conditions a text's first token on: BOS, or EOS for tokenizers without one
    (GPT-2), as lm-evaluation-harness's prefix_token_id."""
    prefix = self.tokenizer.bos_id if self.tokenizer.bos_id is not None else self.tokenizer.eos_id
    if prefix is None:
      raise UserError(f"tokenizer {self.tokenizer.path} has neither a BOS nor an EOS token to start a sequence")
    return prefix

  def encode(self, text: str, add_bos: bool = False) -> list[int]:
    """Token ids of `text`; add_bos=True encodes it as a prompt, the way the tokenizer itself does
    (`transformers`' tok(text)): with BOS where the tokenizer adds one, without where it adds none.

    Special-token strings in the text (a chat template's) become their ids; a
    text that already starts with the BOS string gets no second BOS, as in
    lm-evaluation-harness.
    """
    ids = self.tokenizer.encode(text) if text else []
    if add_bos and self.text_to_text:  # an encoder's input ends with EOS, as T5's tokenizer makes it
      return ids + [self.tokenizer.eos_id]
    if add_bos and self.tokenizer.add_bos and ids[:1] != [self.tokenizer.bos_id]:
      ids = [self.tokenizer.bos_id] + ids
    return ids

  def chat_prompt(self, messages: list[dict]) -> list[int]:
    """A conversation through the chat template, ready for the assistant's turn. The rendered text
    is tokenized without adding BOS (the template places it), as apply_chat_template does."""
    return self.tokenizer.encode(self.chat.render(messages, add_generation_prompt=True))

  def decode(self, ids: list[int]) -> str:
    return self.tokenizer.decode(list(ids))

  def encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """(context ids, continuation ids) tokenized jointly, as lm-evaluation-harness does.

    The context's trailing whitespace moves to the continuation ("Answer: " +
    "x" scores " x"), and the continuation's ids are what the whole text
    tokenizes to after the context's, so a merge across the boundary is
    scored as the model would see it. The context is a prompt (BOS where the
    tokenizer adds one); an empty context is the prefix token alone.
    """
    stripped = context.rstrip()
    continuation = context[len(stripped):] + continuation
    if not stripped:
      ids = self.encode(continuation)
      return ([self.prefix_id], ids) if ids[:1] != [self.prefix_id] else (ids[:1], ids[1:])
    context_ids = self.encode(stripped, add_bos=True)
    whole = self.encode(stripped + continuation, add_bos=True)
    return context_ids, whole[len(context_ids):]

  def check_representable(self, text: str) -> None:
    """UserError unless `text` tokenizes to known tokens that decode back to it."""
    ids = self.encode(text)
    unk = self.tokenizer.unk_id
    if not ids or (unk is not None and unk in ids):
      raise UserError(f"it tokenizes to {ids}, with the unknown token {unk}")
    back = self.decode(ids)
    if back.strip() not in (text.strip(), unicodedata.normalize("NFKC", text).strip()):  # sentencepiece drops a leading space when decoding
      raise UserError(f"its tokens {ids} decode back as {back!r}")

  # ------------------------------------------------------------ scoring

  def _score(self):
    """jitted (params, tokens, targets, mask) -> (sum of target log-probs, whether all are argmax) per row."""
    if self.text_to_text:
      raise UserError("scoring tasks (perplexity, multiple choice, ranking) need a decoder-only language model; "
                      "an encoder-decoder is evaluated on generation tasks")
    if self._score_fn is None:
      model = self.model

      def score(params, tokens_BxT, targets_BxT, mask_BxT):
        positions_BxT = jnp.broadcast_to(jnp.arange(tokens_BxT.shape[1], dtype=jnp.int32), tokens_BxT.shape)
        logits_BxTxV = model.apply({"params": params}, tokens_BxT, positions_BxT,
                                   jnp.ones_like(tokens_BxT)).astype(jnp.float32)
        logprobs_BxTxV = jax.nn.log_softmax(logits_BxTxV)
        target_BxT = jnp.take_along_axis(logprobs_BxTxV, targets_BxT[..., None], axis=-1)[..., 0]
        greedy_BxT = jnp.argmax(logits_BxTxV, axis=-1) == targets_BxT
        return (jnp.sum(jnp.where(mask_BxT, target_BxT, 0.0), axis=1),
                jnp.all(greedy_BxT | ~mask_BxT, axis=1))

      tokens, rep = sharding.batch_sharding(self.mesh), sharding.replicated(self.mesh)
      param_sh = jax.tree.map(lambda a: a.sharding, self.params)
      self._score_fn = jax.jit(score, in_shardings=(param_sh, tokens, tokens, tokens), out_shardings=(rep, rep))
    return self._score_fn

  def _score_rows(self, rows: list[tuple[list[int], int]]) -> list[tuple[float, bool]]:
    """(log-prob sum, greedy) of each (tokens, first_target) row; longest rows batched together."""
    order = sorted(range(len(rows)), key=lambda i: -len(rows[i][0]))
    out = [None] * len(rows)
    score, rows_sh = self._score(), sharding.batch_sharding(self.mesh)
    for start in range(0, len(order), self.batch_size):
      batch = order[start:start + self.batch_size]
      length = min(decode_lib.bucket(max(len(rows[i][0]) - 1 for i in batch), 16), self.max_len)
      tokens, targets = np.zeros((2, self.batch_size, length), np.int32)
      mask = np.zeros((self.batch_size, length), bool)
      for r, i in enumerate(batch):
        seq, first = rows[i]
        tokens[r, :len(seq) - 1], targets[r, :len(seq) - 1] = seq[:-1], seq[1:]
        mask[r, first - 1:len(seq) - 1] = True
      with sharding.activate(self.mesh):
        inputs = [sharding.from_host(x, rows_sh) for x in (tokens, targets, mask)]
        sums, greedy = jax.device_get(score(self.params, *inputs))
      for r, i in enumerate(batch):
        out[i] = (float(sums[r]), bool(greedy[r]))
      if self.progress:
        self.progress(len(batch))
    return out

  def loglikelihood(self, requests: list[tuple[list[int], list[int]]]) -> list[tuple[float, bool]]:
    """(log p(continuation | context), whether greedy decoding yields it) per (context ids, continuation ids)."""
    return self._score_rows(_pairs_to_rows(requests, self.max_len))

  def rolling_loglikelihood(self, docs: list[list[int]], window: int | None = None,
                            stride: int | None = None) -> list[tuple[float, int]]:
    """(total log-prob, tokens scored) per document (ids without BOS), each token scored once.

    The first token is conditioned on the prefix token alone (BOS, or EOS
    without one), as in lm-evaluation-harness; windows hold `window` (default
    max_len) inputs and start `stride` (default window) apart.
    """
    window = window or self.max_len
    stride = stride or window
    if window > self.max_len:
      raise UserError(f"window {window} exceeds the model's max_len {self.max_len}")
    rows, owner = [], []
    for d, doc in enumerate(docs):
      seq = [self.prefix_id] + list(doc)
      for begin, end, first in windows(len(seq), window, stride):
        rows.append((seq[begin:end], first - begin))
        owner.append(d)
    totals = [0.0] * len(docs)
    for d, (logprob, _) in zip(owner, self._score_rows(rows)):
      totals[d] += logprob
    return [(total, len(doc)) for total, doc in zip(totals, docs)]

  # ------------------------------------------------------------ generation

  def generate_ids(self, prompts: list[list[int]], max_new_tokens: int, stop: list[str] = (),
                   temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0,
                   seed: int = 0) -> decode_lib.Generation:
    """New token ids per prompt (EOS included when it ended the row), batch by batch of batch_size."""
    if self.text_to_text:  # the encoder reads up to max_len tokens (the start, where a task prefix is)
      prompts = [list(p) if len(p) <= self.max_len else list(p)[:self.max_len - 1] + list(p)[-1:] for p in prompts]
    elif max_new_tokens >= self.max_len:
      raise UserError(f"max_new_tokens={max_new_tokens} leaves no room for a prompt in max_len {self.max_len}")
    else:
      keep = self.max_len - max_new_tokens
      prompts = [list(p)[-keep:] for p in prompts]
    sampling = SamplingConfig(temperature=temperature, top_k=top_k, top_p=top_p, seed=seed)
    stop_ids = () if self.tokenizer.eos_id is None else (self.tokenizer.eos_id,)
    stop = [s for s in stop if s]
    result = decode_lib.Generation([], 0, 0.0, 0.0)
    for start in range(0, len(prompts), self.batch_size):
      batch = prompts[start:start + self.batch_size]
      should_stop = (lambda row, ids: any(s in self.decode(ids) for s in stop)) if stop else None
      g = self.decoder.generate(self.params, batch, max_new_tokens, sampling, stop_ids, should_stop)
      if self.progress:
        self.progress(len(batch))
      result = decode_lib.Generation(result.tokens + g.tokens, result.prompt_tokens + g.prompt_tokens,
                                     result.prefill_s + g.prefill_s, result.decode_s + g.decode_s,
                                     result.compile_s + g.compile_s)
    return result

  def text(self, ids: list[int], stop: list[str] = ()) -> str:
    """Generated ids as text, cut before EOS and before the first stop string."""
    if self.tokenizer.eos_id in ids:
      ids = ids[:ids.index(self.tokenizer.eos_id)]
    text = self.decode(ids)
    cuts = [text.find(s) for s in stop if s and s in text]
    return text[:min(cuts)] if cuts else text

  def generate(self, prompts: list[list[int]], max_new_tokens: int, stop: list[str] = (),
               temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0, seed: int = 0) -> list[str]:
    """Continuations of token-id prompts as text, cut before EOS and the first stop string."""
    generation = self.generate_ids(prompts, max_new_tokens, stop, temperature, top_k, top_p, seed)
    return [self.text(ids, stop) for ids in generation.tokens]


def _restore_run(workdir: str, mesh):
  """(ModelConfig, params on `mesh`, Tokenizer, chat formatter) of a run's newest checkpoint."""
  from data import pipeline
  from parallel import restore
  r = restore.restore(workdir, mesh)
  tok, formatter = sft.dataset_chat(pipeline.dataset_metadata(r.config.data), r.config.init.hf_dir)
  return r.cfg, r.params, tok, formatter
