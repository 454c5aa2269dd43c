"""Per-submission isolation of the sandbox (issue 13, point 3), each attempted by a kernel:

- the kernel keyring: a key one kernel stores is out of reach of the next;
- the disk quota: the work dir is a tmpfs of ``disk_mb``; many files under the per-file limit
  stop at it, with a "disk limit" note, and the host disk does not grow;
- the trusted side never opens an in-box path in a way that blocks or follows a link (a FIFO or a
  link planted where the grader reads its kernel log, and among the files the notebook wrote);
- files a notebook writes come back (regular files only, bounded), as nbgrader autograde keeps them;
- the watchdog: a job the trusted side cannot finish returns, and its kernel is killed;
- concurrent warm kernels on one multi-threaded Dask worker see and signal nothing of each other;
- with ``c.Sandbox.job_uids``, kernels that run at the same time have uids of their own: past the
  namespaces, neither may signal the other or read its files, and the uid is free again after.
"""
from __future__ import annotations

import asyncio
import fcntl
import os
import shutil
import subprocess
import sys
import threading
import time

import nbformat
import pytest

from mlbd.grading import execute, uids
from mlbd.grading.execute import execute_job
from mlbd.grading.kernel import SandboxedKernelManager
from mlbd.grading.protocol import Job, JobOutcome
from mlbd.grading.sandbox import Sandbox

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("grading-warm"),
              pytest.mark.skipif(os.geteuid() != 0, reason="per-kernel cgroups and warm kernels need root")]

CFG = {"Sandbox": {"memory_mb": 768, "disk_mb": 256}}


def run(*sources: str, config: dict | None = None, files: dict | None = None, timeout: int = 120) -> tuple[list[str], JobOutcome]:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in sources])
    out = execute_job(Job.one(nbformat.writes(nb), config or CFG, timeout, files))
    (nbo,) = out.notebooks
    if nbo.crash_kind == "watchdog":
        raise execute.WatchdogTimeout(nbo.crash)
    cells = nbformat.reads(nbo.notebook, 4).cells
    texts = ["".join(o.get("text", "") + (f"{o.get('ename')}: {o.get('evalue')}" if o.get("output_type") == "error" else "")
                     for o in c.outputs) for c in cells]
    return texts, out


KEYCTL = r'''
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
ADD_KEY, REQUEST_KEY, KEYCTL, KEYCTL_READ = 248, 249, 250, 11
'''
STORE = KEYCTL + r'''
for ring in (-4, -5, -3):        # user, user-session, session keyrings
    libc.syscall(ADD_KEY, b"user", b"mlbd-h5-secret", b"VALUE-FROM-A", 12, ring)
print("stored", ctypes.get_errno())
'''
READ = KEYCTL + r'''
found = []
for ring in (-4, -5, -3):
    serial = libc.syscall(KEYCTL, 10, ring, b"user", b"mlbd-h5-secret", 0)     # KEYCTL_SEARCH
    if serial > 0:
        buf = ctypes.create_string_buffer(64)
        n = libc.syscall(KEYCTL, KEYCTL_READ, serial, buf, 64)
        found.append(buf.raw[:max(n, 0)])
print("found", found, ctypes.get_errno())
'''


@pytest.mark.parametrize("warm", [True, False], ids=["warm", "cold"])
def test_a_key_one_kernel_stores_is_out_of_reach_of_the_next(warm):
    cfg = {"Sandbox": {**CFG["Sandbox"], "warm_kernels": warm}}
    stored, _ = run(STORE, config=cfg)
    read, _ = run(READ, config=cfg)
    assert "stored 38" in stored[0], stored          # ENOSYS: the keyring syscalls are filtered
    assert "VALUE-FROM-A" not in read[0] and "found []" in read[0], read


DISK = r'''
import os
written = 0
try:
    for i in range(200):
        with open(f"chunk{i:03d}", "wb") as fh:
            fh.write(b"x" * 10_000_000)
        written += 1
except OSError as exc:
    print("stopped", written, exc.errno)
print("wrote", written)
'''


def test_many_small_files_stop_at_the_disk_quota():
    before = shutil.disk_usage("/tmp").used
    texts, out = run(DISK)
    grown = shutil.disk_usage("/tmp").used - before
    assert "stopped" in texts[0] and " 28" in texts[0], texts        # ENOSPC
    wrote = int(texts[0].split("wrote ")[1].split()[0])
    assert 20 <= wrote <= 26, texts                                  # 256 MiB of 10 MB files
    assert any("disk limit of 256 MiB" in n for n in out.notebooks[0].notes), out.notebooks[0].notes
    assert grown < 150 * 2**20, grown                                # never on the host disk
    assert sum(map(len, out.files.values())) <= Sandbox().side_effect_mb * 2**20


PLANT = r'''
import os
log = os.path.join(os.path.dirname(os.getcwd()), "run", "kernel.log")
for path, make in [(log, os.mkfifo), ("fifo", os.mkfifo), ("passwd", lambda p: os.symlink("/etc/shadow", p))]:
    try:
        os.replace(path, path + ".old")
    except OSError:
        pass
    try:
        make(path)
        print("planted", path)
    except OSError as exc:
        print("refused", path, exc.errno)
open("result.csv", "w").write("a,b\n1,2\n")
os.makedirs("plots", exist_ok=True)
open("plots/p.txt", "w").write("plot")
'''


@pytest.mark.parametrize("warm", [True, False], ids=["warm", "cold"])
def test_links_and_fifos_in_the_box_neither_block_nor_are_followed(warm):
    cfg = {"Sandbox": {**CFG["Sandbox"], "warm_kernels": warm}}
    start = time.monotonic()
    texts, out = run(PLANT, config=cfg, files={"data.csv": b"given"})
    assert time.monotonic() - start < 60
    assert "refused" in texts[0].split("kernel.log")[1].split("\n")[0] or "planted" not in texts[0].split("kernel.log")[0], texts
    assert out.files == {"result.csv": b"a,b\n1,2\n", "plots/p.txt": b"plot"}, sorted(out.files)
    # named (the note of before), or counted (the note no longer names what the kernel chose)
    assert any("fifo (not a regular file)" in n and "passwd (not a regular file)" in n
               or n.startswith("2 file(s) the notebook wrote were not kept") for n in out.notebooks[0].notes), out.notebooks[0].notes


def test_the_grader_reads_no_fifo_even_when_the_kernel_owns_the_folder(tmp_path):
    """Rootless boxes belong to the kernel's uid: a FIFO at the log's path is skipped, not opened."""
    from mlbd.grading import boxfs
    (tmp_path / "run").mkdir()
    os.mkfifo(tmp_path / "run" / "kernel.log")
    os.symlink("/etc/hostname", tmp_path / "run" / "other.log")
    start = time.monotonic()
    assert boxfs.read_tail(tmp_path / "run" / "kernel.log", 100, trusted_prefix=str(tmp_path)) == ""
    assert boxfs.read_tail(tmp_path / "run" / "other.log", 100, trusted_prefix=str(tmp_path)) == ""
    os.rename(tmp_path / "run", tmp_path / "real")
    os.symlink(tmp_path / "real", tmp_path / "run")
    (tmp_path / "real" / "ok.log").write_text("fine")
    assert boxfs.read_tail(tmp_path / "run" / "ok.log", 100, trusted_prefix=str(tmp_path)) == ""
    assert time.monotonic() - start < 1


def test_the_watchdog_returns_and_kills_the_kernel(monkeypatch):
    """The trusted side stuck in a blocking open (what a FIFO did before): the job still returns."""
    fifo = f"/tmp/mlbd-h5-watchdog-{os.getpid()}"
    os.mkfifo(fifo)
    original = SandboxedKernelManager.take_files
    seen = {}

    def stuck(self):
        seen["pid"] = self.provisioner.pid
        open(fifo).read()           # blocks: no writer ever comes
        original(self)

    monkeypatch.setattr(SandboxedKernelManager, "take_files", stuck)
    cfg = {"Sandbox": {**CFG["Sandbox"], "wall_seconds": 20, "watchdog_seconds": 5}}
    start = time.monotonic()
    try:
        with pytest.raises(execute.WatchdogTimeout, match="watchdog"):
            run("print('hi')", config=cfg)
        assert time.monotonic() - start < 60
        time.sleep(0.5)
        assert not os.path.exists(f"/proc/{seen['pid']}") or open(f"/proc/{seen['pid']}/stat").read().split()[2] == "Z"
    finally:
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)   # release the stuck thread
        os.close(fd)
        os.unlink(fifo)


KILLER = r'''
import os, signal, time
time.sleep(3)                       # the honest kernel is running by now
mine = os.getpid()
own = sorted(int(t) for t in os.listdir("/proc/self/task"))      # its own threads: not suicide
visible = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
killed = []
for pid in list(range(1, 40000)):
    if pid in own:
        continue
    try:
        os.kill(pid, signal.SIGKILL)
        killed.append(pid)
    except OSError:
        pass
try:
    os.kill(-1, signal.SIGKILL)
except OSError as exc:
    print("kill -1", exc.errno)
print("pid", mine, "visible", visible, "others", killed)
print("uid", os.getuid())
'''
HONEST = r'''
import time
total = 0
for i in range(12):
    time.sleep(0.5)
    total += i
print("honest done", total)
import os
print("uid", os.getuid())
'''


@pytest.mark.parametrize("job_uids", [0, 16], ids=["shared-uid", "job-uids"])
def test_concurrent_kernels_on_one_dask_worker_cannot_signal_each_other(job_uids):
    distributed = pytest.importorskip("distributed")
    cfg = {"Sandbox": {**CFG["Sandbox"], "job_uids": job_uids}}
    cluster = distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=True, dashboard_address=None)
    try:
        with distributed.Client(cluster) as client:
            jobs = []
            for i, src in enumerate((HONEST, KILLER)):
                nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(src)])
                jobs.append(Job.one(nbformat.writes(nb), cfg, 120))
            futures = [client.submit(execute_job, j, pure=False) for j in jobs]
            (honest_job, killer_job) = client.gather(futures)
    finally:
        cluster.close()
    assert honest_job.worker_pid == killer_job.worker_pid
    (honest,), (killer,) = honest_job.notebooks, killer_job.notebooks
    assert honest.warm == [True] == killer.warm
    out = lambda r: "".join(o.get("text", "") for o in nbformat.reads(r.notebook, 4).cells[0].outputs)  # noqa: E731
    assert "honest done 66" in out(honest), honest.notes
    assert honest.restarts == 0, honest.notes
    text = out(killer)
    # its own pid namespace: itself (pid 2) and the namespace's root-owned init, nothing else
    assert "pid 2 visible [1, 2] others []" in text and "kill -1 3" in text, text
    uid = lambda t: int(t.split("uid ")[-1].split()[0])     # noqa: E731
    if job_uids:                                # the two threads' kernels: a uid each
        assert uid(text) != uid(out(honest)) and 65534 not in (uid(text), uid(out(honest))), (text, out(honest))
    else:
        assert uid(text) == uid(out(honest)) == 65534


FIFO_AT_TEARDOWN = r'''
import os
log = os.path.join(os.path.dirname(os.getcwd()), "run", "kernel.log")
for path in (log, "out.txt"):
    try:
        os.replace(path, path + ".old")
    except OSError:
        pass
    try:
        os.mkfifo(path)
    except OSError:
        pass
'''


def test_mlbd_grade_returns_and_grades_the_honest_student_after_a_fifo(tmp_path):
    """Before: the FIFO at kernel.log made the root grader block at teardown, forever."""
    from mlbd.grading import workload as w
    from mlbd.grading.pipeline import grade
    course = w.make_course(tmp_path / "course", memory_mb=768)
    w.submit(course, "hostile", w.answered(course, {}, extra_cells=[("start", FIFO_AT_TEARDOWN)]))
    w.submit(course, "honest", w.answered(course, w.RIGHT))
    start = time.monotonic()
    results = {r.student: r for r in grade(course, w.ASSIGNMENT, jobs=2, quiet=True)}
    assert time.monotonic() - start < 300
    assert results["honest"].status == "graded" and results["honest"].score == 10.0, results["honest"]
    assert results["hostile"].status == "graded" and results["hostile"].score == 0.0, results["hostile"]


UIDS = {"Sandbox": {**CFG["Sandbox"], "job_uids": 16, "job_uid_first": 2_000_000_000}}
WHO = r"""
import getpass, os
import matplotlib.pyplot as plt
plt.plot([1, 2]); plt.savefig("plot.png")
open("secret.txt", "w").write("mine")
os.chmod("secret.txt", 0o600)
print("who", os.getuid(), os.getgid(), os.getgroups(), getpass.getuser(), os.path.expanduser("~") == os.getcwd(),
      get_ipython() is not None)
"""
# what a kernel that broke out of its namespaces would try on the other: run as its uid, on the host
PROBE_OTHER = r"""
import os, sys
own, other, conn, secret = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
def attempt(what, fn):
    try:
        fn()
        print(what, "ok")
    except OSError as exc:
        print(what, exc.errno)
attempt("signal-own", lambda: os.kill(own, 0))
attempt("signal-other", lambda: os.kill(other, 0))
attempt("connection-other", lambda: open(conn).read())
attempt("file-other", lambda: open(secret).read())
"""


async def _start(cfg: dict, cwd: str) -> tuple[SandboxedKernelManager, object]:
    from traitlets.config import Config
    km = SandboxedKernelManager(config=Config(cfg), kernel_name="python3")
    await km.start_kernel(cwd=cwd)
    kc = km.client()
    kc.start_channels()
    await kc.wait_for_ready(timeout=90)
    return km, kc


async def _output(kc, code: str) -> str:
    out: list[str] = []

    def hook(msg):
        if msg["msg_type"] == "stream":
            out.append(msg["content"]["text"])
        elif msg["msg_type"] == "error":
            out.append(f"{msg['content']['ename']}: {msg['content']['evalue']}")

    await kc.execute_interactive(code, output_hook=hook, timeout=90)
    return "".join(out)


@pytest.mark.parametrize("warm", [True, False], ids=["warm", "cold"])
def test_concurrent_kernels_have_uids_of_their_own(warm, tmp_path):
    cfg = {"Sandbox": {**UIDS["Sandbox"], "warm_kernels": warm}}
    first, count = cfg["Sandbox"]["job_uid_first"], cfg["Sandbox"]["job_uids"]

    async def main():
        kernels = []
        try:
            for name in ("a", "b"):
                (tmp_path / name).mkdir()
                kernels.append(await _start(cfg, str(tmp_path / name)))
            (a, ka), (b, kb) = kernels
            assert a.warm is warm and b.warm is warm
            said = [await _output(k, WHO) for k in (ka, kb)]
            uid_a, uid_b = a.kernel_uid, b.kernel_uid
            pa, pb = max(uids.processes_of(uid_a)), max(uids.processes_of(uid_b))     # the kernels (no children)
            secret_b = f"/proc/{pb}/root{b.box}/work/secret.txt"
            probe = subprocess.run([sys.executable, "-c", PROBE_OTHER, str(pa), str(pb), b.connection_file, secret_b],
                                   user=uid_a, group=uid_a, extra_groups=[], capture_output=True, text=True, timeout=60)
            for km, k in kernels:
                k.stop_channels()
                await km.shutdown_kernel(now=True)
            return said, (uid_a, uid_b), probe
        finally:
            for km, k in kernels:
                if km.has_kernel:
                    await km.shutdown_kernel(now=True)

    said, (uid_a, uid_b), probe = asyncio.run(main())
    assert uid_a != uid_b and {uid_a, uid_b} <= set(range(first, first + count)), (uid_a, uid_b)
    for text, uid in zip(said, (uid_a, uid_b)):
        assert f"who {uid} {uid} [] student True True" in text, text     # no passwd entry: nothing breaks
    # past the namespaces, the uid alone: A signals its own kernel, not B's; reads nothing of B's
    assert "signal-own ok" in probe.stdout and "signal-other 1" in probe.stdout, probe
    assert "connection-other 13" in probe.stdout and "file-other 13" in probe.stdout, probe
    for uid in (uid_a, uid_b):                  # nothing of them runs, and the next kernel may have them
        assert uids.processes_of(uid) == []
        fd = os.open(uids.lock_dir() / str(uid), os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)


def test_without_job_uids_every_kernel_is_65534():
    texts, _ = run("import os\nprint('uid', os.getuid(), os.getgid())", config={"Sandbox": {**CFG["Sandbox"], "job_uids": 0}})
    assert "uid 65534 65534" in texts[0], texts

