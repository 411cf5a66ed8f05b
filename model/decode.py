"""Fast batched generation: one jitted prefill, then a jitted decode loop over a preallocated KV cache.

Prompts of different lengths share a batch right-padded: row b's token at
position p lives in cache slot p, so each row continues from its own length
(see model/attention.py). Shapes are bucketed to powers of two, so a new prompt
length or token count reuses a compiled program instead of tracing again. The
decode loop runs `chunk` tokens per call inside `lax.while_loop` (no Python per
token) and returns to the host between chunks only to check stop strings.

Sampling is seeded per emitted token (fold_in(seed, index)), so results do not
depend on the chunk size.

Programs are compiled ahead of time (`lower().compile()`) for each new shape,
so the time spent compiling is reported apart from the warm prefill and
decode times.
"""

import dataclasses
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec

from errors import UserError
from model.config import ModelConfig
from model.sampling import SamplingConfig, next_token
from model import families, kv_cache
from model.transformer import unstacked_params
from parallel import sharding

DONE = -1  # fills a row's output after it stopped


def bucket(n: int, minimum: int) -> int:
  """The next power of two >= n (and >= minimum): few distinct shapes, few compiles."""
  return max(minimum, 1 << max(0, n - 1).bit_length())


@dataclasses.dataclass
class Generation:
  tokens: list[list[int]]  # new tokens per prompt, including the stop token that ended it
  prompt_tokens: int
  prefill_s: float  # warm: compilation excluded
  decode_s: float   # warm: compilation excluded
  compile_s: float = 0.0  # tracing and compiling programs for new shapes (0 when all were cached)

  @property
  def new_tokens(self) -> int:
    return sum(len(t) for t in self.tokens)


def make_decoder(cfg: ModelConfig, mesh, chunk: int = 64) -> "Decoder":
  """The generator for cfg's family: a decoder continues prompts; an encoder-decoder (T5) reads each prompt
  with its encoder and writes a new sequence (model/decode_seq2seq.py)."""
  if cfg.family == "encoder_decoder":
    from model.decode_seq2seq import Seq2SeqDecoder
    return Seq2SeqDecoder(cfg, mesh, chunk)
  return Decoder(cfg, mesh, chunk)


class Decoder:
  """Generates from one model on one mesh; compiled programs are reused across calls."""

  def __init__(self, cfg: ModelConfig, mesh, chunk: int = 64):
    self.cfg, self.mesh, self.chunk = cfg, mesh, chunk
    # Decoding runs the layers unrolled: scanning them moves every layer's cache
    # through the loop on every token (1.5x slower per token on CPU, measured).
    self.model = families.build(dataclasses.replace(cfg, scan_layers=False))
    self._unstack = None
    if cfg.scan_layers:  # one copy of the weights per generate call, made before the first token
      _, unrolled_sh = sharding.abstract_variables(self.model, mesh)
      self._unstack = jax.jit(self._unstacked, out_shardings=unrolled_sh)
    self._batch_multiple = mesh.shape["data"] * mesh.shape["fsdp"]
    self._jitted = {}
    self._compiled = {}  # (program, sampling key, argument shapes) -> compiled executable

  def _unstacked(self, params: dict) -> dict:
    """Scanned-layer parameters in the unrolled layout the KV cache runs."""
    return unstacked_params(params, self.cfg.num_layers)

  def _executable(self, name: str, fn, key, *args):
    """(fn compiled for these arguments' shapes, seconds spent compiling it now: 0 when cached).

    Arguments that are not arrays are static: part of the key, and left out of the executable's calls.
    """
    key = (name, key) + tuple((a.shape, str(a.dtype)) if hasattr(a, "shape") else a
                              for a in jax.tree.leaves(args))
    if key in self._compiled:
      return self._compiled[key], 0.0
    start = time.perf_counter()
    self._compiled[key] = fn.lower(*args).compile()
    return self._compiled[key], time.perf_counter() - start

  def _shardings(self):
    named = lambda spec: sharding.logical_to_sharding(spec, self.mesh)  # noqa: E731
    return dict(cache=named(kv_cache.axes(self.cfg.num_layers)), rows=named(PartitionSpec("batch")),
                tokens=sharding.batch_sharding(self.mesh), replicated=sharding.replicated(self.mesh))

  def _functions(self, sampling: SamplingConfig, stop_ids: tuple[int, ...], params):
    """(jitted prefill and decode, their cache key) for this sampling setup."""
    key = (dataclasses.replace(sampling, seed=0), stop_ids)  # the seed is an argument: no recompile
    if key not in self._jitted:
      self._jitted[key] = self._compile(sampling, stop_ids, jax.tree.map(lambda a: a.sharding, params))
    return self._jitted[key], key

  def _prefill_fn(self, sampling: SamplingConfig):
    """(params, tokens [B, T], lengths [B], seed, cache_len) -> (cache, each row's first new token): the
    prompts through the model, their keys and values into a fresh cache."""
    cfg, model = self.cfg, self.model

    def prefill(params, tokens_BxT, lengths_B, seed, cache_len):
      batch, length = tokens_BxT.shape
      cache = kv_cache.empty(cfg, cfg.num_layers, batch, cache_len)
      positions_BxT = jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32), tokens_BxT.shape)
      logits_Bx1xV, cache = model.apply({"params": params}, tokens_BxT, positions_BxT, jnp.ones_like(tokens_BxT),
                                        cache=cache, logits_at_BxK=(lengths_B - 1)[:, None])
      return cache, next_token(logits_Bx1xV[:, 0], jax.random.fold_in(jax.random.key(seed), 0), sampling)
    return prefill

  def _step(self, params, cache, token_B, position_B):
    """One token per row through the model: (logits [B, V], the cache with its keys and values)."""
    logits_Bx1xV, cache = self.model.apply({"params": params}, token_B[:, None], position_B[:, None],
                                           jnp.ones_like(token_B)[:, None], cache=cache)
    return logits_Bx1xV[:, 0], cache

  def _compile(self, sampling: SamplingConfig, stop_ids: tuple[int, ...], param_sh):
    sh = self._shardings()
    stop_S = jnp.asarray(stop_ids or (-2,), jnp.int32)

    def decode_chunk(params, cache, token_B, position_B, done_B, first_index, limit, seed):
      """Emits up to `limit` tokens (fewer once every row is done); returns them [B, chunk]."""
      out_BxC = jnp.full((token_B.shape[0], self.chunk), DONE, jnp.int32)

      def step(carry):
        cache, token_B, position_B, done_B, out_BxC, i = carry
        out_BxC = out_BxC.at[:, i].set(jnp.where(done_B, DONE, token_B))
        done_B = done_B | jnp.isin(token_B, stop_S)
        logits_BxV, cache = self._step(params, cache, token_B, position_B)
        token_B = next_token(logits_BxV, jax.random.fold_in(jax.random.key(seed), first_index + i + 1), sampling)
        return cache, token_B, position_B + 1, done_B, out_BxC, i + 1

      def keep_going(carry):
        return (carry[-1] < limit) & ~jnp.all(carry[3])

      return jax.lax.while_loop(keep_going, step, (cache, token_B, position_B, done_B, out_BxC, jnp.int32(0)))

    rows, rep = sh["rows"], sh["replicated"]
    return dict(
        # Small outputs come back replicated: every process reads them whole.
        prefill=jax.jit(self._prefill_fn(sampling), static_argnums=(4,),
                        in_shardings=(param_sh, sh["tokens"], rows, rep), out_shardings=(sh["cache"], rep)),
        decode=jax.jit(decode_chunk, in_shardings=(param_sh, sh["cache"], rows, rows, rows, rep, rep, rep),
                       out_shardings=(sh["cache"], rep, rep, rep, rep, rep), donate_argnums=(1,)),
    )

  def _check_lengths(self, prompts, max_new_tokens: int) -> None:
    if not prompts or any(len(p) == 0 for p in prompts):
      raise UserError("every prompt needs at least one token (a BOS token will do)")
    if max_new_tokens <= 0:
      raise UserError(f"max_new_tokens={max_new_tokens}; expected a positive number")
    longest = max(len(p) for p in prompts) + max_new_tokens
    if self.cfg.position == "learned" and longest > self.cfg.max_seq_len:
      raise UserError(f"a prompt plus max_new_tokens needs {longest} positions; the model's learned position "
                      f"table has {self.cfg.max_seq_len}")

  def _layout(self, longest: int, max_new_tokens: int) -> tuple[int, int]:
    """(prompt length, cache slots) of a batch, bucketed: prompts and new tokens share the cache."""
    length = bucket(longest, 16)
    cache_len = bucket(max(length, longest + max_new_tokens), 64)
    if self.cfg.position == "learned":  # pad positions must stay inside the position table
      length, cache_len = min(length, self.cfg.max_seq_len), min(cache_len, self.cfg.max_seq_len)
    return length, cache_len

  def _first_position(self, lengths: np.ndarray) -> np.ndarray:
    """Each row's position of the first token that the decode loop feeds back: right after its prompt."""
    return lengths

  def generate(self, params, prompts: list[list[int]], max_new_tokens: int,
               sampling: SamplingConfig = SamplingConfig(), stop_ids: tuple[int, ...] = (),
               should_stop: Callable[[int, list[int]], bool] | None = None) -> Generation:
    """Continues every prompt by up to max_new_tokens tokens.

    A row stops after emitting one of `stop_ids`, or when `should_stop(row,
    tokens so far)` says so (checked between chunks: stop strings).
    """
    self._check_lengths(prompts, max_new_tokens)
    start, compile_s = time.perf_counter(), 0.0
    if self._unstack is not None:  # the copy counts in prefill_s
      with sharding.activate(self.mesh):
        unstack, compile_s = self._executable("unstack", self._unstack, None, params)
        params = unstack(params)
    fns, fns_key = self._functions(sampling, tuple(sorted(set(stop_ids))), params)
    lengths = np.array([len(p) for p in prompts], np.int32)
    batch = -(-len(prompts) // self._batch_multiple) * self._batch_multiple
    length, cache_len = self._layout(int(lengths.max()), max_new_tokens)
    tokens = np.zeros((batch, length), np.int32)
    for i, p in enumerate(prompts):
      tokens[i, :len(p)] = p
    tokens[len(prompts):] = tokens[0]  # filler rows: a copy of the first prompt
    lengths = np.concatenate([lengths, np.full(batch - len(prompts), lengths[0], np.int32)])

    shardings = self._shardings()
    with sharding.activate(self.mesh):
      host = lambda x, name: sharding.from_host(np.asarray(x), shardings[name])  # noqa: E731
      seed = host(np.uint32(sampling.seed), "replicated")
      prefill_args = (params, host(tokens, "tokens"), host(lengths, "rows"), seed)
      prefill, seconds = self._executable("prefill", fns["prefill"], fns_key, *prefill_args, cache_len)
      compile_s += seconds
      cache, token = prefill(*prefill_args)
      jax.block_until_ready(token)
      prefill_s = time.perf_counter() - start - compile_s
      out = [[] for _ in range(batch)]
      done = np.zeros(batch, bool)
      done[len(prompts):] = True
      position, emitted = self._first_position(lengths), 0
      while emitted < max_new_tokens and not done.all():
        limit = min(self.chunk, max_new_tokens - emitted)
        decode_args = (params, cache, host(token, "rows"), host(position, "rows"), host(done, "rows"),
                       host(np.int32(emitted), "replicated"), host(np.int32(limit), "replicated"), seed)
        decode, seconds = self._executable("decode", fns["decode"], fns_key, *decode_args)
        compile_s += seconds
        cache, token, position, done_dev, chunk_BxC, steps = decode(*decode_args)
        steps, chunk_BxC, done = int(steps), np.asarray(chunk_BxC), np.array(done_dev)
        for i in range(len(prompts)):
          out[i].extend(t for t in chunk_BxC[i, :steps].tolist() if t != DONE)
          if should_stop is not None and not done[i] and should_stop(i, out[i]):
            done[i] = True
        emitted += steps
    decode_s = time.perf_counter() - start - prefill_s - compile_s
    return Generation(out[:len(prompts)], int(lengths[:len(prompts)].sum()), prefill_s, decode_s, compile_s)
