"""Where the embedded hub keeps things, and its ports: one JSON file the launcher writes and
``hub_config/jupyterhub_config.py`` reads (``MLBD_HUB_SETTINGS``)."""
from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path


@dataclass
class HubSettings:
    repo: str                       # the course repository (source of truth: source/, release/, roster)
    state_dir: str                  # runtime state; must be traversable by every hub user
    roster: str
    course_id: str = "mlbd"
    ip: str = "127.0.0.1"
    port: int = 8000
    hub_port: int = 8081
    proxy_api_port: int = 8001
    formgrader_port: int = 8002
    venv_bin: str = field(default_factory=lambda: str(Path(sys.executable).parent))
    home_base: str | None = None    # None: the system default (/home/<user>)
    idle_timeout: int = 3600
    release: list[str] = field(default_factory=lambda: ["lecture01"])

    # -- layout --------------------------------------------------------------------------------
    @property
    def hub_dir(self) -> Path:        # root only: SQLite, cookie secret, pid, log
        return Path(self.state_dir) / "hub"

    @property
    def course_dir(self) -> Path:     # the course account's copy: gradebook, submitted/, feedback/
        return Path(self.state_dir) / "course"

    @property
    def gradebook_url(self) -> str:   # the course copy's gradebook (nbgrader_config.py reads it from MLBD_DB_URL)
        return f"sqlite:///{self.course_dir / 'gradebook.db'}"

    @property
    def exchange(self) -> Path:
        return Path(self.state_dir) / "exchange"

    @property
    def etc(self) -> Path:            # Jupyter config dirs per role: student/, staff/, grader/
        return Path(self.state_dir) / "etc"

    @property
    def passwords(self) -> Path:      # root only: each account's first password (mlbd.hub.accounts.ensure_passwords)
        return self.hub_dir / "initial-passwords.csv"

    @property
    def grading_config(self) -> Path:  # root only: the nbgrader_config.py `mlbd hub grade` reads (not the course copy's)
        return self.hub_dir / "nbgrader_config.py"

    @property
    def url(self) -> str:
        return f"http://{self.ip}:{self.port}"

    @property
    def file(self) -> Path:
        return self.hub_dir / "settings.json"

    @property
    def pid_file(self) -> Path:
        return self.hub_dir / "jupyterhub.pid"

    def save(self) -> Path:
        self.hub_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.hub_dir, 0o700)
        tmp = self.file.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(asdict(self), fh, indent=1)
        os.replace(tmp, self.file)
        return self.file

    @classmethod
    def load(cls, path: Path | str) -> "HubSettings":
        with open(path) as fh:
            saved = json.load(fh)
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in saved.items() if k in known})  # e.g. "password" of hubs before 2026-12

    @classmethod
    def from_env(cls) -> "HubSettings":
        path = os.environ.get("MLBD_HUB_SETTINGS")
        if not path:
            raise RuntimeError("MLBD_HUB_SETTINGS is not set: start the hub with `mlbd hub start` (or `make hub`)")
        return cls.load(path)
