"""Provisioning the embedded hub (`mlbd hub prepare`, and the first half of start/restart): Unix
accounts and their passwords, the Jupyter config dirs per role, the course account's copy of the
course, the exchange folders, the gradebook's students, closed course files, the first releases.

Idempotent: accounts and passwords that exist are kept, the course copy is refreshed from the
repository without losing instructors' edits (gradebook, submissions and feedback are kept), an
assignment already in the exchange is not released again. Layout under the state dir (see
HubSettings):

    hub/       0700 root        SQLite, cookie secret, pid files, settings.json, log, initial-passwords.csv,
                                nbgrader_config.py (the grading settings `mlbd hub grade` reads)
    course/    0700 course acct  nbgrader_config.py, source/, release/, gradebook.db, submitted/ …
    exchange/  0755 root        <course>/outbound 0755, inbound 3733 (mlbd.hub.exchange), feedback 0711
    etc/       0755 root        Jupyter config dirs: student/ (no instructor extensions), staff/, grader/
"""
from __future__ import annotations

import hashlib
import json
import os
import pwd
import shutil
import stat
import sys
from pathlib import Path

from ..course import CourseError, assignments
from ..variant import Variants
from . import accounts
from .course_steps import release
from .exchange import config_lines
from .runas import as_user, grader_env, log, need_root
from .settings import HubSettings

INSTRUCTOR_ONLY = ["@jupyter/nbgrader:create-assignment", "@jupyter/nbgrader:formgrader", "@jupyter/nbgrader:course-list"]
STAFF_OFF = ["@jupyter/nbgrader:formgrader", "@jupyter/nbgrader:course-list"]  # the formgrader is the hub service
# Students need JupyterLab, the Assignments panel and Validate; a server extension costs start time
# and memory in each of their servers, so the rest is off for them (the language-server proxy, the
# jupytext pairing, the Notebook 7 interface; see README "Hub tests and load").
STUDENT_LAB_OFF = ["@jupyter-notebook/lab-extension", "jupyterlab-jupytext"]  # their server side is off
# mlbd's own prebuilt JupyterLab extensions (mlbd/hub/labextension, `make labextension`): each
# assignment's due date in the Assignment List.
LABEXTENSIONS = Path(__file__).resolve().parent / "labextensions"
SERVER_EXTENSIONS = {
    "student": {"nbgrader.server_extensions.formgrader": False, "nbgrader.server_extensions.course_list": False,
                "jupyter_lsp": False, "jupyterlab_jupytext": False, "notebook": False, "notebook_shim": False},
    "staff": {"nbgrader.server_extensions.formgrader": False, "nbgrader.server_extensions.course_list": False},
    "grader": {"nbgrader.server_extensions.formgrader": True, "nbgrader.server_extensions.course_list": False,
               "nbgrader.server_extensions.assignment_list": False},
}



def default_state_dir(repo: Path) -> Path:
    """``.hub/`` in the repository when every user can traverse to it, else /var/lib/mlbd-hub."""
    here = repo / ".hub"
    if all(os.stat(p).st_mode & stat.S_IXOTH for p in (repo, *repo.parents)):
        return here
    return Path("/var/lib/mlbd-hub")


def _mkdir(path: Path, mode: int, owner: str | None = None) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    if owner:
        pw = pwd.getpwnam(owner)
        os.chown(path, pw.pw_uid, pw.pw_gid)
    os.chmod(path, mode)
    return path


def write_config_dirs(s: HubSettings) -> None:
    """Jupyter config dirs that the spawner (JUPYTER_CONFIG_PATH) and the formgrader service use."""
    nbgrader_cfg = (
        "# written by `mlbd hub` (mlbd/hub/provision.py); regenerated at every start\n"
        "c = get_config()  # noqa: F821\n"
        f"c.CourseDirectory.course_id = {s.course_id!r}\n"
        f"c.Exchange.root = {str(s.exchange)!r}\n"
        "c.Exchange.path_includes_course = True\n"
        + config_lines())
    news = ["@jupyterlab/apputils-extension:announcements"]  # no "get notified about Jupyter news?" pop-up
    disabled = {"student": INSTRUCTOR_ONLY + STUDENT_LAB_OFF + news, "staff": STAFF_OFF + news, "grader": news}
    for role in ("student", "staff", "grader"):
        d = _mkdir(s.etc / role, 0o755)
        (d / "nbgrader_config.py").write_text(nbgrader_cfg)
        (d / "jupyter_server_config.json").write_text(json.dumps(
            {"ServerApp": {"jpserver_extensions": SERVER_EXTENSIONS[role]},
             "LabApp": {"extra_labextensions_path": [str(LABEXTENSIONS)]}}, indent=1))
        _mkdir(d / "labconfig", 0o755)
        (d / "labconfig" / "page_config.json").write_text(json.dumps(
            {"disabledExtensions": {ext: True for ext in disabled[role]}}, indent=1))
        for f in d.rglob("*"):
            os.chmod(f, 0o755 if f.is_dir() else 0o644)


SKIP_PARTS = {".ipynb_checkpoints", "__pycache__"}


def _digests(root: Path) -> dict[str, str]:
    """relative path -> sha256 of every regular file under ``root`` (caches left out); a link or a
    special file counts as a file that matches nothing (it is never followed nor written through)."""
    if root.is_symlink():
        return {".": "link"}
    out = {}
    if root.is_dir():
        for path in sorted(root.rglob("*")):  # rglob does not descend into linked folders
            rel = path.relative_to(root)
            if SKIP_PARTS & set(rel.parts) or (path.is_dir() and not path.is_symlink()):
                continue
            if path.is_symlink() or not path.is_file():
                out[rel.as_posix()] = "link" if path.is_symlink() else "special"
            else:
                out[rel.as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def source_edits(s: HubSettings) -> list[str]:
    """Files of the course copy's ``source/`` that differ from what the hub last copied there (or,
    before a first copy, from the repository's): instructors' edits and new files (through the
    formgrader or the course account's server) that a refresh would overwrite or delete. A file
    deleted in the course copy loses nothing: the repository's comes back."""
    manifest = s.hub_dir / "source-synced.json"
    synced = json.loads(manifest.read_text()) if manifest.is_file() else {}
    repo, copy = _digests(Path(s.repo) / "source"), _digests(s.course_dir / "source")
    return sorted(rel for rel, digest in copy.items() if digest not in (synced.get(rel), repo.get(rel)))


def sync_source(s: HubSettings) -> None:
    """The repository's source/ is the source of truth: the course copy gets what changed there,
    but a start never overwrites what an instructor changed in the course copy; it refuses."""
    edits = source_edits(s)
    if edits:
        shown = "\n  ".join(f"{s.course_dir / 'source' / rel}" for rel in edits[:20])
        raise CourseError(
            f"the course copy's source/ has edits the repository does not have (a start would overwrite them):\n  "
            f"{shown}\nThe repository is the source of truth: copy each into {Path(s.repo) / 'source'} "
            "(and commit it), or delete it from the course copy to take the repository's, then start again.")
    repo_root, copy_root = Path(s.repo) / "source", s.course_dir / "source"
    repo, copy = _digests(repo_root), _digests(copy_root)
    for rel, digest in repo.items():
        if copy.get(rel) != digest:
            (copy_root / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(repo_root / rel, copy_root / rel)
    manifest = s.hub_dir / "source-synced.json"
    synced = json.loads(manifest.read_text()) if manifest.is_file() else {}
    for rel in set(synced) - set(repo):  # removed from the repository since the last start
        (copy_root / rel).unlink(missing_ok=True)
    manifest.write_text(json.dumps(repo, indent=0, sort_keys=True))


def sync_course(s: HubSettings) -> None:
    """Refresh the course account's copy from the repository; keep gradebook and runtime folders
    (``source/``: see sync_source; ``release/`` is derived and replaced).
    The repository's nbgrader_config.py also goes to the root-only hub dir: `mlbd hub grade` runs
    as root and reads that copy, never the one the course account (and so the formgrader) can edit."""
    repo = Path(s.repo)
    grader = accounts.course_account(s.course_id)
    fresh = not s.course_dir.exists()
    _mkdir(s.course_dir, 0o700, grader)
    shutil.copy2(repo / "nbgrader_config.py", s.course_dir / "nbgrader_config.py")
    shutil.copyfile(repo / "nbgrader_config.py", s.grading_config)
    os.chmod(s.grading_config, 0o600)
    sync_source(s)
    for a in assignments(repo):
        src = repo / "release" / a
        if src.is_dir():
            dest = s.course_dir / "release" / a
            shutil.rmtree(dest, ignore_errors=True)
            shutil.copytree(src, dest, ignore=shutil.ignore_patterns(*SKIP_PARTS))
    for folder in ("submitted", "autograded", "feedback"):
        (s.course_dir / folder).mkdir(exist_ok=True)
    Variants().secret(s.course_dir)   # per-student variant keys: the hub's spawner and the graders read it
    accounts.chown_tree(s.course_dir, grader)
    log(("created" if fresh else "refreshed") + f" the course copy {s.course_dir} (owner {grader}, 0700)")


def prepare_exchange(s: HubSettings) -> None:
    grader = accounts.course_account(s.course_id)
    _mkdir(s.exchange, 0o755)
    course = _mkdir(s.exchange / s.course_id, 0o755, grader)
    _mkdir(course / "outbound", 0o755, grader)
    _mkdir(course / "inbound", 0o3733, grader)
    _mkdir(course / "feedback", 0o711, grader)


def enrol_students(s: HubSettings, members: list[accounts.Member]) -> None:
    rows = [[m.username, m.first_name, m.last_name, m.email] for m in members if m.role == "student"]
    script = ("import json, sys\nfrom nbgrader.api import Gradebook\n"
              "with Gradebook(sys.argv[1]) as gb:\n"
              "    for sid, first, last, email in json.loads(sys.argv[2]):\n"
              "        gb.update_or_create_student(sid, first_name=first or None, last_name=last or None, email=email or None)\n")
    as_user(accounts.course_account(s.course_id), [sys.executable, "-c", script,
            s.gradebook_url, json.dumps(rows)], cwd=s.course_dir, env=grader_env(s))


def check_shared_access(s: HubSettings) -> None:
    """The course account (like every user) must reach the venv, the mlbd package and the state dir."""
    probe = ("import mlbd.hub.exchange, nbgrader, jupyterhub, os, sys; "
             "sys.exit(0 if os.access(sys.argv[1], os.X_OK) else 3)")
    proc = as_user(accounts.course_account(s.course_id), [sys.executable, "-c", probe, str(s.exchange)],
                   cwd="/", check=False)
    if proc.returncode:
        raise CourseError(
            f"another Unix user cannot use {sys.executable} with the mlbd package, or cannot reach {s.state_dir}: "
            "build the venv from a Python outside /root and keep the repository and state dir where every "
            f"user can traverse (e.g. /srv or /opt), or pass --state-dir.\n{proc.stderr.strip()[-600:]}")


# What students must not read in a course directory (the repository or the hub's copy): hidden
# tests and solutions (source/, git's history of it, otter's generated autograders), the gradebook,
# everyone's submissions, grades and feedback, demo course copies.
PRIVATE = ["source", ".git", "otter", "gradebook.db", "gradebook.db-journal", "submitted", "autograded",
           "feedback", ".mlbd", ".exchange", ".demo"]

PRIVACY_PROBE = """
import os, sys
readable = [p for p in sys.argv[1:] if os.access(p, os.R_OK) or os.access(p, os.X_OK)]
sys.exit("\\n".join(readable) or None)
"""


def close_course_files(course: Path) -> list[Path]:
    """Take every permission for others off the PRIVATE entries of ``course`` (the repository stays
    traversable for the venv and the mlbd package); returns the entries that exist."""
    found = []
    for name in PRIVATE:
        path = course / name
        if path.is_symlink() or not path.exists():
            continue
        found.append(path)
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o007:
            try:
                os.chmod(path, mode & ~0o007)
            except OSError as exc:
                log(f"cannot chmod o-rwx {path}: {exc}")
    return found


def check_private(s: HubSettings, members: list[accounts.Member]) -> None:
    """Close the course files of the repository and of the course copy, then check as a real
    student account that it reads none of them; refuse to start otherwise."""
    paths = close_course_files(Path(s.repo)) + close_course_files(s.course_dir) + [s.course_dir]
    student = next((m.username for m in members if m.role == "student"), None)
    if student is None:
        return
    proc = as_user(student, [sys.executable, "-P", "-c", PRIVACY_PROBE, *map(str, paths)], cwd="/", check=False)
    if proc.returncode:
        readable = proc.stderr.strip()
        raise CourseError(
            f"the student account {student} can read course files that must stay private:\n{readable}\n"
            "Make them unreadable by other users (chmod o-rwx on each, and no student in their group), or "
            "keep the repository on a file system where that holds (not a read-only or squashed mount).")


def prepare(s: HubSettings) -> list[accounts.Member]:
    need_root()
    if not shutil.which("configurable-http-proxy"):
        raise CourseError("configurable-http-proxy not found: `npm install -g configurable-http-proxy` (make hub does)")
    members = accounts.read_roster(s.roster)
    state = Path(s.state_dir)
    _mkdir(state, 0o711)
    _mkdir(s.hub_dir, 0o700)
    home_base = Path(s.home_base) if s.home_base else None
    if home_base:
        _mkdir(home_base, 0o711)
    accounts.ensure_accounts(members, s.course_id, home_base)
    log(f"{len(members)} accounts from {s.roster} and the course account {accounts.course_account(s.course_id)} (homes 0700)")
    new = accounts.ensure_passwords([m.username for m in members], s.passwords)
    if new:
        log(f"{len(new)} account(s) got a password of their own: hand them out from {s.passwords} "
            "(root only; users change theirs with `passwd`)")
    prepare_exchange(s)
    write_config_dirs(s)
    check_shared_access(s)
    sync_course(s)
    check_private(s, members)
    enrol_students(s, members)
    for a in s.release:
        if release(s, a):
            log(f"released {a} to the exchange")
        else:
            log(f"{a} is already released")
    s.save()
    return members


