"""Running commands as another Unix account (the course account, a student) from the root launcher,
the course account's environment (one place: the launcher's nbgrader steps and the formgrader
service in hub_config/jupyterhub_config.py use it), and the launcher's console line."""
from __future__ import annotations

import os
import pwd
import subprocess
import sys
from pathlib import Path

from ..course import CourseError
from . import accounts
from .settings import HubSettings


def log(msg: str) -> None:
    print(f"[mlbd hub] {msg}", flush=True)


def need_root() -> None:
    if os.geteuid() != 0:
        raise CourseError("the embedded hub runs as root (one Unix account per user): run `sudo make hub`")


def as_user(name: str, cmd: list[str], *, cwd: Path | str, env: dict | None = None,
            check: bool = True, timeout: float | None = 600) -> subprocess.CompletedProcess:
    pw = pwd.getpwnam(name)
    full = {"HOME": pw.pw_dir, "USER": name, "LOGNAME": name, "LANG": "C.UTF-8",
            "PATH": f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin"}
    full.update(env or {})
    proc = subprocess.run(cmd, cwd=cwd, env=full, user=pw.pw_uid, group=pw.pw_gid, extra_groups=[],
                          capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-12:]
        raise CourseError(f"as {name}: {' '.join(cmd[:6])} failed:\n" + "\n".join(tail))
    return proc


def grader_env(s: HubSettings) -> dict:
    """What the course account's nbgrader steps and the formgrader service run with: its Jupyter
    config dir, the exchange, the course id and the gradebook (read by nbgrader_config.py)."""
    return {"JUPYTER_CONFIG_PATH": str(s.etc / "grader"), "MLBD_EXCHANGE": str(s.exchange),
            "MLBD_COURSE_ID": s.course_id, "MLBD_DB_URL": s.gradebook_url,
            "MPLBACKEND": "Agg", "MLBD_OFFLINE": "1"}


def nbgrader_as_grader(s: HubSettings, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return as_user(accounts.course_account(s.course_id), [sys.executable, "-m", "nbgrader", *args],
                   cwd=s.course_dir, env=grader_env(s), check=check)


