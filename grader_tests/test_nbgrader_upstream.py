"""nbgrader's own autograde and feedback tests (shipped with nbgrader, in
``nbgrader/tests/apps/``), run with this course's grading settings in effect.

nbgrader's app tests write a fresh ``nbgrader_config.py`` (course root, database) in a temporary
directory for each test; traitlets also reads ``nbgrader_config.py`` from ``JUPYTER_CONFIG_DIR``
first, so the course's grading sections go there: the sandboxed Execute and the preprocessors of
``nbgrader_config.py``, the Sandbox limits, the feedback preprocessors, HTML sanitizing, deadlines.
Paths (CourseDirectory, Exchange, ExportApp) stay nbgrader's. A first check proves nbgrader loads
them, so the run cannot pass vacuously with stock settings.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mlbd.grading.pipeline import load_config

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("nbgrader-upstream"),
              pytest.mark.skipif(os.geteuid() != 0, reason="the grading sandbox runs kernels as root-owned boxes")]

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ("ExecutePreprocessor", "LimitOutput", "Sandbox", "Autograde", "Deadlines", "AssignLatePenalties",
            "LatePenalty", "HTMLExporter", "GenerateFeedback")
MODULES = ["nbgrader.tests.apps.test_nbgrader_autograde", "nbgrader.tests.apps.test_nbgrader_generate_feedback"]
# The whole of both modules is 58 tests, each an nbgrader run with sandboxed kernels: about half an
# hour on a loaded 2-core machine, too long for every commit. CI runs the tests where the sandbox
# changes what nbgrader sees (execution, outputs, files, timeouts, hidden tests, feedback);
# MLBD_NBGRADER_UPSTREAM=all runs both modules whole.
SUBSET = [f"{MODULES[0]}::TestNbGraderAutograde::{name}" for name in (
    "test_grade", "test_showtraceback_exploit", "test_grade_overwrite_files", "test_side_effects",
    "test_hidden_tests_single_notebook", "test_infinite_loop", "test_autograde_timeout")] + [
    f"{MODULES[1]}::TestNbGraderFeedback::{name}" for name in ("test_single_file", "test_autotests")]


def grading_settings(dest: Path) -> Path:
    cfg = load_config(ROOT)
    lines = ["c = get_config()  # noqa: F821"]
    for section in SECTIONS:
        for key, value in cfg.get(section, {}).items():
            lines.append(f"c.{section}.{key} = {value!r}")
    lines.append("c.Sandbox.memory_mb = 1024")     # nbgrader's test notebooks are tiny
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "nbgrader_config.py").write_text("\n".join(lines) + "\n")
    return dest


def env_with(config_dir: Path) -> dict:
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(config_dir))
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '/usr/bin:/bin')}"   # nbgrader runs alembic
    return env


def test_nbgrader_autograde_and_feedback_tests_pass_with_the_course_settings(tmp_path):
    env = env_with(grading_settings(tmp_path / "jupyter-config"))
    probe = subprocess.run(
        [sys.executable, "-c", "from nbgrader.apps import NbGraderApp; a = NbGraderApp.instance(); a.initialize([]); "
                               "print(a.config.Autograde.autograde_preprocessors)"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert "mlbd.grading.kernel.SandboxedExecute" in probe.stdout, probe.stdout + probe.stderr
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
                          "--pyargs", *(MODULES if os.environ.get("MLBD_NBGRADER_UPSTREAM") == "all" else SUBSET)],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1500)
    tail = "\n".join(run.stdout.splitlines()[-30:])
    assert run.returncode == 0, tail
    assert " passed" in tail and "failed" not in tail, tail
