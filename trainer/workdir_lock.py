"""One run per workdir: WORKDIR/.lock, held with flock(2) while a run is alive.

The kernel drops an flock when its process dies, even by kill -9, so the
lock never outlives its run; the pid and host written inside serve only to
name the holder in a refusal. A file that still names a holder when the lock
is free was left by a run that died: it is taken over, and said so. Where the
filesystem has no flock (some network filesystems), the written pid is all
there is: a live pid on this host refuses, a dead one is taken over.
"""

import contextlib
import errno
import fcntl
import json
import os
import socket

from errors import UserError

NAME = ".lock"


def _read_holder(fd: int) -> dict:
  try:
    holder = json.loads(os.pread(fd, 4096, 0) or b"{}")
  except ValueError:
    return {}
  return holder if isinstance(holder, dict) else {}


def _pid_alive(pid) -> bool:
  try:
    os.kill(int(pid), 0)
  except (ProcessLookupError, ValueError, TypeError):
    return False
  except PermissionError:  # alive, owned by another user
    return True
  return True


def _on_this_host(holder: dict) -> bool:
  return holder.get("host") == socket.gethostname()


def _describe(holder: dict) -> str:
  if not holder:
    return "another process"
  return f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')}"


def _describe_holding(holder: dict) -> str:
  """The holder of a lock we could not take; a dead pid means a child it started still holds it."""
  text = _describe(holder)
  if holder and _on_this_host(holder) and not _pid_alive(holder.get("pid")):
    text += " (no longer running; a process it started may still hold the lock)"
  return text


class WorkdirLock:
  """`acquire()` (or `with WorkdirLock(workdir):`) refuses a second run on `workdir` until `release()`.

  A refusal is a UserError naming the holder's pid and host. `enabled=False`
  (processes other than 0 of a multi-host run) does nothing; `report` gets
  the one line said when a stale lock is taken over.
  """

  def __init__(self, workdir: str, enabled: bool = True, report=print):
    self.path = os.path.join(workdir, NAME)
    self.workdir, self.enabled, self.report = workdir, enabled, report
    self._fd = None

  def __enter__(self):
    self.acquire()
    return self

  def __exit__(self, *exc):
    self.release()

  def acquire(self) -> None:
    if not self.enabled or self._fd is not None:
      return
    os.makedirs(self.workdir, exist_ok=True)
    fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)  # the umask decides, as for any file
    try:
      previous = self._lock(fd)
    except BaseException:
      os.close(fd)
      raise
    if previous:
      self.report(f"took over the stale lock {self.path} left by {_describe(previous)}, which no longer "
                  f"holds it")
    mine = json.dumps({"pid": os.getpid(), "host": socket.gethostname()}).encode()
    os.ftruncate(fd, 0)
    os.pwrite(fd, mine, 0)
    self._fd = fd

  def _lock(self, fd: int) -> dict:
    """Locks `fd` or raises UserError naming the holder; returns what a dead holder left in the file."""
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      holder = _describe_holding(_read_holder(fd))
      raise UserError(f"{self.workdir} is in use by {holder} (lock {self.path}); wait for that run to end "
                      f"or stop it") from None
    except OSError as e:
      if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
        raise
      holder = _read_holder(fd)  # no flock on this filesystem: trust a live pid on this host
      if holder and not (_on_this_host(holder) and not _pid_alive(holder.get("pid"))):
        raise UserError(f"{self.workdir} is in use by {_describe(holder)} (lock {self.path}; this "
                        f"filesystem has no flock, so if that run is gone, delete the file)") from None
    return _read_holder(fd)

  def release(self) -> None:
    if self._fd is not None:
      os.ftruncate(self._fd, 0)  # an empty file: nobody to name, nothing stale
      with contextlib.suppress(OSError):  # also what a filesystem without flock says
        fcntl.flock(self._fd, fcntl.LOCK_UN)  # for children that inherited the descriptor too
      os.close(self._fd)
      self._fd = None
