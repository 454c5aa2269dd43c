"""The embedded hub's spawner: one Unix account per user, the course's profiles, per-role config,
and the profile's limits enforced by a cgroup per server."""
from __future__ import annotations

import asyncio
import html
import os
import random
import socket
from pathlib import Path
from typing import ClassVar

from jupyterhub import orm
from jupyterhub.spawner import LocalProcessSpawner
from tornado import web
from traitlets import Bool, Dict, Float, Integer, List, Tuple, Unicode

from mlbd.variant import Variants
from mlbd.grading import cgroups

from . import memwatch
from . import profiles as prof


def refusal(status: int, message: str) -> web.HTTPError:
    """An HTTP error whose message JupyterHub shows as it is (spawn form and spawn-pending page)."""
    err = web.HTTPError(status, message)
    err.jupyterhub_message = message
    return err


class CourseSpawner(LocalProcessSpawner):
    """LocalProcessSpawner with the profile choice of ``values.yaml`` and a Jupyter config dir per role.

    Staff (groups ``instructors``/``tas``) get ``etc/staff``; everyone else ``etc/student``, which
    disables nbgrader's instructor extensions. A GPU profile on a machine without a GPU is shown
    disabled with the reason, and refused with that reason if asked for through the API.

    Limits: the chosen profile's ``cpu_limit``/``mem_limit`` (and guarantees) become this spawner's
    traits, as KubeSpawner applies ``kubespawner_override``; the server then starts inside its own
    cgroup (mlbd.grading.cgroups, as the grader's kernels) with that memory, that CPU quota and
    ``pids_limit`` processes, entered before the server's first instruction. The kernel of a memory
    bomb is killed by the kernel's OOM killer or, when the cgroup is stuck thrashing at its limit
    for ``memwatch_grace`` seconds first, by the hub (mlbd.hub.memwatch: the largest process but
    the server); Jupyter restarts it and the new kernel's first cell says why
    (mlbd.hub.kernels). A fork loop gets EAGAIN, and the hub and other users' servers are
    untouched. Stopping the server kills whatever is left in its cgroup (orphaned kernels included).
    """

    profiles = List(help="singleuser.profileList entries (see mlbd.hub.profiles)").tag(config=True)
    config_dirs = Dict(help="role ('staff' or 'student') -> Jupyter config dir").tag(config=True)
    staff_groups = List(["instructors", "tas"]).tag(config=True)
    extra_path = Unicode("", help="prepended to PATH (the venv's bin: nbgrader runs alembic by name)").tag(config=True)
    port_range = Tuple(Integer(), Integer(), default_value=(20000, 32000),
                       help="servers' ports: below Linux's ephemeral range (32768+), which bind(0) and "
                            "outgoing connections use").tag(config=True)
    pids_limit = Integer(512, help="processes and threads per user server (its kernels and terminals included)").tag(config=True)
    enforce_limits = Bool(True, help="run each server in a cgroup with its profile's limits; when the host "
                                     "has no writable cgroup hierarchy the server does not start").tag(config=True)
    cgroup_dirs = List(Unicode(), help="the running server's cgroup directories (kept across hub restarts)")
    memwatch_grace = Float(2.0, help="seconds a server's cgroup may thrash at its memory limit before the "
                                     "hub kills its largest process other than the server; 0: never").tag(config=True)
    kill_record_dir = Unicode("/run/mlbd-hub/memory-kills",
                              help="where the hub records the processes it killed, one file per server, "
                                   "for the server to tell the student (made 0755, root's)").tag(config=True)
    course_id = Unicode("", help="the course whose variant keys the servers get (mlbd.variant)").tag(config=True)
    variant_secret_file = Unicode(
        "", help="the course's variant secret (c.Variants.secret_file of the course copy, absolute): each "
                 "server gets its user's own key in MLBD_VARIANT_KEY, never the secret; empty: the default "
                 "variant for everyone").tag(config=True)
    _handed_out: ClassVar[set[int]] = set()  # ports given to servers of this hub process that run or start

    def _options_form_default(self):
        if len(self.profiles) < 2:
            return ""
        rows = []
        default = prof.default_profile(self.profiles)
        for p in self.profiles:
            slug = html.escape(p["slug"])
            why = prof.unavailable(p)
            state = " disabled" if why else (" checked" if p is default else "")
            note = (f'<br><small class="text-danger" id="profile-{slug}-unavailable">Unavailable: {html.escape(why)}</small>'
                    if why else "")
            rows.append(
                f'<label class="form-check" style="display:block;margin:0.5em 0">'
                f'<input class="form-check-input" type="radio" name="profile" value="{slug}" id="profile-{slug}"{state}> '
                f'<strong>{html.escape(p["display_name"])}</strong><br><small>{html.escape(p.get("description", ""))}</small>'
                f'{note}</label>')
        return "\n".join(rows)

    def options_from_form(self, formdata):
        slug = (formdata.get("profile") or [prof.default_profile(self.profiles)["slug"]])[0]
        self._check_profile(slug)  # refused on the form page itself, with the reason
        return {"profile": slug}

    def _check_profile(self, slug: str | None) -> dict:
        if not self.profiles:
            return {}
        try:
            p = prof.find(self.profiles, slug)
        except ValueError as exc:
            raise refusal(400, str(exc)) from None
        why = prof.unavailable(p)
        if why:
            self.log.warning("%s asked for the %s profile: %s", self.user.name, p["slug"], why)
            raise refusal(400, why)
        return p

    @property
    def role(self) -> str:
        names = {g.name for g in getattr(self.user, "groups", [])}
        return "staff" if names & set(self.staff_groups) else "student"

    def profile(self) -> dict:
        return prof.find(self.profiles, (self.user_options or {}).get("profile")) if self.profiles else {}

    def get_env(self):
        env = super().get_env()
        env["JUPYTER_CONFIG_PATH"] = self.config_dirs.get(self.role, "")
        if self.extra_path:
            env["PATH"] = self.extra_path + ":" + env.get("PATH", "/usr/local/bin:/usr/bin:/bin")
        p = self.profile()
        if p:
            env["MLBD_PROFILE"] = p["slug"]
            env["MLBD_PROFILE_NAME"] = p.get("display_name", p["slug"])
            env.update({k: str(v) for k, v in p.get("kubespawner_override", {}).get("environment", {}).items()})
            if not prof.wants_gpu(p):
                env["CUDA_VISIBLE_DEVICES"] = ""
        env.setdefault("MPLBACKEND", "Agg")
        env.setdefault("MLBD_OFFLINE", "1")
        env.update(self.variant_env())
        env.update(self.memory_env())
        return env

    def memory_env(self) -> dict[str, str]:
        """Where the server finds why a kernel died (mlbd.hub.kernels): its memory cgroup (the OOM
        killer's count) and the hub's kill record."""
        env = {}
        d = self._memory_dir()
        if d:
            env["MLBD_MEMORY_CGROUP"] = str(d)
        record = self._kill_record()
        if record:
            env["MLBD_KILL_RECORD"] = str(record)
        return env

    def variant_env(self) -> dict[str, str]:
        """This user's variant key (the key ``mlbd grade`` gives their submission's kernel)."""
        if not self.variant_secret_file:
            return {}
        try:   # an absolute secret_file: the root argument is not used
            return Variants(secret_file=self.variant_secret_file).kernel_env("/", self.course_id, self.user.name,
                                                                              create=False)
        except (OSError, ValueError) as exc:
            self.log.warning("no variant key for %s (%s): the default variant", self.user.name, exc)
            return {}

    def pick_port(self) -> int:
        """A port no other server of this hub has or is being given. JupyterHub's own choice
        (bind to port 0, close, let the server bind later) can hand one port to two of 50 servers
        that start at once: the second fails to bind, yet the hub, finding a Jupyter server on
        that port, sends its user to the first user's server."""
        lo, hi = self.port_range
        used = {port for (port,) in self.user.db.query(orm.Server.port)} | self._handed_out
        for _ in range(500):
            port = random.randint(lo, hi)
            if port in used:
                continue
            with socket.socket() as sock:
                try:
                    sock.bind((self.ip or "127.0.0.1", port))  # nothing else listens there now
                except OSError:
                    continue
            self._handed_out.add(port)  # no await since `used`: no other start ran in between
            return port
        raise web.HTTPError(503, f"no free port in {lo}-{hi} for {self.user.name}'s server")

    # -- limits ----------------------------------------------------------------------------------
    def make_preexec_fn(self, name):
        """Enter the server's cgroup (as root, before dropping to the user), then become the user."""
        become_user = super().make_preexec_fn(name)
        procs = [str(Path(d) / "cgroup.procs") for d in self.cgroup_dirs]

        def preexec():
            pid = str(os.getpid())
            for f in procs:
                with open(f, "w") as fh:
                    fh.write(pid)
            become_user()
        return preexec

    def _cgroup(self) -> cgroups.Cgroup | None:
        if not self.cgroup_dirs:
            return None
        return cgroups.Cgroup(cgroups.version(), [Path(d) for d in self.cgroup_dirs])

    def _memory_dir(self) -> Path | None:
        for d in map(Path, self.cgroup_dirs):
            if (d / "memory.limit_in_bytes").exists() or (d / "memory.max").exists():
                return d
        return None

    def _kill_record(self) -> Path | None:
        """The file the hub's memory watcher appends the pids it kills to (one per server cgroup)."""
        if not self.cgroup_dirs or not self.kill_record_dir:
            return None
        d = memwatch.record_dir(self.kill_record_dir)
        return d / Path(self.cgroup_dirs[0]).name if d else None

    def _forget_kills(self) -> None:
        record = self._kill_record()
        if record:
            record.unlink(missing_ok=True)

    def _watch_memory(self) -> None:
        """Start the hub's watch of the server's memory cgroup (after a start, or a hub restart)."""
        if getattr(self, "_memwatch", None) and not self._memwatch.done():
            return
        d = self._memory_dir()
        if not (d and self.pid and self.memwatch_grace > 0):
            return
        watch = memwatch.MemoryWatch(cgroups.version(), d, [Path(x) for x in self.cgroup_dirs], self.pid,
                                     record=self._kill_record(), label=f"{self.user.name}'s server",
                                     log=self.log, grace=self.memwatch_grace)
        self._memwatch = asyncio.ensure_future(watch.run())

    def _unwatch_memory(self) -> None:
        task = getattr(self, "_memwatch", None)
        if task:
            task.cancel()
        self._memwatch = None

    def _make_cgroup(self) -> None:
        if not self.enforce_limits:
            return
        mem = int(self.mem_limit or 0)
        if not mem:
            raise refusal(500, f"{self.user.name}'s server has no memory limit: set mem_limit in its profile "
                               "(hub_config/k8s/values.yaml) or CourseSpawner.enforce_limits = False")
        name = f"mlbd-server-{self.user.name}" + (f"-{self.name}" if self.name else "")
        try:
            try:
                cg = cgroups.create(name, mem, self.pids_limit, cpus=self.cpu_limit or None)
            except cgroups.CgroupUnavailable:
                # a cgroup left by a crashed hub with lower limits refuses higher ones (v1: EINVAL
                # above its memsw limit); the failed attempt removed it, so a second one starts clean
                cg = cgroups.create(name, mem, self.pids_limit, cpus=self.cpu_limit or None)
            if cg.pids():  # left by a server stopped without the hub (`mlbd hub stop` after a hub crash)
                self.log.warning("%s: killing %d process(es) left in %s", self.user.name, len(cg.pids()), name)
                cg.destroy()
                cg = cgroups.create(name, mem, self.pids_limit, cpus=self.cpu_limit or None)
        except cgroups.CgroupUnavailable as exc:
            raise refusal(500, f"cannot limit {self.user.name}'s server: {exc}. Run the hub as root on a host "
                               "with cgroups, or set CourseSpawner.enforce_limits = False") from None
        self.cgroup_dirs = [str(d) for d in cg.dirs]
        self._forget_kills()  # a previous server's kills are not this one's
        self.log.info("%s's server: cgroup %s, memory %d MiB, %s CPUs, %d processes", self.user.name, name,
                      mem // 2**20, self.cpu_limit or "unlimited", self.pids_limit)

    def limit_report(self) -> str:
        """Which limits the server's cgroup has hit (for the log when the server stops)."""
        cg = self._cgroup()
        hit = [k for k, v in (cg.events() if cg else {}).items() if v]
        return f"hit its {' and '.join(hit)} limit" if hit else ""

    def get_state(self):
        state = super().get_state()
        if self.cgroup_dirs:
            state["cgroup_dirs"] = list(self.cgroup_dirs)
        return state

    def load_state(self, state):
        super().load_state(state)
        self.cgroup_dirs = list(state.get("cgroup_dirs", []))

    # -- lifecycle ---------------------------------------------------------------------------------
    async def start(self):
        p = self._check_profile((self.user_options or {}).get("profile"))
        for key, value in prof.limit_overrides(p).items():
            setattr(self, key, value)
        self._make_cgroup()
        self.port = self.pick_port()
        try:
            url = await super().start()
        except BaseException:
            self._handed_out.discard(self.port)
            self._drop_cgroup()
            raise
        self._watch_memory()
        return url

    async def poll(self):
        status = await super().poll()
        if status is None:
            self._watch_memory()  # a server that outlived a hub restart is watched again
        return status

    def _drop_cgroup(self) -> None:
        self._unwatch_memory()
        self._forget_kills()
        cg = self._cgroup()
        if cg:
            report = self.limit_report()
            if report:
                self.log.warning("%s's server %s", self.user.name, report)
            cg.destroy()  # also kills what the server left behind (kernels, terminals)
        self.cgroup_dirs = []

    async def stop(self, now=False):
        # cgroup_dirs survive clear_state (poll clears the state of a server that died): emptied here
        try:
            await super().stop(now=now)
        finally:
            self._handed_out.discard(self.port)
            self._drop_cgroup()
