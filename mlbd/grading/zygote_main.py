"""The zygote process: runs *inside* the bubblewrap sandbox, as root, and forks one kernel per request.

Why: a fresh kernel spends most of its life importing scikit-learn, pandas and matplotlib (about
3 s of a 4 s notebook on 2 cores). The zygote imports them once; each kernel is a ``fork()`` of it,
so every submission starts from the same clean, already-imported state in milliseconds.

Isolation of each forked kernel (done here, before any student code runs):
    new mount, IPC, network and pid namespaces (the kernel is pid 1 of its own, with its own /proc:
    it sees and signals nothing of the other kernels this zygote forked, on a multi-threaded Dask
    worker too); fresh private tmpfs on /tmp and /dev/shm, with only its own box bound back in (not
    the other boxes of this zygote); its work dir a tmpfs of the disk quota, filled from the box's
    read-only inputs; the seccomp filter bwrap gave the zygote (no kernel keyring);
    rlimits (file size, CPU, open files, no core); setgroups/setgid/setuid to the uid and gid the
    spawn request names (the kernel's own, leased by the trusted side with ``c.Sandbox.job_uids``;
    else ``c.Sandbox.uid``, 65534), which clears every capability; no_new_privs; a clean
    environment; its own session.
The trusted side moves the child into its own memory/pids cgroup *before* releasing it (``go``),
so limits hold from the first student instruction. The zygote itself never sees a notebook: hidden
tests travel to the kernel over ZMQ, not through here.

Protocol on stdin/stdout, one JSON object per line:
    → {"op": "spawn", ...}     ← {"spawned": ns_pid}          child waits for go
    → {"op": "go", "pid": p}                                    child sets itself up and runs
    → {"op": "cancel", "pid": p}                                child exits without running
    ← {"exit": ns_pid, "code": int}   whenever a kernel ends (negative: killed by that signal)
Only the standard library, the preloads and ipykernel are imported here.
"""
from __future__ import annotations

import ctypes
import importlib
import json
import os
import resource
import signal
import sys
import traceback

CLONE_NEWNS, CLONE_NEWIPC, CLONE_NEWNET, CLONE_NEWPID = 0x00020000, 0x08000000, 0x40000000, 0x20000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 1, 2, 4, 8, 32, 4096, 16384, 1 << 18
PR_SET_NAME, PR_SET_PDEATHSIG, PR_SET_NO_NEW_PRIVS = 15, 1, 38

# What IPKernelApp.initialize imports (measured): ~0.4 s of every kernel start when not preloaded.
KERNEL_MODULES = ["IPython", "ipykernel.kernelapp", "ipykernel.ipkernel", "ipykernel.zmqshell", "ipykernel.debugger",
                  "IPython.core.completerlib", "IPython.core.oinspect", "IPython.extensions.storemagic",
                  "tornado.platform.asyncio", "sqlite3"]

_libc = ctypes.CDLL(None, use_errno=True)
OUT = 1            # the protocol's output (a dup of stdout; fd 1 itself goes to /dev/null)
ZYGOTE_CWD = ""    # sys.path[0] of the zygote, which a kernel must not inherit


def send(obj: dict) -> None:
    # one os.write per line: replies and exit notices (from the SIGCHLD handler) never interleave
    os.write(OUT, (json.dumps(obj) + "\n").encode())


def _reap(signum=None, frame=None) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        send({"exit": pid, "code": os.waitstatus_to_exitcode(status)})


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def set_name(name: str) -> None:
    """The process name (``comm``) the trusted side finds this process by."""
    _libc.prctl(PR_SET_NAME, name.encode()[:15], 0, 0, 0)


def _fill_work(req: dict, uid: int, gid: int) -> None:
    """The work dir: a tmpfs of the disk quota, holding a copy of the box's inputs, the kernel's."""
    work, inputs = req.get("work"), req.get("inputs")
    if not work:
        return
    opts = f"size={int(req['disk_bytes'])},mode=0700,uid={uid},gid={gid}".encode()
    _check(_libc.mount(b"tmpfs", work.encode(), b"tmpfs", MS_NOSUID | MS_NODEV, opts), "mount work dir")
    if inputs and os.path.isdir(inputs):
        for dirpath, dirnames, filenames in os.walk(inputs):
            rel = os.path.relpath(dirpath, inputs)
            target = os.path.normpath(os.path.join(work, rel))
            os.makedirs(target, exist_ok=True)
            os.chown(target, uid, gid)
            for name in filenames:
                dest = os.path.join(target, name)
                with open(os.path.join(dirpath, name), "rb") as src, open(dest, "wb") as out:
                    while chunk := src.read(1 << 20):
                        out.write(chunk)
                os.chown(dest, uid, gid)


def _wait_for(pid: int) -> int:
    """Reap children until ``pid`` ends; its exit code (negative: the signal that ended it)."""
    while True:
        try:
            done, status = os.waitpid(-1, 0)
        except ChildProcessError:
            return 70
        except InterruptedError:
            continue
        if done == pid:
            return os.waitstatus_to_exitcode(status)


def _own_pid_namespace() -> None:
    """Give the kernel a pid namespace of its own, where it sees and signals nothing but itself and
    its children. Three processes: this one (in the zygote's namespace, what the trusted side
    watches), pid 1 of the new namespace (reaps, and cannot be signalled from inside), and the
    kernel, pid 2, an ordinary process (so SIGXCPU still ends it). Each waits for the next and
    ends the way it ended (pid 1 cannot signal itself: it passes a signal on as 128 + number)."""
    _check(_libc.unshare(CLONE_NEWPID), "unshare pid")
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGPIPE):
        signal.signal(sig, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    init = os.fork()
    if init == 0:
        _check(_libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "pdeathsig")
        _check(_libc.mount(b"proc", b"/proc", b"proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, None), "mount /proc")
        kernel = os.fork()
        if kernel == 0:
            _check(_libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "pdeathsig")
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGPIPE):
                signal.signal(sig, signal.SIG_DFL)
            return
        code = _wait_for(kernel)
        os._exit(code if code >= 0 else 128 - code)
    code = _wait_for(init)
    if code > 128 and code - 128 not in (signal.SIGKILL, signal.SIGSTOP):
        sig = code - 128
        signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)
    if code < 0 or code > 128:
        os.kill(os.getpid(), signal.SIGKILL)
    os._exit(code)


def _isolate(req: dict) -> None:
    """Between fork and the kernel: namespaces, /tmp, the work dir, limits, identity."""
    _check(_libc.unshare(CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWNET), "unshare")
    _check(_libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None), "mount --make-rprivate /")
    # The fresh /tmp and /dev/shm would hide whatever of the sandbox lives below them (the box, and
    # the venv or package when the course sits under /tmp): hold them open, bind them back in.
    tmpfs = ("/tmp", "/dev/shm")
    held = []
    for path, read_only in [(req["box"], False), *req.get("keep", [])]:
        if any(path == t or path.startswith(t + "/") for t in tmpfs) and os.path.isdir(path):
            held.append((path, read_only, os.open(path, os.O_RDONLY | os.O_DIRECTORY)))
    for target in tmpfs:
        _check(_libc.mount(b"tmpfs", target.encode(), b"tmpfs", MS_NOSUID | MS_NODEV, b"mode=1777"), f"mount {target}")
    for path, read_only, fd in sorted(held, key=lambda h: len(h[0])):
        os.makedirs(path, mode=0o755, exist_ok=True)
        _check(_libc.mount(f"/proc/self/fd/{fd}".encode(), path.encode(), None, MS_BIND, None), f"bind {path}")
        if read_only:
            _check(_libc.mount(None, path.encode(), None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV, None),
                   f"read-only {path}")
        os.close(fd)
    uid, gid = int(req["uid"]), int(req["gid"])
    _fill_work(req, uid, gid)
    _own_pid_namespace()
    for d in req.get("tmp_dirs", []):
        os.makedirs(d, exist_ok=True)
        os.chown(d, uid, gid)
    for name, value in req.get("rlimits", {}).items():
        soft, hard = value
        resource.setrlimit(getattr(resource, name), (int(soft), int(hard)))
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)          # from root to non-root: every capability set is cleared
    _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
    if os.getuid() == 0 or os.geteuid() == 0:
        raise RuntimeError("still root after setuid")


def _child(req: dict, go_fd: int) -> None:
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    if req.get("name"):
        set_name(req["name"])
    os.setsid()
    null = os.open("/dev/null", os.O_RDWR)
    log = os.open(req["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    os.dup2(null, 0)
    os.dup2(null, 1)
    os.dup2(log, 2)
    keep = sorted({0, 1, 2, go_fd})
    for lo, hi in zip(keep, keep[1:] + [65536]):
        os.closerange(lo + 1, hi)
    if not os.read(go_fd, 1):             # the trusted side cancelled (or died)
        os._exit(3)
    os.close(go_fd)
    if req.get("box"):                    # no box: --sandbox none, development only, no isolation at all
        _isolate(req)
    os.chdir(req["cwd"])
    os.environ.clear()
    os.environ.update(req["env"])
    if sys.path and sys.path[0] == ZYGOTE_CWD:
        del sys.path[0]                   # as ipykernel_launcher does; IPython then adds '' itself
    if "numpy" in sys.modules:           # a fresh interpreter seeds numpy from the OS, not from the zygote
        sys.modules["numpy"].random.seed(int.from_bytes(os.urandom(4), "little"))
    sys.argv = list(req["argv"])
    from ipykernel.kernelapp import IPKernelApp
    IPKernelApp.launch_instance(argv=sys.argv[1:])


def _spawn(req: dict, pending: dict[int, int]) -> int:
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            os.close(w)
            _child(req, r)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException:  # noqa: BLE001  (report to the kernel log, never return into the zygote loop)
            try:
                os.write(2, traceback.format_exc().encode())
            finally:
                code = 70
        os._exit(code)
    os.close(r)
    pending[pid] = w
    return pid


def main() -> None:
    global OUT, ZYGOTE_CWD
    spec = json.loads(sys.argv[1])
    if spec.get("name"):
        set_name(spec["name"])
    ZYGOTE_CWD = sys.path[0] if sys.path else ""
    OUT = os.dup(1)
    inp = os.fdopen(os.dup(0), "rb")
    null = os.open("/dev/null", os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)                      # stray prints of imported libraries stay off the protocol
    loaded, failed = [], {}
    for name in [*KERNEL_MODULES, *spec.get("preload", [])]:
        try:
            importlib.import_module(name)
            loaded.append(name)
        except BaseException as exc:  # noqa: BLE001
            failed[name] = f"{type(exc).__name__}: {exc}"[:300]
    threads = len(os.listdir("/proc/self/task"))
    signal.signal(signal.SIGCHLD, _reap)
    send({"ready": os.getpid(), "loaded": loaded, "failed": failed, "threads": threads})
    pending: dict[int, int] = {}
    for line in inp:
        try:
            req = json.loads(line)
            op = req.get("op")
            if op == "spawn":
                send({"spawned": _spawn(req, pending)})
            elif op in ("go", "cancel"):
                fd = pending.pop(int(req["pid"]), None)
                if fd is not None:
                    if op == "go":
                        os.write(fd, b"g")
                    os.close(fd)
        except Exception as exc:  # noqa: BLE001
            send({"error": f"{type(exc).__name__}: {exc}"[:500]})
    os._exit(0)


if __name__ == "__main__":
    main()
