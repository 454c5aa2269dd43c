"""`mlbd bench hub --users N`: N students log in, spawn, fetch and submit at the same time.

A throw-away hub (own state dir under /tmp, own accounts ``hbNNN``, free ports) is prepared,
started, loaded and stopped; its accounts are removed at the end. Prints hub start time, p50/p95
spawn time, failures, and memory per idle user server (RSS and PSS, psutil).
"""
from __future__ import annotations

import csv
import os
import shutil
import socket
import statistics
import sys
import tempfile
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
from rich.console import Console
from rich.table import Table

from . import accounts, launcher
from .client import HubUser
from .settings import HubSettings

def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _settings(repo: Path, users: int) -> HubSettings:
    state = Path(tempfile.mkdtemp(prefix="mlbd-bench-hub-", dir="/tmp"))
    os.chmod(state, 0o711)
    roster = state / "roster.csv"
    with open(roster, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["username", "role", "first_name", "last_name", "email"])
        for i in range(1, users + 1):
            w.writerow([f"hb{i:03d}", "student", "Bench", str(i), ""])
    return HubSettings(repo=str(repo), state_dir=str(state), roster=str(roster), course_id="hb",
                       port=_port(), hub_port=_port(), proxy_api_port=_port(), formgrader_port=_port(),
                       venv_bin=str(Path(sys.executable).parent), home_base=str(state / "home"))


def _memory(user: str) -> tuple[float, float] | None:
    """(RSS, PSS) in MiB of the user's server process (mlbd.hub.singleuser)."""
    for proc in psutil.process_iter(["username", "cmdline"]):
        if proc.info["username"] != user or "mlbd.hub.singleuser" not in (proc.info["cmdline"] or []):
            continue
        try:
            mem = proc.memory_full_info()
        except psutil.Error:
            continue
        return mem.rss / 2**20, mem.pss / 2**20
    return None


def _student(s: HubSettings, name: str, password: str) -> dict:
    out = {"user": name, "spawn_s": None, "ok": False, "error": ""}
    try:
        u = HubUser(s.url, name, timeout=300)
        u.login(password)
        out["spawn_s"] = u.spawn("cpu", timeout=600)
        u.assignment_action("fetch", "lecture01", s.course_id)
        u.assignment_action("submit", "lecture01", s.course_id)
        out["ok"] = True
    except Exception as exc:  # noqa: BLE001  (every failure is counted and reported)
        out["error"] = f"{type(exc).__name__}: {exc}"[:300]
        traceback.print_exc(limit=1)
    return out


def _pct(values: list[float], q: float) -> float:
    values = sorted(values)
    if not values:
        return float("nan")
    k = max(0, min(len(values) - 1, int(round(q * (len(values) - 1)))))
    return values[k]


def run_hub_bench(repo: Path, users: int, out: str | None = None, keep: bool = False) -> int:
    console = Console()
    if os.geteuid() != 0:
        console.print("[red]mlbd bench hub creates Unix accounts: run it as root[/]")
        return 2
    s = _settings(repo, users)
    proc = None
    results: list[dict] = []
    t0 = time.monotonic()
    try:
        launcher.prepare(s)
        prepare_s = time.monotonic() - t0
        t1 = time.monotonic()
        proc = launcher.start(s, background=True, timeout=300)
        start_s = time.monotonic() - t1
        passwords = accounts.read_passwords(s.passwords)
        t2 = time.monotonic()
        with ThreadPoolExecutor(max_workers=users) as pool:
            results = list(pool.map(lambda n: _student(s, n, passwords[n]), [f"hb{i:03d}" for i in range(1, users + 1)]))
        wall = time.monotonic() - t2
        time.sleep(5)  # let the servers settle to idle
        mem = [m for m in (_memory(r["user"]) for r in results if r["ok"]) if m]
        inbound = s.exchange / s.course_id / "inbound"
        submissions = len([p for p in inbound.iterdir() if not p.name.startswith(".")])
    finally:
        if proc is not None:
            launcher.stop(s, proc)
        if not keep:
            for m in accounts.read_roster(s.roster):
                accounts.delete_user(m.username)
            accounts.delete_user(accounts.course_account(s.course_id))
            shutil.rmtree(s.state_dir, ignore_errors=True)

    spawns = [r["spawn_s"] for r in results if r["spawn_s"] is not None]
    failures = [r for r in results if not r["ok"]]
    rss = [m[0] for m in mem]
    pss = [m[1] for m in mem]
    rows = [
        ("users (concurrent)", f"{users}"),
        ("cores", f"{os.cpu_count()}"),
        ("prepare (accounts, course copy, release)", f"{prepare_s:.1f} s"),
        ("hub start (until the API answers)", f"{start_s:.1f} s"),
        ("spawn p50 / p95 / max", f"{_pct(spawns, .5):.1f} / {_pct(spawns, .95):.1f} / {max(spawns, default=float('nan')):.1f} s"),
        ("login+spawn+fetch+submit, all users", f"{wall:.1f} s"),
        ("failures", f"{len(failures)}"),
        ("submissions in the exchange", f"{submissions}"),
        ("idle server RSS median / max", f"{statistics.median(rss) if rss else float('nan'):.0f} / {max(rss, default=float('nan')):.0f} MiB"),
        ("idle server PSS median (shared pages split)", f"{statistics.median(pss) if pss else float('nan'):.0f} MiB"),
    ]
    table = Table(title=f"Hub load: {users} students log in, spawn, fetch and submit at once")
    table.add_column("measure")
    table.add_column("value")
    for k, v in rows:
        table.add_row(k, v)
    console.print(table)
    for f in failures[:10]:
        console.print(f"[red]{f['user']}: {f['error']}[/]")
    if out:
        with open(out, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=["user", "spawn_s", "ok", "error"])
            w.writeheader()
            w.writerows(results)
    return 0 if not failures else 1
