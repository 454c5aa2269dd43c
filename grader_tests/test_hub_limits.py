"""Limits on every user server of the embedded hub, and the GPU profile on a machine without a GPU.

A live hub on free ports (accounts ``hl_*``) whose CPU profile is shrunk for the test (384 MiB,
half a CPU, 64 processes) through the hub's site-override file. Two students log in over HTTP and
start servers. Student 1's server runs in its own cgroup with those limits; a kernel started
through the server's REST API is inside it; a memory bomb run in that kernel (over the kernel's
websocket, as JupyterLab sends it) is killed within seconds, the server restarts the kernel, and the
first cell run in the new kernel says why, with the limit; a fork loop is refused new processes at
the limit with EAGAIN. Meanwhile student 2's server and /hub/api keep answering. Stopping the
server kills what was left in its cgroup. A kernel thrashing at the limit, which the kernel's OOM
killer leaves running, is killed by the hub's watch and says why too. The spawn page shows the GPU
profile disabled with the reason, and asking for it (form or API) is refused with that reason,
never a bare 503. Needs root, cgroups and configurable-http-proxy.
"""
from __future__ import annotations

import json
import os
import pwd
import shutil
import time
import uuid
from pathlib import Path

import pytest
import websocket

from mlbd.grading import cgroups
from mlbd.hub import launcher, memwatch
from mlbd.hub.client import HubUser
from mlbd.hub.spawner import CourseSpawner

from hub_support import cleanup, login, make_settings

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("hub"),
              pytest.mark.skipif(os.geteuid() != 0, reason="creates Unix accounts: run as root"),
              pytest.mark.skipif(cgroups.version() == 0, reason="needs a cgroup hierarchy"),
              pytest.mark.skipif(not shutil.which("configurable-http-proxy"), reason="needs configurable-http-proxy (make hub installs it)")]

MEM = 384 * 2**20
PIDS = 64
CPUS = 0.5
S1, S2 = "hl_s1", "hl_s2"

LOCAL_CONFIG = f"""
from mlbd.hub import profiles
_profiles = profiles.profile_list()
_profiles[0]["kubespawner_override"].update(mem_limit="{MEM // 2**20}M", cpu_limit={CPUS})
c.CourseSpawner.profiles = _profiles
c.CourseSpawner.pids_limit = {PIDS}
"""

MEMORY_BOMB = "hog = []\nwhile True:\n    hog.append(b'x' * (16 * 2**20))\n"
# anonymous memory up to just under the limit, then re-reading a file that no longer fits in the page
# cache left: reclaim always succeeds, so the kernel's OOM killer never fires, and the cgroup thrashes
THRASH = """
import os
hog = b'x' * ({mib} * 2**20)
with open('thrash.bin', 'wb') as f:
    for _ in range(64):
        f.write(os.urandom(2**20))
while True:
    with open('thrash.bin', 'rb') as f:
        while f.read(2**20):
            pass
"""
FORK_LOOP = """
import os, time
n = 0
try:
    while True:
        if os.fork() == 0:
            time.sleep(60)
            os._exit(0)
        n += 1
except OSError as e:
    print(f"forked {n}, then refused: {e}")
"""


@pytest.fixture(scope="module")
def hub():
    s = make_settings("hl", students=2)
    try:
        launcher.prepare(s)
        (s.hub_dir / "jupyterhub_config_local.py").write_text(LOCAL_CONFIG)
        launcher.start(s, background=True, timeout=180)
        yield s
    finally:
        log = s.hub_dir / "jupyterhub.log"
        if log.is_file():  # the hub's own lines, shown when a test failed
            print("\n".join(line for line in log.read_text().splitlines() if " JupyterHub " in line)[-6000:])
        launcher.stop(s)
        cleanup(s)


def cgroup_dir(controller: str, user: str) -> Path:
    """Where the spawner makes a server's cgroup: under the hub's own cgroup (the hub is our child)."""
    if cgroups.version() == 2:
        return cgroups.ROOT / "mlbd" / f"mlbd-server-{user}"
    return cgroups.ROOT / controller / cgroups._own_path(controller).lstrip("/") / f"mlbd-server-{user}"


def procs(user: str) -> set[int]:
    return {int(p) for p in (cgroup_dir("pids", user) / "cgroup.procs").read_text().split()}


def user_pids(user: str) -> set[int]:
    uid = pwd.getpwnam(user).pw_uid
    out = set()
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if p.stat().st_uid == uid:
                    out.add(int(p.name))
            except FileNotFoundError:
                pass
    return out


def kernel_socket(s, u: HubUser, kernel_id: str) -> websocket.WebSocket:
    url = s.url.replace("http://", "ws://") + f"/user/{u.name}/api/kernels/{kernel_id}/channels"
    return websocket.create_connection(url, header=[f"Authorization: token {u.token}"], timeout=120)


def execute(ws: websocket.WebSocket, code: str) -> str:
    msg_id = uuid.uuid4().hex
    ws.send(json.dumps({
        "header": {"msg_id": msg_id, "username": "", "session": uuid.uuid4().hex, "msg_type": "execute_request",
                   "version": "5.3"},
        "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
        "content": {"code": code, "silent": False, "store_history": False, "user_expressions": {},
                    "allow_stdin": False, "stop_on_error": True}}))
    return msg_id


def until(ws: websocket.WebSocket, done, timeout: float = 120) -> list[dict]:
    """Kernel messages until ``done(msg)`` is true."""
    seen, t0 = [], time.monotonic()
    while time.monotonic() - t0 < timeout:
        msg = json.loads(ws.recv())
        seen.append(msg)
        if done(msg):
            return seen
    raise AssertionError(f"no such message in {timeout} s: {[m['msg_type'] for m in seen]}")


def others_answer(s, u2: HubUser) -> None:
    assert u2.server("GET", "/api/status").status_code == 200
    assert u2.hub_api("GET", "/").status_code == 200


def test_spawn_page_explains_the_gpu_profile(hub):
    u = login(hub, S2)
    page = u.http.get(f"{hub.url}/hub/spawn", timeout=60)
    assert page.status_code == 200
    assert 'id="profile-gpu" disabled' in page.text and 'id="profile-cpu" checked' in page.text
    assert "Unavailable: The &quot;GPU (deep learning)&quot; profile needs a GPU" in page.text
    # asking anyway: the form page answers with the reason, and so does the REST API
    r = u.http.post(f"{hub.url}/hub/spawn", data={"profile": "gpu", "_xsrf": u._xsrf()}, timeout=60)
    assert r.status_code == 400 and "needs a GPU" in r.text and "HTTP 503" not in r.text
    r = u.hub_api("POST", f"/users/{S2}/server", json={"profile": "gpu"})
    assert r.status_code == 400 and "needs a GPU" in r.json()["message"], r.text
    assert not u.hub_api("GET", f"/users/{S2}").json()["servers"]


def test_limits_hold_and_others_keep_answering(hub):
    u1, u2 = login(hub, S1), login(hub, S2)
    u1.spawn("cpu", timeout=240)
    u2.spawn("cpu", timeout=240)

    # the server's cgroup has the profile's limits, and the server is in it
    assert int((cgroup_dir("memory", S1) / "memory.limit_in_bytes").read_text()) == MEM
    assert int((cgroup_dir("pids", S1) / "pids.max").read_text()) == PIDS
    assert int((cgroup_dir("cpu", S1) / "cpu.cfs_quota_us").read_text()) == int(CPUS * 100_000)
    before = user_pids(S1)
    assert before and before <= procs(S1), "a process of the student runs outside the server's cgroup"

    # a kernel started through the server's REST API is inside it too
    r = u1.server("POST", "/api/kernels", json={"name": "python3"})
    assert r.status_code == 201, r.text
    kid = r.json()["id"]
    ws = kernel_socket(hub, u1, kid)
    execute(ws, "import os; print(os.getpid())")
    out = until(ws, lambda m: m["msg_type"] == "stream")
    kernel_pid = int(out[-1]["content"]["text"])
    assert kernel_pid in procs(S1) and kernel_pid in {int(p) for p in (cgroup_dir("memory", S1) / "cgroup.procs").read_text().split()}

    # memory bomb: the kernel is killed (by the kernel's OOM killer, or by the hub's watch when the
    # cgroup thrashes at its limit first), the server restarts it; others answer
    t0 = time.monotonic()
    execute(ws, MEMORY_BOMB)
    until(ws, lambda m: m["msg_type"] == "status" and m["content"]["execution_state"] in ("restarting", "dead"),
          timeout=180)
    restarted = time.monotonic() - t0
    assert restarted < 60, f"the memory bomb ran {restarted:.0f} s before its kernel was restarted"
    record = Path(CourseSpawner.kill_record_dir.default_value) / f"mlbd-server-{S1}"  # the hub's kills
    by_hub = record.is_file() and len(record.read_text().splitlines()) == 1
    assert cgroups.Cgroup(cgroups.version(), [cgroup_dir("memory", S1)]).events()["memory"] or by_hub
    others_answer(hub, u2)
    assert u1.server("GET", "/api/status").status_code == 200, "the student's own server died with the kernel"

    # the first cell run in the new kernel tells the student why their variables are gone, once
    assert told_why(ws) and not told_why(ws)
    print(f"memory bomb: kernel restarted {restarted:.1f} s after the bomb, notice {time.monotonic() - t0:.1f} s after")
    assert u1.server("GET", f"/api/kernels/{kid}").json()["execution_state"] == "idle"
    ws.close()

    # fork loop in the restarted kernel: new processes are refused at the limit
    ws = kernel_socket(hub, u1, kid)
    execute(ws, FORK_LOOP)
    out = until(ws, lambda m: m["msg_type"] == "stream", timeout=180)
    text = out[-1]["content"]["text"]
    assert "refused" in text and "Resource temporarily unavailable" in text, text
    forked = int(text.split()[1].rstrip(","))
    assert 0 < forked < PIDS
    assert int((cgroup_dir("pids", S1) / "pids.current").read_text()) <= PIDS
    others_answer(hub, u2)
    ws.close()

    # stopping the server ends everything it left in its cgroup (the forked children included)
    u1.stop_server()
    for _ in range(60):
        if not user_pids(S1) and not cgroup_dir("pids", S1).exists():
            break
        time.sleep(1)
    assert not user_pids(S1), f"left running: {user_pids(S1)}"
    assert not cgroup_dir("memory", S1).exists() and not cgroup_dir("pids", S1).exists()
    others_answer(hub, u2)


def told_why(ws: websocket.WebSocket) -> bool:
    """Whether the first cell run in a restarted kernel tells the student about the memory limit."""
    msg_id = execute(ws, "print('after')")
    out = until(ws, lambda m: m["msg_type"] == "execute_reply" and m["parent_header"].get("msg_id") == msg_id)
    text = "".join(m["content"]["text"] for m in out
                   if m["msg_type"] == "stream" and m["parent_header"].get("msg_id") == msg_id)
    assert "after" in text, text
    return f"because it used more than this server's {MEM // 2**20} MiB memory limit" in text


def test_the_hub_stops_a_kernel_thrashing_at_the_limit(hub):
    """The case the kernel's OOM killer leaves running (on some kernels, a memory bomb's too): the
    hub's watch kills the kernel, never the server, and the new kernel says why."""
    u1 = login(hub, S1)
    u1.spawn("cpu", timeout=240)
    kid = u1.server("POST", "/api/kernels", json={"name": "python3"}).json()["id"]
    ws = kernel_socket(hub, u1, kid)
    execute(ws, "import os; print(os.getpid())")
    kernel_pid = int(until(ws, lambda m: m["msg_type"] == "stream")[-1]["content"]["text"])
    d = cgroup_dir("memory", S1)
    usage = int((d / ("memory.current" if cgroups.version() == 2 else "memory.memsw.usage_in_bytes")).read_text())
    t0 = time.monotonic()
    execute(ws, THRASH.format(mib=(MEM - usage) // 2**20 - 30))
    until(ws, lambda m: m["msg_type"] == "status" and m["content"]["execution_state"] in ("restarting", "dead"),
          timeout=120)
    restarted = time.monotonic() - t0
    record = Path(CourseSpawner.kill_record_dir.default_value) / f"mlbd-server-{S1}"
    assert memwatch.read_kills(record) == [kernel_pid], "not killed by the hub's watch"
    assert u1.server("GET", "/api/status").status_code == 200, "the student's own server was killed"
    assert told_why(ws)
    print(f"thrashing: kernel restarted {restarted:.1f} s after it started")
    assert restarted < 60
    ws.close()
    u1.stop_server()
    assert not record.exists()


def test_a_cgroup_left_by_a_crashed_hub_is_replaced():
    """A server cgroup a crashed hub left behind, with lower limits and a process still inside: the
    next start kills the process and gets the new profile's limits (v1 refused a memory limit above
    the old memsw limit)."""
    import subprocess

    old = cgroups.create("mlbd-server-hl_stale", 64 * 2**20, 32, cpus=0.5)
    left = subprocess.Popen(["sleep", "60"])
    old.add(left.pid)

    class User:
        name, groups = "hl_stale", []

    sp = CourseSpawner()
    sp.user = User()
    sp.mem_limit, sp.cpu_limit = "256M", 1.0
    try:
        sp._make_cgroup()
        assert left.wait(timeout=10) == -9
        assert int((cgroup_dir("memory", "hl_stale") / "memory.limit_in_bytes").read_text()) == 256 * 2**20
        assert not sp._cgroup().pids()
    finally:
        left.kill()
        sp._drop_cgroup()
    assert not cgroup_dir("memory", "hl_stale").exists()
