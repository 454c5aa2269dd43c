"""Fast tier: a uid of its own per running kernel (issue 13, point 3): the leases of
``mlbd.grading.uids`` and the sandbox settings that use them (no kernel)."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import pytest

from mlbd.grading import uids, zygote
from mlbd.grading.sandbox import Sandbox, _uid_range_problem

pytestmark = pytest.mark.unit

FIRST = 3_000_000_000 + os.getpid() % 1000 * 1000     # no process runs as these


@pytest.fixture(autouse=True)
def locks(tmp_path, monkeypatch):
    """Leases of these tests never touch the real /run/mlbd-uids of a grader on this host."""
    d = tmp_path / "locks"
    monkeypatch.setattr(uids, "RUN_DIR", d)
    return d


def test_two_leases_in_one_process_get_different_uids():
    a, b = uids.lease(FIRST, 4), uids.lease(FIRST, 4)
    try:
        assert a.uid != b.uid and a.gid == a.uid and b.gid == b.uid
        assert {a.uid, b.uid} <= set(range(FIRST, FIRST + 4))
    finally:
        a.release()
        b.release()


HOLDER = textwrap.dedent('''
    import fcntl, os, sys, time
    fds = []
    for uid in sys.argv[2:]:
        fd = os.open(os.path.join(sys.argv[1], uid), os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fds.append(fd)
    print("held", flush=True)
    time.sleep(60)
''')


def test_a_uid_another_process_holds_is_skipped(locks):
    locks.mkdir(mode=0o700)
    held = [FIRST, FIRST + 1, FIRST + 3]
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(locks), *map(str, held)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        got = uids.lease(FIRST, 4)
        assert got.uid == FIRST + 2
        with pytest.raises(uids.UidsExhausted):
            uids.lease(FIRST, 4)
        proc.kill()
        proc.wait()
        again = uids.lease(FIRST, 4)            # the holder died: its locks went with it
        assert again.uid in held
        again.release()
        got.release()
    finally:
        proc.kill()
        proc.wait()


def test_an_exhausted_range_says_so_and_a_released_uid_is_leased_again():
    a, b = uids.lease(FIRST, 2), uids.lease(FIRST, 2)
    with pytest.raises(uids.UidsExhausted, match=r"all 2 sandbox uids .*c\.Sandbox\.job_uids"):
        uids.lease(FIRST, 2)
    a.release()
    a.release()                                  # idempotent
    assert not a.held and b.held
    c = uids.lease(FIRST, 2)
    assert c.uid == a.uid
    b.release()
    c.release()


def test_the_lock_directory_must_belong_to_the_grader(locks):
    locks.mkdir(mode=0o777)
    os.chmod(locks, 0o777)
    with pytest.raises(RuntimeError, match="only it may write"):
        uids.lease(FIRST, 2)


@pytest.mark.skipif(os.geteuid() != 0, reason="runs a process as another uid")
def test_release_kills_what_still_runs_as_the_uid_and_a_lease_kills_what_a_dead_grader_left():
    lease = uids.lease(FIRST, 1)

    def start():
        proc = subprocess.Popen(["sleep", "60"], user=lease.uid, group=lease.gid, extra_groups=[])
        for _ in range(100):
            if uids.processes_of(lease.uid):
                break
            time.sleep(0.01)
        return proc

    proc = start()
    assert uids.processes_of(lease.uid) == [proc.pid]
    lease.release()
    assert proc.wait(5) == -9 and uids.processes_of(lease.uid) == []
    lease = uids.lease(FIRST, 1)
    os.close(lease._fd)                          # the grader that held it died, its kernel did not
    lease._fd = -1
    proc = start()
    again = uids.lease(FIRST, 1)
    assert proc.wait(5) == -9 and again.uid == lease.uid
    again.release()


def test_the_sandbox_drops_to_the_uid_it_is_given_and_names_the_user():
    sb = Sandbox()
    drop = sb.drop_args(FIRST, FIRST + 7)
    if not sb.rootless:
        assert f"--reuid={FIRST}" in drop and f"--regid={FIRST + 7}" in drop
    env = sb.kernel_env({}, "/box/work")
    assert env["USER"] == env["LOGNAME"] == "student" and env["HOME"] == "/box/work"
    assert Sandbox(job_uids=0).per_job_uids is False
    assert Sandbox(job_uids=8, mode="none").per_job_uids is False
    assert Sandbox(job_uids=8).per_job_uids is (os.geteuid() == 0)
    # one zygote for every job whatever the uids: they are the kernels', not the zygote's
    assert zygote._key(Sandbox(job_uids=8, job_uid_first=FIRST)) == zygote._key(Sandbox())


def test_a_uid_range_over_accounts_or_out_of_range_is_refused():
    import pwd
    account = max(pwd.getpwall(), key=lambda e: e.pw_uid)
    assert _uid_range_problem(2_000_000_000, 256) == ""
    assert account.pw_name in _uid_range_problem(account.pw_uid, 10)
    assert "not valid" in _uid_range_problem(2**32 - 10, 256)
