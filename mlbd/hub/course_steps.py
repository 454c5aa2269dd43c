"""Course steps on the hub's copy of the course (`mlbd hub release|grade|feedback`): nbgrader as the
course account; grading as root through `mlbd grade`, which reads only root-owned settings."""
from __future__ import annotations

import difflib
import os
import subprocess
import sys
from pathlib import Path

from ..course import CourseError, assignments
from . import accounts
from .runas import grader_env, log, nbgrader_as_grader
from .settings import HubSettings


def release(s: HubSettings, assignment: str, force: bool = False) -> bool:
    """Generate (in the gradebook) and release ``assignment`` as the course account; False if it was out."""
    if (s.exchange / s.course_id / "outbound" / assignment).is_dir() and not force:
        return False
    nbgrader_as_grader(s, "generate_assignment", assignment, "--force")
    nbgrader_as_grader(s, "release_assignment", assignment, "--force")
    return True


def collect_and_grade(s: HubSettings, assignment: str, sandbox: str | None = None) -> None:
    """Collect as the course account, grade with `mlbd grade` (root: the sandbox drops privileges),
    and give every file back to the course account. Root executes nothing the course account can
    write: the settings come from the root-only copy of the repository's nbgrader_config.py, and
    Python runs from the hub dir with -P (no course folder on sys.path)."""
    collected = nbgrader_as_grader(s, "collect", assignment, "--update")
    for line in collect_report(collected.stdout + collected.stderr):
        log(line)
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
        print(proc.stdout, end="", flush=True)     # the grading summary: who was graded, flagged, failed
    finally:
        accounts.chown_tree(s.course_dir, accounts.course_account(s.course_id))
    log(f"graded {assignment} (mlbd grade)")


def collect_report(output: str) -> list[str]:
    """What collect said the instructor must see: every skipped inbound entry with its reason, and
    the count, from nbgrader's log lines (``[CollectApp | WARNING] skipping …``)."""
    keep = []
    for line in output.splitlines():
        text = line.split("] ", 1)[1] if line.startswith("[") and "] " in line else line
        if "WARNING]" in line or "ERROR]" in line or text.startswith("collected "):
            keep.append(text.strip())
    return keep or [output.strip().splitlines()[-1] if output.strip() else "collected (nbgrader printed nothing)"]


def release_feedback(s: HubSettings, assignment: str) -> None:
    nbgrader_as_grader(s, "generate_feedback", assignment, "--force")
    nbgrader_as_grader(s, "release_feedback", assignment)
    log(f"feedback for {assignment} released")



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
