"""`mlbd build --only-changed` (what `make hub` runs) regenerates a release only when what it is made
from changed since it was built: the assignment's source/ files, the generate_assignment part of
nbgrader_config.py (not grading settings), nbgrader's version, or the release itself (a hand edit).
Real nbgrader on a copy of one assignment."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

from mlbd import build

from conftest import ROOT

A = "lecture01"


def test_only_changed_rebuilds_what_changed(tmp_path, monkeypatch):
    monkeypatch.setenv("MLBD_DB_URL", f"sqlite:///{tmp_path / 'gradebook.db'}")
    shutil.copy(ROOT / "nbgrader_config.py", tmp_path)
    shutil.copytree(ROOT / "source" / A, tmp_path / "source" / A)
    (tmp_path / "release").mkdir()
    log = []
    assert build.build(tmp_path, [A], log=log.append, only_changed=True) == [A]   # nothing recorded yet
    entry = json.loads((tmp_path / build.MANIFEST).read_text())[A]
    assert entry == {"inputs": build.inputs_digest(tmp_path, A), "release": build.release_digest(tmp_path, A)}
    assert build.is_current(tmp_path, A)

    # unchanged: kept, through the command line `make hub` uses
    before = (tmp_path / "release" / A).stat().st_mtime_ns
    proc = subprocess.run([sys.executable, "-m", "mlbd.cli", "build", "--only-changed", "--course-dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "1 release(s) already up to date (lecture01)" in proc.stdout and "built" not in proc.stdout
    assert (tmp_path / "release" / A).stat().st_mtime_ns == before

    # a source edit, a config edit, a hand edit of the release: each makes it stale
    nb = next((tmp_path / "source" / A).glob("*.ipynb"))
    text = nb.read_text()
    nb.write_text(text.replace('"cells": [', '"cells": [{"cell_type": "markdown", "metadata": {}, "source": "New."},', 1))
    assert not build.is_current(tmp_path, A)
    assert build.build(tmp_path, [A], log=log.append, only_changed=True) == [A]
    assert "New." in (tmp_path / "release" / A / nb.name).read_text()
    assert build.is_current(tmp_path, A)
    with open(tmp_path / "nbgrader_config.py", "a") as fh:   # grading settings: the release stays current
        fh.write("\nc.Sandbox.memory_mb = 999\nc.ExecutePreprocessor.timeout = 7\n")
    assert build.is_current(tmp_path, A)
    with open(tmp_path / "nbgrader_config.py", "a") as fh:   # a generate_assignment setting: stale
        fh.write('\nc.ClearSolutions.code_stub = {"python": "# YOUR ANSWER HERE\\nraise NotImplementedError()"}\n')
    assert not build.is_current(tmp_path, A)
    build.build(tmp_path, [A], log=log.append)            # a plain build always rebuilds, and records
    assert build.is_current(tmp_path, A)
    (tmp_path / "release" / A / nb.name).write_text(text)
    assert not build.is_current(tmp_path, A)
    # a deleted release is rebuilt too
    shutil.rmtree(tmp_path / "release" / A)
    assert not build.is_current(tmp_path, A)


def test_committed_manifest_lists_every_assignment():
    from mlbd.course import assignments

    manifest = build.load_manifest(ROOT)
    assert set(manifest) == set(assignments(ROOT)), "run `mlbd build` and commit release/.build.json"
