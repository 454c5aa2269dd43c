"""cgroup v2 on a real cgroup2 hierarchy, mounted for the test (this also works on a v1 host, where
the v2 hierarchy exists with whichever controllers v1 leaves free)."""
from __future__ import annotations

import os
import subprocess
import uuid

import pytest

from mlbd.grading import cgroups

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounts a cgroup2 hierarchy: run as root")


@pytest.fixture
def cgroup2(tmp_path):
    mnt = tmp_path / "cg2"
    mnt.mkdir()
    proc = subprocess.run(["mount", "-t", "cgroup2", "none", str(mnt)], capture_output=True, text=True)
    if proc.returncode:
        pytest.skip(f"cannot mount cgroup2 here: {proc.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_a_container_root_with_processes_gets_its_controllers(cgroup2):
    """Inside a container the visible root holds processes; enabling controllers for children then
    fails with EBUSY unless those processes move to a leaf first."""
    available = (cgroup2 / "cgroup.controllers").read_text().split()
    if not available:
        pytest.skip("no cgroup v2 controller is free on this host")
    ctl = ("pids" if "pids" in available else available[0],)
    cgroups.enable_controllers(cgroup2, ctl)          # the true root: no processes rule
    box = cgroup2 / f"mlbd-test-{uuid.uuid4().hex[:8]}"   # stands in for a container's cgroup
    box.mkdir()
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        (box / "cgroup.procs").write_text(str(sleeper.pid))
        with pytest.raises(OSError):               # what the grader met before the fix
            (box / "cgroup.subtree_control").write_text(f"+{ctl[0]}")
        cgroups.enable_controllers(box, ctl)
        assert ctl[0] in (box / "cgroup.subtree_control").read_text().split()
        assert (box / "cgroup.procs").read_text().split() == []
        assert (box / "mlbd-init" / "cgroup.procs").read_text().split() == [str(sleeper.pid)]
        cgroups.enable_controllers(box, ctl)           # a second call changes nothing
    finally:
        sleeper.kill()
        sleeper.wait()
        for d in (box / "mlbd-init", box):
            if d.exists():
                d.rmdir()
