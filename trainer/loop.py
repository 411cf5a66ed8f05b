"""The training run: set up mesh, data, state; train, evaluate, checkpoint."""

import dataclasses
import functools
import os
import signal
import threading
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

from configs import overrides
from configs.schema import RunConfig
from data import pipeline, prep_io, prepare, shards, tokenizer
from errors import UserError
from model import base_reference, decode, families, hf_config, hf_weights, lora
from model.sampling import SamplingConfig
from parallel import mesh as mesh_lib
from parallel import restore as restore_lib
from parallel import sharding
from parallel.checkpoint import Checkpointer
from trainer import mfu as mfu_lib
from trainer import objectives
from trainer import optimizer as optimizer_lib
from trainer import preflight, reference_logps, rewards, teacher_topk
from trainer import rollout as rollout_lib
from trainer import state as state_lib
from trainer import steps as steps_lib
from trainer import workdir_lock
from trainer.best import BestTracker
from trainer.metrics import MetricsLogger, format_train_line
from trainer.state import REFERENCE
from trainer.teacher import TEACHER


class _StopRequest:
  """Turns SIGINT/SIGTERM into a flag checked after every step, so a checkpoint gets written.

  The loop keeps at most one step in flight and records in `finished` the
  last step the device completed, so the stop comes within about one step.
  Only a second Ctrl-C (SIGINT) stops at once, unsaved: a repeated SIGTERM is the
  same request again (schedulers follow SIGTERM with SIGKILL, not a second
  SIGTERM; a parent-death signal comes once per exiting thread of the parent).
  """

  def __init__(self):
    self.requested = False
    self.finished = 0
    self._previous = {}

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      for sig in (signal.SIGINT, signal.SIGTERM):
        self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def _handle(self, signum, frame):
    if self.requested:
      if signum == signal.SIGINT:  # a second Ctrl-C stops at once
        raise KeyboardInterrupt
      return
    self.requested = True
    # Said at once, whatever the logging verbosity; os.write, as the handler may interrupt a print.
    os.write(2, f"{signal.Signals(signum).name} after step {self.finished}: finishing the steps in flight (at most 2), "
                f"saving a checkpoint and stopping (Ctrl-C again to stop at once, unsaved)\n".encode())

  def agreed(self) -> bool:
    """True on every process once any process was signalled."""
    if jax.process_count() == 1:
      return self.requested
    return bool(np.any(multihost_utils.process_allgather(np.int32(self.requested))))

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)


def _check_mesh(config: RunConfig, mesh) -> None:
  """The config's rules that need the devices (the rest are checked by RunConfig.from_config)."""
  t = config.train
  dp = mesh.shape["data"] * mesh.shape["fsdp"]
  micro = t.batch_size // t.grad_accum_steps
  if micro % dp:
    raise UserError(f"config.train.batch_size={t.batch_size} (micro-batch {micro}) is not divisible by "
                    f"the data-parallel size mesh.data*mesh.fsdp={dp}")


# config.model fields a run started from another run's workdir chooses itself: the task's head and how
# it computes. The rest (the architecture, scan_layers and max_seq_len included: they shape the
# parameters) are the starting run's.
_OWN_FIELDS = ("num_labels", "pooling", "pooler", "dtype", "param_dtype", "attention_impl", "remat",
               "scan_unroll")


def take_init_architecture(config) -> None:
  """config.model's architecture, from config.init's checkpoint (an HF directory or a workdir)."""
  if config.init.hf_dir and config.init.workdir:
    return  # RunConfig refuses two sources
  if config.init.hf_dir:
    _, fields = hf_config.read(config.init.hf_dir, config.model.family)
    where = config.init.hf_dir
  elif config.init.workdir:
    source = restore_lib.load_run_config(config.init.workdir).model
    if source.family != config.model.family:
      raise UserError(f"config.init.workdir={config.init.workdir} trained an {source.family!r} model but "
                      f"config.model.family={config.model.family!r}")
    fields = {k: v for k, v in source.to_dict().items()
              if k not in _OWN_FIELDS or (k == "num_labels" and v)}  # a classifier keeps its labels
    where = config.init.workdir
  else:
    return
  wanted = config.model.num_labels
  if wanted and fields.get("num_labels", wanted) != wanted:
    raise UserError(f"config.model.num_labels={wanted}, but the classifier in {where} has "
                    f"{fields['num_labels']} labels; start from its base model, or match its labels")
  config.model.update(fields)
  if wanted and config.model.family == "encoder" and config.model.pooling == "cls":
    config.model.pooler = True  # BERT's and RoBERTa's heads read the pooler (fresh if the checkpoint has none)


def ensure_dataset(data_cfg) -> dict:
  """Prepares `data.dir` on first use when the config names a data config for it (scripts/sweep.py calls
  it once before starting trials side by side, which would otherwise prepare it at once)."""
  if data_cfg.prepare_config and not os.path.exists(os.path.join(data_cfg.dir, shards.METADATA)):
    if jax.process_index() == 0:
      path = data_cfg.prepare_config
      if not os.path.isabs(path) and not os.path.exists(path):  # relative to the repository
        path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), path)
      if not os.path.isfile(path):
        raise UserError(f"config.data.prepare_config={data_cfg.prepare_config!r}: no such file")
      print(f"Preparing dataset {data_cfg.dir} with {data_cfg.prepare_config} (first run only)...", flush=True)
      prepare.prepare(overrides.load_config_file(path), data_cfg.dir)
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices("dataset prepared")
  return pipeline.dataset_metadata(data_cfg)


def _global_sum(x: np.ndarray) -> np.ndarray:
  if jax.process_count() == 1:
    return x
  return np.asarray(multihost_utils.process_allgather(x)).sum(0)


# Batch fields an objective reads when a dataset has them (a chat dataset's loss mask, token types, a
# preference pair's margin).
OPTIONAL_FIELDS = ("loss_mask", "token_types", "margin")


class _Run:
  """Everything one training run builds once and uses throughout."""

  def __init__(self, config, workdir: str, devices=None):
    """`config`: the experiment's ConfigDict; the run reads it as typed sections (self.config)."""
    self.workdir = workdir
    take_init_architecture(config)  # the architecture comes from the checkpoint, not the config
    self.config = config = RunConfig.from_config(config)
    self.model_cfg = config.model_config()
    self.mesh = mesh_lib.make_mesh(config.mesh, devices)
    _check_mesh(config, self.mesh)
    self.meta = ensure_dataset(config.data)
    # Examples that are read whole, one per row (labelled examples, preference pairs), must fit a row.
    whole = self.meta.get("kind") in ("classification", "preference")
    max_len = self.meta.get("options", {}).get("max_len", 0) if whole else 0
    if config.train.objective == "grpo":
      self._check_prompts(config)
    if (config.train.objective == "dpo" and config.train.dpo.reference == "precomputed"
        and config.train.dpo.loss_type not in objectives.preference.REFERENCE_FREE):  # those read none
      reference_logps.check_dataset(config, self.meta, config.data.dir)
    if config.train.objective == "distill" and config.train.distill.teacher_topk_dir:
      teacher_topk.check_run(config, self.meta)
    if max_len > config.train.seq_len:
      raise UserError(f"config.train.seq_len={config.train.seq_len} is shorter than the examples of {config.data.dir} "
                      f"(prepared with --max_len={max_len}): they would lose their end; set train.seq_len={max_len}")
    if (self.meta.get("kind") == "seq2seq") != (config.train.objective == "seq2seq"):
      raise UserError(f"config.train.objective={config.train.objective!r} and {config.data.dir} (kind "
                      f"{self.meta.get('kind') or 'text'!r}) do not go together: text-to-text examples "
                      f"(scripts/prepare_seq2seq.py) train with objective 'seq2seq', and 'seq2seq' trains on them")
    if self.meta.get("kind") == "seq2seq":
      self._check_seq2seq(config)
    if self.meta["vocab_size"] > self.model_cfg.vocab_size:
      raise UserError(f"the tokenizer of the dataset has {self.meta['vocab_size']} tokens but "
                      f"config.model.vocab_size={self.model_cfg.vocab_size}; the embedding must be at "
                      f"least as large as the vocabulary")
    preflight.check(config, self.meta, workdir, is_main=jax.process_index() == 0)  # fail before step 1
    self.is_main = jax.process_index() == 0
    t = config.train
    self.model = families.build(self.model_cfg)
    self.objective = objectives.build(config)
    self.masking = self.objective.masking(config, self.meta)  # masked LM: how the pipeline masks rows
    self.tx, self.schedule = optimizer_lib.make_optimizer(config.optimizer, t.steps)
    self._eval_batches: dict = {}
    self.teacher_step = None  # a distillation teacher's pinned checkpoint (Teacher.pin)

  def _check_seq2seq(self, config) -> None:
    """Text-to-text examples are read whole: each side must fit its row."""
    t = config.train
    if config.model.decoder_start_id != 0:
      raise UserError(f"config.model.decoder_start_id={config.model.decoder_start_id}: text-to-text rows start "
                      f"the decoder with 0 (T5's pad id); set it to 0")
    target_len = t.target_len or t.seq_len
    for side, longest, field, have in (("inputs", "max_input_len", "seq_len", t.seq_len),
                                       ("targets", "max_target_len", "target_len", target_len)):
      if self.meta[longest] > have:
        raise UserError(f"config.train.{field}={have} is shorter than the longest {side} of {config.data.dir} "
                        f"({self.meta[longest]} tokens); set config.train.{field}={self.meta[longest]} (or "
                        f"prepare the data with a lower --{longest})")

  def _check_prompts(self, config) -> None:
    """GRPO samples from one prompt dataset; a prompt and its completion must fit a row."""
    if self.meta.get("kind") != "prompts" or config.data.mixture:
      raise UserError(f"config.train.objective='grpo' samples completions of prompts: config.data.dir must be "
                      f"one prompt dataset (scripts/prepare_prompts.py), not {config.data.mixture or config.data.dir}"
                      f" ({'a mixture' if config.data.mixture else 'kind ' + repr(self.meta.get('kind'))})")
    g = config.train.grpo
    self.reward_functions = rewards.resolve(g)  # a name that does not resolve stops the run before it writes
    longest = max(s["max_len"] for s in self.meta["splits"].values())
    if longest + g.max_completion_len > config.train.seq_len:
      raise UserError(f"config.train.seq_len={config.train.seq_len} cannot hold the longest prompt of "
                      f"{config.data.dir} ({longest} tokens) and config.train.grpo.max_completion_len="
                      f"{g.max_completion_len}; set train.seq_len={longest + g.max_completion_len}")

  def build(self):
    t = self.config.train
    self.abstract, self.state_sh = state_lib.state_shardings(self.model, self.tx, self.mesh, t.seq_len)
    sharding.check_divisible(self.abstract.params, self.state_sh.params, "parameter")
    self.frozen_abstract, self.frozen_sh = {}, {}
    if self.model_cfg.lora is not None:  # the base weights: frozen, outside the train state (but a head)
      self.base_abstract, self.base_sh = restore_lib.lora_base_shardings(self.model, self.mesh,
                                                                         self.config.lora.base_dtype)
      self.frozen_abstract = {"params": lora.frozen_of(self.base_abstract)}
      self.frozen_sh = {"params": lora.frozen_of(self.base_sh)}
    elif self.objective.needs_reference:  # DPO: a frozen copy of the starting policy
      self.frozen_abstract = {REFERENCE: self.abstract.params}
      self.frozen_sh = {REFERENCE: self.state_sh.params}
    teacher = self.objective.teacher
    if teacher is not None:  # distillation: the teacher's parameters beside the student's
      self.frozen_abstract[TEACHER], self.frozen_sh[TEACHER] = teacher.shardings(self.mesh)
    self.batch_sh = sharding.batch_sharding(self.mesh)
    self.rows = sharding.process_batch_rows(self.batch_sh, (t.batch_size, t.seq_len))
    repl = sharding.replicated(self.mesh)
    self.train_step = steps_lib.make_train_step(
        self.model, self.objective, self.tx, self.schedule, self.state_sh, self.frozen_sh, self.batch_sh, repl,
        t.grad_accum_steps, t.seed)
    self.eval_step = steps_lib.make_eval_step(self.model, self.objective, self.state_sh.params, self.frozen_sh,
                                              self.batch_sh, repl)
    self.train_iter = pipeline.train_iterator(self.config.data, t.seq_len, t.batch_size, *self.rows,
                                              seed=t.seed, masking=self.masking,
                                              repeats=self.objective.rows_per_prompt,
                                              teacher_topk=self.objective.teacher_topk,
                                              target_len=self.objective.target_len)
    self.rollout = None
    if self.objective.generates:  # GRPO: rows are sampled from the policy
      self.rollout = rollout_lib.Rollout(self.config, self.model_cfg, self.mesh, self.meta, self.rows,
                                         self.reward_functions)
    self.mixture_names = [os.path.basename(os.path.normpath(d)) for d, _ in pipeline.datasets(self.config.data)]
    self.flops_per_token = self.objective.flops_per_token(self.model_cfg, t.seq_len)
    self.peak_flops = mfu_lib.peak_flops_per_device(jax.devices()[0].device_kind,
                                                    self.config.log.peak_flops_per_device)

  def model_fields(self, batches):
    """The fields of each batch the objective reads; a dataset without one is named."""
    missing = [f for f in self.objective.batch_fields if f not in batches[0] and f not in OPTIONAL_FIELDS]
    if missing:
      raise UserError(f"config.train.objective={self.config.train.objective!r} needs batch fields {missing}, "
                      f"which the dataset {self.config.data.mixture or self.config.data.dir} does not have")
    return [{k: b[k] for k in self.objective.batch_fields if k in b} for b in batches]

  def _fresh_head(self, shardings):
    """A classifier head (and pooler) the starting checkpoint lacks, freshly initialized on its shards."""
    t = self.config.train
    return state_lib.init_params(self.model, shardings, t.seq_len, jax.random.key(t.seed), only=lora.HEAD)

  def _params_from_run(self) -> dict:
    """The model's parameters from the newest checkpoint of config.init.workdir: the parts this model
    shares with that run's (a new head, when it has none, fresh; its LM head, unused, left behind)."""
    source = self.config.init.workdir
    restored = restore_lib.restore(source, self.mesh).params
    fresh = None
    params = {}
    for name, abstract in self.abstract.params.items():
      if name not in restored:
        if name not in lora.HEAD:
          raise UserError(f"config.init.workdir={source} has no {name!r} parameters, which this model needs")
        fresh = fresh or self._fresh_head(self.state_sh.params)
        params[name] = fresh[name]
        continue
      have = dict(jax.tree_util.tree_flatten_with_path(restored[name])[0])
      for path, want in jax.tree_util.tree_flatten_with_path(abstract)[0]:
        if path not in have or have[path].shape != want.shape:
          raise UserError(f"config.init.workdir={source}: parameter {name}{jax.tree_util.keystr(path)} has shape "
                          f"{getattr(have.get(path), 'shape', None)}, but this model's is {want.shape}")
      # In this run's parameter dtype: a LoRA run's merged weights, say, come partly in its base dtype.
      params[name] = jax.device_put(jax.tree.map(lambda x, a: x.astype(a.dtype), restored[name], abstract),
                                    self.state_sh.params[name])
    return params

  def starting_params(self) -> dict:
    """The model's parameters at step 0 (full training): from config.init, or fresh from the seed."""
    t = self.config.train
    if self.config.init.workdir:
      return self._params_from_run()
    if self.config.init.hf_dir:
      return hf_weights.load_params(self.config.init.hf_dir, self.model_cfg, self.abstract.params,
                                    self.state_sh.params, fresh_head=lambda: self._fresh_head(self.state_sh.params))
    return state_lib.init_params(self.model, self.state_sh.params, t.seq_len, jax.random.key(t.seed))

  def initial_state(self, frozen: dict, base_head: dict):
    """The train state at step 0: fresh, or from config.init (under LoRA: fresh adapters, and a classifier's
    head, `base_head`, from the base; with a reference, a copy of it, read once)."""
    t = self.config.train
    if REFERENCE in frozen:  # its own buffers: the train step donates the state's
      return state_lib.from_params(self.tx, jax.tree.map(jnp.copy, frozen[REFERENCE]), self.state_sh)
    if self.model_cfg.lora is not None:
      state = state_lib.create(self.model, self.tx, self.state_sh, t.seq_len, jax.random.key(t.seed))
      if not base_head:
        return state
      return state_lib.from_params(self.tx, {**state.params, "params": base_head}, self.state_sh)
    if self.config.init.source:
      return state_lib.from_params(self.tx, self.starting_params(), self.state_sh)
    return state_lib.create(self.model, self.tx, self.state_sh, t.seq_len, jax.random.key(t.seed))

  def load_frozen(self) -> tuple[dict, dict]:
    """(frozen collections, head): a LoRA run's base from config.init.hf_dir, placed on its shards, and
    the base's classifier head (fresh where it has none), which a new run starts training from; a DPO
    reference; a distillation teacher."""
    frozen, head = {}, {}
    if REFERENCE in self.frozen_abstract:  # its own arrays: the train step donates the state's
      frozen[REFERENCE] = self.starting_params()
    if TEACHER in self.frozen_abstract:
      frozen[TEACHER] = self.objective.teacher.load(self.mesh, self.frozen_abstract[TEACHER],
                                                    self.frozen_sh[TEACHER], self.teacher_step)
    if "params" in self.frozen_abstract:
      base = hf_weights.load_params(self.config.init.hf_dir, self.model_cfg, self.base_abstract, self.base_sh,
                                    fresh_head=lambda: self._fresh_head(self.base_sh))
      frozen["params"] = lora.frozen_of(base)
      head = {k: v for k, v in base.items() if k in lora.HEAD}
    return frozen, head

  def inference_params(self, state, frozen):
    """Plain model parameters: LoRA adapters merged into the base."""
    if self.model_cfg.lora is None:
      return state.params
    return self._merge(frozen["params"], state.params)

  @functools.cached_property
  def _merge(self):
    """The LoRA merge, compiled once (GRPO merges before every step's sampling)."""
    return jax.jit(lambda f, t: lora.merged_params(t, f, self.model_cfg.lora), out_shardings=self.base_sh)

  def task_evaluator(self, make_evaluator):
    """config.eval.tasks, loaded and checked now so a bad task file fails before training."""
    ev = self.config.eval
    evaluator = None
    if ev.task_names:
      if make_evaluator is None:
        raise UserError(f"config.eval.tasks={ev.tasks!r} needs a task evaluator; train.py passes "
                        f"evals.in_training.TaskEvaluator to trainer.loop.run")
      evaluator = make_evaluator(ev, self.model_cfg, self.meta["tokenizer_path"], self.mesh,
                                 self.config.train.seq_len)
    kind, _, rest = ev.best_metric.partition("/")  # its form is checked by EvalConfig
    if kind == "task" and rest.split("/")[0] not in [t.name for t in (evaluator.tasks if evaluator else [])]:
      raise UserError(f"config.eval.best_metric={ev.best_metric!r} names a task that config.eval.tasks="
                      f"{ev.tasks!r} does not run")
    return evaluator

  def eval_split(self, state, frozen, split: str, num_batches: int, log=None) -> dict:
    t = self.config.train
    key = (split, num_batches)
    if key not in self._eval_batches:  # the same rows every evaluation: read them once
      batches = pipeline.eval_batches(self.config.data, split, t.seq_len, t.batch_size, *self.rows, num_batches,
                                      masking=self.masking, repeats=self.objective.rows_per_prompt,
                                      teacher_topk=self.objective.teacher_topk,
                                      target_len=self.objective.target_len)
      self._eval_batches[key] = batches if self.rollout is not None else self.model_fields(batches)
    if self.rollout is not None:  # GRPO: the rewards of completions sampled for held-out prompts
      return self.rollout.evaluate(self.inference_params(state, frozen), self._eval_batches[key], split, log)
    params = state.params
    step = lambda batch: self.eval_step(params, frozen, batch)  # noqa: E731
    return steps_lib.evaluate(step, self.objective, self._eval_batches[key], self.batch_sh, t.batch_size)


def _format_eval(split: str, result: dict) -> str:
  """The objective's evaluation metrics, in its order ("val loss 4.7100 | val perplexity 111.04"); per-class
  metrics ("f1[spam]") and counts go to metrics.jsonl only."""
  return " | ".join(f"{split} {name} {value:.2f}" if abs(value) >= 100 else f"{split} {name} {value:.4f}"
                    for name, value in result.items() if name not in ("tokens", "examples") and "[" not in name)


def _print_samples(run: _Run, params, log: MetricsLogger) -> None:
  """Sampled continuations of test-split prompts; `params` are plain (merged) model parameters."""
  ev = run.config.eval
  tok = tokenizer.load(run.meta["tokenizer_path"])
  rows = pipeline.RowStream(run.config.data, "test", run.config.train.seq_len, seed=0, shuffle=False)
  prompt_len = min(32, run.config.train.seq_len // 2)
  prompts = [rows[i]["tokens"][:prompt_len].tolist() for i in range(ev.num_samples)]
  decoder = decode.Decoder(dataclasses.replace(run.model_cfg, lora=None), run.mesh)
  sampling = SamplingConfig(temperature=ev.sample_temperature, seed=run.config.train.seed)
  stop_ids = () if tok.eos_id is None else (tok.eos_id,)
  outs = decoder.generate(params, prompts, ev.sample_tokens, sampling, stop_ids).tokens
  for i, (prompt, out) in enumerate(zip(prompts, outs)):
    log.info(f"--- sample {i + 1} (prompt from the test split, then the model) ---\n"
             f"{tok.decode(prompt)}\u2502{tok.decode(out)}")


def run(config, workdir: str, devices=None, stop_after_step: int | None = None, task_evaluator=None) -> dict:
  """Trains `config` in `workdir`, resuming from its newest checkpoint. Returns a summary.

  `devices` restricts the mesh to a subset of devices; `stop_after_step` stops
  early with a checkpoint, exactly as a SIGTERM would (used to test resumption).
  `task_evaluator` builds the evaluator of config.eval.tasks (train.py hands
  in evals.in_training.TaskEvaluator: the trainer does not import evals): it
  takes (config.eval, ModelConfig, tokenizer path, mesh, seq_len) and returns
  an object with `.tasks` and `.evaluate(params) -> {task: {metric: value}}`.
  """
  lock = _lock_workdir(workdir)  # before anything, preflight included, writes in the workdir
  try:
    return _train(config, workdir, devices, stop_after_step, task_evaluator)
  finally:
    lock.release()


def _lock_workdir(workdir: str) -> workdir_lock.WorkdirLock:
  """The workdir's lock, taken by process 0; when it is refused, every process raises."""
  lock = workdir_lock.WorkdirLock(workdir, enabled=jax.process_index() == 0)
  refusal = None
  try:
    lock.acquire()
  except UserError as e:
    refusal = e
  if jax.process_count() > 1 and multihost_utils.broadcast_one_to_all(np.int32(refusal is not None)):
    raise refusal or UserError(f"process 0 could not lock {workdir}; its output says why")
  if refusal is not None:
    raise refusal
  return lock


def _train(config, workdir: str, devices, stop_after_step: int | None, make_task_evaluator) -> dict:
  r = _Run(config, workdir, devices)
  config = r.config  # typed from here on
  t, ev = config.train, config.eval
  guard = steps_lib.NonfiniteGuard(t.on_nonfinite, t.max_skipped_steps)
  os.makedirs(workdir, exist_ok=True)
  log = MetricsLogger(workdir, r.is_main, config.log.tensorboard)
  with sharding.activate(r.mesh):
    r.build()
    ckpt = Checkpointer(os.path.abspath(os.path.join(workdir, "checkpoints")), config.checkpoint.keep,
                        config.checkpoint.async_save)
    start = ckpt.latest_step()
    uses_lora = r.model_cfg.lora is not None
    if uses_lora:
      base_reference.record_or_check(workdir, config.init.hf_dir, write=r.is_main)
      head = " and the classifier head" if r.model_cfg.num_labels else ""
      log.info(f"LoRA rank {config.lora.rank} on {','.join(r.model_cfg.lora.names)}{head}; frozen base "
               f"{config.init.hf_dir} in {config.lora.base_dtype}")
    if r.objective.teacher is not None:  # the teacher checkpoint this run learns from, the same on resume
      r.teacher_step = r.objective.teacher.pin(workdir, resuming=start is not None, write=r.is_main)
    elif r.objective.teacher_topk:  # or the precomputed logits it reads
      teacher_topk.pin(workdir, r.objective.teacher_topk, resuming=start is not None, write=r.is_main)
    frozen, base_head = r.load_frozen()
    if start is None:
      start = 0
      if config.init.source and not uses_lora:
        log.info(f"initializing from {config.init.source}")
      state = r.initial_state(frozen, base_head)
    else:  # the newest checkpoint that restores; corrupt newer ones are reported and moved aside
      start, state = ckpt.restore_newest(state_lib.with_shardings(r.abstract, r.state_sh), r.train_iter,
                                         log.info)
      log.info(f"resuming from {ckpt.directory}/{start}")
    if start >= t.steps:  # a rerun of a finished run: nothing to train, evaluate or write
      log.info(f"run already finished at step {start} ({workdir}); nothing to do")
      ckpt.close()
      return {"step": start, "interrupted": False, "early_stopped": False, "already_finished": True}
    log.start(start)
    if r.is_main:
      prep_io.write_json_atomic(os.path.join(workdir, "config.json"), config.to_dict())
    n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(r.abstract.params))
    n_frozen = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(r.frozen_abstract))
    log.info(f"model: {n_params / 1e6:.2f}M trainable + {n_frozen / 1e6:.2f}M frozen parameters | "
             f"mesh {dict(r.mesh.shape)} | "
             f"{jax.process_count()} process(es), {r.mesh.size} devices | "
             f"{t.batch_size}x{t.seq_len} tokens/step")

    best = BestTracker(workdir, config.checkpoint.keep_best, ev.patience, ev.best_metric, ev.best_mode)
    tasks = r.task_evaluator(make_task_evaluator)
    evaluates = ev.steps > 0 or tasks is not None

    def evaluate(step) -> bool:
      """Evaluates on the val split and the tasks; True when early stopping says stop."""
      flat, line = {}, [f"eval step {step}"]
      if ev.steps > 0:
        result = r.eval_split(state, frozen, "val", ev.steps, log.info)
        log.write(step, "val", result)
        flat.update({f"val/{k}": v for k, v in result.items()})
        line.append(_format_eval("val", result))
      if tasks is not None:
        for name, metrics in tasks.evaluate(r.inference_params(state, frozen)).items():
          log.write(step, f"task/{name}", metrics)
          flat.update({f"task/{name}/{k}": v for k, v in metrics.items()})
          line.append(f"{name} " + " ".join(f"{k} {v:.4f}" for k, v in list(metrics.items())[:2]))
      log.info(" | ".join(line))
      return best.update(step, flat, state)

    if start == 0 and ev.at_start and evaluates:
      evaluate(0)
    early_stopped = False

    tokens_per_step = t.batch_size * t.seq_len * r.objective.sequences_per_row  # a pair's two sides
    step, last_saved, interrupted = start, start, False
    timer_start, timer_step, loop_start = None, start, time.perf_counter()
    mixture_tokens = np.zeros(len(r.mixture_names))
    rollout_sums, rollout_steps = {}, 0  # GRPO: sampling metrics since the last log line
    in_flight = None  # the outputs of the step dispatched last
    with _StopRequest() as stop:
      stop.finished = start
      while step < t.steps:
        local = next(r.train_iter)
        if r.rollout is not None:  # GRPO: completions sampled by the policy as it is now
          local, sampled = r.rollout.train_batch(r.inference_params(state, frozen), local, step)
          rollout_sums = {k: rollout_sums.get(k, 0.0) + v for k, v in sampled.items()}
          rollout_steps += 1
        real_tokens = (local["segment_ids"] != 0).reshape(len(local["dataset"]), -1).sum(1)  # pairs: both sides
        mixture_tokens += np.bincount(local["dataset"], weights=real_tokens,
                                      minlength=len(mixture_tokens))
        batch = sharding.to_global_batch(r.model_fields([local])[0], r.batch_sh, t.batch_size)
        state, metrics = r.train_step(state, frozen, batch)
        step += 1
        guard.observe(step, metrics)  # keeps the device-side flag; read at log and save time
        if in_flight is not None:
          # One step in flight, not the hundreds the host could dispatch ahead between log lines:
          # the device stays busy, and a stop acts within a step. No transfer, just a wait.
          jax.block_until_ready(in_flight)
          stop.finished = step - 1
        in_flight = metrics
        if timer_start is None:  # the first step includes compilation; time from after it
          jax.block_until_ready(metrics)
          log.info(f"compiled and ran the first step in {time.perf_counter() - loop_start:.1f}s")
          timer_start, timer_step = time.perf_counter(), step
        if step % config.log.every_steps == 0 or step == t.steps:
          guard.check(ckpt)
          m = r.objective.train_metrics({k: float(v) for k, v in jax.device_get(metrics).items()})
          m["skipped_steps"] = guard.skipped
          now = time.perf_counter()
          done = step - timer_step  # steps timed since the last log line (compile excluded)
          m["tokens_per_sec"] = done * tokens_per_step / (now - timer_start) if done else 0.0
          m["mfu"] = mfu_lib.mfu(m["tokens_per_sec"], r.flops_per_token, jax.device_count(), r.peak_flops)
          m["eta_s"] = (t.steps - step) * (now - timer_start) / done if done else 0.0
          if rollout_steps:  # per-step means; training's time is the step's wall time less sampling's
            m.update({k: v / rollout_steps for k, v in rollout_sums.items()})
            m["time/train_s"] = max(0.0, (now - timer_start) / done - m["time/sample_s"]) if done else 0.0
            rollout_sums, rollout_steps = {}, 0
          timer_start, timer_step = now, step
          m["tokens_seen"] = step * tokens_per_step
          if len(mixture_tokens) > 1:  # each dataset's share of the tokens since the last log line
            shares = _global_sum(mixture_tokens)
            m.update({f"share_{name}": v / max(1.0, shares.sum()) for name, v in zip(r.mixture_names, shares)})
            mixture_tokens[:] = 0
          log.write(step, "train", m)
          log.info(format_train_line(step, t.steps, m))
        if step % ev.every_steps == 0 and evaluates:
          guard.check(ckpt)  # before the best checkpoint may be saved
          early_stopped = evaluate(step)
          timer_start, timer_step = time.perf_counter(), step  # keep eval out of tokens/s
        if step % config.checkpoint.every_steps == 0:
          guard.check(ckpt)
          ckpt.save(step, state, r.train_iter)
          last_saved = step
          timer_start, timer_step = time.perf_counter(), step
        if stop.agreed() or (stop_after_step is not None and step >= stop_after_step):
          interrupted = True
          break
        if early_stopped:
          log.info(f"early stopping at step {step}: no better {ev.best_metric} in {ev.patience} evaluations; "
                   f"{best.describe()}")
          break
      guard.check(ckpt)
      if last_saved != step:
        ckpt.save(step, state, r.train_iter)
      ckpt.wait()
      ckpt.close()
      best.close()

    summary = {"step": step, "interrupted": interrupted, "early_stopped": early_stopped,
               "best": best.record}
    if interrupted:
      log.info(f"stopped at step {step}; checkpoint saved in {ckpt.directory}/{step}")
    elif ev.final_split:
      result = r.eval_split(state, frozen, ev.final_split, ev.final_steps, log.info)
      log.write(step, ev.final_split, result)
      counted = f"{result['tokens']:.0f} tokens" if "tokens" in result else f"{result['examples']:.0f} examples"
      log.info(f"held-out {ev.final_split} split: {_format_eval(ev.final_split, result)} over {counted}")
      summary[ev.final_split] = result
      if ev.num_samples > 0 and r.model_cfg.family == "decoder" and not r.model_cfg.num_labels:
        _print_samples(r, r.inference_params(state, frozen), log)  # text models that generate
  log.close()
  return summary
