"""Fast tier: the hub's memory watch (mlbd.hub.memwatch) on fake cgroup v1 and v2 files, killing
a real child process, and the notice a restarted kernel shows (mlbd.hub.kernels)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mlbd.hub import memwatch
from mlbd.hub.kernels import memory_notice
from mlbd.hub.memwatch import MemoryState, MemoryWatch, MiB

pytestmark = pytest.mark.unit

LIMIT = 384 * MiB


def v1_files(d: Path, usage: int, rss: int, failcnt: int = 0, refaults: int = 0, cache: int = 0) -> None:
    d.mkdir(exist_ok=True)
    (d / "memory.limit_in_bytes").write_text(f"{LIMIT}\n")
    (d / "memory.memsw.limit_in_bytes").write_text(f"{LIMIT}\n")
    (d / "memory.memsw.usage_in_bytes").write_text(f"{usage}\n")
    (d / "memory.failcnt").write_text(f"{failcnt}\n")
    (d / "memory.stat").write_text(f"cache {cache}\nrss 1\ntotal_cache {cache}\ntotal_rss {rss}\ntotal_shmem 0\n"
                                   f"total_swap 0\ntotal_workingset_refault_file {refaults}\n")
    (d / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n")


def v2_files(d: Path, usage: int, anon: int, events_max: int = 0, refaults: int = 0, file: int = 0) -> None:
    d.mkdir(exist_ok=True)
    (d / "memory.max").write_text(f"{LIMIT}\n")
    (d / "memory.current").write_text(f"{usage}\n")
    (d / "memory.swap.current").write_text("0\n")
    (d / "memory.events").write_text(f"low 0\nhigh 0\nmax {events_max}\noom 1\noom_kill 1\n")
    (d / "memory.stat").write_text(f"anon {anon}\nfile {file}\nshmem 0\nworkingset_refault_anon 0\n"
                                   f"workingset_refault_file {refaults}\n")


@pytest.mark.parametrize("version", [1, 2])
def test_reading_a_cgroup(tmp_path, version):
    (v1_files if version == 1 else v2_files)(tmp_path, LIMIT - MiB, 300 * MiB, 5, 7)
    state = MemoryState.read(version, tmp_path)
    assert (state.limit, state.usage) == (LIMIT, LIMIT - MiB)
    full = state.with_stat(version, tmp_path)
    assert full.unreclaimable == 300 * MiB and full.stalls == 12
    assert memwatch.oom_kills(version, tmp_path) == (2 if version == 1 else 1)
    (tmp_path / ("memory.max" if version == 2 else "memory.limit_in_bytes")).write_text("max\n" if version == 2 else
                                                                                       f"{2**63 - 4096}\n")
    if version == 2:
        assert MemoryState.read(version, tmp_path) is None  # no limit: nothing to watch
    assert MemoryState.read(version, tmp_path / "gone") is None


@pytest.mark.parametrize("version", [1, 2])
def test_stuck_only_when_thrashing_with_unreclaimable_memory_at_the_limit(tmp_path, version):
    files = v1_files if version == 1 else v2_files
    w = MemoryWatch(version, tmp_path, [tmp_path], server_pid=1, interval=0.5, grace=2.0)
    # streaming files through the page cache: at the limit and stalling, but reclaimable
    for t in range(10):
        files(tmp_path, LIMIT, 60 * MiB, t, t)
        assert w.stuck(t * 0.5) is None
    # a bomb: anonymous memory at the limit, stalls growing at every look; stuck after `grace`
    seen = []
    for t in range(10, 20):
        files(tmp_path, LIMIT, LIMIT - 8 * MiB, t, 100 * t)
        seen.append(w.stuck(t * 0.5) is not None)
    assert seen.index(True) == 4 and all(seen[4:])  # stalling from the look at 5 s: stuck at 7 s
    # the same memory held without stalling (a big array, no more allocation): left alone
    files(tmp_path, LIMIT, LIMIT - 8 * MiB, 19, 1900)  # the counters of the last look
    for t in range(20, 30):
        assert w.stuck(t * 0.5) is None
    # below the limit: not even memory.stat is read
    files(tmp_path, 100 * MiB, 90 * MiB, 30, 3000)
    (tmp_path / "memory.stat").unlink()
    assert w.stuck(15.0) is None


def test_the_largest_process_but_the_server_is_killed_and_recorded(tmp_path):
    v1_files(tmp_path, LIMIT, LIMIT - 8 * MiB)
    server = subprocess.Popen([sys.executable, "-c", "import time; b = b'x' * 64 * 2**20; time.sleep(60)"])
    small = subprocess.Popen(["sleep", "60"])
    kernel = subprocess.Popen([sys.executable, "-c", "import time; b = b'x' * 32 * 2**20; time.sleep(60)"])
    try:
        (tmp_path / "cgroup.procs").write_text(f"{server.pid}\n{small.pid}\n{kernel.pid}\n")
        record = tmp_path / "kills"
        w = MemoryWatch(1, tmp_path, [tmp_path], server.pid, record=record, grace=1.0)
        time.sleep(1)  # the children touched their memory
        assert w.victim()[0] == kernel.pid
        killed = None
        for t in range(5):
            v1_files(tmp_path, LIMIT, LIMIT - 8 * MiB, t, t)
            killed = w.check(float(t))
            if killed:
                break
        assert (killed, t) == (kernel.pid, 2)  # stalling from the look at 1 s, 1 s of grace and kernel.wait(timeout=10) == -signal.SIGKILL
        assert server.poll() is None and small.poll() is None
        assert memwatch.read_kills(record) == [kernel.pid]
        assert memwatch.read_kills(tmp_path / "none") == [] and memwatch.read_kills(None) == []
    finally:
        for p in (server, small, kernel):
            p.kill()
            p.wait()


def test_the_record_directory_is_refused_when_someone_else_could_write_it(tmp_path):
    assert memwatch.record_dir(tmp_path / "a" / "b") == tmp_path / "a" / "b"
    (tmp_path / "open").mkdir()
    os.chmod(tmp_path / "open", 0o777)
    assert memwatch.record_dir(tmp_path / "open") is None
    (tmp_path / "link").symlink_to(tmp_path / "a")
    assert memwatch.record_dir(tmp_path / "link") is None


def test_the_notice_names_the_limit_and_the_profile():
    text = memory_notice({"MEM_LIMIT": str(LIMIT), "MLBD_PROFILE_NAME": "CPU (standard)"})
    assert text == ("mlbd: your previous kernel was stopped because it used more than this server's 384 MiB "
                    "memory limit (profile 'CPU (standard)'). Variables defined before are gone: re-run the "
                    "cells you need.")
    assert "this server's memory limit." in memory_notice({})
