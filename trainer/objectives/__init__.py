"""Training objectives: what a batch's loss is, and what an evaluation reports.

An objective is chosen by `config.train.objective` and maps
(apply_fn, variables, batch, rngs) to summed loss, summed weight and summed
metrics. Sums, not means: micro-batches and devices then combine exactly, and
the step divides once. Each objective says which model families it fits and
turns summed evaluation outputs into its own metrics (perplexity is a
language model's, not a classifier's).

Adding an objective means one module in this package and one entry in
`OBJECTIVES`; the train step, the eval step and the loop stay as they are.
"""

from errors import UserError
from trainer.objectives import causal_lm, classification, distill, grpo, masked_lm, preference, seq2seq
from trainer.objectives.causal_lm import cross_entropy_sums, next_token_targets  # noqa: F401 (API)

OBJECTIVES = {
    "causal_lm": causal_lm.CausalLM,
    "masked_lm": masked_lm.MaskedLM,
    "classification": classification.Classification,
    "reward": preference.RewardModel,
    "dpo": preference.DPO,
    "distill": distill.Distill,
    "grpo": grpo.GRPO,
    "seq2seq": seq2seq.Seq2Seq,
    "span_corruption": seq2seq.SpanCorruption,
}


def build(config):
  """The objective `config.train.objective` names, checked against `config.model.family`."""
  name, family = config.train.objective, config.model.family
  if name not in OBJECTIVES:
    raise UserError(f"config.train.objective={name!r}; expected one of {sorted(OBJECTIVES)}")
  objective = OBJECTIVES[name].from_config(config)
  if family not in objective.families:
    raise UserError(f"config.train.objective={name!r} does not fit config.model.family={family!r}; "
                    f"it trains {' or '.join(objective.families)} models")
  return objective
