"""Every config key Strata knows, with its default.

The keys, their defaults and what each means are defined once, as typed
sections (configs/schema.py gathers them). Experiment configs start from
`base_config()`, which is locked: assigning a key that does not exist (in a
config file or as `--config.x.y=...`) fails and lists the valid keys, so a typo
can never be silently ignored. A run reads its config back as typed sections
with `configs.schema.RunConfig.from_config`, which validates every field.
"""

import ml_collections

from configs.schema import RunConfig


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict(RunConfig.defaults())
  c.lock()
  return c
