"""Append-only JSONL logs of responses and of user feedback, the raw material of the next
preference dataset (scripts/feedback_to_preferences.py).

Each record is one line, written whole, flushed and fsynced before the
response returns, so a crash or restart loses nothing that a client saw. When
the live file passes `max_bytes` it is renamed to NAME.jsonl.K (K counting up,
never overwritten) and a new one is started; readers take the rotated files
in order, then the live one.
"""

import glob
import json
import os
import re
import threading


class JsonlLog:
  def __init__(self, directory: str, name: str, max_bytes: int = 64 << 20):
    os.makedirs(directory, exist_ok=True)
    self.path = os.path.join(directory, f"{name}.jsonl")
    self.max_bytes = max_bytes
    self._lock = threading.Lock()

  def files(self) -> list[str]:
    """Rotated files in order, then the live one."""
    rotated = glob.glob(glob.escape(self.path) + ".*")
    numbered = sorted((int(m.group(1)), p) for p in rotated if (m := re.search(r"\.(\d+)$", p)))
    return [p for _, p in numbered] + ([self.path] if os.path.exists(self.path) else [])

  def records(self):
    for path in self.files():
      with open(path, encoding="utf-8") as f:
        for line in f:
          if line.strip():
            try:
              yield json.loads(line)
            except json.JSONDecodeError:  # a line cut by a crash mid-write: the rest is intact
              continue

  def append(self, record: dict) -> None:
    line = json.dumps(record, ensure_ascii=False) + "\n"
    with self._lock:
      if os.path.exists(self.path) and os.path.getsize(self.path) + len(line) > self.max_bytes:
        self._rotate()
      with open(self.path, "a", encoding="utf-8") as f:
        f.write(line)
        f.flush()
        os.fsync(f.fileno())

  def _rotate(self) -> None:
    taken = [int(m.group(1)) for p in glob.glob(glob.escape(self.path) + ".*")
             if (m := re.search(r"\.(\d+)$", p))]
    os.rename(self.path, f"{self.path}.{max(taken, default=0) + 1}")
