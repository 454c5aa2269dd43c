"""The user server's kernel manager (``python -m mlbd.hub.singleuser`` sets it): when a kernel that
a memory limit stopped is restarted, the new kernel tells the student what happened.

A kernel the server's cgroup stopped for memory, by the kernel's OOM killer (the cgroup's
``oom_kill`` counter grew) or by the hub's watcher (its pid is in the server's kill record,
mlbd.hub.memwatch), died of SIGKILL. jupyter_client's restarter then calls ``restart_kernel``;
this class notices it there and adds mlbd.hub.kernel_notice, with the message, to the new
kernel's command line (``format_kernel_cmd``, which jupyter_client's provisioner calls at every
start), and logs the message in the server log. The spawner passes where to look
(``MLBD_MEMORY_CGROUP``, ``MLBD_KILL_RECORD``) and what to say (``MEM_LIMIT``,
``MLBD_PROFILE_NAME``).
"""
from __future__ import annotations

import os
import signal
from pathlib import Path

from jupyter_server.services.kernels.kernelmanager import ServerKernelManager
from traitlets import Unicode

from mlbd.grading import cgroups

from . import memwatch

EXTENSION = "mlbd.hub.kernel_notice"


def memory_notice(env=os.environ) -> str:
    mib = int(env.get("MEM_LIMIT") or 0) // memwatch.MiB
    limit = f"this server's {mib} MiB memory limit" if mib else "this server's memory limit"
    profile = env.get("MLBD_PROFILE_NAME") or env.get("MLBD_PROFILE")
    where = f" (profile '{profile}')" if profile else ""
    return (f"mlbd: your previous kernel was stopped because it used more than {limit}{where}. "
            "Variables defined before are gone: re-run the cells you need.")


def oom_kills(env=os.environ) -> int:
    d = env.get("MLBD_MEMORY_CGROUP")
    return memwatch.oom_kills(cgroups.version(), Path(d)) if d else 0


class NoticeKernelManager(ServerKernelManager):
    notice = Unicode("", help="the message the kernel being started shows in its first cell's output")
    _oom_seen = 0

    async def start_kernel(self, *args, **kwargs):
        self._oom_seen = oom_kills()
        return await super().start_kernel(*args, **kwargs)

    async def stopped_for_memory(self) -> bool:
        """Whether the kernel, dead now, was killed for memory."""
        if self.provisioner is None or await self.provisioner.poll() != -signal.SIGKILL:
            return False
        seen, self._oom_seen = self._oom_seen, oom_kills()
        return self._oom_seen > seen or getattr(self.provisioner, "pid", None) in memwatch.read_kills(
            os.environ.get("MLBD_KILL_RECORD"))

    async def restart_kernel(self, now=False, newports=False, **kw):
        if await self.stopped_for_memory():
            self.notice = memory_notice()
            self.log.warning("Kernel %s: %s", self.kernel_id, self.notice)
        try:
            return await super().restart_kernel(now=now, newports=newports, **kw)
        finally:
            self.notice = ""
            # the restarter's restart leaves the REST state at "busy" (the dead kernel's last
            # request): as the server's own restart, start again from "starting"
            self.execution_state = "starting"

    def format_kernel_cmd(self, extra_arguments=None):
        cmd = super().format_kernel_cmd(extra_arguments)
        if self.notice and any("ipykernel" in arg for arg in cmd):
            cmd += [f"--IPKernelApp.extra_extensions={EXTENSION}", f"--KernelNotice.message={self.notice}"]
        return cmd
