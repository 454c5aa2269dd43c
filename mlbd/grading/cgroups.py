"""Per-kernel cgroups: memory and pids limits on cgroup v1 (split hierarchies) and v2 (unified).

A ``Cgroup`` is a set of leaf directories (one per v1 controller, or one v2 directory). The
sandbox writes its own pid into every ``cgroup.procs`` file *before* it execs bubblewrap, so the
kernel and everything it forks are inside the limits from their first instruction.
"""
from __future__ import annotations

import errno
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")


class CgroupUnavailable(RuntimeError):
    """No writable cgroup hierarchy with the memory and pids controllers."""


def _own_path(controller: str | None) -> str:
    """This process's cgroup path for a v1 controller (or the v2 path when ``controller`` is None)."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return "/"
    for line in lines:
        _, ctrls, path = line.split(":", 2)
        if controller is None and ctrls == "":
            return path
        if controller and controller in ctrls.split(","):
            return path
    return "/"


def version() -> int:
    """1 when the v1 memory controller is mounted, 2 for a unified hierarchy, 0 for neither."""
    if (ROOT / "memory" / "memory.limit_in_bytes").exists():
        return 1
    if (ROOT / "cgroup.controllers").exists():
        return 2
    return 0


@dataclass
class Cgroup:
    version: int
    dirs: list[Path] = field(default_factory=list)

    @property
    def procs_files(self) -> list[str]:
        return [str(d / "cgroup.procs") for d in self.dirs]

    def _read(self, name: str) -> str:
        for d in self.dirs:
            p = d / name
            if p.exists():
                try:
                    return p.read_text()
                except OSError:
                    return ""
        return ""

    def events(self) -> dict[str, bool]:
        """Which limits were hit: ``{"memory": bool, "pids": bool}``."""
        def count(text: str, key: str) -> int:
            for line in text.splitlines():
                parts = line.split()
                if len(parts) == 2 and parts[0] == key:
                    return int(parts[1])
            return 0

        if self.version == 1:
            oom = count(self._read("memory.oom_control"), "oom_kill") > 0
        else:
            oom = count(self._read("memory.events"), "oom_kill") > 0
        return {"memory": oom, "pids": count(self._read("pids.events"), "max") > 0}

    def add(self, pid: int) -> None:
        """Move a process in (a warm kernel, before it is released to run)."""
        for f in self.procs_files:
            Path(f).write_text(str(pid))

    def pids(self) -> list[int]:
        out = set()
        for d in self.dirs:
            try:
                out.update(int(x) for x in (d / "cgroup.procs").read_text().split())
            except (OSError, ValueError):
                pass
        return sorted(out)

    def destroy(self) -> bool:
        """Kill whatever is left inside (fork loops included) and remove the directories. Whether
        nothing was left running (a process is only ever moved out by root)."""
        if self.version == 2 and self.dirs and (self.dirs[0] / "cgroup.kill").exists():
            try:
                (self.dirs[0] / "cgroup.kill").write_text("1")
            except OSError:
                pass
        empty = False
        for _ in range(50):
            left = self.pids()
            if not left:
                empty = True
                break
            for pid in left:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.02)
        for d in self.dirs:
            for _ in range(50):
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.02)
        return empty


_swept: set[Path] = set()


def sweep(parent: Path, min_age: float = 300.0) -> None:
    """Remove empty ``mlbd-*`` cgroups left by a grader killed with ``kill -9`` (rmdir refuses a
    cgroup that still has processes; the age keeps away from one another grader just made)."""
    if parent in _swept:
        return
    _swept.add(parent)
    now = time.time()
    for d in parent.glob("mlbd-*"):
        try:
            if d.is_dir() and now - d.stat().st_mtime > min_age and not (d / "cgroup.procs").read_text().strip():
                d.rmdir()
        except OSError:
            pass


LIMITED = ("memory", "pids")


def enable_controllers(parent: Path, controllers=LIMITED) -> None:
    """Give ``parent``'s children the controllers (cgroup v2).

    v2 refuses that (EBUSY) while ``parent`` itself holds processes, which only the true root may.
    Inside a container with its own cgroup namespace (a grader pod on Kubernetes), the visible root
    is the container's cgroup and holds the container's processes: they move to a leaf first, as
    docker-in-docker's entrypoint does."""
    control = parent / "cgroup.subtree_control"
    if set(controllers) <= set(control.read_text().split()):
        return
    wanted = " ".join(f"+{c}" for c in controllers)
    try:
        control.write_text(wanted)
        return
    except OSError as exc:
        if exc.errno != errno.EBUSY:
            raise
    leaf = parent / "mlbd-init"
    leaf.mkdir(exist_ok=True)
    for pid in (parent / "cgroup.procs").read_text().split():
        try:
            (leaf / "cgroup.procs").write_text(pid)
        except OSError:
            pass      # exited meanwhile
    control.write_text(wanted)


CPU_PERIOD_US = 100_000


def create(name: str, memory_bytes: int, pids: int, cpus: float | None = None) -> Cgroup:
    """A fresh cgroup with the limits set, nested under this process's own cgroup where possible.
    ``cpus`` (optional) caps CPU time at that many CPUs (CFS quota; the hub's user servers)."""
    v = version()
    if v == 1:
        dirs = []
        try:
            for ctrl in ("memory", "pids") + (("cpu",) if cpus else ()):
                base = ROOT / ctrl
                parent = base / _own_path(ctrl).lstrip("/")
                if not parent.is_dir():
                    parent = base
                sweep(parent)
                d = parent / name
                d.mkdir(exist_ok=True)
                dirs.append(d)
                if ctrl == "memory":
                    (d / "memory.limit_in_bytes").write_text(str(memory_bytes))
                    sw = d / "memory.memsw.limit_in_bytes"
                    if sw.exists():
                        try:
                            sw.write_text(str(memory_bytes))
                        except OSError:
                            pass
                    try:
                        (d / "memory.swappiness").write_text("0")
                    except OSError:
                        pass
                elif ctrl == "pids":
                    (d / "pids.max").write_text(str(pids))
                else:
                    (d / "cpu.cfs_period_us").write_text(str(CPU_PERIOD_US))
                    (d / "cpu.cfs_quota_us").write_text(str(max(1000, int(cpus * CPU_PERIOD_US))))
        except OSError as exc:
            Cgroup(1, dirs).destroy()
            raise CgroupUnavailable(f"cgroup v1 not writable: {exc}") from exc
        return Cgroup(1, dirs)
    if v == 2:
        base = ROOT / "mlbd"
        try:
            ctrls = (ROOT / "cgroup.controllers").read_text().split()
            wanted = LIMITED + (("cpu",) if cpus else ())
            if not set(wanted) <= set(ctrls):
                raise CgroupUnavailable(f"cgroup v2 without the {' and '.join(wanted)} controllers")
            enable_controllers(ROOT, wanted)
            base.mkdir(exist_ok=True)
            enable_controllers(base, wanted)
            sweep(base)
            d = base / name
            d.mkdir(exist_ok=True)
            (d / "memory.max").write_text(str(memory_bytes))
            if (d / "memory.swap.max").exists():
                (d / "memory.swap.max").write_text("0")
            (d / "pids.max").write_text(str(pids))
            if cpus:
                (d / "cpu.max").write_text(f"{max(1000, int(cpus * CPU_PERIOD_US))} {CPU_PERIOD_US}")
        except OSError as exc:
            raise CgroupUnavailable(f"cgroup v2 not writable: {exc}") from exc
        return Cgroup(2, [d])
    raise CgroupUnavailable("no cgroup hierarchy mounted at /sys/fs/cgroup")
