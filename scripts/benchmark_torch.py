"""A PyTorch twin of Strata's decoder and train step, timed on the same config: the reference point of
`scripts/benchmark.py --compare_torch`.

  pip install -e '.[hf]' && python scripts/benchmark_torch.py --config=configs/quickstart.py \\
      [--modes=eager,compile] [--steps=5]

The twin is the same model (config.model: RMSNorm or LayerNorm, RoPE or learned positions, grouped-query
attention, SwiGLU or GELU, tied or untied embeddings, biases) and the same step (mean next-token
cross-entropy, global-norm clipping, AdamW with decoupled weight decay on matrices only, Strata's
learning-rate schedule), on random tokens of config.train's batch_size x seq_len. tests/test_benchmark_torch.py
checks that it computes Strata's losses and updates from the same weights. It gives PyTorch its fastest
path: fused AdamW, scaled_dot_product_attention's causal kernel (one document per row, so no segment mask)
and, in "compile" mode, torch.compile of the model and loss. Weights keep Strata's layouts ([in, out]) so
they load without transposes. The last line printed is JSON with tokens/s per mode.
"""

import json
import math
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402
from torch import nn  # noqa: E402

from configs.schema import RunConfig  # noqa: E402
from errors import UserError  # noqa: E402
from model.rope import rope_frequencies  # noqa: E402
from trainer import loop  # noqa: E402
from trainer import optimizer as optimizer_lib  # noqa: E402

MODES = ("eager", "compile")


def _param(*shape, std):
  return nn.Parameter(torch.randn(*shape) * std)


class Norm(nn.Module):
  def __init__(self, cfg):
    super().__init__()
    self.rms, self.eps = cfg.norm == "rmsnorm", cfg.norm_eps
    self.scale = nn.Parameter(torch.ones(cfg.d_model))
    self.bias = None if self.rms else nn.Parameter(torch.zeros(cfg.d_model))

  def forward(self, x):
    if self.rms:
      return F.rms_norm(x, (x.shape[-1],), self.scale, self.eps)
    return F.layer_norm(x, (x.shape[-1],), self.scale, self.bias, self.eps)


class Linear(nn.Module):
  """x @ kernel [in, out] (+ bias): Strata's layout."""

  def __init__(self, d_in, d_out, bias: bool, std: float):
    super().__init__()
    self.kernel = _param(d_in, d_out, std=std)
    self.bias = nn.Parameter(torch.zeros(d_out)) if bias else None

  def forward(self, x):
    y = x @ self.kernel
    return y if self.bias is None else y + self.bias


class Block(nn.Module):
  def __init__(self, cfg):
    super().__init__()
    self.cfg = cfg
    n, k, h, d, f, bias = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.d_model, cfg.mlp_dim, cfg.use_bias
    out_std = cfg.init_std / math.sqrt(2 * cfg.num_layers)
    self.attention_norm, self.mlp_norm = Norm(cfg), Norm(cfg)
    std = cfg.init_std
    self.query, self.key, self.value = Linear(d, n * h, bias, std), Linear(d, k * h, bias, std), Linear(d, k * h, bias, std)
    self.out = Linear(n * h, d, bias, std=out_std)
    self.gate = Linear(d, f, bias, std) if cfg.mlp == "swiglu" else None
    self.up, self.down = Linear(d, f, bias, std), Linear(f, d, bias, std=out_std)

  def attention(self, x, cos, sin):
    cfg = self.cfg
    b, t, _ = x.shape
    q = self.query(x).view(b, t, cfg.num_heads, cfg.head_dim).transpose(1, 2)
    k = self.key(x).view(b, t, cfg.num_kv_heads, cfg.head_dim).transpose(1, 2)
    v = self.value(x).view(b, t, cfg.num_kv_heads, cfg.head_dim).transpose(1, 2)
    if cos is not None:
      q, k = rotate(q, cos, sin), rotate(k, cos, sin)
    o = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=cfg.num_kv_heads != cfg.num_heads)
    return self.out(o.transpose(1, 2).reshape(b, t, -1))

  def mlp(self, x):
    if self.gate is not None:
      return self.down(F.silu(self.gate(x)) * self.up(x))
    return self.down(F.gelu(self.up(x), approximate="tanh" if self.cfg.mlp == "gelu" else "none"))

  def forward(self, x, cos, sin):
    x = x + self.attention(self.attention_norm(x), cos, sin)
    return x + self.mlp(self.mlp_norm(x))


def rotate(x, cos, sin):
  """RoPE, rotate-half layout (model/rope.py): channel pairs (i, i + H/2)."""
  x1, x2 = x.chunk(2, dim=-1)
  return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


class TwinLM(nn.Module):
  """Strata's decoder (model/transformer.py) in PyTorch; forward returns the mean next-token cross-entropy."""

  def __init__(self, cfg):
    super().__init__()
    self.cfg = cfg
    self.embed = nn.Parameter(torch.randn(cfg.vocab_size, cfg.d_model) * cfg.init_std)
    self.positions = _param(cfg.max_seq_len, cfg.d_model, std=0.01) if cfg.position == "learned" else None
    self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.num_layers))
    self.final_norm = Norm(cfg)
    self.lm_head = None if cfg.tie_embeddings else _param(cfg.d_model, cfg.vocab_size, std=cfg.init_std)
    if cfg.position == "rope":
      self.register_buffer("inv_freq", torch.from_numpy(rope_frequencies(cfg)), persistent=False)

  def forward(self, tokens):
    t = tokens.shape[1]
    x = self.embed[tokens]
    cos = sin = None
    if self.positions is not None:
      x = x + self.positions[:t]
    else:
      angles = torch.arange(t, dtype=torch.float32)[:, None] * self.inv_freq
      cos, sin = angles.cos(), angles.sin()
    for layer in self.layers:
      x = layer(x, cos, sin)
    x = self.final_norm(x)[:, :-1]
    logits = x @ (self.embed.T if self.lm_head is None else self.lm_head)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), tokens[:, 1:].reshape(-1))


def load_strata_params(model: TwinLM, params) -> None:
  """Copies a Strata decoder's parameters (scanned or unrolled, as jax or numpy arrays) into the twin."""
  from model.transformer import unstacked_params
  cfg = model.cfg
  if "layers" in params["decoder"]:
    params = unstacked_params(params, cfg.num_layers)
  put = lambda target, value: target.data.copy_(  # noqa: E731
      torch.from_numpy(np.array(value, np.float32)).reshape(target.shape))
  put(model.embed, params["embed"]["table"])
  put(model.final_norm.scale, params["final_norm"]["scale"])
  if model.positions is not None:
    put(model.positions, params["positions"]["table"])
  if model.lm_head is not None:
    put(model.lm_head, params["lm_head"])
  for i, block in enumerate(model.layers):
    layer = params["decoder"][f"layer_{i}"]
    for norm in ("attention_norm", "mlp_norm"):
      put(getattr(block, norm).scale, layer[norm]["scale"])
      if not model.final_norm.rms:
        put(getattr(block, norm).bias, layer[norm]["bias"])
    for part, names in (("attention", ("query", "key", "value", "out")), ("mlp", ("gate", "up", "down"))):
      for name in names:
        if name not in layer[part]:
          continue
        linear = getattr(block, name)
        put(linear.kernel, layer[part][name])
        if linear.bias is not None:
          put(linear.bias, layer[part][name + "_bias"])
  if not model.final_norm.rms:
    put(model.final_norm.bias, params["final_norm"]["bias"])


def check_supported(cfg) -> None:
  """The twin covers the decoder family's dense, full-precision models."""
  if cfg.family != "decoder" or cfg.num_labels or cfg.norm_position != "pre":
    raise UserError("config.model: the PyTorch twin is a pre-norm causal LM (family='decoder', num_labels=0, "
                    f"norm_position='pre'); got family={cfg.family!r}, num_labels={cfg.num_labels}, "
                    f"norm_position={cfg.norm_position!r}")
  if cfg.mlp not in ("swiglu", "gelu", "gelu_erf") or cfg.position not in ("rope", "learned"):
    raise UserError(f"config.model.mlp={cfg.mlp!r}, position={cfg.position!r}: the twin has swiglu/gelu/gelu_erf "
                    "and rope/learned")
  if cfg.dtype != "float32" or cfg.param_dtype != "float32":
    raise UserError(f"config.model.dtype={cfg.dtype!r}, param_dtype={cfg.param_dtype!r}: the twin runs float32")


def check_step_supported(config: RunConfig) -> None:
  """The twin's step is causal-LM training of every weight, without z-loss."""
  if config.train.objective != "causal_lm" or config.optimizer.z_loss or config.lora.rank:
    raise UserError(f"config.train.objective={config.train.objective!r}, config.optimizer.z_loss="
                    f"{config.optimizer.z_loss}, config.lora.rank={config.lora.rank}: the PyTorch twin trains a "
                    "causal LM, every weight, without z-loss ('causal_lm', 0, 0)")


def decay_groups(model, weight_decay: float) -> list[dict]:
  """Weight decay where Strata decays (trainer/optimizer.decays): matrices, not norm scales or biases."""
  named = [(name.rsplit(".", 1)[-1], p) for name, p in model.named_parameters()]
  return [{"params": [p for name, p in named if optimizer_lib.decays(name)], "weight_decay": weight_decay},
          {"params": [p for name, p in named if not optimizer_lib.decays(name)], "weight_decay": 0.0}]


class TwinTrainer:
  """Strata's train step in PyTorch: loss, backward, clip by global norm, AdamW at the schedule's rate."""

  def __init__(self, config: RunConfig, mode: str = "eager"):
    cfg, opt = config.model, config.optimizer
    check_supported(cfg)
    check_step_supported(config)
    self.model = TwinLM(cfg)
    self.opt_cfg = opt
    # Strata's schedule, evaluated once here: no JAX call inside a timed step.
    schedule = optimizer_lib.learning_rate_schedule(opt, config.train.steps)
    self.rates = np.asarray(jax.jit(jax.vmap(schedule))(np.arange(config.train.steps + 1)), np.float64)
    self.optimizer = torch.optim.AdamW(decay_groups(self.model, opt.weight_decay), lr=float(self.rates[0]),
                                       betas=(opt.b1, opt.b2), eps=opt.eps, fused=True)
    self.loss_fn = torch.compile(self.model) if mode == "compile" else self.model
    self.step_count = 0

  def step(self, tokens: torch.Tensor) -> float:
    for group in self.optimizer.param_groups:
      group["lr"] = float(self.rates[min(self.step_count, len(self.rates) - 1)])
    loss = self.loss_fn(tokens)
    self.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if self.opt_cfg.grad_clip_norm > 0:
      torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.opt_cfg.grad_clip_norm, foreach=True)
    self.optimizer.step()
    self.step_count += 1
    return loss.detach()


def time_mode(config: RunConfig, mode: str, steps: int, threads: int) -> dict:
  """Tokens/s of `steps` train steps after two warm-up steps (compile mode compiles in the first)."""
  torch.manual_seed(0)
  torch.set_num_threads(threads)
  t = config.train
  trainer = TwinTrainer(config, mode)
  tokens = torch.from_numpy(np.random.default_rng(0).integers(0, config.model.vocab_size, (t.batch_size, t.seq_len)))
  start = time.perf_counter()
  trainer.step(tokens)
  warmup_s = time.perf_counter() - start
  trainer.step(tokens)
  start = time.perf_counter()
  for _ in range(steps):
    loss = trainer.step(tokens)
  float(loss)
  step_time = (time.perf_counter() - start) / steps
  return {"mode": mode, "tokens_per_sec": t.batch_size * t.seq_len / step_time, "step_time_s": step_time,
          "first_step_s": warmup_s, "loss": float(loss)}


def run(config, modes=MODES, steps: int = 5, threads: int = 0) -> dict:
  """{mode: timing} for a config (an ml_collections ConfigDict or a RunConfig)."""
  if not isinstance(config, RunConfig):
    config = config.copy_and_resolve_references()
    with config.unlocked():
      loop.take_init_architecture(config)  # as trainer/benchmark.py: a config from a checkpoint races its model
    config = RunConfig.from_config(config)
  threads = threads or os.cpu_count()
  return {"torch": torch.__version__, "threads": threads,
          **{mode: time_mode(config, mode, steps, threads) for mode in modes}}


def define_flags() -> None:
  """Flags of the command line only: scripts/benchmark.py imports this module beside its own --config."""
  config_flags.DEFINE_config_file("config", None, "Experiment config.", lock_config=True)
  flags.DEFINE_list("modes", list(MODES), "eager and/or compile (torch.compile of model and loss).")
  flags.DEFINE_integer("steps", 5, "Timed steps (after two warm-up steps).")
  flags.mark_flags_as_required(["config"])


def main(argv):
  del argv
  modes = flags.FLAGS.modes
  for mode in modes:
    if mode not in MODES:
      sys.exit(f"error: --modes: {mode!r} is not one of {', '.join(MODES)}")
  try:
    result = run(flags.FLAGS.config, tuple(modes), flags.FLAGS.steps)
  except UserError as e:
    sys.exit(f"error: {e}")
  for mode in modes:
    r = result[mode]
    print(f"torch {mode:>8}: {r['tokens_per_sec']:8.0f} tokens/s, {r['step_time_s'] * 1e3:7.1f} ms/step, "
          f"first step {r['first_step_s']:.1f} s, loss {r['loss']:.4f}")
  print(json.dumps(result))


if __name__ == "__main__":
  define_flags()
  app.run(main)
