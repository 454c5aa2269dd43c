"""Regenerate ``release/`` (the student versions) from ``source/`` with nbgrader.

Each build records, per assignment, a digest of what the release is made from (the assignment's
``source/`` files, nbgrader's version and the part of ``nbgrader_config.py`` that generate_assignment
uses) and of the release it made, in
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


# CourseDirectory settings that change what generate_assignment writes (not where the gradebook is)
_COURSE_DIRECTORY_KEYS = ("source_directory", "release_directory", "ignore", "include", "max_file_size", "notebook_id")


def generation_settings(course_dir: Path) -> str:
    """The part of ``nbgrader_config.py`` that ``nbgrader generate_assignment`` uses, as JSON: the
    sections of GenerateAssignment, its preprocessors (and their base classes) and the
    CourseDirectory keys above. Grading, sandbox or exchange settings do not make releases stale."""
    from nbgrader.converters import GenerateAssignment
    from traitlets.config import Config, PyFileConfigLoader

    cfg = Config()
    if (course_dir / "nbgrader_config.py").is_file():
        cfg = PyFileConfigLoader("nbgrader_config.py", path=str(course_dir)).load_config()
    classes = {"GenerateAssignment", "BaseConverter"}
    for pre in GenerateAssignment(config=cfg).preprocessors:
        classes |= {c.__name__ for c in pre.__mro__}
    relevant = {name: cfg[name] for name in sorted(classes) if name in cfg}
    relevant["CourseDirectory"] = {k: cfg.CourseDirectory[k] for k in _COURSE_DIRECTORY_KEYS if k in cfg.CourseDirectory}
    return json.dumps({"nbgrader": version("nbgrader"), "config": relevant}, sort_keys=True, default=repr)


def inputs_digest(course_dir: Path, assignment: str, settings: str | None = None) -> str:
    """What the release of ``assignment`` is generated from: its source/ files and the settings."""
    h = hashlib.sha256((settings if settings is not None else generation_settings(course_dir)).encode() + b"\0")
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


def is_current(course_dir: Path, assignment: str, manifest: dict | None = None, settings: str | None = None) -> bool:
    """True when ``release/ASSIGNMENT`` is the one the last build made from today's inputs."""
    entry = (load_manifest(course_dir) if manifest is None else manifest).get(assignment)
    return bool(entry) and entry.get("inputs") == inputs_digest(course_dir, assignment, settings) \
        and entry.get("release") == release_digest(course_dir, assignment)


def build(course_dir: Path, wanted: list[str] | None = None, log=print, only_changed: bool = False) -> list[str]:
    """Generate the student version of each assignment; returns the ids built.

    The release folder of each assignment is replaced whole so that a notebook deleted from
    ``source/`` also disappears from ``release/``. With ``only_changed``, assignments whose
    release is current (``is_current``) are left as they are.
    """
    manifest = load_manifest(course_dir)
    settings = generation_settings(course_dir)
    built, kept = [], []
    for assignment in check_assignments(course_dir, wanted):
        if only_changed and is_current(course_dir, assignment, manifest, settings):
            kept.append(assignment)
            continue
        shutil.rmtree(course_dir / "release" / assignment, ignore_errors=True)
        nbgrader(course_dir, "generate_assignment", assignment, "--force")
        manifest[assignment] = {"inputs": inputs_digest(course_dir, assignment, settings),
                                "release": release_digest(course_dir, assignment)}
        _save_manifest(course_dir, manifest)
        log(f"built release/{assignment}")
        built.append(assignment)
    if kept:
        log(f"{len(kept)} release(s) already up to date ({', '.join(kept)})")
    return built
