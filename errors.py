"""User-facing errors: bad configs, data or devices.

`train.py` prints these as one clear message instead of a traceback; anything
else is a bug and keeps its traceback.
"""


class UserError(Exception):
  """A problem with the user's input (config, flags, data, workdir, devices)."""
