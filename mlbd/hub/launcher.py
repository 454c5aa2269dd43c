"""`mlbd hub …`: prepare the machine for the embedded hub, start it, stop it, run course steps on it.

``prepare`` is idempotent: accounts that exist are kept, the course copy is refreshed from the
repository (gradebook, submissions and feedback are kept), an assignment already in the exchange is
not released again. Layout under the state dir (see HubSettings):

    hub/       0700 root        SQLite, cookie secret, pid files, settings.json, log, initial-passwords.csv,
                                nbgrader_config.py (the grading settings `mlbd hub grade` reads)
    course/    0700 course acct  nbgrader_config.py, source/, release/, gradebook.db, submitted/ …
    exchange/  0755 root        <course>/outbound 0755, inbound 3733 (mlbd.hub.exchange), feedback 0711
    etc/       0755 root        Jupyter config dirs: student/ (no instructor extensions), staff/, grader/
"""
from __future__ import annotations

import difflib
import hashlib
import json
import os
import pwd
import secrets
import shutil
import signal
import sqlite3
import stat
import subprocess
import sys
import time
import urllib.request
from contextlib import closing
from pathlib import Path

from ..course import CourseError, assignments
from ..procfs import alive, children, cmdline
from . import accounts
from .exchange import config_lines
from .settings import HubSettings

INSTRUCTOR_ONLY = ["@jupyter/nbgrader:create-assignment", "@jupyter/nbgrader:formgrader", "@jupyter/nbgrader:course-list"]
STAFF_OFF = ["@jupyter/nbgrader:formgrader", "@jupyter/nbgrader:course-list"]  # the formgrader is the hub service
# Students need JupyterLab, the Assignments panel and Validate; a server extension costs start time
# and memory in each of their servers, so the rest is off for them (the language-server proxy, the
# jupytext pairing, the Notebook 7 interface; see README "Hub tests and load").
STUDENT_LAB_OFF = ["@jupyter-notebook/lab-extension", "jupyterlab-jupytext"]  # their server side is off
SERVER_EXTENSIONS = {
    "student": {"nbgrader.server_extensions.formgrader": False, "nbgrader.server_extensions.course_list": False,
                "jupyter_lsp": False, "jupyterlab_jupytext": False, "notebook": False, "notebook_shim": False},
    "staff": {"nbgrader.server_extensions.formgrader": False, "nbgrader.server_extensions.course_list": False},
    "grader": {"nbgrader.server_extensions.formgrader": True, "nbgrader.server_extensions.course_list": False,
               "nbgrader.server_extensions.assignment_list": False},
}


def log(msg: str) -> None:
    print(f"[mlbd hub] {msg}", flush=True)


def default_state_dir(repo: Path) -> Path:
    """``.hub/`` in the repository when every user can traverse to it, else /var/lib/mlbd-hub."""
    here = repo / ".hub"
    if all(os.stat(p).st_mode & stat.S_IXOTH for p in (repo, *repo.parents)):
        return here
    return Path("/var/lib/mlbd-hub")


# -- running things as the course account ---------------------------------------------------------
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
    return {"JUPYTER_CONFIG_PATH": str(s.etc / "grader"), "MLBD_EXCHANGE": str(s.exchange),
            "MLBD_COURSE_ID": s.course_id, "MLBD_DB_URL": f"sqlite:///{s.course_dir / 'gradebook.db'}",
            "MPLBACKEND": "Agg", "MLBD_OFFLINE": "1"}


def nbgrader_as_grader(s: HubSettings, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return as_user(accounts.course_account(s.course_id), [sys.executable, "-m", "nbgrader", *args],
                   cwd=s.course_dir, env=grader_env(s), check=check)


# -- prepare --------------------------------------------------------------------------------------
def _need_root() -> None:
    if os.geteuid() != 0:
        raise CourseError("the embedded hub runs as root (one Unix account per user): run `sudo make hub`")


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
        "# written by `mlbd hub` (mlbd/hub/launcher.py); regenerated at every start\n"
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
            {"ServerApp": {"jpserver_extensions": SERVER_EXTENSIONS[role]}}, indent=1))
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
            f"sqlite:///{s.course_dir / 'gradebook.db'}", json.dumps(rows)], cwd=s.course_dir, env=grader_env(s))


def release(s: HubSettings, assignment: str, force: bool = False) -> bool:
    """Generate (in the gradebook) and release ``assignment`` as the course account; False if it was out."""
    if (s.exchange / s.course_id / "outbound" / assignment).is_dir() and not force:
        return False
    nbgrader_as_grader(s, "generate_assignment", assignment, "--force")
    nbgrader_as_grader(s, "release_assignment", assignment, "--force")
    return True


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
    _need_root()
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


# -- start / stop ---------------------------------------------------------------------------------
# Three kinds of process, stopped differently: the proxy (started here, in its own session, so it
# outlives the hub), the hub with its services (formgrader, culler), and the user servers (started
# by the hub, in their own sessions; `cleanup_servers = False` lets them outlive it). A restart
# replaces only the hub: students' servers, their open connections and the proxy's routes stay.
def _pid_from(path: Path, marker: bytes) -> int | None:
    try:
        pid = int(path.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if alive(pid) and marker in cmdline(pid) else None


def running_pid(s: HubSettings) -> int | None:
    return _pid_from(s.pid_file, b"jupyterhub")


def proxy_pid(s: HubSettings) -> int | None:
    return _pid_from(s.hub_dir / "proxy.pid", b"configurable-http-proxy")


def server_pids(s: HubSettings) -> list[int]:
    """User servers the hub's database says are running and that still run (whoever their parent)."""
    db = s.hub_dir / "jupyterhub.sqlite"
    if not db.is_file():
        return []
    try:
        with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)) as con:
            states = [row[0] for row in con.execute("SELECT state FROM spawners WHERE state IS NOT NULL")]
    except sqlite3.Error:
        return []
    pids = []
    for state in states:
        try:
            pid = int(json.loads(state).get("pid") or 0)
        except (TypeError, ValueError, AttributeError):
            continue
        if pid and alive(pid) and b"singleuser" in cmdline(pid):  # mlbd.hub.singleuser
            pids.append(pid)
    return pids


def wait_ready(s: HubSettings, timeout: float = 120, proc: subprocess.Popen | None = None) -> float:
    """Wait until the hub's API and the formgrader answer through the proxy. The proxy outlives
    hubs and sends unknown paths to the hub, so the API alone answers before the hub has started
    its services and set their routes."""
    start = time.monotonic()
    urls = [f"{s.url}/hub/api/", f"{s.url}/services/formgrader/"]
    while time.monotonic() - start < timeout:
        if proc is not None and proc.poll() is not None:
            raise CourseError(f"jupyterhub exited with status {proc.returncode}; see {s.hub_dir / 'jupyterhub.log'}")
        try:
            for url in urls:
                with urllib.request.urlopen(url, timeout=3) as r:  # the formgrader: via the hub's login page
                    if r.status != 200:
                        raise OSError(r.status)
            return time.monotonic() - start
        except OSError:
            pass
        time.sleep(0.3)
    raise CourseError(f"the hub did not answer at {urls} within {timeout:.0f} s")


def proxy_token(s: HubSettings) -> str:
    """The proxy's API token (hub dir, root only), shared by the proxy and every hub it serves."""
    path = s.hub_dir / "proxy_auth_token"
    if not path.is_file():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(32))
    return path.read_text().strip()


def start_proxy(s: HubSettings, timeout: float = 30) -> bool:
    """Start configurable-http-proxy unless ours runs already; True if started now."""
    if proxy_pid(s):
        return False
    cmd = ["configurable-http-proxy", "--ip", s.ip, "--port", str(s.port),
           "--api-ip", "127.0.0.1", "--api-port", str(s.proxy_api_port),
           "--default-target", f"http://127.0.0.1:{s.hub_port}",
           "--error-target", f"http://127.0.0.1:{s.hub_port}/hub/error", "--log-level", "warn"]
    env = dict(os.environ, CONFIGPROXY_AUTH_TOKEN=proxy_token(s))
    with open(s.hub_dir / "proxy.log", "ab") as logf:
        proc = subprocess.Popen(cmd, cwd=s.hub_dir, env=env, stdout=logf, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    (s.hub_dir / "proxy.pid").write_text(str(proc.pid))
    req = urllib.request.Request(f"http://127.0.0.1:{s.proxy_api_port}/api/routes",
                                 headers={"Authorization": f"token {env['CONFIGPROXY_AUTH_TOKEN']}"})
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise CourseError(f"configurable-http-proxy exited with status {proc.returncode}; see {s.hub_dir / 'proxy.log'}")
        try:
            with urllib.request.urlopen(req, timeout=3):
                return True
        except OSError:
            time.sleep(0.2)
    _stop_pids([proc.pid])
    raise CourseError(f"configurable-http-proxy did not answer on port {s.proxy_api_port} within {timeout:.0f} s")


def hub_env(s: HubSettings) -> dict:
    env = dict(os.environ)
    env["MLBD_HUB_SETTINGS"] = str(s.file)
    env["PATH"] = f"{s.venv_bin}:" + env.get("PATH", "/usr/local/bin:/usr/bin:/bin")
    return env


def start(s: HubSettings, background: bool = False, timeout: float = 120) -> subprocess.Popen | None:
    """Start the proxy (unless it runs) and JupyterHub. Foreground: until Ctrl-C (then everything
    stops). Background: return the process once the hub answers (tests, benchmarks, restarts;
    ``stop`` stops everything, ``stop_hub`` the hub only)."""
    pid = running_pid(s)
    if pid:
        log(f"already running (pid {pid}) at {s.url}")
        return None
    s.save()
    proxy_started = start_proxy(s)
    cmd = [os.path.join(s.venv_bin, "jupyterhub"), "-f", str(Path(s.repo) / "hub_config" / "jupyterhub_config.py")]
    t0 = time.monotonic()
    if background:
        logf = open(s.hub_dir / "jupyterhub.log", "ab")
        proc = subprocess.Popen(cmd, cwd=s.hub_dir, env=hub_env(s), stdout=logf, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        logf.close()
        try:
            wait_ready(s, timeout, proc)
        except BaseException:
            stop_hub(s, proc)  # leave no half-started hub behind, nor a proxy started for it
            if proxy_started:
                _stop_proxy(s)
            raise
        log(f"JupyterHub is up at {s.url} in {time.monotonic() - t0:.1f} s (pid {proc.pid}, log {s.hub_dir / 'jupyterhub.log'})")
        return proc
    proc = subprocess.Popen(cmd, cwd=s.hub_dir, env=hub_env(s))
    try:
        wait_ready(s, timeout, proc)
        log(f"JupyterHub is up at {s.url} in {time.monotonic() - t0:.1f} s. Each account logs in with its own "
            f"password (first ones: {s.passwords}, root only). Ctrl-C (or `make hub-stop`) stops everything.")
        proc.wait()
        servers, proxy = server_pids(s), proxy_pid(s)
        if servers or proxy:
            log(f"jupyterhub exited (status {proc.returncode}); {len(servers)} user server(s)"
                f"{' and the proxy' if proxy else ''} keep running (`mlbd hub start` or `restart` starts a hub "
                "for them, `mlbd hub stop` stops them)")
        else:
            log(f"jupyterhub exited (status {proc.returncode}); nothing of the hub is left running")
    except KeyboardInterrupt:
        log("stopping (Ctrl-C): user servers, services, the hub and the proxy…")
        stop(s, proc)
    except BaseException:
        stop(s, proc)
        raise
    return None


def _stop_pids(pids: list[int], grace: float = 30, proc: subprocess.Popen | None = None) -> None:
    """SIGTERM every pid at once, wait until all are gone, SIGKILL what is left after ``grace``."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if proc is not None:
            proc.poll()  # reap our own child, or it stays a zombie
        if not any(alive(p) for p in pids):
            break
        time.sleep(0.2)
    for pid in pids:
        if alive(pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    if proc is not None:
        proc.wait()


def stop_hub(s: HubSettings, proc: subprocess.Popen | None = None) -> bool:
    """Stop the hub and its services (formgrader, culler) at once, leaving the proxy and the user
    servers running (JupyterHub would stop services one by one, up to 20 s each). True if one ran."""
    pid = proc.pid if proc is not None else running_pid(s)
    if not pid:
        return False
    keep = set(server_pids(s)) | {proxy_pid(s)}
    _stop_pids([pid] + [c for c in children(pid) if c not in keep], proc=proc)
    return True


def _stop_proxy(s: HubSettings) -> bool:
    pid = proxy_pid(s)
    if pid:
        _stop_pids([pid])
    (s.hub_dir / "proxy.pid").unlink(missing_ok=True)
    return bool(pid)


def stop(s: HubSettings, proc: subprocess.Popen | None = None) -> bool:
    """Stop everything: the user servers (also those a previous hub started), the hub, its services,
    then the proxy. True if anything ran."""
    hub = proc.pid if proc is not None else running_pid(s)
    servers = server_pids(s)
    proxy = proxy_pid(s)
    services = [c for c in children(hub) if c != proxy] if hub else []
    pids = list(dict.fromkeys(([hub] if hub else []) + servers + services))
    if pids:
        _stop_pids(pids, proc=proc)
    ran = bool(pids) | _stop_proxy(s)
    if ran:
        log(f"stopped ({len(servers)} user server(s), the hub, its services and the proxy)")
    return ran


def restart(s: HubSettings, timeout: float = 120) -> subprocess.Popen | None:
    """Replace the running hub by a fresh one (config, roster and course copy re-read); the proxy
    and the students' servers keep running and the new hub takes them over."""
    prepare(s)  # while the old hub still serves
    servers = server_pids(s)
    t0 = time.monotonic()
    stop_hub(s)
    proc = start(s, background=True, timeout=timeout)
    log(f"restarted: the hub was away {time.monotonic() - t0:.1f} s; {len(servers)} user server(s) "
        "kept running (the proxy kept serving them)")
    return proc


# -- course steps on the hub's copy ----------------------------------------------------------------
def collect_and_grade(s: HubSettings, assignment: str, sandbox: str | None = None) -> None:
    """Collect as the course account, grade with `mlbd grade` (root: the sandbox drops privileges),
    and give every file back to the course account. Root executes nothing the course account can
    write: the settings come from the root-only copy of the repository's nbgrader_config.py, and
    Python runs from the hub dir with -P (no course folder on sys.path)."""
    nbgrader_as_grader(s, "collect", assignment, "--update")
    log(f"collected {assignment}")
    if not s.grading_config.is_file():
        raise CourseError(f"{s.grading_config} is missing: run `mlbd hub prepare` (or start) first")
    cmd = [sys.executable, "-P", "-m", "mlbd.cli", "grade", assignment, "--course-dir", str(s.course_dir),
           "--config", str(s.grading_config)]
    if sandbox:
        cmd += ["--sandbox", sandbox]
    env = dict(os.environ, **grader_env(s))
    env["PATH"] = f"{s.venv_bin}:" + env.get("PATH", "/usr/bin:/bin")
    env.pop("JUPYTER_CONFIG_PATH")
    try:
        proc = subprocess.run(cmd, env=env, cwd=s.hub_dir, capture_output=True, text=True, timeout=1800)
        if proc.returncode:
            raise CourseError(f"mlbd grade {assignment} failed:\n{(proc.stderr or proc.stdout)[-1500:]}")
    finally:
        accounts.chown_tree(s.course_dir, accounts.course_account(s.course_id))
    log(f"graded {assignment} (mlbd grade)")


def release_feedback(s: HubSettings, assignment: str) -> None:
    nbgrader_as_grader(s, "generate_feedback", assignment, "--force")
    nbgrader_as_grader(s, "release_feedback", assignment)
    log(f"feedback for {assignment} released")


# -- the command line (`mlbd hub ACTION`) ----------------------------------------------------------
def settings_for(repo: Path, state_dir: str | None = None, port: int | None = None,
                 roster: str | None = None) -> HubSettings:
    """Settings of the hub for ``repo``: the saved ones when the state dir has them, updated by
    the arguments given."""
    state = Path(state_dir).resolve() if state_dir else default_state_dir(repo)
    saved = state / "hub" / "settings.json"
    if saved.is_file():
        s = HubSettings.load(saved)
        s.repo = str(repo)
    else:
        s = HubSettings(repo=str(repo), state_dir=str(state), roster=str(repo / "hub_config" / "roster.csv"))
    if roster:
        s.roster = str(Path(roster).resolve())
    if port:
        s.port = port
    s.venv_bin = str(Path(sys.executable).parent)
    return s


COURSE_STEPS = {"release": "generate + release to students", "grade": "collect, then mlbd grade (sandboxed)",
                "feedback": "generate + release feedback"}


def course_step_assignments(s: HubSettings, action: str, names: list[str]) -> list[str]:
    """The assignments a course step was given, each one the course has; a usage message otherwise."""
    known = assignments(s.course_dir) or assignments(Path(s.repo))  # the hub's copy, before a first start the repo
    if not names:
        raise CourseError(f"usage: mlbd hub {action} ASSIGNMENT [ASSIGNMENT …] ({COURSE_STEPS[action]}); "
                          f"assignments: {', '.join(known)}")
    unknown = [a for a in names if a not in known]
    if unknown:
        hints = [f"{a!r}" + (f" (did you mean {' or '.join(m)}?)" if (m := difflib.get_close_matches(a, known, 2)) else "")
                 for a in unknown]
        raise CourseError(f"no such assignment: {'; '.join(hints)}. The course has: {', '.join(known)}")
    return names


def main(action: str, repo: Path, args) -> int:
    s = settings_for(repo, args.state_dir, args.port, args.roster)
    if action in COURSE_STEPS:
        course_step_assignments(s, action, args.assignments)
    if action == "start":
        t0 = time.monotonic()
        prepare(s)
        log(f"prepared in {time.monotonic() - t0:.1f} s")
        start(s, background=args.background)
    elif action == "prepare":
        prepare(s)
    elif action == "restart":
        restart(s)
    elif action == "stop":
        if not stop(s):
            log("not running")
    elif action == "status":
        pid, proxy = running_pid(s), proxy_pid(s)
        print(f"hub {'running (pid %d)' % pid if pid else 'stopped'}, proxy {'running (pid %d)' % proxy if proxy else 'stopped'}, "
              f"{len(server_pids(s))} user server(s)  {s.url}  state {s.state_dir}")
    elif action == "release":
        _need_root()
        for a in args.assignments:
            print(a, "released" if release(s, a, force=True) else "already released")
    elif action == "grade":
        _need_root()
        for a in args.assignments:
            collect_and_grade(s, a)
    elif action == "feedback":
        _need_root()
        for a in args.assignments:
            release_feedback(s, a)
    return 0
