"""A uid of its own (and the gid of the same number) for every kernel that runs at the same time.

Kernels are kept apart by their namespaces already; a uid per kernel is the second wall: should a
kernel reach another's processes or files anyway, it may neither signal nor read them.

A lease is an exclusive, non-blocking ``flock`` on ``<dir>/<uid>`` (``/run/mlbd-uids``, root's
only, or ``mlbd-uids`` under the sandbox's runtime dir where ``/run`` is not writable). The lock
belongs to the open file, so separate ``mlbd grade`` runs, Dask worker processes and the threads of
one worker never hold the same uid at once, and a grader that dies (kill -9) frees its uids with
it. The lock files stay (removing one would race with a process locking it).

``Lease.release`` kills whatever still runs as the uid (a scan of /proc, unless the caller knows
its cgroup was emptied) and empties the lock file: a lock file that is not empty when leased was
held by a grader that died, so what its kernel left is killed then.
"""
from __future__ import annotations

import fcntl
import itertools
import os
import random
import select
import signal
import stat
import tempfile
import threading
import time
import warnings
from pathlib import Path

import psutil

RUN_DIR = Path("/run/mlbd-uids")


class UidsExhausted(RuntimeError):
    """Every uid of the range is held by a running kernel."""


def _trusted_dir(path: Path) -> Path:
    """``path``, made if missing: a real directory of this user that nobody else may write."""
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o022:
        raise RuntimeError(f"{path} holds the sandbox's uid leases but is not a directory of uid {os.geteuid()} "
                           "that only it may write: remove it (or fix its owner and mode 0700)")
    return path


def lock_dir(runtime_dir: str = "") -> Path:
    """Where the lock files live: the same place for every grading process of this host."""
    if os.access(RUN_DIR.parent, os.W_OK):
        return _trusted_dir(RUN_DIR)
    return _trusted_dir(Path(runtime_dir or tempfile.gettempdir()) / "mlbd-uids")


def _runs_as(proc: psutil.Process | int, uid: int) -> bool:
    """Whether ``proc`` (or that pid) is live (not a zombie) and runs as ``uid`` (real, effective or saved)."""
    try:
        proc = proc if isinstance(proc, psutil.Process) else psutil.Process(proc)
        return proc.status() not in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD) and uid in proc.uids()
    except psutil.Error:
        return False


def processes_of(uid: int) -> list[int]:
    """Pids of the live processes that run as ``uid`` (real, effective or saved)."""
    return [p.pid for p in psutil.process_iter() if _runs_as(p, uid)]


def kill_all(uid: int, timeout: float = 5.0) -> bool:
    """SIGKILL every process of ``uid`` (through a pidfd, so a recycled pid is never hit) and wait
    until they are gone; False when some still run after ``timeout``."""
    end = time.monotonic() + timeout
    for attempt in itertools.count():
        pids = processes_of(uid)
        if not pids:
            return True
        if attempt and time.monotonic() >= end:
            return False
        fds = []
        try:
            for pid in pids:
                try:
                    fd = os.pidfd_open(pid)
                except OSError:
                    continue
                fds.append(fd)
                if _runs_as(pid, uid):   # the pid is pinned now: still a process of the uid?
                    try:
                        signal.pidfd_send_signal(fd, signal.SIGKILL)
                    except OSError:
                        pass
            select.select(fds, [], [], min(0.5, max(0.0, end - time.monotonic()))) if fds else time.sleep(0.01)
        finally:
            for fd in fds:
                os.close(fd)
    return False


class Lease:
    """One uid (and the gid of the same number), held until ``release``."""

    def __init__(self, uid: int, fd: int, path: Path):
        self.uid = self.gid = uid
        self.path = path
        self._fd = fd
        self._lock = threading.Lock()

    @property
    def held(self) -> bool:
        return self._fd >= 0

    def release(self, timeout: float = 5.0, scan: bool = True) -> None:
        """Kill what still runs as the uid, then free it (idempotent; from any thread). ``scan=False``:
        the caller knows nothing of the uid runs (its cgroup was emptied), skip the scan of /proc. A uid
        whose processes will not die within ``timeout`` stays held, tried again at the next ``lease``."""
        with self._lock:
            if self._fd < 0:
                return
            if scan and not kill_all(self.uid, timeout):
                _hold_back(self)
                return
            os.ftruncate(self._fd, 0)    # released cleanly: the next holder need not look for leftovers
            os.close(self._fd)
            self._fd = -1

    def __repr__(self) -> str:
        return f"<uid lease {self.uid}{'' if self.held else ' (released)'}>"


_stuck: list[Lease] = []         # held because their processes would not die
_stuck_lock = threading.Lock()


def _hold_back(held: Lease) -> None:
    if held not in _stuck:
        _stuck.append(held)             # list.append is atomic; lease() retries them under _stuck_lock
        warnings.warn(f"processes of sandbox uid {held.uid} survive SIGKILL: the uid is not reused until they "
                      "are gone", RuntimeWarning, stacklevel=3)

_next = random.randrange(1 << 30)      # where this process starts looking (spreads the processes out)


def lease(first: int, count: int, runtime_dir: str = "") -> Lease:
    """A uid in ``[first, first + count)`` that no other kernel on this host holds now."""
    global _next
    with _stuck_lock:
        for held in list(_stuck):
            held.release(timeout=0)
            if not held.held:
                _stuck.remove(held)
    directory = lock_dir(runtime_dir)
    start = _next
    for i in range(count):
        uid = first + (start + i) % count
        path = directory / str(uid)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        except BaseException:
            os.close(fd)
            raise
        _next = start + i + 1
        got = Lease(uid, fd, path)
        # not empty: its last holder died holding it (kill -9), and may have left its kernel's processes
        if not os.pread(fd, 1, 0) or kill_all(uid):
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            return got
        _hold_back(got)
    raise UidsExhausted(f"all {count} sandbox uids ({first}..{first + count - 1}) are held by running kernels: "
                        "raise c.Sandbox.job_uids or run fewer kernels at once")
