"""Reward functions for online RL (train.objective="grpo"), named in config.train.grpo.reward_funcs.

A reward function takes TRL's arguments, by keyword:
  fn(prompts=[messages per completion], completions=[text per completion], completion_ids=[[ids]],
     answer=[reference answer or None], **every other field of the prompt records) -> [float | None]
and returns one reward per completion (None: does not apply to that one). Completions are the text the
policy sampled, cut before its end of turn. A config names shipped functions, or any importable one as
"package.module:function" (or "package.module.function"); the run imports it at start-up.

Shipped:
  exact_match   1 when the completion's answer equals the reference answer (whitespace-normalised); the
                completion's answer is the first capture group of grpo.answer_regex (default: all of it)
  format        1 when the whole completion matches grpo.format_regex (re.fullmatch, DOTALL)
  length        1 - |tokens - grpo.length_target| / grpo.length_target, at least 0
  reward_model  the score of a reward run (train.objective="reward") or its HF export, grpo.reward_model

Rewards combine as TRL's "sum_then_normalize": the weighted sum over functions (None counting as nothing),
and group-normalised advantages (`group_advantages`).
"""

import importlib
import math
import os
import re
import warnings
from typing import Callable

import numpy as np

from errors import UserError
from trainer.reward_scorer import RewardScorer

RewardFn = Callable[..., list]


def _normalise(text: str) -> str:
  return " ".join(text.split())


def exact_match(answer_regex: str = "") -> RewardFn:
  pattern = re.compile(answer_regex, re.DOTALL) if answer_regex else None

  def reward(completions, answer, **_):
    out = []
    for text, want in zip(completions, answer):
      if want is None:
        out.append(None)
        continue
      if pattern is not None:
        found = pattern.search(text)
        text = (found.group(1) if found.groups() else found.group(0)) if found else None
      out.append(float(text is not None and _normalise(text) == _normalise(want)))
    return out
  return reward


def format_check(format_regex: str) -> RewardFn:
  pattern = re.compile(format_regex, re.DOTALL)

  def reward(completions, **_):
    return [float(pattern.fullmatch(text.strip()) is not None) for text in completions]
  return reward


def length(target: int) -> RewardFn:
  def reward(completion_ids, **_):
    return [max(0.0, 1.0 - abs(len(ids) - target) / target) for ids in completion_ids]
  return reward


def reward_model(path: str, max_len: int) -> RewardFn:
  """A reward run's workdir or its HF export, scoring (prompt, completion) as it scored training pairs."""
  is_run = os.path.isdir(os.path.join(path, "checkpoints"))
  scorer = RewardScorer.load(workdir=path if is_run else None, hf_dir=None if is_run else path, max_len=max_len)

  def reward(prompts, completions, **_):
    conversations = [(p, [{"role": "assistant", "content": c}]) for p, c in zip(prompts, completions)]
    return [float(r) for r in scorer.score(conversations)]
  return reward


def _import(name: str) -> RewardFn:
  module, sep, attr = name.partition(":") if ":" in name else name.rpartition(".")
  if not sep or not module:
    raise ImportError(f"{name!r} is neither a shipped reward function nor 'package.module:function'")
  fn = getattr(importlib.import_module(module), attr)
  if not callable(fn):
    raise ImportError(f"{name} is not callable")
  return fn


def resolve(grpo) -> list[tuple[str, RewardFn]]:
  """(name, function) for each of config.train.grpo.reward_funcs (GrpoConfig)."""
  shipped = {
      "exact_match": lambda: exact_match(grpo.answer_regex),
      "format": lambda: format_check(grpo.format_regex),
      "length": lambda: length(grpo.length_target),
      "reward_model": lambda: reward_model(grpo.reward_model, grpo.reward_model_max_len),
  }
  out = []
  for name in grpo.reward_func_names:
    try:
      out.append((name, shipped[name]() if name in shipped else _import(name)))
    except (ImportError, AttributeError, ValueError) as e:
      raise UserError(f"config.train.grpo.reward_funcs: {name!r} does not resolve ({e}); expected one of "
                      f"{sorted(shipped)} or an importable 'package.module:function'") from None
  return out


def _prompt_text(prompt: list[dict]) -> str:
  text = prompt[-1]["content"] if prompt else ""
  return text if len(text) <= 200 else text[:200] + "..."


def score(functions: list[tuple[str, RewardFn]], prompts: list[list[dict]], completions: list[str],
          completion_ids: list[list[int]], records: list[dict]) -> np.ndarray:
  """[N, F] rewards, NaN where a function returned None; a function that raises, returns the wrong
  number of rewards, or a NaN or non-number is named, with the prompt it failed on."""
  columns = {k: [r.get(k) for r in records] for k in sorted({k for r in records for k in r} - {"prompt"})}
  columns.setdefault("answer", [None] * len(completions))
  out = np.full((len(completions), len(functions)), np.nan)
  for j, (name, fn) in enumerate(functions):
    try:
      values = fn(prompts=prompts, completions=completions, completion_ids=completion_ids, **columns)
    except Exception as e:  # noqa: BLE001 (a user's function: any failure is reported, named)
      where = _first_failing(fn, prompts, completions, completion_ids, columns)
      raise UserError(f"reward function {name!r} raised {type(e).__name__}: {e}{where}") from None
    values = list(values) if values is not None else []
    if len(values) != len(completions):
      raise UserError(f"reward function {name!r} returned {len(values)} rewards for {len(completions)} completions")
    for i, v in enumerate(values):
      if v is None:
        continue
      if isinstance(v, bool) or not isinstance(v, (int, float, np.floating, np.integer)) or math.isnan(v):
        raise UserError(f"reward function {name!r} returned {v!r} for the completion of prompt "
                        f"{_prompt_text(prompts[i])!r}; expected a number (or None where it does not apply)")
      if math.isinf(v):
        raise UserError(f"reward function {name!r} returned {v} for the completion of prompt "
                        f"{_prompt_text(prompts[i])!r}; expected a finite number")
      out[i, j] = float(v)
  return out


def _first_failing(fn, prompts, completions, completion_ids, columns) -> str:
  """" on prompt '...'": the first completion the function raises on alone ("" when none does alone)."""
  for i in range(len(completions)):
    try:
      fn(prompts=prompts[i:i + 1], completions=completions[i:i + 1], completion_ids=completion_ids[i:i + 1],
         **{k: v[i:i + 1] for k, v in columns.items()})
    except Exception:  # noqa: BLE001
      return f" on the completion of prompt {_prompt_text(prompts[i])!r}"
  return ""


def combine(per_function: np.ndarray, weights: np.ndarray) -> np.ndarray:
  """[N] rewards: the weighted sum over functions, None (NaN) counting as nothing; NaN where every
  function returned None (TRL: the completion is unscorable)."""
  total = np.nansum(per_function * weights[None, :], axis=1)
  return np.where(np.isnan(per_function).all(axis=1), np.nan, total)


def group_advantages(rewards: np.ndarray, group: int, scale: str = "group") -> tuple[np.ndarray, np.ndarray]:
  """(advantages [N], whether each row's reward std is zero [N]) as TRL computes them: the reward minus its
  group's mean, divided by (std + 1e-4) with Bessel's correction (the group's std, the batch's, or none);
  NaN rewards are left out of the means and get advantage 0."""
  grouped = rewards.reshape(-1, group)
  with warnings.catch_warnings():  # all-NaN groups (unscorable) give NaN means, quietly
    warnings.simplefilter("ignore", RuntimeWarning)
    mean = np.repeat(np.nanmean(grouped, axis=1), group)
    if scale == "batch":
      std = np.full_like(rewards, np.nanstd(rewards, ddof=1))
    else:
      std = np.repeat(np.nanstd(grouped, axis=1, ddof=1), group)
  advantages = rewards - mean
  if scale != "none":
    advantages = advantages / (std + 1e-4)
  return np.nan_to_num(advantages, nan=0.0), np.isclose(np.nan_to_num(std, nan=0.0), 0.0)

