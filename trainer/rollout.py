"""Online rollouts (train.objective="grpo"): the policy samples completions of a batch's prompts with the
KV-cache decoder on the run's mesh, reward functions score them, and they become the rows the train step
learns from.

A batch holds batch_size / num_generations prompts, each repeated num_generations times in consecutive
rows (data/prompts.py), so a prompt's group of completions is one slice of the batch. Sampling is seeded
by (train.seed, step): with the parameters and the data iterator restored, a resumed run samples the same
completions. Every process samples the whole global batch (its rows and the others') and scores it, as
group statistics need all of a group; each then keeps its own rows.

A completion ends at the tokenizer's EOS or at the chat template's end of turn (a special token, or a
string such as "<|im_end|>" that the tokenizer splits into several tokens, found in the decoded text). Its
tokens through the end of turn are trained on, so the policy learns to stop; reward functions see its
text before it.
"""

import dataclasses
import time

import jax
import numpy as np
from jax.experimental import multihost_utils

from data import pipeline, sft, shards
from errors import UserError
from model import decode
from model.sampling import SamplingConfig
from trainer import rewards

PROMPT_FIELDS = ("tokens", "prompt_len", "prompt_index", "dataset")
_PROBE = "Strata-end-of-turn-probe"
TRAIN_STREAM, EVAL_STREAM = 0, 1


def end_of_turn(formatter) -> str:
  """What the chat template writes after an assistant turn's content ("<|im_end|>"; "" for none)."""
  text = formatter.render([{"role": "user", "content": "?"}, {"role": "assistant", "content": _PROBE}])
  return text.split(_PROBE, 1)[1].strip()


def sampling_seed(seed: int, stream: int, index: int) -> int:
  """The sampler's seed for a train step or an evaluation batch: a function of (train.seed, stream, index)."""
  return int(np.random.SeedSequence([seed, stream, index]).generate_state(1)[0])


@dataclasses.dataclass
class Samples:
  """Completions of a global batch of prompts, and their rewards."""
  prompts: list[list[int]]
  completion_ids: list[list[int]]  # through the end of turn, when there is one
  texts: list[str]                 # before the end of turn
  ended: np.ndarray                # [N] bool: stopped before max_completion_len
  per_function: np.ndarray         # [N, F], NaN where a function returned None
  rewards: np.ndarray              # [N] weighted sum
  records: list[dict]


class Rollout:
  """Samples and scores completions for one GRPO run (built by the trainer's loop)."""

  def __init__(self, config, model_cfg, mesh, meta: dict, rows: tuple[int, int], functions):
    """`config`: the RunConfig; `rows`: the [start, stop) rows of the global batch this process holds;
    `functions`: the resolved reward functions (rewards.resolve)."""
    g = self.grpo = config.train.grpo
    self.seed, self.seq_len, self.global_batch = config.train.seed, config.train.seq_len, config.train.batch_size
    self.row_start, self.row_stop = rows
    self.tok, formatter = sft.dataset_chat(meta, config.init.hf_dir)
    end = end_of_turn(formatter)
    end_id = self.tok.token_to_id(end) if end else None
    self.stop_ids = tuple(sorted({i for i in (self.tok.eos_id, end_id) if i is not None}))
    self.stop_text = end if end and end_id is None else ""
    self.decoder = decode.Decoder(dataclasses.replace(model_cfg, lora=None), mesh, chunk=16)
    self.sampling = SamplingConfig(temperature=g.temperature, top_k=g.top_k, top_p=g.top_p)
    self.functions = functions
    self.weights = np.asarray(g.weights, np.float64)
    self.names = [name for name, _ in self.functions]
    self.data_dirs = [d for d, _ in pipeline.datasets(config.data)]
    self._records = {}

  def _records_of(self, split: str, dataset: int) -> list[dict]:
    key = (split, dataset)
    if key not in self._records:
      directory = self.data_dirs[dataset]
      self._records[key] = shards.open_records(directory, split, shards.load_metadata(directory))
    return self._records[key]

  def _global_rows(self, local: dict) -> dict:
    """The prompt fields of every process's rows, in global row order."""
    fields = {k: np.asarray(local[k]) for k in PROMPT_FIELDS if k in local}
    fields.setdefault("dataset", np.zeros(len(fields["tokens"]), np.int32))  # evaluation rows drop it: one dataset
    if jax.process_count() == 1:
      return fields
    # Placed by the rows each process holds (the mesh decides), each block once: processes that share
    # rows (a model axis across hosts) send the same block.
    gathered = multihost_utils.process_allgather({**fields, "row_start": np.int32(self.row_start)})
    firsts = np.unique(np.asarray(gathered["row_start"]), return_index=True)[1]
    rows = {k: np.concatenate([np.asarray(gathered[k])[i] for i in firsts]) for k in fields}
    if len(rows["tokens"]) != self.global_batch:
      raise UserError(f"the processes hold {len(rows['tokens'])} distinct rows, not the global batch of "
                      f"config.train.batch_size={self.global_batch}")
    return rows

  def _cut(self, ids: list[int]) -> tuple[list[int], str, bool]:
    """(the completion's tokens through its end of turn, its text before it, whether it ended)."""
    stop = next((k for k, i in enumerate(ids, 1) if i in self.stop_ids), None)  # through the first stop token
    within = ids[:stop - 1] if stop else ids
    if self.stop_text and self.stop_text in self.tok.decode(within):
      # The fewest tokens whose text holds the end of turn (a binary search: once in a prefix's text, it
      # stays in every longer one's), so a long completion costs log n decodes, not n.
      lo, hi = 1, len(within)
      while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if self.stop_text in self.tok.decode(within[:mid]) else (mid + 1, hi)
      head = self.tok.decode(within[:lo])
      return within[:lo], head[:head.index(self.stop_text)], True
    if stop:
      return ids[:stop], self.tok.decode(ids[:stop - 1]), True
    return ids, self.tok.decode(ids), False

  def sample(self, params, rows: dict, seed: int, split: str) -> Samples:
    """Completions of a global batch of prompt rows (`rows`: PROMPT_FIELDS), with their rewards."""
    prompts = [rows["tokens"][i, :rows["prompt_len"][i]].tolist() for i in range(len(rows["tokens"]))]
    should_stop = None
    if self.stop_text:
      should_stop = lambda row, ids: self.stop_text in self.tok.decode(ids)  # noqa: E731
    generation = self.decoder.generate(params, prompts, self.grpo.max_completion_len,
                                       dataclasses.replace(self.sampling, seed=seed), self.stop_ids, should_stop)
    cut = [self._cut(ids) for ids in generation.tokens]
    records = [self._records_of(split, int(d))[int(k)] for d, k in zip(rows["dataset"], rows["prompt_index"])]
    completion_ids, texts = [c[0] for c in cut], [c[1] for c in cut]
    per_function = rewards.score(self.functions, [r["prompt"] for r in records], texts, completion_ids, records)
    return Samples(prompts, completion_ids, texts, np.array([c[2] for c in cut]), per_function,
                   rewards.combine(per_function, self.weights), records)

  def train_rows(self, samples: Samples, advantages: np.ndarray, datasets: np.ndarray) -> dict:
    """Global batch rows: each prompt then its completion, the loss on the completion's tokens."""
    n = len(samples.prompts)
    rows = {k: np.zeros((n, self.seq_len), np.int32) for k in ("tokens", "segment_ids", "positions", "loss_mask")}
    for i, (prompt, completion) in enumerate(zip(samples.prompts, samples.completion_ids)):
      length = len(prompt) + len(completion)
      if length > self.seq_len:  # the loop checks prompt max_len + max_completion_len <= seq_len
        raise UserError(f"a prompt of {len(prompt)} tokens and its completion of {len(completion)} exceed "
                        f"config.train.seq_len={self.seq_len}")
      rows["tokens"][i, :length] = prompt + completion
      rows["segment_ids"][i, :length] = 1
      rows["positions"][i, :length] = np.arange(length)
      rows["loss_mask"][i, len(prompt):length] = samples.ended[i] or not self.grpo.mask_truncated_completions
    return {**rows, "advantages": advantages.astype(np.float32), "dataset": datasets.astype(np.int32)}

  def metrics(self, samples: Samples) -> dict:
    """TRL's names: reward, reward_std, rewards/NAME/mean and std, completions/mean_length, clipped_ratio."""
    with np.errstate(invalid="ignore"):
      out = {"reward": float(np.nanmean(samples.rewards)), "reward_std": float(np.nanstd(samples.rewards, ddof=1))}
      for j, name in enumerate(self.names):
        values = samples.per_function[:, j]
        applied = values[~np.isnan(values)]
        out[f"rewards/{name}/mean"] = float(applied.mean()) if applied.size else 0.0
        out[f"rewards/{name}/std"] = float(applied.std(ddof=1)) if applied.size > 1 else 0.0
    out["completions/mean_length"] = float(np.mean([len(c) for c in samples.completion_ids]))
    out["completions/clipped_ratio"] = float(1.0 - samples.ended.mean())
    return out

  def train_batch(self, params, local: dict, step: int) -> tuple[dict, dict]:
    """(this process's train rows for `step`, host metrics): sample, score, normalise within groups."""
    jax.block_until_ready(params)  # the previous step's update: its time is training's, not sampling's
    start = time.perf_counter()
    rows = self._global_rows(local)
    samples = self.sample(params, rows, sampling_seed(self.seed, TRAIN_STREAM, step), "train")
    advantages, zero_std = rewards.group_advantages(samples.rewards, self.grpo.num_generations,
                                                    self.grpo.scale_rewards)
    batch = self.train_rows(samples, advantages, rows["dataset"])
    local_batch = {k: v[self.row_start:self.row_stop] for k, v in batch.items()}
    metrics = {**self.metrics(samples), "frac_reward_zero_std": float(zero_std.mean()),
               "time/sample_s": time.perf_counter() - start}
    return local_batch, metrics

  def evaluate(self, params, local_batches: list[dict], split: str, log=None) -> dict:
    """Mean rewards of completions sampled for fixed held-out prompts (the same seeds every evaluation);
    `log` receives the first grpo.print_completions completions."""
    jax.block_until_ready(params)
    sums, count, shown = {}, 0, 0
    for index, local in enumerate(local_batches):
      samples = self.sample(params, self._global_rows(local), sampling_seed(self.seed, EVAL_STREAM, index), split)
      n = len(samples.prompts)
      for k, v in self.metrics(samples).items():
        sums[k] = sums.get(k, 0.0) + v * n
      count += n
      group = self.grpo.num_generations
      while log is not None and shown < self.grpo.print_completions and shown * group < n:
        log(self.describe(samples, shown * group))  # one completion of each of the first prompts
        shown += 1
    result = {k: v / count for k, v in sums.items() if not k.endswith("/std") and k != "reward_std"}
    return {**result, "examples": float(count)}

  def describe(self, samples: Samples, i: int) -> str:
    record = samples.records[i]
    scores = ", ".join(f"{name} {samples.per_function[i, j]:.2f}" for j, name in enumerate(self.names))
    answer = f" | answer {record['answer']!r}" if record.get("answer") is not None else ""
    return (f"--- completion {i + 1} (of {len(samples.prompts)}): prompt {record['prompt'][-1]['content']!r}{answer} | reward "
            f"{samples.rewards[i]:.2f} ({scores})\n{samples.texts[i]}")
