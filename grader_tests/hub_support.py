"""Helpers for the hub tests: a throw-away hub state dir with its own Unix accounts and ports."""
from __future__ import annotations

import contextlib
import csv
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

from mlbd.hub import accounts
from mlbd.hub.client import HubUser
from mlbd.hub.runas import as_user
from mlbd.hub.settings import HubSettings

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_settings(prefix: str, students: int = 3) -> HubSettings:
    """A state dir under /tmp (traversable by the test's users) and a roster of test accounts."""
    state = Path(tempfile.mkdtemp(prefix=f"mlbd-{prefix}-", dir="/tmp"))
    os.chmod(state, 0o711)
    roster = state / "roster.csv"
    with open(roster, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["username", "role", "first_name", "last_name", "email"])
        w.writerow([f"{prefix}_instructor", "instructor", "I", "Nstructor", ""])
        w.writerow([f"{prefix}_ta", "ta", "T", "A", ""])
        for i in range(1, students + 1):
            w.writerow([f"{prefix}_s{i}", "student", "S", str(i), ""])
    return HubSettings(repo=str(ROOT), state_dir=str(state), roster=str(roster), course_id=prefix,
                       port=free_port(), hub_port=free_port(), proxy_api_port=free_port(),
                       formgrader_port=free_port(), venv_bin=str(Path(sys.executable).parent),
                       home_base=str(state / "home"))


def password_for(s: HubSettings, user: str) -> str:
    """The password `mlbd hub prepare` gave ``user`` (from the hub's root-only record)."""
    return accounts.read_passwords(s.passwords)[user]


def login(s: HubSettings, user: str, timeout: float = 120) -> HubUser:
    """``user`` logged in through the hub's login form with their own password."""
    u = HubUser(s.url, user, timeout=timeout)
    u.login(password_for(s, user))
    return u


@contextlib.contextmanager
def running_hub(prefix: str, students: int = 2, timeout: float = 180):
    """A prepared and started hub on its own accounts and ports; stopped and removed afterwards."""
    from mlbd.hub import launcher

    s = make_settings(prefix, students=students)
    try:
        launcher.prepare(s)
        launcher.start(s, background=True, timeout=timeout)
        yield s
    finally:
        launcher.stop(s)
        cleanup(s)


def cleanup(s: HubSettings) -> None:
    for m in accounts.read_roster(s.roster):
        accounts.delete_user(m.username)
    accounts.delete_user(accounts.course_account(s.course_id))
    shutil.rmtree(s.state_dir, ignore_errors=True)


def student_env(s: HubSettings, role: str = "student") -> dict:
    return {"JUPYTER_CONFIG_PATH": str(s.etc / role), "MPLBACKEND": "Agg"}


def run_as(user: str, code: str, s: HubSettings, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    home = os.path.expanduser(f"~{user}")
    return as_user(user, [sys.executable, "-c", code, *args], cwd=home, env=student_env(s), check=check)


def nbgrader_as(user: str, s: HubSettings, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    home = os.path.expanduser(f"~{user}")
    return as_user(user, [sys.executable, "-m", "nbgrader", *args], cwd=home, env=student_env(s), check=check)


PROBE = r'''
import json, os, sys
target = sys.argv[1]
inbound = os.path.dirname(target)
out = {}
def attempt(name, fn):
    try:
        fn(); out[name] = "allowed"
    except PermissionError:
        out[name] = "denied"
    except OSError as e:
        out[name] = type(e).__name__
attempt("list_inbound", lambda: os.listdir(inbound))
attempt("list_submission", lambda: os.listdir(target))
attempt("read_notebook", lambda: open(os.path.join(target, sys.argv[2])).read())
attempt("write_into", lambda: open(os.path.join(target, "planted.txt"), "w").write("x"))
attempt("overwrite_notebook", lambda: open(os.path.join(target, sys.argv[2]), "a").write("x"))
attempt("rename", lambda: os.rename(target, target + "-moved"))
attempt("remove", lambda: os.rmdir(target))
print(json.dumps(out))
'''


def probe(user: str, s: HubSettings, submission: Path, notebook: str) -> dict:
    return json.loads(run_as(user, PROBE, s, str(submission), notebook).stdout)
