"""The course directory: where it is, which assignments it holds, and running nbgrader on it.

nbgrader is driven through its own command line (as an instructor would run it) so that our
commands and `nbgrader ...` always read the same `nbgrader_config.py` and behave identically.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nbformat


# Files a browser runs (pages, SVG, scripts). A student's copy must never reach autograded/: the
# formgrader serves that folder from the hub's own address, where a script acts as the grader.
ACTIVE_CONTENT = frozenset({".html", ".htm", ".xhtml", ".xht", ".xhtm", ".hta", ".shtml", ".svg", ".svgz", ".xml", ".xsl", ".xslt",
                            ".js", ".mjs", ".mht", ".mhtml"})


class CourseError(RuntimeError):
    """A configuration problem the user must fix; the CLI prints it as one line."""


def find_course_dir(start: Path | str | None = None) -> Path:
    """The nearest directory at or above ``start`` that holds an ``nbgrader_config.py``."""
    here = Path(start or os.getcwd()).resolve()
    for candidate in (here, *here.parents):
        if (candidate / "nbgrader_config.py").is_file():
            return candidate
    raise CourseError(f"no nbgrader_config.py in {here} or above; pass --course-dir")


def assignments(course_dir: Path) -> list[str]:
    """Assignment ids: folders of ``source/`` that contain at least one notebook, sorted."""
    source = course_dir / "source"
    if not source.is_dir():
        return []
    return sorted(p.name for p in source.iterdir()
                  if p.is_dir() and not p.name.startswith(".") and any(p.glob("*.ipynb")))


def notebooks(course_dir: Path, assignment: str, folder: str = "source") -> list[Path]:
    return sorted((course_dir / folder / assignment).glob("*.ipynb"))


def check_assignments(course_dir: Path, wanted: list[str] | None) -> list[str]:
    known = assignments(course_dir)
    if not wanted:
        return known
    unknown = [a for a in wanted if a not in known]
    if unknown:
        raise CourseError(f"unknown assignment(s) {', '.join(unknown)}; known: {', '.join(known) or 'none'}")
    return list(wanted)


def notebook_meta(path: Path) -> dict:
    """The notebook-level ``mlbd`` metadata (budget_s, …) of an instructor notebook."""
    return dict(nbformat.read(str(path), as_version=4).metadata.get("mlbd", {}))


def tool_env(extra: dict | None = None) -> dict:
    """Environment for nbgrader subprocesses: the venv's bin first (nbgrader runs alembic by name)."""
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env.setdefault("MPLBACKEND", "Agg")
    env.setdefault("MLBD_OFFLINE", "1")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env.update(extra or {})
    return env


def nbgrader(course_dir: Path, *args: str, env: dict | None = None, check: bool = True,
             capture: bool = True) -> subprocess.CompletedProcess:
    """Run ``nbgrader ARGS`` in the course directory."""
    cmd = [sys.executable, "-m", "nbgrader", *args]
    proc = subprocess.run(cmd, cwd=course_dir, env=tool_env(env), text=True,
                          capture_output=capture)
    if check and proc.returncode != 0:
        tail = (proc.stderr or proc.stdout or "").strip().splitlines()[-15:]
        raise CourseError(f"nbgrader {' '.join(args)} failed:\n" + "\n".join(tail))
    return proc
