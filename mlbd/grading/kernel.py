"""A jupyter_client kernel manager that starts every kernel inside the sandbox.

``SandboxedKernelManager`` is what nbclient's ``kernel_manager_class`` points at, both in
``mlbd grade`` and, through ``SandboxedExecute``, in plain ``nbgrader autograde``::

    c.Autograde.autograde_preprocessors = ["mlbd.grading.kernel.SandboxedExecute", ...]

It is an ``AsyncKernelManager`` (a synchronous one hangs forever when the kernel is OOM-killed).

Kernels are *warm* when they can be: forked from this process's zygote (``zygote``), which has
imported the course's libraries already, instead of a fresh interpreter under bwrap (*cold*). Both
get the same sandbox, limits and cgroup; a kernelspec other than this Python's ipykernel, or a
zygote that cannot start, gets a cold kernel. With ``c.Sandbox.job_uids``, each kernel runs as a uid
of its own, leased when it starts and freed once nothing of it runs (``uids``).
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

import psutil
import zmq
from jupyter_client.asynchronous import AsyncKernelClient
from jupyter_client.manager import AsyncKernelManager
from nbgrader.coursedir import CourseDirectory
from nbgrader.preprocessors import Execute
from traitlets import Instance

from ..variant import Variants
from . import boxfs, cgroups, seccomp, uids, zygote
from .outputs import BoundedOutputs
from .sandbox import Sandbox, copy_inputs

SECCOMP_FD = 9          # where bwrap reads the filter (a shell redirection of box/run/seccomp.bpf)

_warned: set[str] = set()


def warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        warnings.warn(message, RuntimeWarning, stacklevel=3)


LAUNCHER = str(Path(__file__).with_name("kernel_launcher.py"))


def trusted_launcher(cmd: list[str]) -> list[str]:
    """A cold kernel's command with ``-m ipykernel_launcher`` (found in the work dir first, where an
    earlier notebook may have written one) replaced by the path of ``kernel_launcher.py``."""
    if len(cmd) >= 3 and cmd[1:3] == ["-m", "ipykernel_launcher"]:
        return [cmd[0], LAUNCHER, *cmd[3:]]
    return cmd


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
        self._uid_lease: uids.Lease | None = None    # this kernel's own uid (c.Sandbox.job_uids)
        self.warm = False
        self.limit_events: dict[str, bool] = {}
        self.kernel_log_tail = ""
        self._source_dir: str | None = None
        self.harvest: boxfs.Harvest | None = None   # files the kernel wrote, taken before it is stopped

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

    @property
    def kernel_uid(self) -> int:
        """The uid (and gid) the kernel runs as: its lease, or ``c.Sandbox.uid``."""
        return self._uid_lease.uid if self._uid_lease is not None else self.sandbox.uid

    def _lease_uid(self) -> tuple[int, int]:
        """This kernel's uid and gid; a restart keeps the lease it has."""
        sb = self.sandbox
        if not sb.per_job_uids:
            return sb.uid, sb.gid
        if self._uid_lease is None or not self._uid_lease.held:
            self._uid_lease = uids.lease(sb.job_uid_first, sb.job_uids, sb.runtime_dir)
        return self._uid_lease.uid, self._uid_lease.gid

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
                              "argv": ["ipykernel_launcher", *cmd[3:]], "tmp_dirs": [], "rlimits": {},
                              "uid": os.getuid(), "gid": os.getgid()}
            return trusted_launcher(cmd), kw

        sb.check()
        uid, gid = self._lease_uid()
        # the control channel only (interrupt/shutdown replies); see GradingKernelClient for iopub
        self.context.setsockopt(zmq.MAXMSGSIZE, sb.max_message_bytes)
        zyg = self._zygote()
        # The box belongs to the trusted side: box/in holds the inputs (read-only to the kernel),
        # box/run the sockets (sticky: the kernel cannot replace the log or connection file),
        # box/work is only a mount point: inside the sandbox a tmpfs of the disk quota, filled from in/.
        box = Path(tempfile.mkdtemp(prefix="mlbd-sbx-", dir=str(zyg.root) if zyg else (sb.runtime_dir or None)))
        self._box = box
        work, run, inputs = box / "work", box / "run", box / "in"
        run.mkdir()
        work.mkdir()
        self._source_dir = kw.get("cwd")
        copy_inputs(self._source_dir, inputs, sb.copy_max_mb * 2**20)
        self.transport = "ipc"
        self.ip = str(run / "k")
        self.connection_file = str(run / "connection.json")
        kw["cwd"] = str(work)
        env = sb.kernel_env(kw.get("env"), str(work))
        kw["env"] = {"PATH": env["PATH"]}          # bwrap itself; the kernel gets --clearenv + env
        cmd, kw = await super()._async_pre_start_kernel(**kw)
        os.chmod(box, 0o711)
        os.chmod(run, 0o1777)
        if not sb.rootless:                         # the kernel reads it (0600); the grader never reads it back
            os.chown(self.connection_file, uid, gid)
        bpf = seccomp.write(str(run / "seccomp.bpf"))

        procs: list[str] = []
        if not sb.rootless:                         # rootless: prlimit --data/--nproc stand in (drop_args)
            try:
                self._cgroup = cgroups.create(f"mlbd-{uuid.uuid4().hex[:12]}", sb.memory_mb * 2**20, sb.pids_max)
                procs = self._cgroup.procs_files
            except cgroups.CgroupUnavailable as exc:
                warn_once("cgroup", f"sandbox memory and pids limits not enforced: {exc}")
        enter = ["/bin/sh", "-c", 'bpf=$1; shift; for f; do [ "$f" = -- ] && break; echo $$ > "$f"; shift; done; shift; '
                 f'exec "$@" {SECCOMP_FD}<"$bpf"', "sh", bpf, *procs, "--"]
        fill = ["/bin/sh", "-c", 'cp -R "$0"/. . && exec "$@"', str(inputs)]
        self._log_fh = open(run / "kernel.log", "ab")
        kw["stdout"] = subprocess.DEVNULL
        kw["stderr"] = self._log_fh
        kw["stdin"] = subprocess.DEVNULL
        wrapped = enter + sb.bwrap_args(box, work, env, seccomp_fd=SECCOMP_FD, quota_dir=work) + sb.drop_args(uid, gid) + fill \
            + trusted_launcher(cmd)
        # warm only inside a cgroup: its kill is what ends a forked kernel's stray processes
        if zyg is not None and self._cgroup is not None and self._warmable(cmd, env):
            self._warm = {"zygote": zyg, "box": str(box), "keep": [[p, True] for p in sb.read_only_paths()],
                          "cwd": str(work), "log": str(run / "kernel.log"), "env": env,
                          "argv": ["ipykernel_launcher", *cmd[3:]],
                          "tmp_dirs": [env[k] for k in ("MPLCONFIGDIR", "XDG_CACHE_HOME", "JUPYTER_RUNTIME_DIR",
                                                       "IPYTHONDIR") if env.get(k, "").startswith("/tmp/")],
                          "rlimits": sb.rlimits(), "uid": uid, "gid": gid, "work": str(work), "inputs": str(inputs),
                          "disk_bytes": sb.disk_mb * 2**20}
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

    def _sandbox_root(self) -> str | None:
        """``/proc/PID/root`` of a live process in the kernel's mount namespace (its work tmpfs)."""
        if self._warm_proc is not None:
            candidates = [self._warm_proc.pid]
        else:
            pid = getattr(self.provisioner, "pid", None) if self.provisioner else None
            try:
                candidates = [c.pid for c in psutil.Process(pid).children(recursive=True)] if pid else []
            except psutil.Error:
                candidates = []
        try:
            own = os.stat("/proc/self/ns/mnt").st_ino
        except OSError:
            return None
        for pid in candidates:
            try:
                if os.stat(f"/proc/{pid}/ns/mnt").st_ino != own:
                    return f"/proc/{pid}/root"
            except OSError:
                continue
        return None

    def take_files(self) -> None:
        """Read what the kernel wrote to its work dir (bounded, regular files only, never through a
        link) and write it back where the notebook ran (nbgrader's autograded/<student>/<assignment>/,
        or ``execute_job``'s folder), so later notebooks see it, as with stock nbgrader autograde."""
        if self._box is None or self.harvest is not None:
            return
        root = self._sandbox_root()
        if root is None:
            return
        sb = self.sandbox
        inputs = self._box / "in"

        try:
            fd = boxfs.open_dir(root + str(self._box / "work"), trusted_prefix=root)
        except (OSError, ValueError):
            return
        try:
            got = boxfs.harvest(fd, sb.side_effect_files, sb.side_effect_mb * 2**20, skip=lambda rel: rel.endswith(".ipynb"))
        finally:
            os.close(fd)
        for rel in list(got.files):
            try:
                if (inputs / rel).read_bytes() == got.files[rel]:
                    del got.files[rel]
            except OSError:
                pass
        got.pages = boxfs.drop_unkeepable(got.files)   # never the exchange's files, pages or scripts
        self.harvest = got
        if got.full:
            self.limit_events["disk"] = True
        if self._source_dir and got.files:
            boxfs.write_files(self._source_dir, got.files)

    async def _async_shutdown_kernel(self, now: bool = False, restart: bool = False) -> None:
        if not restart:
            try:
                self.take_files()
            except Exception as exc:  # noqa: BLE001  (never lose the grade over the kernel's files)
                warn_once("take-files", f"files the kernel wrote could not be kept: {exc}")
        await super()._async_shutdown_kernel(now=now, restart=restart)

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
    shutdown_kernel = _async_shutdown_kernel

    def abort(self) -> None:
        """Kill the kernel and everything in its cgroup now (the watchdog: no waiting, no reading),
        and free its uid (the job's thread, stuck, may never reach ``teardown``)."""
        emptied = self._cgroup.destroy() if self._cgroup is not None else False
        for proc in (self._warm_proc, getattr(self.provisioner, "process", None) if self.provisioner else None):
            try:
                if proc is not None:
                    proc.kill()
            except Exception:  # noqa: BLE001
                pass
        self._release_uid(scan=not emptied)

    def _release_uid(self, scan: bool = True) -> None:
        """Free the kernel's uid; ``scan``: kill first whatever of the uid still runs (no cgroup, or
        one that would not empty: all of the kernel is inside it, and only root moves a process out)."""
        lease, self._uid_lease = self._uid_lease, None
        if lease is not None:
            lease.release(scan=scan)

    def teardown(self) -> None:
        """Kill anything left in the kernel's cgroup, remember which limits it hit, remove the box,
        free the kernel's uid."""
        emptied = False
        try:
            if self._cgroup is not None:
                self.limit_events.update(self._cgroup.events())
                emptied = self._cgroup.destroy()
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
                self.kernel_log_tail = boxfs.read_tail(self._box / "run" / "kernel.log", 2000, trusted_prefix=str(self._box))
                if ended is not None and ended < 0 and -ended in signal.Signals._value2member_map_:
                    self.kernel_log_tail += f"\n[mlbd: the kernel was ended by {signal.Signals(-ended).name}]"
                shutil.rmtree(self._box, ignore_errors=True)
                self._box = None
        finally:
            self._release_uid(scan=not emptied)

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
        self._configured_timeout = self.timeout
        self._box = Sandbox(config=self.config)
        self._use(self._box)

    def _use(self, box: Sandbox) -> None:
        self.max_output_bytes_cell = box.max_output_bytes_cell
        self.max_output_bytes_notebook = box.max_output_bytes_notebook

    def use_assignment(self, assignment: str | None) -> Sandbox:
        """Take the limits of ``assignment`` (``c.Sandbox.per_assignment``), as ``mlbd grade`` does."""
        self._box = Sandbox(config=self.config).for_assignment(assignment)
        self._use(self._box)
        self.timeout = self._box.cell_timeout(assignment, self._configured_timeout)
        return self._box

    def use_student(self, student: str | None) -> None:
        """The kernel draws ``student``'s variant (``mlbd.variant``), as in ``mlbd grade``."""
        if not student:
            return
        cd = CourseDirectory(config=self.config)
        self._box.job_env = Variants(config=self.config).kernel_env(cd.root, cd.course_id, student)

    def _check_assign_resources(self, resources):
        # nbconvert's preprocess re-runs NotebookClient.__init__ (every trait back to its configured
        # value), then calls this: the one place to apply the assignment's limits and the student.
        super()._check_assign_resources(resources)
        info = (resources or {}).get("nbgrader") or {}
        self.use_assignment(info.get("assignment"))
        self.use_student(info.get("student"))

    def create_kernel_manager(self):
        km = super().create_kernel_manager()
        if isinstance(km, SandboxedKernelManager):
            km.sandbox = self._box
        return km
