"""The embedded hub's spawner: one Unix account per user, the course's profiles, per-role config."""
from __future__ import annotations

import html
import random
import socket
from typing import ClassVar

from jupyterhub import orm
from jupyterhub.spawner import LocalProcessSpawner
from tornado import web
from traitlets import Dict, Integer, List, Tuple, Unicode

from . import profiles as prof


class CourseSpawner(LocalProcessSpawner):
    """LocalProcessSpawner with the profile choice of ``values.yaml`` and a Jupyter config dir per role.

    Staff (groups ``instructors``/``tas``) get ``etc/staff``; everyone else ``etc/student``, which
    disables nbgrader's instructor extensions. A GPU profile on a machine without a GPU fails at
    once with a message that says so and what to choose instead.
    """

    profiles = List(help="singleuser.profileList entries (see mlbd.hub.profiles)").tag(config=True)
    config_dirs = Dict(help="role ('staff' or 'student') -> Jupyter config dir").tag(config=True)
    staff_groups = List(["instructors", "tas"]).tag(config=True)
    extra_path = Unicode("", help="prepended to PATH (the venv's bin: nbgrader runs alembic by name)").tag(config=True)
    port_range = Tuple(Integer(), Integer(), default_value=(20000, 32000),
                       help="servers' ports: below Linux's ephemeral range (32768+), which bind(0) and "
                            "outgoing connections use").tag(config=True)
    _handed_out: ClassVar[set[int]] = set()  # ports given to servers of this hub process that run or start

    def _options_form_default(self):
        if len(self.profiles) < 2:
            return ""
        rows = []
        default = prof.default_profile(self.profiles)
        for p in self.profiles:
            slug = html.escape(p["slug"])
            checked = " checked" if p is default else ""
            rows.append(
                f'<label class="form-check" style="display:block;margin:0.5em 0">'
                f'<input class="form-check-input" type="radio" name="profile" value="{slug}" id="profile-{slug}"{checked}> '
                f'<strong>{html.escape(p["display_name"])}</strong><br><small>{html.escape(p.get("description", ""))}</small></label>')
        return "\n".join(rows)

    def options_from_form(self, formdata):
        return {"profile": (formdata.get("profile") or [prof.default_profile(self.profiles)["slug"]])[0]}

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
            env.update({k: str(v) for k, v in p.get("kubespawner_override", {}).get("environment", {}).items()})
            if not prof.wants_gpu(p):
                env["CUDA_VISIBLE_DEVICES"] = ""
        env.setdefault("MPLBACKEND", "Agg")
        env.setdefault("MLBD_OFFLINE", "1")
        return env

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

    async def start(self):
        p = self.profile()
        if p and prof.wants_gpu(p):
            ok, why = prof.gpu_present()
            if not ok:
                self.log.warning("%s asked for the GPU profile: %s", self.user.name, why)
                raise web.HTTPError(503, prof.NO_GPU_MESSAGE.format(why=why))
        self.port = self.pick_port()
        try:
            return await super().start()
        except BaseException:
            self._handed_out.discard(self.port)
            raise

    async def stop(self, now=False):
        try:
            await super().stop(now=now)
        finally:
            self._handed_out.discard(self.port)
