"""What /proc says about a process: the few facts the hub launcher and the grading zygote need."""
from __future__ import annotations

from pathlib import Path


def _stat(pid: int) -> list[str]:
    """Fields of /proc/PID/stat after the command name (which may hold spaces and parentheses)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return []


def cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie, exited but not yet reaped, counts as gone)."""
    fields = _stat(pid)
    return bool(fields) and fields[0] != "Z"


def start_time(pid: int) -> str:
    """Clock ticks after boot when ``pid`` started: with the pid, names a process even after reuse."""
    fields = _stat(pid)
    return fields[19] if len(fields) > 19 else ""


def ns_pids(pid: int) -> list[int]:
    """``pid`` as each pid namespace sees it, outermost first (one entry outside any namespace)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("NSpid:"):
                return [int(x) for x in line.split()[1:]]
    except (OSError, ValueError):
        pass
    return []


def children(pid: int) -> list[int]:
    """Direct children of ``pid``."""
    try:
        tasks = Path(f"/proc/{pid}/task").iterdir()
        return [int(c) for t in tasks for c in (t / "children").read_text().split()]
    except (OSError, ValueError):   # no CONFIG_PROC_CHILDREN (or the process left): scan every process
        out = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                fields = _stat(int(entry.name))
                if len(fields) > 1 and int(fields[1]) == pid:
                    out.append(int(entry.name))
        return out
