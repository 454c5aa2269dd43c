"""Memory bombs in a user server end in seconds: the hub watches each server's cgroup and kills the
largest process in it (a kernel, never the server) once the cgroup is stuck thrashing at its limit.

With anonymous memory filling the limit and no swap, the kernel's OOM killer fires only when
reclaim stops making progress; on some kernels reclaim keeps evicting and re-reading the file pages
of Python's libraries (the server's and the kernel's) for minutes first. The watcher looks at the
cgroup every ``interval`` seconds (``MemoryState``: two small reads, memory.stat only near the
limit) and calls it stuck when its unreclaimable memory (anonymous, shmem, swap) fills the limit
but for ``margin`` and its stall counter (charges failed at the limit, pages refaulted after
reclaim) grew at every look for ``grace`` seconds. A server reading big files through the page
cache sits at its limit too, but with little anonymous memory, and is left alone. The watcher
then SIGKILLs the cgroup's largest process other than the server and appends ``<pid> <rss>
<unix time>`` to the server's kill record, which the server reads to tell the student why their
kernel restarted (mlbd.hub.kernels), as it reads the cgroup's own ``oom_kill`` count
(``oom_kills``) for the kernels the OOM killer got first.
"""
from __future__ import annotations

import asyncio
import logging
import os
import signal
import stat
import time
from dataclasses import dataclass
from pathlib import Path

from mlbd.grading import cgroups

MiB = 2**20
UNLIMITED = 2**62  # v1 reports "no limit" as a huge number, v2 as "max"


def _int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    if text == "max":
        return UNLIMITED
    try:
        return int(text)
    except ValueError:
        return None


def _keyed(path: Path) -> dict[str, int]:
    """``key value`` lines (memory.stat, memory.events, v1 memory.oom_control)."""
    out = {}
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            out[parts[0]] = int(parts[1])
    return out


@dataclass(frozen=True)
class MemoryState:
    """One reading of a memory cgroup: its limit, what it uses, what it cannot give back without
    swap, and a counter that grows while it thrashes at the limit (charges that hit the limit, v1
    ``memory.failcnt``, v2 ``memory.events`` ``max``, plus pages refaulted soon after reclaim,
    ``workingset_refault_*``: some kernels do not count failed charges on v1)."""
    limit: int
    usage: int
    unreclaimable: int = 0
    stalls: int = 0

    @classmethod
    def read(cls, version: int, d: Path) -> MemoryState | None:
        """Limit and usage (two small reads); None when the cgroup is gone or has no limit."""
        if version == 1:
            limits = [v for v in (_int(d / "memory.limit_in_bytes"), _int(d / "memory.memsw.limit_in_bytes"))
                      if v is not None]
            # memsw (memory + swap) when the kernel accounts swap, as the spawner limits both
            usage = _int(d / "memory.memsw.usage_in_bytes")
            if usage is None:
                usage = _int(d / "memory.usage_in_bytes")
        else:
            limits = [v for v in (_int(d / "memory.max"),) if v is not None]
            usage = _int(d / "memory.current")
        if not limits or usage is None or min(limits) >= UNLIMITED:
            return None
        return cls(min(limits), usage)

    def with_stat(self, version: int, d: Path) -> MemoryState:
        """This reading plus unreclaimable memory and stalls (memory.stat: read only near the limit)."""
        s = _keyed(d / "memory.stat")
        p = "total_" if version == 1 else ""
        refaults = s.get(f"{p}workingset_refault_file", 0) + s.get(f"{p}workingset_refault_anon", 0)
        if version == 1:
            held = s.get("total_rss", 0) + s.get("total_shmem", 0) + s.get("total_swap", 0)
            failures = sum(_int(d / f) or 0 for f in ("memory.failcnt", "memory.memsw.failcnt"))
        else:
            held = s.get("anon", 0) + s.get("shmem", 0) + (_int(d / "memory.swap.current") or 0)
            failures = _keyed(d / "memory.events").get("max", 0)
        return MemoryState(self.limit, self.usage, held, failures + refaults)


def oom_kills(version: int, d: Path) -> int:
    """How many processes the kernel's OOM killer has killed in this memory cgroup."""
    return _keyed(d / ("memory.oom_control" if version == 1 else "memory.events")).get("oom_kill", 0)


def read_kills(record: Path | str | None) -> list[int]:
    """The pids the hub's watcher killed, from a server's kill record (oldest first)."""
    if not record:
        return []
    try:
        lines = Path(record).read_text().splitlines()
    except OSError:
        return []
    return [int(line.split()[0]) for line in lines if line.split() and line.split()[0].isdigit()]


def record_dir(path: str | Path) -> Path | None:
    """The directory of the kill records, made by this (root) process: 0755 and its own, never a
    directory or link someone else placed there first; None when it cannot be."""
    d = Path(path)
    try:
        d.mkdir(mode=0o755, parents=True, exist_ok=True)
        st = os.lstat(d)
    except OSError:
        return None
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o022:
        return None
    return d


def append_record(record: Path, pid: int, rss: int) -> None:
    fd = os.open(record, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o644)
    try:
        os.write(fd, f"{pid} {rss} {int(time.time())}\n".encode())
    finally:
        os.close(fd)


class MemoryWatch:
    """Watches one server's memory cgroup from the hub; ``check`` is one look, ``run`` looks every
    ``interval`` seconds until cancelled."""

    def __init__(self, version: int, memory_dir: Path, procs_dirs: list[Path], server_pid: int,
                 record: Path | None = None, label: str = "", log: logging.Logger | None = None,
                 interval: float = 0.5, grace: float = 2.0, headroom: int | None = None):
        self.version, self.dir, self.procs_dirs = version, Path(memory_dir), [Path(d) for d in procs_dirs]
        self.server_pid, self.record, self.label = server_pid, record, label
        self.log = log or logging.getLogger(__name__)
        self.interval, self.grace, self.headroom = interval, grace, headroom
        self._stalls: int | None = None
        self._stuck_since: float | None = None

    def margin(self, limit: int) -> int:
        """How far below the limit unreclaimable memory counts as full: a tenth of the limit,
        between 16 and 128 MiB (what the server's and the kernel's code needs in the page cache)."""
        if self.headroom is not None:
            return self.headroom
        return min(max(limit // 10, 16 * MiB), 128 * MiB)

    def stuck(self, now: float) -> MemoryState | None:
        """The cgroup's state once it has been stuck at its limit for ``grace`` seconds, else None:
        unreclaimable memory within ``margin`` of the limit and stalls growing at every look."""
        state = MemoryState.read(self.version, self.dir)
        if state is None or state.usage < state.limit - self.margin(state.limit):
            self._stalls = self._stuck_since = None
            return None
        state = state.with_stat(self.version, self.dir)
        stalling = self._stalls is not None and state.stalls > self._stalls
        self._stalls = state.stalls
        if not (stalling and state.unreclaimable >= state.limit - self.margin(state.limit)):
            self._stuck_since = None
            return None
        if self._stuck_since is None:
            self._stuck_since = now
        return state if now - self._stuck_since >= self.grace else None

    def victim(self) -> tuple[int, int, str] | None:
        """(pid, rss, name) of the largest process in the cgroup other than the server."""
        import psutil

        best = None
        for pid in set(cgroups.Cgroup(self.version, self.procs_dirs).pids()) - {self.server_pid}:
            try:
                p = psutil.Process(pid)
                rss, name = p.memory_info().rss, p.name()
            except psutil.Error:
                continue
            if best is None or rss > best[1]:
                best = (pid, rss, name)
        return best

    def check(self, now: float | None = None) -> int | None:
        """Kill the largest non-server process if the cgroup is stuck; its pid, or None."""
        state = self.stuck(time.monotonic() if now is None else now)
        if state is None:
            return None
        self._stuck_since = None
        found = self.victim()
        if found is None:
            return None  # the server alone fills its limit: the kernel's OOM killer decides
        pid, rss, name = found
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            return None
        self.log.warning("%s: killed process %d (%s, %d MiB) stuck at the %d MiB memory limit", self.label,
                         pid, name, rss // MiB, state.limit // MiB)
        if self.record is not None:
            try:
                append_record(self.record, pid, rss)
            except OSError as exc:
                self.log.warning("%s: cannot record the kill in %s: %s", self.label, self.record, exc)
        return pid

    async def run(self) -> None:
        while True:
            try:
                self.check()
            except Exception:  # a watcher that dies leaves the server to the slow OOM killer: keep going
                self.log.exception("%s: memory watch failed", self.label)
            await asyncio.sleep(self.interval)
