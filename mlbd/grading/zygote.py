"""Warm kernels, trusted side: start the zygote in the sandbox, ask it for kernels, watch them.

One ``Zygote`` per grading process and sandbox settings (``for_sandbox``), started on first use
and kept for every later notebook that process runs; ``WarmProcess`` stands in for the
``subprocess.Popen`` jupyter_client's provisioner expects. See ``zygote_main`` for what happens
inside, and ``kernel.SandboxedKernelManager`` for when a kernel is warm and when it is cold.
"""
from __future__ import annotations

import atexit
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil

from . import boxfs, seccomp
from .sandbox import Sandbox


class ZygoteError(RuntimeError):
    """The zygote could not start or stopped answering: callers fall back to cold kernels."""


def _find(root: int, name: str, recursive: bool) -> int | None:
    """Host pid of the descendant of ``root`` that named itself ``name`` (zygote_main.set_name)."""
    try:
        for child in psutil.Process(root).children(recursive=recursive):
            try:
                if child.name() == name:
                    return child.pid
            except psutil.Error:
                continue
    except psutil.Error:
        pass
    return None


def _start_time(pid: int) -> str:
    """Clock ticks after boot when ``pid`` started (field 22 of /proc/PID/stat, the format every
    grader's owner file uses): with the pid, names a process even after pid reuse."""
    try:
        since_boot = psutil.Process(pid).create_time() - psutil.boot_time()
    except psutil.Error:
        return ""
    return str(round(since_boot * os.sysconf("SC_CLK_TCK")))


def _tag(kind: str) -> str:
    return f"mlbd{kind}{os.urandom(4).hex()}"     # 13 characters: a whole process name (comm)


def _oom_adj(pid: int, value: int) -> None:
    try:
        Path(f"/proc/{pid}/oom_score_adj").write_text(str(value))
    except OSError:
        pass


def owner_alive(owner: Path) -> bool:
    """Whether the grading process named in a zygote folder's ``owner`` file (pid, start time) runs."""
    pid, started = owner.read_text().split()
    return _start_time(int(pid)) == started


def _sweep(parent: Path) -> None:
    """Remove the folders of zygotes whose grading process died without closing them (kill -9)."""
    for d in parent.glob("mlbd-z-*"):
        try:
            dead = not owner_alive(d / "owner")
        except (OSError, ValueError):                    # no owner file: older layout or half made
            try:
                dead = time.time() - d.stat().st_mtime > 3600
            except OSError:                              # its grader just removed it
                continue
        if dead:
            shutil.rmtree(d, ignore_errors=True)


class WarmProcess:
    """A forked kernel as jupyter_client sees a Popen: pid, poll, wait, signals (through a pidfd,
    so a recycled pid is never signalled)."""

    stdin = stdout = stderr = None

    def __init__(self, zygote: "Zygote", pid: int, ns_pid: int):
        self.zygote, self.pid, self.ns_pid = zygote, pid, ns_pid
        self.pidfd = os.pidfd_open(pid)
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None and select.select([self.pidfd], [], [], 0)[0]:
            self.returncode = self.zygote.exit_code(self.ns_pid, wait=0.5)
            self._close()
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        end = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if end is not None and time.monotonic() > end:
                raise subprocess.TimeoutExpired("kernel", timeout)
            select.select([self.pidfd], [], [], 0.1 if end is None else max(0.0, min(0.1, end - time.monotonic())))
        return self.returncode  # type: ignore[return-value]

    def send_signal(self, sig: int) -> None:
        if self.returncode is None:
            try:
                signal.pidfd_send_signal(self.pidfd, sig)
            except ProcessLookupError:
                pass

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def _close(self) -> None:
        if self.pidfd >= 0:
            os.close(self.pidfd)
            self.pidfd = -1

    def __del__(self):
        try:
            self._close()
        except Exception:  # noqa: BLE001
            pass


class Zygote:
    def __init__(self, sandbox: Sandbox):
        self.sandbox = sandbox
        self.lock = threading.Lock()
        self.exits: dict[int, int] = {}
        self._buf = b""
        _sweep(Path(sandbox.runtime_dir or tempfile.gettempdir()))
        self.root = Path(tempfile.mkdtemp(prefix="mlbd-z-", dir=sandbox.runtime_dir or None))
        os.chmod(self.root, 0o711)       # kernels reach their own box, list nothing
        (self.root / "owner").write_text(f"{os.getpid()} {_start_time(os.getpid())}")
        self.boxed = sandbox.mode != "none"
        self.name = _tag("z")
        main = [sys.executable, "-m", "mlbd.grading.zygote_main",
                json.dumps({"preload": list(sandbox.preload), "name": self.name})]
        filter_fd = os.memfd_create("mlbd-seccomp")
        os.write(filter_fd, seccomp.program())
        os.lseek(filter_fd, 0, os.SEEK_SET)
        if self.boxed:
            env = sandbox.kernel_env(None, str(self.root), job=False)
            cmd = sandbox.bwrap_args(self.root, self.root, env, seccomp_fd=filter_fd) + main
            popen_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        else:
            cmd, popen_env = main, sandbox.kernel_env(None, None, job=False)
        self._log = open(self.root / "zygote.log", "ab")
        try:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log,
                                         env=popen_env, cwd=self.root, close_fds=True, pass_fds=(filter_fd,))
        finally:
            os.close(filter_fd)
        try:
            ready = self._read_until("ready", timeout=sandbox.zygote_start_seconds)
        except ZygoteError:
            self.close()
            raise
        self.ns_pid = int(ready["ready"])
        self.failed = ready.get("failed", {})
        if int(ready.get("threads", 1)) != 1:
            self.close()
            raise ZygoteError(f"the zygote has {ready.get('threads')} threads after its preloads; "
                              "a threaded process cannot be forked safely (remove the preload that starts them)")
        self.host_pid = _find(self.proc.pid, self.name, recursive=True) if self.boxed else self.proc.pid
        if self.host_pid is None:
            self.close()
            raise ZygoteError("cannot find the zygote's process")
        _oom_adj(self.host_pid, -1000)   # a kernel's memory bomb is never answered by killing the zygote

    # -- protocol --------------------------------------------------------------------------
    def _send(self, obj: dict) -> None:
        try:
            self.proc.stdin.write((json.dumps(obj) + "\n").encode())
            self.proc.stdin.flush()
        except (OSError, ValueError) as exc:
            raise ZygoteError(f"the zygote stopped: {exc}") from exc

    def _read_line(self, timeout: float) -> dict | None:
        end = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buf:
            left = end - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                return None
            chunk = os.read(fd, 65536)
            if not chunk:
                raise ZygoteError(f"the zygote exited: {self.log_tail()}")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return json.loads(line)

    def _read_until(self, key: str, timeout: float) -> dict:
        end = time.monotonic() + timeout
        while True:
            msg = self._read_line(max(0.0, end - time.monotonic()))
            if msg is None:
                raise ZygoteError(f"the zygote did not answer within {timeout:.0f} s: {self.log_tail()}")
            if self._noted_exit(msg):
                continue
            if "error" in msg:
                raise ZygoteError(f"the zygote refused: {msg['error']}")
            elif key in msg:
                return msg

    def _noted_exit(self, msg: dict) -> bool:
        """Keep an exit notice (the zygote sends one whenever a kernel ends, between any replies)."""
        if "exit" not in msg:
            return False
        self.exits[int(msg["exit"])] = int(msg["code"])
        return True

    def exit_code(self, ns_pid: int, wait: float = 0.0) -> int:
        """How a kernel ended (negative: the signal that killed it); -9 when the zygote never said."""
        end = time.monotonic() + wait
        with self.lock:
            while ns_pid not in self.exits:
                try:
                    msg = self._read_line(max(0.0, end - time.monotonic()))
                except ZygoteError:
                    break
                if msg is None:
                    break
                self._noted_exit(msg)
            return self.exits.pop(ns_pid, -signal.SIGKILL)

    def log_tail(self) -> str:
        return boxfs.read_tail(self.root / "zygote.log", 1500, trusted_prefix=str(self.root)).strip()

    # -- kernels ---------------------------------------------------------------------------
    def alive(self) -> bool:
        return self.proc.poll() is None

    def spawn(self, *, box: str | None, keep: list, cwd: str, log: str, env: dict, argv: list[str], tmp_dirs: list[str],
              rlimits: dict[str, list[int]], uid: int, gid: int, work: str | None = None, inputs: str | None = None,
              disk_bytes: int = 0) -> WarmProcess:
        """Fork a kernel that waits; call ``release`` once it is inside its cgroup. It runs as ``uid``/``gid``
        (its own lease: not part of this zygote's settings, which every job shares). ``work`` becomes a
        tmpfs of ``disk_bytes`` filled from ``inputs``."""
        name = _tag("k")
        with self.lock:
            self._send({"op": "spawn", "box": box, "keep": keep, "cwd": cwd, "log": log, "env": env, "argv": argv, "uid": uid,
                        "gid": gid, "tmp_dirs": tmp_dirs, "rlimits": rlimits, "name": name, "work": work,
                        "inputs": inputs, "disk_bytes": disk_bytes})
            ns_pid = int(self._read_until("spawned", timeout=30)["spawned"])
        host = None if self.boxed else ns_pid
        for _ in range(0 if host else 400):
            host = _find(self.host_pid, name, recursive=False)
            if host:
                break
            time.sleep(0.005)
        if host is None:
            self.cancel(ns_pid)
            raise ZygoteError("cannot find the forked kernel's process")
        _oom_adj(host, 0)                # forked with the zygote's -1000
        return WarmProcess(self, host, ns_pid)

    def release(self, proc: WarmProcess) -> None:
        with self.lock:
            self._send({"op": "go", "pid": proc.ns_pid})

    def cancel(self, ns_pid: int) -> None:
        with self.lock:
            self._send({"op": "cancel", "pid": ns_pid})

    def close(self) -> None:
        try:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(5)
        except Exception:  # noqa: BLE001
            pass
        for fh in (self.proc.stdin, self.proc.stdout, self._log):
            try:
                fh.close()
            except Exception:  # noqa: BLE001
                pass
        shutil.rmtree(self.root, ignore_errors=True)


_zygotes: dict[str, Zygote] = {}
_failed: dict[str, str] = {}


def _key(sb: Sandbox) -> str:
    # no uid: the zygote forks the kernels of every job, each as the uid ``spawn`` is given
    return json.dumps([sb.mode, sb.threads, sorted(sb.preload), sorted(sb.ro_binds), sb.env,
                       sorted(sb.env_passthrough), sb.runtime_dir, sb.bwrap, os.getpid()], sort_keys=True)


def for_sandbox(sb: Sandbox) -> Zygote:
    """This process's zygote for these settings, started (or restarted after a crash) on demand.
    Raises ``ZygoteError`` (and remembers it, so a broken setup is tried once per process)."""
    key = _key(sb)
    if key in _failed:
        raise ZygoteError(_failed[key])
    z = _zygotes.get(key)
    if z is not None and z.alive():
        return z
    if z is not None:
        z.close()
    if not _zygotes:
        _on_exit()
    try:
        # from a thread that lives as long as the process: bwrap --die-with-parent ends the zygote
        # when the *thread* that started it ends (a grading job's own thread, a Dask task's)
        z = _zygotes[key] = _starter().submit(Zygote, sb).result()
    except (ZygoteError, OSError) as exc:
        _zygotes.pop(key, None)
        _failed[key] = str(exc)
        raise ZygoteError(str(exc)) from exc
    return z


_starter_pool: ThreadPoolExecutor | None = None


def _starter() -> ThreadPoolExecutor:
    global _starter_pool
    if _starter_pool is None:
        _starter_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mlbd-zygote")
    return _starter_pool


def close_all() -> None:
    for z in list(_zygotes.values()):
        z.close()
    _zygotes.clear()


def _on_exit() -> None:
    atexit.register(close_all)
    try:  # multiprocessing workers leave through os._exit and clear inherited finalizers: register here
        from multiprocessing import util as mp_util
        mp_util.Finalize(None, close_all, exitpriority=10)
    except Exception:  # noqa: BLE001  (pragma: no cover)
        pass
