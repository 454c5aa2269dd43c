"""A jupyter_client kernel manager that starts every kernel inside the sandbox.

``SandboxedKernelManager`` is what nbclient's ``kernel_manager_class`` points at, both in
``mlbd grade`` and, through ``SandboxedExecute``, in plain ``nbgrader autograde``::

    c.Autograde.autograde_preprocessors = ["mlbd.grading.kernel.SandboxedExecute", ...]

It is an ``AsyncKernelManager`` (a synchronous one hangs forever when the kernel is OOM-killed).

Kernels are *warm* when they can be: forked from this process's zygote (``zygote``), which has
imported the course's libraries already, instead of a fresh interpreter under bwrap (*cold*). Both
get the same sandbox, limits and cgroup; a kernelspec other than this Python's ipykernel, or a
zygote that cannot start, gets a cold kernel.
"""
from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import tempfile
import sys
import uuid
import warnings
from pathlib import Path

import zmq
from jupyter_client.asynchronous import AsyncKernelClient
from jupyter_client.manager import AsyncKernelManager
from nbgrader.preprocessors import Execute
from traitlets import Instance

from . import cgroups, zygote
from .outputs import BoundedOutputs
from .sandbox import Sandbox, chown_tree, copy_inputs

_warned: set[str] = set()


def warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        warnings.warn(message, RuntimeWarning, stacklevel=3)


class GradingKernelClient(AsyncKernelClient):
    """jupyter_client's ``wait_for_ready`` ends with 0.2 s of IOPub silence: a third of a warm
    kernel's life. The kernel_info exchange before it already proves IOPub is connected, and
    nbclient ignores messages that answer other requests, so a short quiet period is enough."""

    iopub_quiet_seconds = 0.02
    # The client connects before the kernel has bound its sockets; ZMQ's default 100 ms reconnect
    # interval was then half of a warm kernel's start.
    reconnect_ms = 5

    def _context_default(self):
        context = super()._context_default()
        context.setsockopt(zmq.RECONNECT_IVL, self.reconnect_ms)
        # No MAXMSGSIZE here: an oversized message would drop the iopub connection and lose every
        # later message of the notebook (a student who prints 50 MB got 0 and an integrity flag).
        # Outputs are bounded by the kernel's memory limit and truncated on arrival (execute.py).
        return context

    async def _async_wait_for_ready(self, timeout=None):
        channel = self.iopub_channel
        original = channel.get_msg

        async def get_msg(timeout=None):
            return await original(timeout=min(timeout, self.iopub_quiet_seconds) if timeout else timeout)

        channel.get_msg = get_msg
        try:
            await super()._async_wait_for_ready(timeout)
        finally:
            del channel.get_msg

    wait_for_ready = _async_wait_for_ready   # the base class binds the name to its own function


class SandboxedKernelManager(AsyncKernelManager):
    """Launches the kernel in bubblewrap as an unprivileged uid, with cgroup and rlimit limits."""

    sandbox = Instance(Sandbox, allow_none=True)

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.client_factory = GradingKernelClient
        if self.sandbox is None:
            self.sandbox = Sandbox(parent=self)
        self._box: Path | None = None
        self._cgroup: cgroups.Cgroup | None = None
        self._log_fh = None
        self._warm: dict | None = None
        self._warm_proc: zygote.WarmProcess | None = None
        self.warm = False
        self.limit_events: dict[str, bool] = {}
        self.kernel_log_tail = ""

    @property
    def kernel_spec(self):
        spec = super().kernel_spec
        if spec is not None and self.sandbox is not None and self.sandbox.mode == "bwrap":
            # SIGINT cannot cross bubblewrap's new session: interrupt over the control channel.
            spec.interrupt_mode = "message"
        return spec

    @property
    def box(self) -> Path | None:
        return self._box

    async def _async_pre_start_kernel(self, **kw):
        sb = self.sandbox
        if sb.mode == "none":
            warn_once("none", "grading sandbox disabled (--sandbox none): student code runs as this user "
                              "with its files, network and secrets; development only")
            kw["env"] = sb.kernel_env(kw.get("env"), None)
            cmd, kw = await super()._async_pre_start_kernel(**kw)
            zyg = self._zygote()
            if zyg is not None and self._warmable(cmd, kw["env"]):
                self._warm = {"zygote": zyg, "box": None, "keep": [], "cwd": str(kw.get("cwd") or os.getcwd()),
                              "log": str(zyg.root / "kernels.log"), "env": kw["env"],
                              "argv": ["ipykernel_launcher", *cmd[3:]], "tmp_dirs": [], "rlimits": {}}
            return cmd, kw

        sb.check()
        # the control channel only (interrupt/shutdown replies); see GradingKernelClient for iopub
        self.context.setsockopt(zmq.MAXMSGSIZE, sb.max_message_bytes)
        zyg = self._zygote()
        box = Path(tempfile.mkdtemp(prefix="mlbd-sbx-", dir=str(zyg.root) if zyg else (sb.runtime_dir or None)))
        self._box = box
        work, run = box / "work", box / "run"
        run.mkdir()
        copy_inputs(kw.get("cwd"), work, sb.copy_max_mb * 2**20)
        self.transport = "ipc"
        self.ip = str(run / "k")
        self.connection_file = str(run / "connection.json")
        kw["cwd"] = str(work)
        env = sb.kernel_env(kw.get("env"), str(work))
        kw["env"] = {"PATH": env["PATH"]}          # bwrap itself; the kernel gets --clearenv + env
        cmd, kw = await super()._async_pre_start_kernel(**kw)
        if not sb.rootless:                         # rootless: the box is ours, and 65534 inside the namespace
            chown_tree(box, sb.uid, sb.gid)
        os.chmod(box, 0o700)

        procs: list[str] = []
        if not sb.rootless:                         # rootless: prlimit --data/--nproc stand in (drop_args)
            try:
                self._cgroup = cgroups.create(f"mlbd-{uuid.uuid4().hex[:12]}", sb.memory_mb * 2**20, sb.pids_max)
                procs = self._cgroup.procs_files
            except cgroups.CgroupUnavailable as exc:
                warn_once("cgroup", f"sandbox memory and pids limits not enforced: {exc}")
        enter = ["/bin/sh", "-c", 'for f; do [ "$f" = -- ] && break; echo $$ > "$f"; shift; done; shift; exec "$@"',
                 "sh", *procs, "--"]
        self._log_fh = open(run / "kernel.log", "ab")
        kw["stdout"] = subprocess.DEVNULL
        kw["stderr"] = self._log_fh
        kw["stdin"] = subprocess.DEVNULL
        wrapped = enter + sb.bwrap_args(box, work, env) + sb.drop_args() + cmd
        # warm only inside a cgroup: its kill is what ends a forked kernel's stray processes
        if zyg is not None and self._cgroup is not None and self._warmable(cmd, env):
            self._warm = {"zygote": zyg, "box": str(box), "keep": [[p, True] for p in sb.read_only_paths()],
                          "cwd": str(work), "log": str(run / "kernel.log"), "env": env,
                          "argv": ["ipykernel_launcher", *cmd[3:]],
                          "tmp_dirs": [env[k] for k in ("MPLCONFIGDIR", "XDG_CACHE_HOME", "JUPYTER_RUNTIME_DIR",
                                                       "IPYTHONDIR") if env.get(k, "").startswith("/tmp/")],
                          "rlimits": sb.rlimits()}
        return wrapped, kw

    def _zygote(self) -> zygote.Zygote | None:
        if not self.sandbox.warm_kernels or (self.sandbox.mode != "none" and self.sandbox.rootless):
            return None                             # rootless: no cgroup to hold a forked kernel's strays
        try:
            return zygote.for_sandbox(self.sandbox)
        except zygote.ZygoteError as exc:
            warn_once("zygote", f"warm kernels unavailable, every kernel starts cold: {exc}")
            return None

    @staticmethod
    def _warmable(cmd: list[str], env: dict) -> bool:
        """Only this Python's own ipykernel can be forked from the zygote."""
        if len(cmd) < 3 or cmd[1:3] != ["-m", "ipykernel_launcher"]:
            return False
        found = shutil.which(cmd[0], path=env.get("PATH"))
        return bool(found) and os.path.dirname(os.path.abspath(found)) == os.path.dirname(sys.executable)

    async def _async_launch_kernel(self, kernel_cmd, **kw):
        warm, self._warm = self._warm, None
        if warm is not None:
            zyg = warm.pop("zygote")
            try:
                proc = zyg.spawn(**warm)
            except zygote.ZygoteError as exc:
                warn_once("zygote-spawn", f"warm kernel failed, starting cold: {exc}")
            else:
                try:
                    if self._cgroup is not None:
                        self._cgroup.add(proc.pid)
                    zyg.release(proc)
                except Exception:
                    proc.kill()
                    raise
                prov = self.provisioner
                prov.process, prov.pid, prov.pgid, prov.cwd = proc, proc.pid, None, warm["cwd"]
                self._warm_proc, self.warm = proc, True
                self._reconcile_connection_info(prov.connection_info)
                return
        await super()._async_launch_kernel(kernel_cmd, **kw)

    async def _async_cleanup_resources(self, restart: bool = False) -> None:
        try:
            await super()._async_cleanup_resources(restart=restart)
        finally:
            if not restart:
                self.teardown()

    async def _async_wait(self, pollinterval: float = 0.1) -> None:
        """jupyter_client polls a killed kernel every 0.1 s: a quarter of a warm kernel's life.
        Poll from 2 ms up instead."""
        delay = 0.002
        while await self._async_is_alive():
            await asyncio.sleep(delay)
            delay = min(2 * delay, pollinterval)

    # AsyncKernelManager binds these names to the base implementations: rebind to ours.
    pre_start_kernel = _async_pre_start_kernel
    cleanup_resources = _async_cleanup_resources

    def teardown(self) -> None:
        """Kill anything left in the kernel's cgroup, remember which limits it hit, remove the box."""
        if self._cgroup is not None:
            self.limit_events = self._cgroup.events()
            self._cgroup.destroy()
            self._cgroup = None
        proc, self._warm_proc = self._warm_proc, None
        ended = None
        if proc is not None:
            proc.kill()
            ended = proc.wait(5) if proc.returncode is None else proc.returncode
        if self._log_fh is not None:
            self._log_fh.close()
            self._log_fh = None
        if self._box is not None:
            log = self._box / "run" / "kernel.log"
            try:
                with open(log, "rb") as fh:
                    fh.seek(max(0, os.path.getsize(log) - 2000))
                    self.kernel_log_tail = fh.read().decode("utf-8", "replace")
            except OSError:
                pass
            if ended is not None and ended < 0 and -ended in signal.Signals._value2member_map_:
                self.kernel_log_tail += f"\n[mlbd: the kernel was ended by {signal.Signals(-ended).name}]"
            shutil.rmtree(self._box, ignore_errors=True)
            self._box = None

    def __del__(self):
        try:
            self.teardown()
        except Exception:  # noqa: BLE001  (interpreter shutdown)
            pass


class SandboxedExecute(BoundedOutputs, Execute):
    """nbgrader's Execute preprocessor with kernels in the sandbox and outputs bounded as in
    ``mlbd grade`` (for plain ``nbgrader autograde`` and the formgrader's button)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("kernel_manager_class", SandboxedKernelManager)
        super().__init__(*args, **kwargs)
        box = Sandbox(config=self.config)
        self.max_output_bytes_cell = box.max_output_bytes_cell
        self.max_output_bytes_notebook = box.max_output_bytes_notebook
