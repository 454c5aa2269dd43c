"""Regenerate ``release/`` (the student versions) from ``source/`` with nbgrader."""
from __future__ import annotations

import shutil
from pathlib import Path

from .course import check_assignments, nbgrader


def build(course_dir: Path, wanted: list[str] | None = None, log=print) -> list[str]:
    """Generate the student version of each assignment; returns the ids built.

    The release folder of each assignment is replaced whole so that a notebook deleted from
    ``source/`` also disappears from ``release/``.
    """
    built = []
    for assignment in check_assignments(course_dir, wanted):
        shutil.rmtree(course_dir / "release" / assignment, ignore_errors=True)
        nbgrader(course_dir, "generate_assignment", assignment, "--force")
        log(f"built release/{assignment}")
        built.append(assignment)
    return built
