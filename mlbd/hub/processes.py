"""Process control of the embedded hub (`mlbd hub start|stop|restart|status`): the proxy, the hub
with its services, and the user servers.

Three kinds of process, stopped differently: the proxy (started here, in its own session, so it
outlives the hub), the hub with its services (formgrader, culler), and the user servers (started
by the hub, in their own sessions; `cleanup_servers = False` lets them outlive it). A restart
replaces only the hub: students' servers, their open connections and the proxy's routes stay.
"""
from __future__ import annotations

import json
import os
import secrets
import signal
import sqlite3
import subprocess
import time
import urllib.request
from contextlib import closing
from pathlib import Path

import psutil

from ..course import CourseError
from .provision import prepare
from .runas import log
from .settings import HubSettings


def alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def cmdline(pid: int) -> str:
    try:
        return " ".join(psutil.Process(pid).cmdline())
    except psutil.Error:
        return ""


def children(pid: int) -> list[int]:
    """Direct children of ``pid``."""
    try:
        return [c.pid for c in psutil.Process(pid).children()]
    except psutil.Error:
        return []


def _pid_from(path: Path, marker: str) -> int | None:
    try:
        pid = int(path.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if alive(pid) and marker in cmdline(pid) else None


def running_pid(s: HubSettings) -> int | None:
    return _pid_from(s.pid_file, "jupyterhub")


def proxy_pid(s: HubSettings) -> int | None:
    return _pid_from(s.hub_dir / "proxy.pid", "configurable-http-proxy")


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
        if pid and alive(pid) and "singleuser" in cmdline(pid):  # mlbd.hub.singleuser
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
            if proc.returncode in (-signal.SIGTERM, -signal.SIGINT):   # `mlbd hub stop` or Ctrl-C
                raise CourseError("the hub was stopped before it was ready")
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
    (s.hub_dir / "stopping").unlink(missing_ok=True)   # left by a `mlbd hub stop` that died
    proc = subprocess.Popen(cmd, cwd=s.hub_dir, env=hub_env(s))
    try:
        wait_ready(s, timeout, proc)
        log(f"JupyterHub is up at {s.url} in {time.monotonic() - t0:.1f} s. Each account logs in with its own "
            f"password (first ones: {s.passwords}, root only). Ctrl-C (or `make hub-stop`) stops everything.")
        proc.wait()
        servers, proxy = server_pids(s), proxy_pid(s)
        if (s.hub_dir / "stopping").exists():
            log("`mlbd hub stop` is stopping the hub, its servers and the proxy")
        elif servers or proxy:
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
    marker = s.hub_dir / "stopping"          # tells a foreground `mlbd hub start` what is going on
    if pids:
        marker.touch()
        _stop_pids(pids, proc=proc)
    ran = bool(pids) | _stop_proxy(s)
    marker.unlink(missing_ok=True)
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


