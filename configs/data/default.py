"""Default data preparation: every stage on, tuned for natural-language text.

  python scripts/prepare_data.py --output=datasets/mytext --inputs='corpus/**/*.txt'
"""

from data import prepare_config


def get_config():
  return prepare_config.default_config()
