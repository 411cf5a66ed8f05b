"""GRPO: prompt data, reward functions, the loss against TRL's published formulas (and TRL's own nanstd),
and runs: exact resume to the same sampled completions, a mesh against one device, clear errors."""

import json
import os
import shutil
import sys

import jax
import numpy as np
import pytest
import torch
from trl.trainer.utils import nanstd as trl_nanstd

from conftest import read_metrics, sft_config
from configs.schema import RunConfig
from data import pipeline, prompts, shards
from data import tokenizer as tokenizer_lib
from errors import UserError
from trainer import loop, rewards
from trainer import rollout as rollout_lib
from trainer.objectives import grpo

ONE_DEVICE = {"mesh.data": 1, "mesh.fsdp": 1}
MESH = {"mesh.data": 2, "mesh.fsdp": 2, "mesh.tensor": 2}


def _write(path, rows):
  path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
  return str(path)


# --- Prompt data. ---

def _questions(n: int) -> list[dict]:
  words = ["Return", "Set", "Get", "Create"]
  return [{"prompt": f"What does `f{i}()` do?", "answer": words[i % 4], "topic": f"t{i}"} for i in range(n)]


@pytest.fixture(scope="module")
def prompt_dir(tiny_hf_base, tmp_path_factory):
  root = tmp_path_factory.mktemp("prompts")
  out = str(root / "prepared")
  prompts.prepare_prompts([_write(root / "q.jsonl", _questions(40))], tiny_hf_base, out,
                          prompts.PromptOptions(max_len=64, val_fraction=0.2))
  return out


def test_prompts_keep_their_records_and_fill_a_group_of_rows_each(prompt_dir, tiny_hf_base):
  meta = shards.load_metadata(prompt_dir)
  assert meta["kind"] == "prompts" and meta["counts"]["prompts"] == 40 and meta["counts"]["with_answer"] == 40
  assert {s: v["num_docs"] for s, v in meta["splits"].items()} == {"train": 32, "val": 8}
  assert shards.verify_split(prompt_dir, "train")
  records = shards.open_records(prompt_dir, "train", meta)
  tok = tokenizer_lib.load_dir(tiny_hf_base)
  stream = pipeline.RowStream(sft_config("", prompt_dir).data, "train", 80, seed=1, shuffle=True, repeats=4)
  assert stream.rows_per_epoch == 4 * 32
  seen = []
  for g in range(stream.rows_per_epoch):
    row = stream[g]
    n = int(row["prompt_len"])
    text = tok.decode(row["tokens"][:n].tolist())
    record = records[int(row["prompt_index"])]
    assert record["prompt"][0]["content"] in text and text.endswith("<|im_start|>assistant\n")
    assert record["answer"] in ("Return", "Set", "Get", "Create") and record["topic"].startswith("t")
    assert row["segment_ids"][:n].all() and not row["segment_ids"][n:].any()
    seen.append(int(row["prompt_index"]))
  groups = np.array(seen).reshape(-1, 4)
  assert (groups == groups[:, :1]).all()  # four consecutive rows: one prompt
  assert sorted(groups[:, 0]) == list(range(32))  # an epoch: every prompt once


@pytest.mark.parametrize("row, message", [
    ({"question": "Q"}, "q.jsonl:2: missing field 'prompt'"),
    ({"prompt": "  "}, "q.jsonl:2: 'prompt' is empty"),
    ({"prompt": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}]},
     "q.jsonl:2: 'prompt' ends with an assistant turn"),
    ({"prompt": "Q", "answer": 4}, "q.jsonl:2: 'answer' must be a string"),
])
def test_a_bad_prompt_line_is_named_or_skipped_and_counted(tiny_hf_base, tmp_path, row, message):
  good = {"prompt": "Two plus two?", "answer": "Four"}
  data = _write(tmp_path / "q.jsonl", [good, row, good, good])
  with pytest.raises(UserError, match=message):
    prompts.prepare_prompts([data], tiny_hf_base, str(tmp_path / "out"))
  assert not (tmp_path / "out").exists()
  meta = prompts.prepare_prompts([data], tiny_hf_base, str(tmp_path / "out"),
                                 prompts.PromptOptions(bad_lines="skip", val_fraction=0.4))
  assert meta["counts"]["skipped_bad_line"] == 1 and meta["counts"]["prompts"] == 3


def test_an_overlong_prompt_is_dropped_or_named_never_cut(tiny_hf_base, tmp_path):
  data = _write(tmp_path / "q.jsonl", [{"prompt": "Q?"}] * 3 + [{"prompt": "word " * 100}])
  meta = prompts.prepare_prompts([data], tiny_hf_base, str(tmp_path / "drop"), prompts.PromptOptions(max_len=80))
  assert meta["counts"]["dropped_overlong"] == 1 and meta["counts"]["prompts"] == 3
  with pytest.raises(UserError, match=r"q.jsonl:4: the prompt renders to \d+ tokens, more than --max_len=80"):
    prompts.prepare_prompts([data], tiny_hf_base, str(tmp_path / "err"),
                            prompts.PromptOptions(max_len=80, overlong="error"))


# --- Reward functions. ---

def _grpo_config(**fields):
  return RunConfig.from_config(sft_config("", "", **{"train.objective": "grpo", "eval.best_metric": "val/reward",
                                                     **{f"train.grpo.{k}": v for k, v in fields.items()}})).train.grpo


def _score(functions, completions, answers, ids=None):
  n = len(completions)
  records = [{"prompt": [{"role": "user", "content": f"q{i}"}], "answer": a} for i, a in enumerate(answers)]
  return rewards.score(functions, [r["prompt"] for r in records], completions, ids or [[0]] * n, records)


def test_the_shipped_rewards_score_what_they_say():
  g = _grpo_config(reward_funcs="exact_match,format,length", answer_regex=r"^\W*(\w+)",
                   format_regex=r"[A-Z][^\n]*\.", length_target=4)
  got = _score(rewards.resolve(g), ["Return a list.", " set it", "Return", "Nothing here"],
               ["Return", "Set", "return", None], [[1] * 4, [1] * 2, [1] * 8, [1] * 4])
  np.testing.assert_array_equal(got[:, 0], [1.0, 0.0, 0.0, np.nan])  # case matters; no answer: None
  np.testing.assert_array_equal(got[:, 1], [1.0, 0.0, 0.0, 0.0])
  np.testing.assert_allclose(got[:, 2], [1.0, 0.5, 0.0, 1.0])
  np.testing.assert_allclose(rewards.combine(got, np.array([1.0, 0.5, 2.0])), [3.5, 1.0, 0.0, 2.0])
  whole = rewards.resolve(_grpo_config())  # no answer_regex: the whole completion, whitespace-normalised
  np.testing.assert_array_equal(_score(whole, [" 42 \n", "42 apples"], ["42", "42"])[:, 0], [1.0, 0.0])


def constant_reward(completions, **_):
  return [0.5] * len(completions)


def nan_on_q1(prompts, completions, **_):
  return [float("nan") if p[-1]["content"] == "q1" else 1.0 for p in prompts]


def raises_on_q2(prompts, completions, **_):
  if any(p[-1]["content"] == "q2" for p in prompts):
    raise KeyError("no such key")
  return [1.0] * len(completions)


def test_a_reward_function_is_imported_by_name_and_its_failures_are_named():
  this = __name__
  sys.modules.setdefault(this, sys.modules[__name__])
  functions = rewards.resolve(_grpo_config(reward_funcs=f"{this}:constant_reward,{this}.constant_reward"))
  np.testing.assert_array_equal(_score(functions, ["a", "b"], [None, None]), [[0.5, 0.5], [0.5, 0.5]])
  with pytest.raises(UserError, match="reward_funcs: 'no_such_reward' does not resolve"):
    rewards.resolve(_grpo_config(reward_funcs="no_such_reward"))
  with pytest.raises(UserError, match=f"reward_funcs: '{this}:missing' does not resolve"):
    rewards.resolve(_grpo_config(reward_funcs=f"{this}:missing"))
  with pytest.raises(UserError, match="reward function '.*nan_on_q1' returned nan for the completion of prompt 'q1'"):
    _score(rewards.resolve(_grpo_config(reward_funcs=f"{this}:nan_on_q1")), ["a", "b", "c"], [None] * 3)
  with pytest.raises(UserError, match="reward function '.*raises_on_q2' raised KeyError: 'no such key' on the "
                                      "completion of prompt 'q2'"):
    _score(rewards.resolve(_grpo_config(reward_funcs=f"{this}:raises_on_q2")), ["a", "b", "c"], [None] * 3)


@pytest.mark.parametrize("fields, message", [
    ({"num_generations": 1}, r"config.train.grpo.num_generations=1; expected at least 2"),
    ({"reward_funcs": "format"}, r"config.train.grpo.format_regex=''; expected a regular expression"),
    ({"reward_weights": "1,2"}, r"config.train.grpo.reward_weights='1,2'; expected '' or 1 comma-separated"),
    ({"answer_regex": "("}, r"config.train.grpo.answer_regex='\('; expected a valid regular expression"),
    ({"num_generations": 3}, r"config.train.batch_size=8; expected a multiple of config.train.grpo.num_generations=3"),
])
def test_a_bad_grpo_config_is_named(fields, message):
  with pytest.raises(UserError, match=message):
    _grpo_config(**fields)


# --- The loss and advantages against an independent numpy implementation of TRL's formulas. ---

def _trl_advantages(rewards_n, group, scale):
  grouped = rewards_n.reshape(-1, group)
  mean = np.repeat(grouped.mean(1), group)
  std = {"group": np.repeat(grouped.std(1, ddof=1), group), "batch": np.full_like(rewards_n, rewards_n.std(ddof=1)),
         "none": np.zeros_like(rewards_n)}[scale]
  return (rewards_n - mean) / (std + 1e-4) if scale != "none" else rewards_n - mean


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_advantages_are_group_normalised_as_trl_does(scale):
  rng = np.random.default_rng(0)
  r = rng.integers(0, 3, 24).astype(np.float64)
  r[:4] = 1.0  # a group whose rewards are all equal: advantage 0, counted in frac_reward_zero_std
  got, zero = rewards.group_advantages(r, 4, scale)
  np.testing.assert_allclose(got, _trl_advantages(r, 4, scale), rtol=1e-6, atol=1e-9)
  assert zero[:4].all() or scale == "batch"
  # TRL's own nanstd (Bessel-corrected), live
  live = trl_nanstd(torch.tensor(r).view(-1, 4), dim=1).numpy()
  np.testing.assert_allclose(np.repeat(live, 4), r.reshape(-1, 4).std(1, ddof=1).repeat(4), rtol=1e-6)
  with_nan = r.copy()
  with_nan[5] = np.nan  # unscorable: out of its group's mean, advantage 0
  adv, _ = rewards.group_advantages(with_nan, 4, "group")
  assert adv[5] == 0.0 and np.isfinite(adv).all()


def _trl_loss(logps, old, ref, adv, mask, eps_low, eps_high, beta, loss_type, max_len):
  ratio = np.exp(logps - old)
  per_token = -np.minimum(ratio * adv[:, None], np.clip(ratio, 1 - eps_low, 1 + eps_high) * adv[:, None])
  kl = np.exp(ref - logps) - (ref - logps) - 1
  per_token = per_token + beta * kl
  if loss_type == "grpo":
    loss = ((per_token * mask).sum(-1) / np.maximum(mask.sum(-1), 1)).mean()
  elif loss_type == "dr_grpo":
    loss = (per_token * mask).sum() / (per_token.shape[0] * max_len)
  else:
    loss = (per_token * mask).sum() / max(mask.sum(), 1)
  low = (ratio < 1 - eps_low) & (adv[:, None] < 0)
  high = (ratio > 1 + eps_high) & (adv[:, None] > 0)
  token_mean = lambda x: (x * mask).sum() / mask.sum()  # noqa: E731
  return loss, token_mean(kl), token_mean(low), token_mean(high)


@pytest.mark.parametrize("loss_type", ["dapo", "bnpo", "grpo", "dr_grpo"])
def test_the_clipped_loss_with_k3_kl_follows_trl(loss_type):
  rng = np.random.default_rng(1)
  b, t = 12, 9
  logps = -rng.uniform(0.1, 4.0, (b, t))
  old = logps + rng.normal(0, 0.3, (b, t))  # far enough for both clips to act
  ref = logps + rng.normal(0, 0.5, (b, t))
  adv = rng.normal(0, 1, b)
  mask = (rng.uniform(size=(b, t)) < 0.7).astype(np.float64)
  mask[:, 0] = 1
  losses, kl, low, high = grpo.grpo_token_losses(logps, old, ref, adv, 0.2, 0.28, 0.04)
  total, weight = grpo.aggregate(losses, mask, loss_type, 16)
  want, want_kl, want_low, want_high = _trl_loss(logps, old, ref, adv, mask, 0.2, 0.28, 0.04, loss_type, 16)
  assert float(total / weight) == pytest.approx(want, rel=1e-6, abs=1e-9)
  assert float((kl * mask).sum() / mask.sum()) == pytest.approx(want_kl, rel=1e-6)
  assert float((low * mask).sum() / mask.sum()) == pytest.approx(want_low, rel=1e-6) and want_low > 0
  assert float((high * mask).sum() / mask.sum()) == pytest.approx(want_high, rel=1e-6) and want_high > 0


def test_the_end_of_turn_is_found_in_the_text_when_it_is_several_tokens(tiny_hf_base):
  from data import sft
  tok, formatter = sft.model_chat(tiny_hf_base)
  assert rollout_lib.end_of_turn(formatter) == "<|im_end|>" and tok.token_to_id("<|im_end|>") is None
  r = rollout_lib.Rollout.__new__(rollout_lib.Rollout)
  r.tok, r.stop_ids, r.stop_text = tok, (tok.eos_id,), "<|im_end|>"
  ids = tok.encode("Return it.<|im_end|>\nmore words")
  kept, text, ended = r._cut(ids)
  assert text == "Return it." and ended and tok.decode(kept).endswith("<|im_end|>")
  assert len(kept) < len(ids) and tok.decode(kept[:-1]).find("<|im_end|>") == -1  # the fewest tokens
  assert r._cut(ids[:3]) == (ids[:3], tok.decode(ids[:3]), False)  # no end: cut at max_completion_len
  kept, text, ended = r._cut(ids[:2] + [tok.eos_id] + ids[2:])
  assert kept == ids[:2] + [tok.eos_id] and text == tok.decode(ids[:2]) and ended


# --- Runs. ---

STEPS, STOP = 4, 2
RUN = {"train.objective": "grpo", "train.steps": STEPS, "train.batch_size": 8, "train.seq_len": 80,
       "train.grpo.num_generations": 4, "train.grpo.max_completion_len": 12, "train.grpo.beta": 0.1,
       "train.grpo.reward_funcs": "exact_match,length", "train.grpo.answer_regex": r"^\W*(\w+)",
       "train.grpo.length_target": 6, "optimizer.learning_rate": 1e-2, "eval.best_metric": "val/reward",
       "eval.best_mode": "max", "eval.steps": 1, "eval.every_steps": STEPS, "eval.at_start": True,
       "eval.final_split": "", "checkpoint.every_steps": STOP}


@pytest.fixture(scope="module")
def grpo_runs(tiny_hf_base, prompt_dir, tmp_path_factory):
  """{"single": one device, "mesh": data x fsdp x tensor} workdirs, with the completions each step sampled."""
  root = tmp_path_factory.mktemp("grpo")
  sampled = {}

  def run(name, mesh, workdir=None, devices=None):
    workdir = workdir or str(root / name)
    original = rollout_lib.Rollout.train_batch

    def recording(self, params, local, step):
      batch, metrics = original(self, params, local, step)
      sampled.setdefault(name, {})[step] = batch["tokens"].copy()
      return batch, metrics
    rollout_lib.Rollout.train_batch = recording
    try:
      loop.run(sft_config(tiny_hf_base, prompt_dir, **{**RUN, **mesh}), workdir, devices)
    finally:
      rollout_lib.Rollout.train_batch = original
    return workdir

  out = {"single": run("single", ONE_DEVICE, devices=jax.devices()[:1]), "mesh": run("mesh", MESH)}
  return out, sampled, run


def test_grpo_trains_on_its_samples_and_reports_trl_metrics(grpo_runs):
  out, sampled, _ = grpo_runs
  train, val = read_metrics(out["single"]), read_metrics(out["single"], "val")
  for key in ("loss", "reward", "reward_std", "rewards/exact_match/mean", "rewards/length/mean", "kl",
              "clip_ratio/region", "completions/mean_length", "completions/clipped_ratio", "frac_reward_zero_std",
              "time/sample_s", "time/train_s"):
    assert key in train[1], key
  assert train[1]["kl"] == pytest.approx(0.0, abs=1e-6)  # the policy starts as its reference
  assert train[STEPS]["kl"] > 1e-4  # and leaves it at this learning rate
  assert train[1]["clip_ratio/region"] == 0.0  # sampled by the policy it trains: the ratio is 1
  assert 1 <= train[1]["completions/mean_length"] <= 12
  assert set(val) == {0, STEPS} and val[0]["examples"] == 8 and "reward" in val[0]
  assert sorted(sampled["single"]) == list(range(STEPS))


def test_a_mesh_samples_and_trains_as_one_device_does(grpo_runs):
  """With the same parameters, (data=2, fsdp=2, tensor=2) samples the same completions as one device and
  its step gives the same loss (1e-4). Later steps sample from parameters that differ by float rounding
  (another reduction order), which in time flips a near-tied token (here from step 2): completions are
  compared at the start and one step after, losses over the two steps trained on them."""
  out, sampled, _ = grpo_runs
  for step in (0, 1):
    np.testing.assert_array_equal(sampled["mesh"][step], sampled["single"][step])
  single, mesh = read_metrics(out["single"]), read_metrics(out["mesh"])
  for step in (1, 2):
    for key in ("loss", "reward", "kl"):
      assert mesh[step][key] == pytest.approx(single[step][key], rel=1e-4, abs=1e-5), (step, key)


def test_a_resumed_run_samples_the_same_completions(grpo_runs, tmp_path):
  out, sampled, run = grpo_runs
  resumed = str(tmp_path / "resumed")
  shutil.copytree(out["mesh"], resumed)
  shutil.rmtree(os.path.join(resumed, "checkpoints", str(STEPS)))  # as if the run had stopped at STOP
  run("resumed", MESH, resumed)
  assert sorted(sampled["resumed"]) == list(range(STOP, STEPS))
  for step in range(STOP, STEPS):
    np.testing.assert_array_equal(sampled["resumed"][step], sampled["mesh"][step])
  again, straight = read_metrics(resumed), read_metrics(out["mesh"])
  for step in range(1, STEPS + 1):
    for key in ("loss", "reward"):
      assert again[step][key] == pytest.approx(straight[step][key], rel=1e-6, abs=1e-6), (step, key)


def test_grpo_needs_a_prompt_dataset_that_fits_the_rows(tiny_hf_base, prompt_dir, chat_dataset, tmp_path):
  with pytest.raises(UserError, match="config.data.dir must be one prompt dataset"):
    loop.run(sft_config(tiny_hf_base, chat_dataset, **{**RUN, **ONE_DEVICE}), str(tmp_path / "a"), jax.devices()[:1])
  with pytest.raises(UserError, match=r"config.train.seq_len=64 cannot hold the longest prompt .* set train.seq_len="):
    loop.run(sft_config(tiny_hf_base, prompt_dir, **{**RUN, **ONE_DEVICE, "train.seq_len": 64}), str(tmp_path / "b"),
             jax.devices()[:1])
  with pytest.raises(UserError, match="config.eval.best_metric='val/loss': a GRPO evaluation samples completions"):
    loop.run(sft_config(tiny_hf_base, prompt_dir, **{**RUN, **ONE_DEVICE, "eval.best_metric": "val/loss"}),
             str(tmp_path / "c"), jax.devices()[:1])


def test_a_split_needs_the_prompts_of_one_batch_not_its_rows(tiny_hf_base, prompt_dir, tmp_path):
  """Eight val prompts fill a batch of 32 completions (8 x 4); a batch of 40 needs ten, and says so."""
  from trainer import preflight
  config = RunConfig.from_config(sft_config(tiny_hf_base, prompt_dir, **{**RUN, "train.batch_size": 32}))
  meta = shards.load_metadata(prompt_dir)
  preflight.check_split_size(config, meta, "val", 32)
  config = RunConfig.from_config(sft_config(tiny_hf_base, prompt_dir, **{**RUN, "train.batch_size": 40}))
  with pytest.raises(UserError, match=r"split 'val' of .* has 8 prompts; the run needs config.train.batch_size / "
                                      r"config.train.grpo.num_generations = 10 from it"):
    preflight.check_split_size(config, meta, "val", 40)
