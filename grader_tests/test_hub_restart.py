"""Restarting the hub while students work: only the hub process is replaced.

A live hub on free ports (accounts ``hr_*``). A student logs in, spawns, opens her server with the
browser's cookie, fetches and submits; `mlbd hub restart` replaces the hub; the same server process
(same pid) answers through the same proxy with the same cookie, the earlier submission is still in
the exchange and collectable, and she submits again. `mlbd hub stop` then stops everything: the
user server, the hub, its services and the proxy. Needs root and configurable-http-proxy.
"""
from __future__ import annotations

import os
import pwd
import shutil
import sqlite3
import subprocess
import sys
import time
from contextlib import closing

import pytest
from nbgrader.utils import parse_utc

from mlbd.hub import launcher, processes
from mlbd.hub.client import HubUser

from hub_support import login, running_hub

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("hub"),
              pytest.mark.skipif(os.geteuid() != 0, reason="creates Unix accounts: run as root"),
              pytest.mark.skipif(not shutil.which("configurable-http-proxy"), reason="needs configurable-http-proxy (make hub installs it)")]

NB = "L01_quickcheck.ipynb"
STUDENT = "hr_s1"


def mlbd_hub(s, *args: str) -> subprocess.CompletedProcess:
    """The documented command, as an operator types it."""
    return subprocess.run([sys.executable, "-m", "mlbd.cli", "hub", *args, "--state-dir", s.state_dir],
                          cwd=s.repo, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def hub():
    with running_hub("hr", students=2) as s:
        yield s


def submissions(s, student: str) -> list[str]:
    inbound = s.exchange / s.course_id / "inbound"
    return sorted(p.name for p in inbound.iterdir() if p.name.startswith(f"{student}+lecture01+"))


def server_via_cookie(s, u: HubUser, path: str = "") -> list[str]:
    """List a folder through the server's contents API with the browser's cookies only (no token)."""
    r = u.http.get(f"{s.url}/user/{u.name}/api/contents/{path}", timeout=120, allow_redirects=False)
    assert r.status_code == 200, (r.status_code, r.text[:300])
    return [f["name"] for f in r.json()["content"]]


alive = processes.alive


def test_restart_keeps_servers_and_submissions(hub):
    u = login(hub, STUDENT)
    u.spawn("cpu", timeout=240)
    (server,) = launcher.server_pids(hub)
    assert os.stat(f"/proc/{server}").st_uid == pwd.getpwnam(STUDENT).pw_uid
    # a browser opens JupyterLab: the hub's OAuth gives the server its own cookie
    r = u.http.get(f"{hub.url}/user/{STUDENT}/lab", timeout=120)
    assert r.status_code == 200 and f"jupyterhub-user-{STUDENT}" in {c.name for c in u.http.cookies}
    server_via_cookie(hub, u)
    u.assignment_action("fetch", "lecture01", hub.course_id)
    u.assignment_action("submit", "lecture01", hub.course_id)
    before = submissions(hub, STUDENT)
    assert len(before) == 1
    hub_pid, proxy = launcher.running_pid(hub), launcher.proxy_pid(hub)
    assert hub_pid and proxy

    # the hub alone goes away: the proxy still routes to the server, which still serves the student
    assert launcher.stop_hub(hub)
    assert launcher.running_pid(hub) is None and not alive(hub_pid)
    assert alive(proxy) and alive(server)
    assert NB in server_via_cookie(hub, u, f"{hub.course_id}/lecture01")  # what she fetched
    assert u.http.get(f"{hub.url}/hub/api/", timeout=30).status_code in (502, 503)

    # a new hub (`mlbd hub restart` when one runs; here `start`, which takes over the proxy)
    t0 = time.monotonic()
    proc = mlbd_hub(hub, "start", "--background")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    new_hub = launcher.running_pid(hub)
    assert new_hub and new_hub != hub_pid
    assert launcher.proxy_pid(hub) == proxy
    assert launcher.server_pids(hub) == [server]
    # the same cookies: the hub session and the server's own cookie still work, no new login
    info = u.hub_api("GET", f"/users/{STUDENT}").json()
    assert info["servers"][""]["ready"], info
    server_via_cookie(hub, u)
    # the submission made before the restart is still there; the student submits again
    assert submissions(hub, STUDENT) == before
    u.assignment_action("submit", "lecture01", hub.course_id)
    after = submissions(hub, STUDENT)
    assert len(after) == 2 and before[0] in after
    print(f"hub replaced in {time.monotonic() - t0:.1f} s; server pid {server} kept")

    # `mlbd hub restart` itself (a hub is running now): same server and proxy again
    proc = mlbd_hub(hub, "restart")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "1 user server(s) kept running" in proc.stdout
    assert launcher.running_pid(hub) not in (None, new_hub)
    assert launcher.proxy_pid(hub) == proxy and launcher.server_pids(hub) == [server]
    server_via_cookie(hub, u)

    # both submissions are collectable; the latest one is what the course gets
    launcher.nbgrader_as_grader(hub, "collect", "lecture01", "--update")
    got = hub.course_dir / "submitted" / STUDENT / "lecture01"
    assert (got / NB).is_file()
    # timestamp.txt: when the exchange received it (mlbd.hub.exchange), at or after the time its name claims
    received = parse_utc((got / "timestamp.txt").read_text().strip())
    assert received >= parse_utc(after[-1].split("+")[2]) > parse_utc(before[0].split("+")[2])

    # a student who had no server before the restart logs in and spawns on the new hub
    u2 = login(hub, "hr_s2")
    u2.spawn("cpu", timeout=240)
    assert len(launcher.server_pids(hub)) == 2
    # each server got its own port, outside the ephemeral range (mlbd.hub.spawner.CourseSpawner.pick_port)
    with closing(sqlite3.connect(hub.hub_dir / "jupyterhub.sqlite")) as con:
        ports = [p for (p,) in con.execute("SELECT port FROM servers JOIN spawners ON spawners.server_id = servers.id")]
    assert len(ports) == len(set(ports)) == 2 and all(20000 <= p <= 32000 for p in ports), ports


def test_stop_stops_everything(hub):
    servers = launcher.server_pids(hub)
    hub_pid, proxy = launcher.running_pid(hub), launcher.proxy_pid(hub)
    assert servers and hub_pid and proxy
    services = processes.children(hub_pid)
    assert services  # the formgrader and the idle culler
    proc = mlbd_hub(hub, "stop")
    assert proc.returncode == 0, proc.stderr[-2000:]
    for pid in [*servers, hub_pid, proxy, *services]:
        assert not alive(pid), (pid, processes.cmdline(pid))
    assert "not running" in mlbd_hub(hub, "stop").stdout
