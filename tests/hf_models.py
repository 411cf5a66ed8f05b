"""Tiny randomly initialised Hugging Face models for parity tests (needs torch + transformers)."""

import numpy as np

CASES = {
    "llama_gqa_untied_llama3rope": dict(
        arch="llama", tie_word_embeddings=False, num_key_value_heads=2,
        rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                      "original_max_position_embeddings": 16}, rope_theta=50_000.0),
    "llama_tied": dict(arch="llama", tie_word_embeddings=True, num_key_value_heads=4, rope_theta=10_000.0),
    "gpt2": dict(arch="gpt2"),
}

PROMPTS = np.array([[5, 17, 99, 3, 42, 7, 64, 11, 2, 88, 31, 120],
                    [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]], np.int32)


def make(name: str, out_dir: str, seed: int = 0):
  """Saves the case's model to out_dir and returns its float32 logits on PROMPTS."""
  import torch
  from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM
  torch.manual_seed(seed)
  spec = dict(CASES[name])
  arch = spec.pop("arch")
  if arch == "llama":
    cfg = LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                      num_attention_heads=4, head_dim=16, max_position_embeddings=64, rms_norm_eps=1e-5, **spec)
    model = LlamaForCausalLM(cfg)
  else:
    cfg = GPT2Config(vocab_size=128, n_embd=64, n_layer=2, n_head=4, n_positions=64, bos_token_id=1,
                     eos_token_id=2)
    model = GPT2LMHeadModel(cfg)
  with torch.no_grad():  # larger than default init so the logits are not all near zero
    for p in model.parameters():
      p.normal_(0.0, 0.2 if p.dim() > 1 else 0.05).add_(1.0 if p.dim() == 1 and p.shape[0] == 64 else 0.0)
  model.eval()
  model.save_pretrained(out_dir)
  return hf_logits(out_dir)


def hf_logits(hf_dir: str) -> np.ndarray:
  import torch
  from transformers import AutoModelForCausalLM
  model = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32)
  model.eval()
  with torch.no_grad():
    return model(torch.tensor(PROMPTS, dtype=torch.long)).logits.numpy()


# A "held-out document" of token ids, longer than the models' 64 positions, so it
# needs sliding windows; scored after BOS (id 1).
ROLLING_DOC = [int(x) for x in np.random.default_rng(0).integers(3, 128, size=150)]
ROLLING_WINDOWS = ((32, 16), (48, 48))  # (window inputs, stride)


def hf_rolling_logprob(hf_dir: str, doc: list[int], window: int, stride: int, bos: int = 1) -> float:
  """Total log-probability of `doc` from transformers, with the sliding-window scheme of the
  transformers perplexity guide: windows of window + 1 tokens, `stride` apart, each
  scoring only the tokens no earlier window scored."""
  import torch
  from transformers import AutoModelForCausalLM
  model = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32)
  model.eval()
  ids = torch.tensor([[bos] + doc], dtype=torch.long)
  n, total, prev_end = ids.shape[1], 0.0, 0
  for begin in range(0, n, stride):
    end = min(begin + window + 1, n)
    new = end - max(prev_end, 1)  # the first token (BOS) is never a target
    with torch.no_grad():
      logits = model(ids[:, begin:end]).logits[0].double()
    logprobs = torch.log_softmax(logits[:-1], -1).gather(1, ids[0, begin + 1:end, None])[:, 0]
    total += logprobs[-new:].sum().item()
    prev_end = end
    if end == n:
      break
  return total
