"""A sweep file's contents: the base config, the search space over config keys, the metric and budget.

  # sweeps/NAME.py
  from scripts.tuning.space import Sweep, choice, log_uniform

  def get_sweep():
    return Sweep(config="configs/quickstart.py", metric="val/loss", budget=8,
                 space={"optimizer.learning_rate": log_uniform(3e-4, 1e-2),
                        "optimizer.warmup_steps": choice(0, 10, 40)},
                 overrides=("--config.train.steps=80",))
"""

import dataclasses
import importlib.util
import os

import optuna

from configs import overrides as config_overrides
from errors import UserError
from scripts.cluster.job import REPO

SAMPLERS = ("tpe", "random", "grid")
PRUNERS = ("median", "asha", "none")


def uniform(low: float, high: float) -> optuna.distributions.BaseDistribution:
  _check_range(low, high, "uniform")
  return optuna.distributions.FloatDistribution(low, high)


def log_uniform(low: float, high: float) -> optuna.distributions.BaseDistribution:
  _check_range(low, high, "log_uniform")
  if low <= 0:
    raise UserError(f"log_uniform({low}, {high}): expected a low end above 0")
  return optuna.distributions.FloatDistribution(low, high, log=True)


def integer(low: int, high: int, log: bool = False) -> optuna.distributions.BaseDistribution:
  if low > high:
    raise UserError(f"integer({low}, {high}): empty range; expected low <= high")
  return optuna.distributions.IntDistribution(low, high, log=log)


def choice(*values) -> optuna.distributions.BaseDistribution:
  """One of these values; with sampler="grid", the grid's points on this key."""
  if len(values) == 1 and isinstance(values[0], (list, tuple)):
    values = tuple(values[0])
  if not values:
    raise UserError("choice(): empty; expected at least one value")
  return optuna.distributions.CategoricalDistribution(values)


def _check_range(low: float, high: float, name: str) -> None:
  if not low < high:
    raise UserError(f"{name}({low}, {high}): empty range; expected low < high")


@dataclasses.dataclass(frozen=True)
class Sweep:
  config: str                                # the base experiment (configs/NAME.py)
  space: dict                                # config key (e.g. optimizer.learning_rate) -> distribution
  metric: str = "val/loss"                   # any metrics.jsonl key as SPLIT/NAME: val/loss, task/NAME/accuracy
  direction: str = "minimize"
  budget: int = 8                            # trials, the default's included
  overrides: tuple[str, ...] = ()            # --config.KEY=VALUE for every trial (e.g. a shorter run)
  sampler: str = "tpe"
  pruner: str = "median"                     # fed by the metric's values as each trial evaluates
  startup_trials: int = 3                    # trials before TPE models the space and the pruner prunes
  prune_from_step: int = 0                   # no pruning before this step (a long warmup starts slower)
  seed: int = 0
  include_default: bool = True               # the first trial runs the config's own values of the keys

  @property
  def split_and_name(self) -> tuple[str, str]:
    return split_metric(self.metric)


def split_metric(metric: str) -> tuple[str, str]:
  """("val", "loss") of "val/loss", ("task/NAME", "accuracy") of "task/NAME/accuracy": a metrics.jsonl
  row's split and key."""
  split, _, name = metric.rpartition("/")
  return split, name


def _config_path(config: str) -> str:
  """A config path as written in the sweep, relative to the working directory or to the repository,
  made absolute: trials run in the repository."""
  if os.path.isabs(config) or os.path.exists(config):
    return os.path.abspath(config)
  return os.path.join(REPO, config)


def load(path: str) -> Sweep:
  """The Sweep of a sweep file, checked: every key exists in the config with a value of its type."""
  if not os.path.exists(path):
    raise UserError(f"--sweep={path}: no such file")
  spec = importlib.util.spec_from_file_location("_sweep", path)
  module = importlib.util.module_from_spec(spec)
  try:
    spec.loader.exec_module(module)
    sweep = module.get_sweep()
  except UserError as e:  # an empty range, raised by the distribution helpers
    raise UserError(f"{path}: {e}") from None
  if not isinstance(sweep, Sweep):
    raise UserError(f"{path}: get_sweep() returned {type(sweep).__name__}; expected a scripts.tuning.space.Sweep")
  check(sweep, path)
  return dataclasses.replace(sweep, config=_config_path(sweep.config))


def check(sweep: Sweep, where: str) -> None:
  def fail(message: str):
    raise UserError(f"{where}: {message}")

  if not sweep.space:
    fail("the space is empty; expected at least one config key")
  if sweep.direction not in ("minimize", "maximize"):
    fail(f"direction={sweep.direction!r}; expected 'minimize' or 'maximize'")
  if sweep.sampler not in SAMPLERS or sweep.pruner not in PRUNERS:
    fail(f"sampler={sweep.sampler!r}, pruner={sweep.pruner!r}; expected a sampler of {SAMPLERS} and a pruner "
         f"of {PRUNERS}")
  if sweep.budget < 1:
    fail(f"budget={sweep.budget}; expected at least 1 trial")
  split, name = sweep.split_and_name
  if not split or not name:
    fail(f"metric={sweep.metric!r}; expected SPLIT/NAME as metrics.jsonl has them, e.g. val/loss or "
         f"task/NAME/accuracy")
  if sweep.sampler == "grid":
    ranged = [k for k, d in sweep.space.items() if not isinstance(d, optuna.distributions.CategoricalDistribution)]
    if ranged:
      fail(f"sampler='grid' needs choice(...) for every key; {', '.join(ranged)} is a range")
  config_path = _config_path(sweep.config)
  base = config_overrides.load_with_overrides(config_path, list(sweep.overrides))
  for key, dist in sweep.space.items():
    if not isinstance(dist, optuna.distributions.BaseDistribution):
      fail(f"space[{key!r}] is {dist!r}; expected uniform, log_uniform, integer or choice")
    probe = [f"--config.{key}={v}" for v in _extremes(dist)]
    message = config_overrides.explain_bad_override(base, probe) or config_overrides.explain_bad_value(base, probe)
    if message:
      fail(f"space[{key!r}]: {message}")


def _extremes(dist) -> list:
  if isinstance(dist, optuna.distributions.CategoricalDistribution):
    return list(dist.choices)
  return [dist.low, dist.high]


def default_params(sweep: Sweep) -> dict:
  """The base config's values (with the sweep's overrides) of the swept keys: the default's trial."""
  base = config_overrides.load_with_overrides(sweep.config, list(sweep.overrides))
  params = {}
  for key, dist in sweep.space.items():
    node = base
    for part in key.split("."):
      node = node[part]
    inside = (node in dist.choices if isinstance(dist, optuna.distributions.CategoricalDistribution)
              else dist.low <= node <= dist.high)
    if not inside:
      raise UserError(f"include_default: the config's {key}={node!r} lies outside the space's {dist}; "
                      f"widen the space or set include_default=False")
    params[key] = node
  return params
