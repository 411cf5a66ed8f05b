"""The config of a training run: every section, typed, with its defaults and a comment per field.

The model, LoRA, data, mesh and checkpoint sections are defined by the
packages that read them (model/config.py, model/lora.py, data/config.py,
parallel/mesh.py, parallel/checkpoint.py); the trainer's own sections are
defined here. `RunConfig.from_config` is the one place a run's config is
validated: field by field, then the rules that tie sections together.
`configs/base.py` builds the locked ConfigDict that experiment files edit from
`RunConfig.defaults()`.

This module sits below the trainer and evals (it imports only the bottom
packages), so every layer may read a run's typed config.
"""

import dataclasses
import re
from typing import Literal

from data.config import DataConfig
from errors import UserError
from model.config import ModelConfig
from model.lora import LoraConfig
from parallel.checkpoint import CheckpointConfig
from parallel.mesh import MeshConfig
from typed_config import Section


# Objectives whose token log-probabilities go over the vocabulary in chunks with train.vocab_chunk.
VOCAB_CHUNKED = ("causal_lm", "dpo", "grpo")


@dataclasses.dataclass(frozen=True)
class InitConfig(Section):
  """Where the starting weights come from; by default, a fresh random initialization."""
  PATH = "config.init"
  # A Hugging Face model directory (LlamaForCausalLM, GPT2LMHeadModel, BertModel, ...):
  # config.model's architecture fields are taken from its config.json.
  hf_dir: str = ""
  # A Strata train.py workdir: its newest checkpoint's parameters, and its model architecture
  # (a classifier started from a pretrained run gets a fresh head).
  workdir: str = ""

  def check(self) -> None:
    self.require(not (self.hf_dir and self.workdir), "workdir", "'' when config.init.hf_dir is set (one source)")

  @property
  def source(self) -> str:
    return self.hf_dir or self.workdir


@dataclasses.dataclass(frozen=True)
class MlmConfig(Section):
  """objective="masked_lm" (data/masking.py): per row, `rate` of the maskable tokens are chosen
  (whole words with whole_word); of those, mask_fraction become [MASK], random_fraction a random
  token, the rest stay. Seeded by train.seed and the row, so resumption is exact."""
  PATH = "config.train.mlm"
  rate: float = 0.15
  whole_word: bool = False
  mask_fraction: float = 0.8
  random_fraction: float = 0.1

  def check(self) -> None:
    self.require(0.0 < self.rate <= 1.0, "rate", "a fraction in (0, 1]")
    self.require(self.mask_fraction >= 0 and self.random_fraction >= 0
                 and self.mask_fraction + self.random_fraction <= 1, "mask_fraction",
                 f"non-negative fractions with random_fraction={self.random_fraction}, summing to at most 1")


@dataclasses.dataclass(frozen=True)
class SpanCorruptionConfig(Section):
  """objective="span_corruption" (data/span_corruption.py): T5's pretraining. Of each raw row, noise_density
  of the tokens go, in spans of mean length mean_span_length, each replaced by a sentinel in the encoder's
  row (train.seq_len tokens); the decoder predicts the spans. Seeded by train.seed and the row."""
  PATH = "config.train.span_corruption"
  noise_density: float = 0.15
  mean_span_length: float = 3.0

  def check(self) -> None:
    self.require(0.0 < self.noise_density < 1.0, "noise_density", "a fraction in (0, 1)")
    self.require(self.mean_span_length >= 1.0, "mean_span_length", "1 or more tokens")


@dataclasses.dataclass(frozen=True)
class DpoConfig(Section):
  """objective="dpo" (trainer/objectives/preference.py), in TRL's formulas and beta convention."""
  PATH = "config.train.dpo"
  # "sigmoid" (DPO; cDPO with label_smoothing) | "ipo" (on per-token log-ratios) | "hinge" |
  # "simpo" (reference-free, per-token log-probs, margin simpo_gamma) | "orpo" (reference-free: the
  # chosen NLL minus beta, the paper's lambda, times the log-sigmoid of the log odds ratio).
  loss_type: Literal["sigmoid", "ipo", "hinge", "simpo", "orpo"] = "sigmoid"
  beta: float = 0.1
  label_smoothing: float = 0.0    # sigmoid, simpo: the assumed share of flipped labels
  simpo_gamma: float = 0.5        # simpo: the target reward margin
  rpo_alpha: float = 0.0          # weight of an added NLL on the chosen completion (RPO); 0: none
  # The reference policy: "policy_copy", a frozen copy of the starting model run alongside (under LoRA,
  # the base with the adapters off, at no extra memory); "precomputed", its log-probabilities computed
  # once into the dataset (scripts/precompute_reference.py): no reference held, no forward pass for it.
  reference: Literal["policy_copy", "precomputed"] = "policy_copy"

  def check(self) -> None:
    self.require(self.beta > 0, "beta", "a positive number")
    self.require(0 <= self.label_smoothing < 0.5, "label_smoothing", "a fraction in [0, 0.5)")
    self.require(self.rpo_alpha >= 0, "rpo_alpha", "0 or more")


@dataclasses.dataclass(frozen=True)
class RewardConfig(Section):
  """objective="reward": a Bradley-Terry reward model (a scalar head, model.num_labels=1)."""
  PATH = "config.train.reward"
  center_coefficient: float = 0.0  # weight of TRL's reward centring term, mean (r_chosen + r_rejected)^2

  def check(self) -> None:
    self.require(self.center_coefficient >= 0, "center_coefficient", "0 or more")


@dataclasses.dataclass(frozen=True)
class DistillConfig(Section):
  """objective="distill" (trainer/objectives/distill.py): per target token,
  alpha * T^2 * divergence(teacher_T, student_T) + (1 - alpha) * cross-entropy, at temperature T."""
  PATH = "config.train.distill"
  teacher_hf_dir: str = ""        # the teacher: an HF model directory ...
  teacher_workdir: str = ""       # ... or a train.py workdir (its newest checkpoint); same tokenizer as the data
  # ... or its top-k logits precomputed over the data's rows (scripts/precompute_teacher.py): the run then
  # never loads the teacher. A teacher named beside it must be the one they were computed with.
  teacher_topk_dir: str = ""
  temperature: float = 2.0
  alpha: float = 0.5              # weight of the divergence; 1 - alpha on the cross-entropy with the data
  # "forward_kl": KL(teacher || student) | "reverse_kl": KL(student || teacher) |
  # "jsd": generalised Jensen-Shannon with jsd_beta, in TRL's GKD convention (0: forward KL, 1: reverse KL)
  divergence: Literal["forward_kl", "reverse_kl", "jsd"] = "forward_kl"
  jsd_beta: float = 0.5

  def check(self) -> None:
    self.require(not (self.teacher_hf_dir and self.teacher_workdir), "teacher_workdir",
                 "'' when config.train.distill.teacher_hf_dir is set (one teacher)")
    self.require(self.temperature > 0, "temperature", "a positive number")
    self.require(0 <= self.alpha <= 1, "alpha", "a fraction in [0, 1]")
    self.require(0 < self.jsd_beta < 1 or self.divergence != "jsd", "jsd_beta",
                 "a fraction in (0, 1) (0 and 1 are divergence='forward_kl' and 'reverse_kl')")

  @property
  def teacher(self) -> str:
    return self.teacher_hf_dir or self.teacher_workdir


@dataclasses.dataclass(frozen=True)
class GrpoConfig(Section):
  """objective="grpo" (trainer/objectives/grpo.py, trainer/rollout.py): online RL with verifiable rewards, in
  TRL's GRPOTrainer formulas and defaults. Each step samples num_generations completions of
  batch_size / num_generations prompts with the policy, scores them (trainer/rewards.py), and trains on
  group-normalised advantages with the clipped objective, plus beta times the k3 KL to the reference."""
  PATH = "config.train.grpo"
  num_generations: int = 8        # completions per prompt (a group); batch_size counts completions
  max_completion_len: int = 64    # new tokens per completion; prompt + completion must fit train.seq_len
  temperature: float = 1.0        # sampling, and the log-probabilities trained on (logits / temperature)
  top_k: int = 0
  top_p: float = 1.0
  beta: float = 0.0               # weight of the per-token k3 KL to the reference (0: no reference held)
  epsilon: float = 0.2            # the ratio is clipped to [1 - epsilon, 1 + epsilon_high]
  epsilon_high: float = 0.0       # 0: epsilon
  # How token losses become the loss: "dapo"/"bnpo" (over all completion tokens of the batch), "grpo"
  # (per completion, then over completions), "dr_grpo" (over completions x max_completion_len).
  loss_type: Literal["dapo", "bnpo", "grpo", "dr_grpo"] = "dapo"
  scale_rewards: Literal["group", "batch", "none"] = "group"  # the std that divides advantages
  # Completions cut at max_completion_len (no end of turn) are left out of the loss (TRL's option): the
  # policy then never learns from answers it did not finish, and keeps ending them.
  mask_truncated_completions: bool = False
  # Comma-separated: exact_match | format | length | reward_model | package.module:function (trainer/rewards.py)
  reward_funcs: str = "exact_match"
  reward_weights: str = ""        # comma-separated, one per function; "": all 1
  answer_regex: str = ""          # exact_match: group 1 of its first match is the completion's answer; "": all of it
  format_regex: str = ""          # format: what the whole completion must match
  length_target: int = 32         # length: the completion length, in tokens, that scores 1
  reward_model: str = ""          # reward_model: a reward run's workdir or its HF export
  reward_model_max_len: int = 0   # reward_model: tokens kept per conversation; 0: as the reward run cut them
  print_completions: int = 4      # completions printed at each evaluation (with their rewards)

  @property
  def reward_func_names(self) -> list[str]:
    return [n.strip() for n in self.reward_funcs.split(",") if n.strip()]

  @property
  def weights(self) -> list[float]:
    if not self.reward_weights.strip():
      return [1.0] * len(self.reward_func_names)
    return [float(w) for w in self.reward_weights.split(",")]

  def check(self) -> None:
    self.require(self.num_generations >= 2, "num_generations",
                 "at least 2 (advantages compare the completions of one prompt with each other)")
    for field in ("max_completion_len", "length_target"):
      self.require(getattr(self, field) > 0, field, "a positive number of tokens")
    self.require(self.temperature > 0, "temperature", "a positive number (GRPO samples; it is never greedy)")
    self.require(self.top_k >= 0, "top_k", "0 (off) or a positive number of tokens")
    self.require(0 < self.top_p <= 1, "top_p", "a probability mass in (0, 1]")
    self.require(self.beta >= 0, "beta", "0 or more")
    self.require(self.epsilon > 0, "epsilon", "a positive number")
    self.require(self.epsilon_high >= 0, "epsilon_high", "0 (the same as epsilon) or a positive number")
    names = self.reward_func_names
    self.require(bool(names), "reward_funcs", "at least one reward function")
    try:
      weights = self.weights
    except ValueError:
      weights = []
    self.require(len(weights) == len(names), "reward_weights",
                 f"'' or {len(names)} comma-separated numbers, one per reward function in {names}")
    self.require("format" not in names or bool(self.format_regex), "format_regex",
                 "a regular expression, for the 'format' reward")
    self.require("reward_model" not in names or bool(self.reward_model), "reward_model",
                 "a reward run's workdir or HF export, for the 'reward_model' reward")
    for field in ("answer_regex", "format_regex"):
      try:
        re.compile(getattr(self, field))
      except re.error as e:
        self.require(False, field, f"a valid regular expression ({e})")

  @property
  def clip_high(self) -> float:
    return self.epsilon_high or self.epsilon


@dataclasses.dataclass(frozen=True)
class TrainConfig(Section):
  PATH = "config.train"
  objective: str = "causal_lm"    # trainer/objectives: what the loss is (it must fit config.model.family)
  steps: int = 1000
  batch_size: int = 32            # global sequences per optimizer step
  seq_len: int = 512              # tokens per row (an encoder-decoder's encoder row)
  # Encoder-decoders: tokens per decoder row; 0 = seq_len (seq2seq) or what span corruption needs.
  target_len: int = 0
  seed: int = 0
  grad_accum_steps: int = 1       # micro-batches per step; batch_size must divide evenly
  # Decoder losses on token log-probabilities (causal_lm, dpo) go over the vocabulary this many
  # columns at a time, never holding [batch, length, vocabulary] logits; 0: all at once (fastest).
  vocab_chunk: int = 0
  # A step whose loss, gradient norm or updated weights are NaN/Inf is never
  # applied. "stop": the run then stops with an error, saving nothing more;
  # "skip": it goes on, and stops once more than max_skipped_steps were skipped.
  on_nonfinite: Literal["stop", "skip"] = "stop"
  max_skipped_steps: int = 10
  mlm: MlmConfig = dataclasses.field(default_factory=MlmConfig)
  span_corruption: SpanCorruptionConfig = dataclasses.field(default_factory=SpanCorruptionConfig)
  dpo: DpoConfig = dataclasses.field(default_factory=DpoConfig)
  reward: RewardConfig = dataclasses.field(default_factory=RewardConfig)
  distill: DistillConfig = dataclasses.field(default_factory=DistillConfig)
  grpo: GrpoConfig = dataclasses.field(default_factory=GrpoConfig)

  def check(self) -> None:
    for field in ("steps", "batch_size", "seq_len", "grad_accum_steps"):
      self.require(getattr(self, field) > 0, field, "a positive integer")
    self.require(self.batch_size % self.grad_accum_steps == 0, "batch_size",
                 f"a multiple of config.train.grad_accum_steps={self.grad_accum_steps}")
    self.require(self.max_skipped_steps >= 0, "max_skipped_steps", "0 or more")
    self.require(self.target_len >= 0, "target_len", "0 (derived) or a positive number of tokens")
    self.require(self.vocab_chunk >= 0, "vocab_chunk", "0 (the whole vocabulary at once) or a positive size")
    if self.objective == "grpo":
      self.require(self.batch_size % self.grpo.num_generations == 0, "batch_size",
                   f"a multiple of config.train.grpo.num_generations={self.grpo.num_generations} (it counts "
                   f"completions: whole groups of one prompt's completions)")


@dataclasses.dataclass(frozen=True)
class OptimizerConfig(Section):
  """AdamW with global-norm clipping, after linear warmup (trainer/optimizer.py)."""
  PATH = "config.optimizer"
  learning_rate: float = 3e-4
  schedule: Literal["cosine", "wsd", "constant"] = "cosine"  # all after linear warmup
  warmup_steps: int = 100
  min_lr_ratio: float = 0.1       # final lr as a fraction of the peak
  wsd_decay_fraction: float = 0.2  # "wsd": fraction of steps spent decaying at the end
  b1: float = 0.9
  b2: float = 0.95
  eps: float = 1e-8
  weight_decay: float = 0.1       # applied to matrices only, not norms or biases
  grad_clip_norm: float = 1.0     # 0 disables clipping
  z_loss: float = 0.0             # weight of the log(Z)^2 penalty (causal_lm)

  def check(self) -> None:
    self.require(self.learning_rate >= 0, "learning_rate", "0 (frozen) or more")
    self.require(self.warmup_steps >= 0, "warmup_steps", "0 or more")
    for field in ("min_lr_ratio", "wsd_decay_fraction", "b1", "b2"):
      self.require(0 <= getattr(self, field) <= 1, field, "a fraction in [0, 1]")
    for field in ("eps", "weight_decay", "grad_clip_norm", "z_loss"):
      self.require(getattr(self, field) >= 0, field, "0 or more")


@dataclasses.dataclass(frozen=True)
class EvalConfig(Section):
  PATH = "config.eval"
  every_steps: int = 500
  steps: int = 10                 # validation batches per evaluation
  at_start: bool = True           # evaluate the initial model, the baseline of the curve
  patience: int = 0               # stop after this many evaluations without a new best best_metric; 0: never
  # Task benchmarks (evals/tasks/NAME.yaml or spec paths, comma-separated)
  # run at every evaluation; metrics log under the split "task/NAME".
  tasks: str = ""
  task_limit: int = 0             # examples per task; 0: all
  task_batch_size: int = 8
  best_metric: str = "val/loss"   # or e.g. "val/macro_f1", "task/sentiment/accuracy": drives keep_best and patience
  best_mode: Literal["min", "max"] = "min"  # "max" for accuracy-like metrics
  final_split: str = "test"       # held-out evaluation at the end; "" to skip
  final_steps: int = 20
  num_samples: int = 0            # sampled continuations printed at the end
  sample_tokens: int = 64
  sample_temperature: float = 0.8

  @property
  def task_names(self) -> list[str]:
    """`tasks` split: task names or spec paths (none for "")."""
    return [name.strip() for name in self.tasks.split(",") if name.strip()]

  def check(self) -> None:
    self.require(self.every_steps > 0, "every_steps", "a positive number of steps")
    for field in ("steps", "patience", "task_limit", "final_steps", "num_samples", "sample_tokens"):
      self.require(getattr(self, field) >= 0, field, "0 or more")
    self.require(self.task_batch_size > 0, "task_batch_size", "a positive integer")
    kind, _, rest = self.best_metric.partition("/")
    self.require(kind in ("val", "task") and bool(rest), "best_metric", "'val/METRIC' or 'task/NAME/METRIC'")
    self.require(kind != "val" or self.steps > 0, "best_metric", "a task metric when config.eval.steps=0")


@dataclasses.dataclass(frozen=True)
class LogConfig(Section):
  PATH = "config.log"
  every_steps: int = 10
  tensorboard: bool = True
  peak_flops_per_device: float = 0.0  # 0: look it up from the device kind (for MFU)

  def check(self) -> None:
    self.require(self.every_steps > 0, "every_steps", "a positive number of steps")
    self.require(self.peak_flops_per_device >= 0, "peak_flops_per_device", "0 (look it up) or more")


@dataclasses.dataclass(frozen=True)
class RunConfig(Section):
  """A whole experiment: what train.py runs and what a workdir's config.json records."""
  model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
  init: InitConfig = dataclasses.field(default_factory=InitConfig)
  lora: LoraConfig = dataclasses.field(default_factory=LoraConfig)
  data: DataConfig = dataclasses.field(default_factory=DataConfig)
  train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
  optimizer: OptimizerConfig = dataclasses.field(default_factory=OptimizerConfig)
  mesh: MeshConfig = dataclasses.field(default_factory=MeshConfig)
  checkpoint: CheckpointConfig = dataclasses.field(default_factory=CheckpointConfig)
  eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)
  log: LogConfig = dataclasses.field(default_factory=LogConfig)

  def check(self) -> None:
    """The rules that tie sections together (those that need the devices are checked with the mesh)."""
    m, t = self.model, self.train
    if m.position == "learned" and t.seq_len > m.max_seq_len:
      raise UserError(f"config.train.seq_len={t.seq_len} exceeds config.model.max_seq_len={m.max_seq_len} "
                      f"(the learned position table)")
    if t.vocab_chunk and t.objective not in VOCAB_CHUNKED:
      raise UserError(f"config.train.vocab_chunk={t.vocab_chunk} applies to objectives {VOCAB_CHUNKED}, not "
                      f"config.train.objective={t.objective!r}; set it to 0")
    if t.objective == "grpo" and self.eval.best_metric == "val/loss":
      raise UserError("config.eval.best_metric='val/loss': a GRPO evaluation samples completions and reports "
                      "rewards, not a loss; set config.eval.best_metric='val/reward' and config.eval.best_mode='max'")
    if self.lora.enabled and not self.init.hf_dir:
      raise UserError("config.lora.rank > 0 trains adapters on a frozen Hugging Face base model; set "
                      "config.init.hf_dir (a train.py run exports to one with scripts/export_hf.py; "
                      "config.init.workdir is for full fine-tuning)")

  def model_config(self) -> ModelConfig:
    """The model the run builds: config.model with config.lora's adapters (None without LoRA)."""
    return dataclasses.replace(self.model, lora=self.lora if self.lora.enabled else None)
