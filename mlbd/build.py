"""Regenerate ``release/`` (the student versions) from ``source/`` with nbgrader.

Each build records, per assignment, a digest of what the release is made from (the assignment's
``source/`` files, ``nbgrader_config.py`` and nbgrader's version) and of the release it made, in
``release/.build.json`` (committed with ``release/``). ``build(..., only_changed=True)`` (``mlbd build
--only-changed``, which ``make hub`` runs) skips an assignment whose inputs and release still have
the recorded digests, so a fresh clone starts the hub without regenerating 17 releases.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from importlib.metadata import version
from pathlib import Path

from .course import check_assignments, nbgrader

MANIFEST = Path("release") / ".build.json"
SKIP = {".ipynb_checkpoints", "__pycache__"}


def _digest_tree(root: Path, h: "hashlib._Hash") -> None:
    for path in sorted(p for p in root.rglob("*") if p.is_file() and not SKIP & set(p.relative_to(root).parts)):
        h.update(str(path.relative_to(root)).encode() + b"\0")
        h.update(hashlib.sha256(path.read_bytes()).digest())


def inputs_digest(course_dir: Path, assignment: str) -> str:
    """What the release of ``assignment`` is generated from."""
    h = hashlib.sha256(f"nbgrader {version('nbgrader')}\0".encode())
    config = course_dir / "nbgrader_config.py"
    h.update(config.read_bytes() if config.is_file() else b"")
    _digest_tree(course_dir / "source" / assignment, h)
    return h.hexdigest()


def release_digest(course_dir: Path, assignment: str) -> str | None:
    folder = course_dir / "release" / assignment
    if not folder.is_dir():
        return None
    h = hashlib.sha256()
    _digest_tree(folder, h)
    return h.hexdigest()


def load_manifest(course_dir: Path) -> dict[str, dict[str, str]]:
    try:
        return json.loads((course_dir / MANIFEST).read_text())
    except (OSError, ValueError):
        return {}


def _save_manifest(course_dir: Path, manifest: dict) -> None:
    path = course_dir / MANIFEST
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)


def is_current(course_dir: Path, assignment: str, manifest: dict | None = None) -> bool:
    """True when ``release/ASSIGNMENT`` is the one the last build made from today's inputs."""
    entry = (load_manifest(course_dir) if manifest is None else manifest).get(assignment)
    return bool(entry) and entry.get("inputs") == inputs_digest(course_dir, assignment) \
        and entry.get("release") == release_digest(course_dir, assignment)


def build(course_dir: Path, wanted: list[str] | None = None, log=print, only_changed: bool = False) -> list[str]:
    """Generate the student version of each assignment; returns the ids built.

    The release folder of each assignment is replaced whole so that a notebook deleted from
    ``source/`` also disappears from ``release/``. With ``only_changed``, assignments whose
    release is current (``is_current``) are left as they are.
    """
    manifest = load_manifest(course_dir)
    built, kept = [], []
    for assignment in check_assignments(course_dir, wanted):
        if only_changed and is_current(course_dir, assignment, manifest):
            kept.append(assignment)
            continue
        shutil.rmtree(course_dir / "release" / assignment, ignore_errors=True)
        nbgrader(course_dir, "generate_assignment", assignment, "--force")
        manifest[assignment] = {"inputs": inputs_digest(course_dir, assignment),
                                "release": release_digest(course_dir, assignment)}
        _save_manifest(course_dir, manifest)
        log(f"built release/{assignment}")
        built.append(assignment)
    if kept:
        log(f"{len(kept)} release(s) already up to date ({', '.join(kept)})")
    return built
