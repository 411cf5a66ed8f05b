"""EleutherAI lm-evaluation-harness on Strata models: the `strata` model type.

  import lm_eval
  from evals.harness import StrataLM
  lm = StrataLM.from_checkpoint(workdir="runs/x")   # or hf_dir="exports/x"
  lm_eval.simple_evaluate(model=lm, tasks=["hellaswag"])

Importing this module registers the model as `strata`, so once it is imported
`simple_evaluate(model="strata", model_args="workdir=runs/x,batch_size=16")`
works too (`pretrained=DIR` is an alias of `hf_dir=DIR`, as for `--model hf`).
lm_eval 0.4.13 discovers no plugins, so its own `lm_eval` command never
imports this module; `python -m evals.harness` takes the same arguments:

  python -m evals.harness --model strata --model_args workdir=runs/x --tasks hellaswag

Tokenization, windows and decoding are `evals.lm.LanguageModel`'s; this class
only turns lm_eval's text requests into its token requests and back.
"""

import json
import logging

from lm_eval import utils as lm_eval_utils
from lm_eval.api.model import LM
from lm_eval.api.registry import register_model
# Importing lm_eval.models lists lm_eval's built-in models (lazily, no torch),
# which lm_eval does by itself only while its registry is empty: it must come
# before our register_model, or `--model hf` and friends would vanish.
from lm_eval.models.utils import normalize_gen_kwargs

from errors import UserError

logger = logging.getLogger(__name__)

DEFAULT_MAX_GEN_TOKS = 256  # lm_eval's default when a task names no max_gen_toks
# gen_kwargs keys LanguageModel.generate honours; others (beam search,
# repetition penalties) are logged and ignored, as lm_eval's API models do.
_GEN_KEYS = {"until", "max_gen_toks", "do_sample", "temperature", "top_k", "top_p", "seed"}
_ARG_KEYS = {"workdir", "hf_dir", "pretrained", "batch_size", "max_gen_toks", "seed"}


@register_model("strata")
class StrataLM(LM):
  """An lm_eval model backed by an `evals.lm.LanguageModel`."""

  def __init__(self, model, max_gen_toks: int = DEFAULT_MAX_GEN_TOKS, seed: int = 0):
    super().__init__()
    self.model = model
    self.max_gen_toks = max_gen_toks
    self.seed = seed

  @classmethod
  def from_checkpoint(cls, workdir: str | None = None, hf_dir: str | None = None, batch_size: int = 8,
                      mesh_config=None, **kwargs) -> "StrataLM":
    """Loads a train.py workdir's newest checkpoint or a Hugging Face model directory."""
    from evals.lm import LanguageModel  # jax and the model load only when a model is asked for
    model = LanguageModel.load(workdir=workdir, hf_dir=hf_dir, batch_size=batch_size, mesh_config=mesh_config)
    return cls(model, **kwargs)

  @classmethod
  def create_from_arg_string(cls, arg_string: str, additional_config: dict | None = None) -> "StrataLM":
    """`--model_args workdir=runs/x,batch_size=16` (or `pretrained=DIR`)."""
    return cls.create_from_arg_obj(lm_eval_utils.simple_parse_args_string(arg_string), additional_config)

  @classmethod
  def create_from_arg_obj(cls, arg_dict: dict, additional_config: dict | None = None) -> "StrataLM":
    """The same from a dict; additional_config carries the CLI's --batch_size and --device."""
    args = dict(arg_dict)
    unknown = set(args) - _ARG_KEYS
    if unknown:
      raise UserError(f"unknown strata model_args {sorted(unknown)}; expected some of {sorted(_ARG_KEYS)}")
    if "pretrained" in args:
      if "hf_dir" in args:
        raise UserError("give pretrained= or hf_dir= (the same thing), not both")
      args["hf_dir"] = args.pop("pretrained")
    # model_args win over the CLI's --batch_size, which is 1 unless given;
    # "auto" asks for a memory probe we do not have, so it keeps our default.
    batch_size = args.pop("batch_size", (additional_config or {}).get("batch_size"))
    if batch_size is not None and not str(batch_size).startswith("auto"):
      args["batch_size"] = int(batch_size)
    return cls.from_checkpoint(**args)

  @property
  def max_length(self) -> int:
    return self.model.max_len

  def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
    """(log p(continuation | context), whether greedy decoding yields it) per (context, continuation)."""
    pairs = [self._encode_pair(*req.args) for req in requests]
    scored = [i for i, (_, cont) in enumerate(pairs) if cont]
    results = [(0.0, True)] * len(pairs)  # an empty continuation is certain
    for i, (logprob, greedy) in zip(scored, self.model.loglikelihood([pairs[i] for i in scored])):
      results[i] = (float(logprob), bool(greedy))
    for req, result in zip(requests, results):
      self.cache_hook.add_partial("loglikelihood", req.args, result)
    return results

  def _encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """Token ids as LanguageModel.loglikelihood takes them (an empty context becomes the prefix token);
    it drops the oldest context tokens that do not fit and refuses a continuation that cannot."""
    return self.model.encode_pair(context, continuation)

  def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
    """Total log-likelihood of each text, every token scored once, the first given the prefix token
    (BOS, or EOS without one) only, as lm_eval's HFLM does."""
    docs = [self.model.encode(req.args[0]) for req in requests]
    nonempty = [i for i, doc in enumerate(docs) if doc]
    totals = [0.0] * len(docs)
    for i, (total, _) in zip(nonempty, self.model.rolling_loglikelihood([docs[i] for i in nonempty])):
      totals[i] = float(total)
    for req, total in zip(requests, totals):
      self.cache_hook.add_partial("loglikelihood_rolling", req.args, total)
    return totals

  def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
    """Continuations of each context, cut before the first `until` string or EOS.

    Requests with the same gen_kwargs go to LanguageModel.generate as one batch.
    """
    groups = {}
    for i, req in enumerate(requests):
      gen_kwargs = req.args[1]
      key = json.dumps(gen_kwargs, sort_keys=True, default=str)
      groups.setdefault(key, (gen_kwargs, []))[1].append(i)
    outputs = [None] * len(requests)
    for gen_kwargs, indices in groups.values():
      texts = self._generate([requests[i].args[0] for i in indices], gen_kwargs)
      for i, text in zip(indices, texts):
        outputs[i] = text
        self.cache_hook.add_partial("generate_until", requests[i].args, text)
    return outputs

  def _generate(self, contexts: list[str], gen_kwargs: dict) -> list[str]:
    """One LanguageModel.generate call for contexts that share gen_kwargs."""
    kwargs = normalize_gen_kwargs(gen_kwargs, self.max_gen_toks)
    ignored = sorted(set(kwargs) - _GEN_KEYS)
    if ignored:
      logger.warning("strata: ignoring unsupported gen_kwargs %s", {k: kwargs[k] for k in ignored})
    stop = [s for s in kwargs["until"] if s]  # a list by now; "" would stop at once
    max_new = kwargs["max_gen_toks"]
    if max_new >= self.max_length:
      raise UserError(f"max_gen_toks={max_new} leaves no room for a prompt in max_len {self.max_length}")
    # BOS only where the tokenizer adds one, as lm_eval's HF model encodes; keep the
    # newest context tokens that leave room for max_new (a long context loses its BOS).
    prompts = [self.model.encode(c, add_bos=True)[-(self.max_length - max_new):] for c in contexts]
    # do_sample without a temperature samples at 1, as transformers' generate does.
    temperature = float(kwargs.get("temperature", 1.0)) if kwargs["do_sample"] else 0.0
    return self.model.generate(prompts, max_new, stop=stop, temperature=temperature,
                               top_k=int(kwargs.get("top_k", 0)), top_p=float(kwargs.get("top_p", 1.0)),
                               seed=int(kwargs.get("seed", self.seed)))


if __name__ == "__main__":
  from lm_eval.__main__ import cli_evaluate
  cli_evaluate()
