"""A jupyter_client kernel manager that starts every kernel inside the sandbox.

``SandboxedKernelManager`` is what nbclient's ``kernel_manager_class`` points at, both in
``mlbd grade`` and, through ``SandboxedExecute``, in plain ``nbgrader autograde``::

    c.Autograde.autograde_preprocessors = ["mlbd.grading.kernel.SandboxedExecute", ...]

It is an ``AsyncKernelManager`` (a synchronous one hangs forever when the kernel is OOM-killed).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
import warnings
from pathlib import Path

import zmq
from jupyter_client.manager import AsyncKernelManager
from nbgrader.preprocessors import Execute
from traitlets import Instance

from . import cgroups
from .sandbox import Sandbox, chown_tree, copy_inputs

_warned: set[str] = set()


def warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        warnings.warn(message, RuntimeWarning, stacklevel=3)


class SandboxedKernelManager(AsyncKernelManager):
    """Launches the kernel in bubblewrap as an unprivileged uid, with cgroup and rlimit limits."""

    sandbox = Instance(Sandbox, allow_none=True)

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        if self.sandbox is None:
            self.sandbox = Sandbox(parent=self)
        self._box: Path | None = None
        self._cgroup: cgroups.Cgroup | None = None
        self._log_fh = None
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
            return await super()._async_pre_start_kernel(**kw)

        sb.check()
        # a kernel cannot make the grader buffer gigabytes: oversized messages drop the connection
        self.context.setsockopt(zmq.MAXMSGSIZE, sb.max_message_bytes)
        box = Path(tempfile.mkdtemp(prefix="mlbd-sbx-", dir=sb.runtime_dir or None))
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
        chown_tree(box, sb.uid, sb.gid)
        os.chmod(box, 0o700)

        procs: list[str] = []
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
        return wrapped, kw

    async def _async_cleanup_resources(self, restart: bool = False) -> None:
        try:
            await super()._async_cleanup_resources(restart=restart)
        finally:
            if not restart:
                self.teardown()

    # AsyncKernelManager binds these names to the base implementations: rebind to ours.
    pre_start_kernel = _async_pre_start_kernel
    cleanup_resources = _async_cleanup_resources

    def teardown(self) -> None:
        """Kill anything left in the kernel's cgroup, remember which limits it hit, remove the box."""
        if self._cgroup is not None:
            self.limit_events = self._cgroup.events()
            self._cgroup.destroy()
            self._cgroup = None
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
            shutil.rmtree(self._box, ignore_errors=True)
            self._box = None

    def __del__(self):
        try:
            self.teardown()
        except Exception:  # noqa: BLE001  (interpreter shutdown)
            pass


class SandboxedExecute(Execute):
    """nbgrader's Execute preprocessor with kernels in the sandbox (for plain ``nbgrader autograde``)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("kernel_manager_class", SandboxedKernelManager)
        super().__init__(*args, **kwargs)
