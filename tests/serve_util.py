"""The in-process server the serving tests talk to (scripts/serving/load.py)."""

from scripts.serving.load import running_server  # noqa: F401
