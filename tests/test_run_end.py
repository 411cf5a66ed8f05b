"""The end of a run: the held-out test evaluation and the printed samples, checked against independent recomputes.

The loop's final evaluation goes through its own eval step, objective and
sharded mesh; here the same test batches are scored again on one device with
the restored parameters and a numpy cross-entropy, and the samples' prompts
are rebuilt from the stored test shards, not from the loop's row stream.
"""

import os

import jax
import jax.numpy as jnp
import numpy as np

from conftest import read_metrics, small_config
from data import pipeline, shards, tokenizer
from model import families
from trainer import export, loop

_TINY = {"model.vocab_size": 512, "model.d_model": 32, "model.num_layers": 1, "model.num_heads": 2,
         "model.num_kv_heads": 1, "model.head_dim": 16, "model.mlp_dim": 64}
FINAL_STEPS, NUM_SAMPLES, SAMPLE_TOKENS = 2, 2, 6


def _numpy_mean_loss(forward, batches: list[dict]) -> tuple[float, float]:
  """(mean next-token NLL, token count) over `batches`, in float64, predicting t+1 within one document."""
  nll_sum, count = 0.0, 0.0
  for b in batches:
    logits = np.asarray(forward(b["tokens"], b["positions"], b["segment_ids"]), np.float64)
    m = logits.max(-1, keepdims=True)
    log_probs = logits - (m + np.log(np.exp(logits - m).sum(-1, keepdims=True)))
    seg = np.asarray(b["segment_ids"])
    weights = (seg[:, 1:] == seg[:, :-1]) & (seg[:, :-1] != 0)
    targets = np.asarray(b["tokens"])[:, 1:]
    picked = np.take_along_axis(log_probs[:, :-1], targets[..., None], -1)[..., 0]
    nll_sum += float(-(picked * weights).sum())
    count += float(weights.sum())
  return nll_sum / count, count


def _test_stream(data_dir: str, bos: int | None, eos: int | None) -> np.ndarray:
  """The test split's documents in stored order, each wrapped in BOS/EOS, as one token stream."""
  meta = shards.load_metadata(data_dir)
  source, _ = shards.open_split(data_dir, "test", meta)
  pieces = []
  for i in range(min(len(source), 50)):
    ids, _ = shards.decode_record(source[i], shards.has_loss_mask(meta))
    pieces += [[bos] if bos is not None else [], ids.tolist(), [eos] if eos is not None else []]
  return np.asarray([t for p in pieces for t in p], np.int64)


def _greedy(forward, prompt: list[int], new: int, eos: int | None) -> list[int]:
  """Greedy continuation by full forward passes (no KV cache), ending after EOS as the loop's sampler does."""
  seq = list(prompt)
  for _ in range(new):
    t = jnp.asarray([seq + [0] * (64 - len(seq))])
    logits = np.asarray(forward(t, jnp.broadcast_to(jnp.arange(64), t.shape), jnp.ones_like(t)))
    seq.append(int(np.argmax(logits[0, len(seq) - 1])))
    if seq[-1] == eos:
      break
  return seq[len(prompt):]


def test_final_test_eval_and_samples(dataset_dir, tmp_path, capsys):
  workdir = str(tmp_path / "run")
  config = small_config(dataset_dir, **_TINY, **{
      "train.steps": 3, "eval.final_split": "test", "eval.final_steps": FINAL_STEPS,
      "eval.num_samples": NUM_SAMPLES, "eval.sample_tokens": SAMPLE_TOKENS, "eval.sample_temperature": 0.0})
  capsys.readouterr()
  summary = loop.run(config, workdir, devices=jax.devices()[:1])  # one device: compiles fastest
  out = capsys.readouterr().out
  assert not summary["interrupted"] and summary["step"] == 3

  # The logged test row: one, at the final step, under split "test".
  rows = read_metrics(workdir, "test")
  assert list(rows) == [3], rows
  logged = rows[3]

  restored = export.restore(workdir)
  assert restored.step == 3
  model = families.build(restored.cfg)
  forward = jax.jit(lambda t, p, s: model.apply({"params": restored.params}, t, p, s))
  t = config.train
  batches = pipeline.eval_batches(config.data, "test", t.seq_len, t.batch_size, 0, t.batch_size, FINAL_STEPS)
  assert len(batches) == FINAL_STEPS
  want_loss, want_tokens = _numpy_mean_loss(forward, batches)
  np.testing.assert_allclose(logged["loss"], want_loss, rtol=1e-5, atol=1e-5)
  assert logged["tokens"] == want_tokens
  np.testing.assert_allclose(logged["perplexity"], np.exp(want_loss), rtol=1e-4)
  np.testing.assert_allclose(summary["test"]["loss"], want_loss, rtol=1e-5, atol=1e-5)

  # Samples: each prompt is the start of test row i (rebuilt from the shards), then a greedy continuation.
  meta = pipeline.dataset_metadata(config.data)
  tok = tokenizer.load(meta["tokenizer_path"])
  bos = meta.get("bos_id") if config.data.add_bos and meta.get("add_bos", True) else None
  stream = _test_stream(dataset_dir, bos, meta.get("eos_id") if config.data.add_eos else None)
  prompt_len = min(32, t.seq_len // 2)
  for i in range(NUM_SAMPLES):
    prompt = stream[i * t.seq_len:i * t.seq_len + prompt_len].tolist()
    assert len(prompt) == prompt_len
    continuation = _greedy(forward, prompt, SAMPLE_TOKENS, tok.eos_id)
    expected = (f"--- sample {i + 1} (prompt from the test split, then the model) ---\n"
                f"{tok.decode(prompt)}\u2502{tok.decode(continuation)}")
    assert expected in out, f"sample {i + 1} not printed as expected:\n{expected!r}\nin:\n{out[-3000:]}"
  assert f"--- sample {NUM_SAMPLES + 1} " not in out
  assert os.path.isfile(os.path.join(workdir, "metrics.jsonl"))
