"""Preference data, the DPO / reward losses against TRL's published formulas, and runs of both objectives."""

import json
import math

import jax
import numpy as np
import pytest

from conftest import apply_overrides, read_metrics, sft_config
from data import corpus, pipeline, preferences, shards, stdlib_chat
from data import tokenizer as tokenizer_lib
from errors import UserError
from trainer import loop
from trainer.objectives import preference

ONE_DEVICE = {"mesh.data": 1, "mesh.fsdp": 1}


def _write(path, rows):
  path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
  return str(path)


@pytest.fixture(scope="module")
def pref_dir(tiny_hf_base, tmp_path_factory):
  """Questions about standard-library functions: their own docstring preferred to its words shuffled."""
  root = tmp_path_factory.mktemp("prefs")
  data = _write(root / "pairs.jsonl", stdlib_chat.preference_pairs(corpus.stdlib_files()[:40]))
  out = str(root / "prepared")
  preferences.prepare_preferences([data], tiny_hf_base, out, preferences.PreferenceOptions(max_len=96,
                                                                                           val_fraction=0.1))
  return out


def test_the_three_forms_keep_each_pair_together_with_loss_on_the_completions(tiny_hf_base, tmp_path):
  chat = [{"role": "user", "content": "Name a prime."}]
  rows = [{"prompt": "Two plus two?", "chosen": "Four.", "rejected": "Five."},
          {"prompt": chat, "chosen": [{"role": "assistant", "content": "Seven."}],
           "rejected": [{"role": "assistant", "content": "Eight."}]},
          {"chosen": chat + [{"role": "assistant", "content": "Eleven."}],
           "rejected": chat + [{"role": "assistant", "content": "Nine."}]}]
  out = str(tmp_path / "out")
  meta = preferences.prepare_preferences([_write(tmp_path / "p.jsonl", rows * 2)], tiny_hf_base, out,
                                         preferences.PreferenceOptions(val_fraction=0.34))
  assert meta["kind"] == "preference" and meta["counts"]["pairs"] == 6
  assert {s: v["pairs"] for s, v in meta["splits"].items()} == {"train": 4, "val": 2}
  assert (tmp_path / "out" / "report.md").read_text().startswith("# Preference data")
  tok = tokenizer_lib.load_dir(tiny_hf_base)
  completions = set()
  for split in preferences.SPLITS:
    source, lengths = shards.open_split(out, split)
    assert len(lengths) == 2 * meta["splits"][split]["pairs"]
    for k in range(0, len(lengths), 2):
      (ids_c, mask_c), (ids_r, mask_r) = (shards.decode_record(source[k + i], has_mask=True) for i in (0, 1))
      prompt_c, prompt_r = ids_c[mask_c == 0], ids_r[mask_r == 0]
      np.testing.assert_array_equal(prompt_c, prompt_r)  # one prompt: the two records are one pair
      completions.add((tok.decode(ids_c[mask_c == 1].tolist()), tok.decode(ids_r[mask_r == 1].tolist())))
  assert completions == {("Four.<|im_end|>\n", "Five.<|im_end|>\n"), ("Seven.<|im_end|>\n", "Eight.<|im_end|>\n"),
                         ("Eleven.<|im_end|>\n", "Nine.<|im_end|>\n")}


@pytest.mark.parametrize("row, message", [
    ({"prompt": "Q", "chosen": "A", "rejected": "A"}, "p.jsonl:2: 'chosen' and 'rejected' are the same completion"),
    ({"prompt": "Q", "chosen": " ", "rejected": "A"}, "p.jsonl:2: 'chosen' is empty"),
    ({"prompt": "Q", "chosen": "A"}, r"p.jsonl:2: missing field\(s\) \['rejected'\]"),
    ({"chosen": "A", "rejected": "B"}, "p.jsonl:2: 'chosen' and 'rejected' are strings but there is no 'prompt'"),
    ({"chosen": [{"role": "user", "content": "x"}], "rejected": [{"role": "user", "content": "y"}]},
     "p.jsonl:2: the two conversations share no leading messages"),
    ({"prompt": "Q", "chosen": "A", "rejected": "B", "margin": "big"}, "p.jsonl:2: 'margin' must be a finite number"),
])
def test_a_bad_line_is_named_or_skipped_and_counted(tiny_hf_base, tmp_path, row, message):
  good = {"prompt": "Two plus two?", "chosen": "Four.", "rejected": "Five."}
  data = _write(tmp_path / "p.jsonl", [good, row, good, good])
  with pytest.raises(UserError, match=message):
    preferences.prepare_preferences([data], tiny_hf_base, str(tmp_path / "out"))
  assert not (tmp_path / "out").exists()
  meta = preferences.prepare_preferences([data], tiny_hf_base, str(tmp_path / "out"),
                                         preferences.PreferenceOptions(bad_lines="skip", val_fraction=0.4))
  assert meta["counts"]["skipped_bad_line"] == 1 and meta["counts"]["pairs"] == 3


def test_overlong_pairs_are_cut_at_the_end_or_dropped(tiny_hf_base, tmp_path):
  rows = [{"prompt": "Two plus two?", "chosen": "Four.", "rejected": "Five."}] * 3
  rows.append({"prompt": "Say it.", "chosen": "word " * 100, "rejected": "Five."})
  data = _write(tmp_path / "p.jsonl", rows)
  cut = preferences.prepare_preferences([data], tiny_hf_base, str(tmp_path / "cut"),
                                        preferences.PreferenceOptions(max_len=80, val_fraction=0.25))
  assert cut["counts"]["truncated"] == 1 and cut["counts"]["pairs"] == 4
  assert max(cut["splits"][s]["chosen_max_len"] for s in preferences.SPLITS) == 80
  dropped = preferences.prepare_preferences([data], tiny_hf_base, str(tmp_path / "drop"),
                                            preferences.PreferenceOptions(max_len=80, overlong="drop",
                                                                          val_fraction=0.34))
  assert dropped["counts"]["dropped_overlong"] == 1 and dropped["counts"]["pairs"] == 3


def test_rows_hold_whole_pairs_in_a_seeded_order(pref_dir):
  config = sft_config("", pref_dir).data
  rows = pipeline.RowStream(config, "train", 128, seed=3, shuffle=True)
  again = pipeline.RowStream(config, "train", 128, seed=3, shuffle=True)
  n = rows.rows_per_epoch
  seen = set()
  for g in range(n):
    row = rows[g]
    assert row["tokens"].shape == (2, 128) and row["loss_mask"].shape == (2, 128)
    prompt = [row["tokens"][i][(row["loss_mask"][i] == 0) & (row["segment_ids"][i] == 1)] for i in (0, 1)]
    np.testing.assert_array_equal(*prompt)
    seen.add(tuple(prompt[0]))
    np.testing.assert_array_equal(row["tokens"], again[g]["tokens"])  # a resume reads the same rows
  assert len(seen) == n  # one epoch: every pair once


# --- The losses against an independent numpy implementation of TRL's published formulas. ---

def _logsig(x):
  return -np.logaddexp(0.0, -x)


def _trl(pc, pr, rc, rr, nc, nr, loss_type, beta, ls, gamma, rpo):
  """TRL's DPO (sigmoid/cDPO, hinge, ipo), CPO (simpo) and ORPO losses and rewards, in numpy."""
  if loss_type in ("simpo", "orpo"):
    ac, ar = pc / nc, pr / nr
    if loss_type == "simpo":
      z = ac - ar - gamma / beta
      loss = -_logsig(beta * z) * (1 - ls) - _logsig(-beta * z) * ls
    else:
      log_odds = (ac - ar) - (np.log(1 - np.exp(ac)) - np.log(1 - np.exp(ar)))
      loss = -ac - beta * _logsig(log_odds)
    rewards = beta * ac, beta * ar
  else:
    z = (pc - rc) - (pr - rr)
    loss = {"sigmoid": -_logsig(beta * z) * (1 - ls) - _logsig(-beta * z) * ls,
            "hinge": np.maximum(0.0, 1 - beta * z),
            "ipo": ((pc - rc) / nc - (pr - rr) / nr - 1 / (2 * beta)) ** 2}[loss_type]
    rewards = beta * (pc - rc), beta * (pr - rr)
  return loss + rpo * (-pc / nc), rewards


@pytest.mark.parametrize("loss_type, ls, rpo", [("sigmoid", 0.0, 0.0), ("sigmoid", 0.2, 0.0), ("sigmoid", 0.0, 0.5),
                                                 ("hinge", 0.0, 0.0), ("ipo", 0.0, 0.0), ("simpo", 0.1, 0.0),
                                                 ("orpo", 0.0, 0.0)])
def test_pair_losses_follow_trl(loss_type, ls, rpo):
  rng = np.random.default_rng(0)
  nc, nr = rng.integers(3, 40, 16).astype(np.float64), rng.integers(3, 40, 16).astype(np.float64)
  pc, pr = -rng.uniform(0.2, 3.0, 16) * nc, -rng.uniform(0.2, 3.0, 16) * nr
  rc, rr = pc + rng.normal(0, 2, 16), pr + rng.normal(0, 2, 16)
  beta, gamma = 0.3, 0.7
  got, chosen, rejected, _ = preference.pair_losses(pc, pr, rc, rr, nc, nr, loss_type, beta, ls, gamma, rpo)
  want, (want_c, want_r) = _trl(pc, pr, rc, rr, nc, nr, loss_type, beta, ls, gamma, rpo)
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(np.asarray(chosen), want_c, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(np.asarray(rejected), want_r, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("loss_type, rpo", [("sigmoid", 0.0), ("hinge", 0.0), ("ipo", 0.0), ("sigmoid", 0.5)])
def test_dpo_losses_and_metrics_match_trl_itself(loss_type, rpo):
  """TRL's own DPOTrainer._compute_loss (TRL 1.16), live, on per-token log-probs a stub model returns and
  precomputed reference log-probs. RPO is TRL's loss_types=["sigmoid", "sft"]; its SFT term is a mean over
  the batch's chosen tokens, ours over each pair's, so the chosen completions share one length here."""
  import collections
  import types

  import torch
  from trl import DPOTrainer
  rng = np.random.default_rng(2)
  pairs, length = 6, 24
  nc = np.full(pairs, 9) if rpo else rng.integers(3, 20, pairs)
  counts = np.concatenate([nc, rng.integers(3, 20, pairs)])  # chosen rows, then rejected rows
  mask = (np.arange(length)[None] >= length - counts[:, None]).astype(np.int64)  # completions end the rows
  token_logps = -rng.uniform(0.1, 2.0, (2 * pairs, length - 1)) * mask[:, 1:]
  ref = token_logps.sum(1) + rng.normal(0, 1.5, 2 * pairs)
  beta = 0.3
  outputs = types.SimpleNamespace(log_probs=torch.tensor(token_logps), entropy=torch.zeros(2 * pairs, length - 1),
                                  mean_logits=torch.zeros(2 * pairs, length - 1),
                                  is_top1=torch.zeros(2 * pairs, length - 1, dtype=torch.bool))
  identity = lambda x: x  # noqa: E731
  trainer = types.SimpleNamespace(
      model=types.SimpleNamespace(training=False), accelerator=types.SimpleNamespace(
          device="cpu", gather=identity, gather_for_metrics=identity), aux_loss_enabled=False, ld_alpha=None,
      precompute_ref_logps=True, f_divergence_type="reverse_kl", beta=beta, label_smoothing=0.0,
      loss_types=[loss_type] + ["sft"] * bool(rpo), loss_weights=[1.0] + [rpo] * bool(rpo), use_weighting=False,
      _metrics=collections.defaultdict(lambda: collections.defaultdict(list)), _total_train_tokens=0, _tp_size=1)
  inputs = {"input_ids": torch.zeros(2 * pairs, length, dtype=torch.long), "attention_mask": torch.ones(2 * pairs, length),
            "completion_mask": torch.tensor(mask), "ref_chosen_logps": torch.tensor(ref[:pairs]),
            "ref_rejected_logps": torch.tensor(ref[pairs:])}
  theirs = DPOTrainer._compute_loss(trainer, lambda **kwargs: outputs, inputs, return_outputs=False)
  logps = token_logps.sum(1)
  ours, chosen, rejected, _ = preference.pair_losses(logps[:pairs], logps[pairs:], ref[:pairs], ref[pairs:],
                                                     counts[:pairs].astype(float), counts[pairs:].astype(float),
                                                     loss_type, beta, 0.0, 0.0, rpo)
  assert float(np.mean(ours)) == pytest.approx(float(theirs), rel=1e-6)
  metrics = trainer._metrics["eval"]
  assert metrics["rewards/chosen"][0] == pytest.approx(float(np.mean(chosen)), rel=1e-6)
  assert metrics["rewards/margins"][0] == pytest.approx(float(np.mean(np.asarray(chosen) - rejected)), rel=1e-6)


def test_margins_ride_with_their_pairs_into_the_reward_loss(tiny_hf_base, tmp_path):
  """Lines' margins (0 where a line has none) reach each pair's row, and the reward model's loss subtracts them."""
  rows = [{"prompt": f"Q{i}?", "chosen": f"Yes {i}.", "rejected": f"No {i}.", **({"margin": i / 2} if i % 2 else {})}
          for i in range(6)]
  out = str(tmp_path / "out")
  preferences.prepare_preferences([_write(tmp_path / "p.jsonl", rows)], tiny_hf_base, out,
                                  preferences.PreferenceOptions(val_fraction=0.34))
  tok = tokenizer_lib.load_dir(tiny_hf_base)
  data = sft_config("", out).data
  seen = {}
  for split in preferences.SPLITS:
    stream = pipeline.RowStream(data, split, 64, seed=0, shuffle=False)
    for g in range(stream.rows_per_epoch):
      row = stream[g]
      seen[tok.decode(row["tokens"][0][row["loss_mask"][0] == 1].tolist())] = float(row["margin"])
  assert seen == {f"Yes {i}.<|im_end|>\n": (i / 2 if i % 2 else 0.0) for i in range(6)}
  rewards = np.array([[1.0], [0.5], [0.2], [0.9]], np.float32)  # chosen, rejected of two pairs
  batch = {f: np.zeros((2, 2, 4), np.int32) for f in preference.PAIR_FIELDS}
  batch["margin"] = np.array([0.25, 1.5], np.float32)
  loss, pairs, _ = preference.RewardModel().sums(lambda variables, rows, rngs=None: rewards, {}, batch)
  assert float(pairs) == 2 and float(loss) == pytest.approx(-_logsig(0.5 - 0.25) - _logsig(-0.7 - 1.5), rel=1e-6)


def test_reward_loss_follows_trl():
  rng = np.random.default_rng(1)
  rc, rr = rng.normal(0, 2, 32), rng.normal(0, 2, 32)
  np.testing.assert_allclose(np.asarray(preference.reward_losses(rc, rr)), -_logsig(rc - rr), rtol=1e-6)
  np.testing.assert_allclose(np.asarray(preference.reward_losses(rc, rr, 0.5, 0.01)),
                             -_logsig(rc - rr - 0.5) + 0.01 * (rc + rr) ** 2, rtol=1e-6)


# --- Runs. ---

def _run(base, data, workdir, **overrides):
  config = sft_config(base, data, **{**ONE_DEVICE, "train.steps": 4, "train.batch_size": 8,
                                     "eval.final_split": "", **overrides})
  return loop.run(config, workdir, jax.devices()[:1])


MESH = {"mesh.data": 2, "mesh.fsdp": 2, "mesh.tensor": 2}
STEPS, STOP = 4, 2
OBJECTIVES = {"dpo": {"train.objective": "dpo", "train.dpo.beta": 0.5, "optimizer.learning_rate": 1e-2},
              "reward": {"train.objective": "reward", "model.num_labels": 1, "optimizer.learning_rate": 3e-3}}


@pytest.fixture(scope="module", params=sorted(OBJECTIVES))
def pair_runs(request, tiny_hf_base, pref_dir, tmp_path_factory):
  """One objective's {"single", "straight"} workdirs (one device; data x fsdp x tensor, checkpoints every
  STOP steps) and a config maker."""
  root = tmp_path_factory.mktemp(request.param)
  def make(mesh):
    # The mesh's DPO run goes over the vocabulary (512) in chunks of 200, the padded last one included.
    chunked = {"train.vocab_chunk": 200} if mesh is MESH and request.param == "dpo" else {}
    return sft_config(tiny_hf_base, pref_dir, **{**OBJECTIVES[request.param], **mesh, **chunked,
                                                 "train.steps": STEPS,
                                                 "train.batch_size": 8, "eval.final_split": "", "eval.steps": 2,
                                                 "eval.every_steps": STEPS, "eval.at_start": True,
                                                 "checkpoint.every_steps": STOP})
  out = {"single": str(root / "single"), "straight": str(root / "straight")}
  loop.run(make(ONE_DEVICE), out["single"], jax.devices()[:1])
  loop.run(make(MESH), out["straight"])
  return request.param, out, make


def test_dpo_starts_at_log_2_and_widens_the_margin(pair_runs):
  """With the reference equal to the policy, every pair's loss is -log sigmoid(0) = log 2 at step 0."""
  objective, out, _ = pair_runs
  if objective != "dpo":
    return
  train, val = read_metrics(out["single"]), read_metrics(out["single"], "val")
  assert train[1]["loss"] == pytest.approx(math.log(2), abs=1e-5)
  assert train[1]["rewards/margins"] == pytest.approx(0.0, abs=1e-5)
  assert val[0]["loss"] == pytest.approx(math.log(2), abs=1e-5) and val[0]["pairs"] > 0
  assert train[4]["loss"] < train[1]["loss"] and train[4]["rewards/margins"] > 0.1  # on the pairs it trains on
  for key in ("rewards/chosen", "rewards/rejected", "rewards/accuracies", "logps/chosen", "logps/rejected"):
    assert key in val[4]


def test_a_mesh_matches_one_device_and_a_resume_repeats_the_straight_run(pair_runs, tmp_path):
  """Losses and evaluation metrics on (data=2, fsdp=2, tensor=2) equal one device's (1e-4), DPO's computed
  there over vocabulary chunks; a run stopped at STOP and resumed repeats the straight one (1e-6)."""
  import os
  import shutil
  _, out, make = pair_runs
  single, straight = read_metrics(out["single"]), read_metrics(out["straight"])
  for step in range(1, STEPS + 1):
    assert straight[step]["loss"] == pytest.approx(single[step]["loss"], rel=1e-4), step
  for name, value in read_metrics(out["single"], "val")[STEPS].items():
    if isinstance(value, float):
      assert read_metrics(out["straight"], "val")[STEPS][name] == pytest.approx(value, rel=1e-4, abs=1e-4), name
  resumed = str(tmp_path / "resumed")
  shutil.copytree(out["straight"], resumed)
  shutil.rmtree(os.path.join(resumed, "checkpoints", str(STEPS)))  # as if the run had stopped at STOP
  loop.run(make(MESH), resumed)
  again = read_metrics(resumed)
  for step in range(1, STEPS + 1):
    assert again[step]["loss"] == pytest.approx(straight[step]["loss"], rel=1e-6, abs=1e-6), step


@pytest.fixture(scope="module")
def ten_pairs_dir(tiny_hf_base, tmp_path_factory):
  """Ten pairs, eight to train on: one batch of 8 is the same pairs every step, so a loss there must fall."""
  root = tmp_path_factory.mktemp("ten")
  pairs = stdlib_chat.preference_pairs(corpus.stdlib_files()[:40])[:10]
  out = str(root / "prepared")
  preferences.prepare_preferences([_write(root / "ten.jsonl", pairs)], tiny_hf_base, out,
                                  preferences.PreferenceOptions(max_len=96, val_fraction=0.2))
  return out


def test_a_reward_model_needs_a_scalar_head_and_fits_its_pairs(tiny_hf_base, pref_dir, ten_pairs_dir, tmp_path):
  with pytest.raises(UserError, match="config.train.objective='reward' needs a scalar head"):
    _run(tiny_hf_base, pref_dir, str(tmp_path / "bad"), **{"train.objective": "reward"})
  workdir = str(tmp_path / "rm")
  _run(tiny_hf_base, ten_pairs_dir, workdir, **{"train.objective": "reward", "model.num_labels": 1,
                                       "optimizer.learning_rate": 3e-3, "train.steps": 8})
  train = read_metrics(workdir)
  assert train[8]["loss"] < train[1]["loss"] - 0.2 and train[8]["rewards/accuracies"] >= 0.75
  assert set(train[1]) >= {"rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies"}


def test_dpo_is_refused_on_an_encoder(pref_dir):
  from configs import base
  from trainer import objectives
  c = apply_overrides(base.base_config(), {"data.dir": pref_dir, "model.family": "encoder",
                                           "train.objective": "dpo"})
  with pytest.raises(UserError, match="config.train.objective='dpo' does not fit config.model.family='encoder'"):
    objectives.build(c)


def test_a_reward_model_exports_as_a_one_label_llama_classifier_that_scores_alike_and_scores_raw_text(pair_runs, pref_dir, tmp_path):
  """transformers' LlamaForSequenceClassification (num_labels=1) from the export gives each side the
  reward the run's model gives it (1e-4)."""
  import torch
  import transformers
  from model import families
  from parallel import restore
  from trainer import export
  objective, out, _ = pair_runs
  if objective != "reward":
    return
  export.export(out["single"], str(tmp_path / "hf"))
  hf = transformers.LlamaForSequenceClassification.from_pretrained(str(tmp_path / "hf")).eval()
  assert hf.config.num_labels == 1
  r = export.restore(out["single"])
  rows = pipeline.RowStream(restore.load_run_config(out["single"]).data, "val", 128, seed=0, shuffle=False)
  batch = {k: np.concatenate([rows[g][k] for g in range(3)]) for k in ("tokens", "segment_ids", "positions")}
  ours = np.asarray(families.batch_apply(families.build(r.cfg))({"params": r.params}, batch))[:, 0]
  for i, (tokens, segments) in enumerate(zip(batch["tokens"], batch["segment_ids"])):
    ids = torch.tensor(tokens[segments == 1][None].astype(np.int64))
    with torch.no_grad():
      assert hf(input_ids=ids).logits[0, 0].item() == pytest.approx(float(ours[i]), abs=1e-4), i
  # scripts/score.py's scorer renders the raw pairs into the same rewards, from the run and from the export
  # (cut where preparation cut them, at its max_len of 96).
  from trainer.reward_scorer import RewardScorer
  from_run = RewardScorer.load(workdir=out["single"])
  cut = lambda side: tuple(preferences.encode_side(from_run.tokenizer, from_run.formatter, *side)[0][:96])  # noqa
  row_of = {tuple(rows[g]["tokens"][0][rows[g]["segment_ids"][0] == 1]): g for g in range(rows.rows_per_epoch)}
  found = {}  # val row -> its raw pair's (prompt, chosen) and (prompt, rejected), found by their tokens
  for p in stdlib_chat.preference_pairs(corpus.stdlib_files()[:40]):
    sides = [([{"role": "user", "content": p["prompt"]}], [{"role": "assistant", "content": p[s]}])
             for s in ("chosen", "rejected")]
    if cut(sides[0]) in row_of:
      found[row_of[cut(sides[0])]] = sides
  assert len(found) == rows.rows_per_epoch  # every val pair tokenizes as preparation tokenized it
  batch = {k: np.concatenate([rows[g][k] for g in sorted(found)]) for k in ("tokens", "segment_ids", "positions")}
  ours = np.asarray(families.batch_apply(families.build(r.cfg))({"params": r.params}, batch))[:, 0]
  for scorer in (from_run, RewardScorer.load(hf_dir=str(tmp_path / "hf"), max_len=96)):
    np.testing.assert_allclose(scorer.score([s for g in sorted(found) for s in found[g]]), ours, atol=1e-4)


def test_dpo_under_lora_takes_the_base_as_its_reference(tiny_hf_base, ten_pairs_dir, tmp_path):
  """No reference copy: the reference is the base with the adapters off, so step 0 is log 2 again."""
  workdir = str(tmp_path / "lora_dpo")
  _run(tiny_hf_base, ten_pairs_dir, workdir, **{"train.objective": "dpo", "train.dpo.beta": 0.5, "lora.rank": 4,
                                           "lora.base_dtype": "float32", "optimizer.learning_rate": 1e-2})
  train = read_metrics(workdir)
  assert train[1]["loss"] == pytest.approx(math.log(2), abs=1e-5)
  assert train[4]["loss"] < train[1]["loss"] and train[4]["rewards/margins"] > 0


def test_precomputed_reference_logps_train_as_the_live_reference_does(pair_runs, tiny_hf_base, pref_dir, tmp_path):
  """scripts/precompute_reference.py's log-probabilities, read with the pairs, give the frozen-copy run's
  losses and metrics (1e-5) with no reference held; a dataset without them, or with another model's, is refused."""
  import shutil
  from trainer import reference_logps
  objective, out, make = pair_runs
  if objective != "dpo":
    return
  data = str(tmp_path / "prefs")
  shutil.copytree(pref_dir, data)
  means = reference_logps.precompute(data, tiny_hf_base, batch_pairs=5)
  assert set(means) == {"train", "val"} and all(m < 0 for m in means.values())
  assert shards.verify_split(data, "train") and shards.verify_split(data, "val")
  config = make(ONE_DEVICE)
  config.data.dir, config.train.dpo.reference = data, "precomputed"
  summary = loop.run(config, str(tmp_path / "run"), jax.devices()[:1])
  assert not summary["interrupted"]
  got, want = read_metrics(str(tmp_path / "run")), read_metrics(out["single"])
  assert got[1]["loss"] == pytest.approx(math.log(2), abs=1e-5)
  for step in range(1, STEPS + 1):
    assert got[step]["loss"] == pytest.approx(want[step]["loss"], rel=1e-5, abs=1e-6), step
  for name in ("loss", "rewards/margins", "rewards/accuracies"):
    assert read_metrics(str(tmp_path / "run"), "val")[STEPS][name] == pytest.approx(
        read_metrics(out["single"], "val")[STEPS][name], rel=1e-5, abs=1e-6), name
  config.data.dir = pref_dir
  with pytest.raises(UserError, match="holds no reference log-probabilities; compute them with "
                                      "scripts/precompute_reference.py"):
    loop.run(config, str(tmp_path / "none"), jax.devices()[:1])
  meta = shards.load_metadata(data)
  meta["ref_logps"]["model"]["content_sha256"] = "0" * 64
  with open(f"{data}/metadata.json", "w") as f:
    json.dump(meta, f)
  config.data.dir = data
  with pytest.raises(UserError, match="were computed with .* whose weights differ from config.init.hf_dir"):
    loop.run(config, str(tmp_path / "other"), jax.devices()[:1])
