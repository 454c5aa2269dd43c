"""Roster → Unix accounts: one account per hub user (home 0700) and one course account.

The roster is a CSV file with the columns ``username,role,first_name,last_name,email``; ``role`` is
``instructor``, ``ta`` or ``student``. Hub groups are named after the roles (``instructors``,
``tas``, ``students``). The course account (``grader-<course_id>``) is not a hub user: it runs the
formgrader service and owns the course directory and the gradebook.
"""
from __future__ import annotations

import contextlib
import csv
import fcntl
import grp
import os
import pwd
import re
import secrets
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ..course import CourseError

ROLES = {"instructor": "instructors", "ta": "tas", "student": "students"}
_NAME = re.compile(r"^[a-z_][a-z0-9_-]{0,30}$")


@dataclass(frozen=True)
class Member:
    username: str
    role: str
    first_name: str = ""
    last_name: str = ""
    email: str = ""

    @property
    def group(self) -> str:
        return ROLES[self.role]


def read_roster(path: Path | str) -> list[Member]:
    """Parse and check a roster: known roles, valid Unix names, no duplicates."""
    path = Path(path)
    if not path.is_file():
        raise CourseError(f"roster not found: {path}")
    members: list[Member] = []
    seen = set()
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        missing = {"username", "role"} - set(reader.fieldnames or [])
        if missing:
            raise CourseError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
        for lineno, row in enumerate(reader, start=2):
            name = (row.get("username") or "").strip()
            role = (row.get("role") or "").strip().lower()
            if not name:
                continue
            if not _NAME.match(name):
                raise CourseError(f"{path}:{lineno}: {name!r} is not a valid Unix user name")
            if role not in ROLES:
                raise CourseError(f"{path}:{lineno}: role {role!r} is not one of {', '.join(ROLES)}")
            if name in seen:
                raise CourseError(f"{path}:{lineno}: {name} appears twice")
            seen.add(name)
            members.append(Member(name, role, *(str(row.get(k) or "").strip() for k in ("first_name", "last_name", "email"))))
    return members


def groups(members: list[Member]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {g: [] for g in ROLES.values()}
    for m in members:
        out[m.group].append(m.username)
    return out


def course_account(course_id: str) -> str:
    return f"grader-{course_id}"[:32]


@contextlib.contextmanager
def _accounts_lock():
    """One account change at a time on this machine (hubs, tests and benchmarks may run together)."""
    with open("/run/mlbd-accounts.lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def ensure_user(name: str, home: Path | None = None, comment: str = "") -> pwd.struct_passwd:
    """Create the Unix account ``name`` unless it exists (locked: ``ensure_passwords`` gives roster
    members theirs; the course account never gets one).

    Its home is created 0700 (Debian's ``useradd -m`` makes it 0755); an existing account keeps its
    uid and home.
    """
    if os.geteuid() != 0:
        raise CourseError("creating Unix accounts needs root")
    with _accounts_lock():
        if not user_exists(name):
            _useradd(name, home, comment)
    pw = pwd.getpwnam(name)
    homedir = Path(pw.pw_dir)
    if not homedir.is_dir():
        homedir.mkdir(parents=True)
        os.chown(homedir, pw.pw_uid, pw.pw_gid)
    os.chmod(homedir, 0o700)
    return pw


def _useradd(name: str, home: Path | None, comment: str) -> None:
    cmd = ["useradd", "--create-home", "--shell", "/bin/bash", "--user-group"]
    if home is not None:
        home.parent.mkdir(parents=True, exist_ok=True)
        cmd += ["--home-dir", str(home)]
    if comment:
        cmd += ["--comment", comment]
    proc = subprocess.run([*cmd, name], capture_output=True, text=True)
    if proc.returncode != 0:
        raise CourseError(f"useradd {name} failed: {proc.stderr.strip()}")


def ensure_accounts(members: list[Member], course_id: str, home_base: Path | None = None) -> dict[str, pwd.struct_passwd]:
    """Every roster member and the course account exist, homes 0700. Returns name → passwd entry."""
    out = {}
    for m in members:
        home = home_base / m.username if home_base else None
        out[m.username] = ensure_user(m.username, home, f"{m.first_name} {m.last_name}".strip())
    grader = course_account(course_id)
    out[grader] = ensure_user(grader, home_base / grader if home_base else None, f"course account {course_id}")
    return out


def _usable_passwords() -> set[str]:
    """Accounts whose /etc/shadow entry holds a password hash (not empty, not locked with ! or *)."""
    out = set()
    with open("/etc/shadow") as fh:
        for line in fh:
            name, _, rest = line.partition(":")
            pw_hash = rest.split(":", 1)[0]
            if pw_hash and pw_hash[0] not in "!*":
                out.add(name)
    return out


def ensure_passwords(names: list[str], record: Path) -> list[str]:
    """Give every account in ``names`` that has no usable password a random one of its own.

    The system keeps only its hash (``chpasswd``); the clear text is appended once to ``record``
    (root only, 0600), for the instructor to hand out. Accounts with a password keep it, so a
    later start changes nothing. Returns the names that got a password now.
    """
    with _accounts_lock():
        todo = [n for n in names if n not in _usable_passwords()]
        if not todo:
            return []
        new = {n: secrets.token_urlsafe(12) for n in todo}
        fd = os.open(record, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "a") as fh:
            os.fchown(fh.fileno(), 0, 0)
            os.fchmod(fh.fileno(), 0o600)
            if fh.tell() == 0:
                fh.write("username,password\n")
            fh.writelines(f"{n},{pw}\n" for n, pw in new.items())
        proc = subprocess.run(["chpasswd"], input="".join(f"{n}:{pw}\n" for n, pw in new.items()),
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise CourseError(f"chpasswd failed: {proc.stderr.strip()}")
    return todo


def read_passwords(record: Path) -> dict[str, str]:
    """username -> password from a record written by ``ensure_passwords`` (the latest line wins)."""
    with open(record, newline="") as fh:
        return {row["username"]: row["password"] for row in csv.DictReader(fh)}


def delete_user(name: str) -> None:
    """Remove an account and its home (used by tests and benchmarks for their own accounts)."""
    with _accounts_lock():
        if user_exists(name):
            subprocess.run(["userdel", "--remove", name], capture_output=True)
        try:
            grp.getgrnam(name)
            subprocess.run(["groupdel", name], capture_output=True)
        except KeyError:
            pass


def chown_tree(root: Path, name: str) -> None:
    pw = pwd.getpwnam(name)
    for dirpath, dirnames, filenames in os.walk(root):
        os.chown(dirpath, pw.pw_uid, pw.pw_gid, follow_symlinks=False)
        for f in filenames:
            os.chown(os.path.join(dirpath, f), pw.pw_uid, pw.pw_gid, follow_symlinks=False)
