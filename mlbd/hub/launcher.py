"""`mlbd hub ACTION`: the command line over the hub's parts. Provisioning (accounts, course copy,
exchange): mlbd.hub.provision; process control (proxy, hub, servers): mlbd.hub.processes; course
steps (release, grade, feedback): mlbd.hub.course_steps; running as another account and the
course account's environment: mlbd.hub.runas. The names below are the launcher's API for the
tests and `mlbd bench hub`.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

from .course_steps import COURSE_STEPS, collect_and_grade, course_step_assignments, release, release_feedback
from .processes import proxy_pid, restart, running_pid, server_pids, start, stop, stop_hub
from .provision import check_private, default_state_dir, prepare, source_edits, sync_source
from .runas import as_user, grader_env, log, need_root, nbgrader_as_grader
from .settings import HubSettings

__all__ = ["as_user", "check_private", "collect_and_grade", "grader_env", "main", "nbgrader_as_grader",
           "prepare", "proxy_pid", "release", "release_feedback", "restart", "running_pid", "server_pids",
           "settings_for", "source_edits", "start", "stop", "stop_hub", "sync_source"]


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
        need_root()
        for a in args.assignments:
            print(a, "released" if release(s, a, force=True) else "already released")
    elif action == "grade":
        need_root()
        for a in args.assignments:
            collect_and_grade(s, a)
    elif action == "feedback":
        need_root()
        for a in args.assignments:
            release_feedback(s, a)
    return 0
