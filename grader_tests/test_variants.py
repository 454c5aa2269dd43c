"""Per-student variants (issue 16): each student's data comes from a stream keyed by a course
secret; `mlbd grade` and plain `nbgrader autograde` grade each submission against its own
student's stream, so answers copied from a classmate lose the marks where the variant matters."""
from __future__ import annotations

import hashlib
import hmac
import json
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import nbformat
import numpy as np
import pytest

from mlbd import validate, variant
from mlbd.course import nbgrader, tool_env
from mlbd.grading import workload as w
from mlbd.hub.spawner import CourseSpawner
from mlbd.variant import Variants

pytestmark = pytest.mark.xdist_group("variants")


def _draw(key_hex: str, stream: str, n: int = 3) -> np.ndarray:
    """The stream, computed here without mlbd.variant: HMAC-SHA256(key, stream) seeds default_rng."""
    digest = hmac.new(bytes.fromhex(key_hex), stream.encode(), hashlib.sha256).digest()
    return np.random.default_rng(int.from_bytes(digest[:16], "big")).normal(10, 3, size=n)


@pytest.mark.unit
def test_keys_and_streams(monkeypatch, tmp_path):
    secret = b"s" * 64
    keys = {(c, s): variant.student_key(secret, c, s) for c in ("mlbd", "other") for s in ("alice", "bob")}
    assert len(set(keys.values())) == 4, "course and student both change the key"
    assert variant.student_key(secret, "mlbd", "alice") == keys[("mlbd", "alice")], "keys are deterministic"
    assert variant.student_key(b"t" * 64, "mlbd", "alice") != keys[("mlbd", "alice")], "the secret changes the key"
    assert variant.student_key(secret, "mlbd", "al") != variant.student_key(secret, "mlb", "dal"), "no ambiguity at the join"

    monkeypatch.setenv(variant.KEY_ENV, keys[("mlbd", "alice")])
    monkeypatch.setenv(variant.STUDENT_ENV, "alice")
    a = variant.rng("ps1/data").normal(10, 3, size=3)
    assert np.array_equal(a, variant.rng("ps1/data").normal(10, 3, size=3)), "the same stream twice: the same numbers"
    assert np.array_equal(a, _draw(keys[("mlbd", "alice")], "ps1/data")), "the documented derivation"
    assert not np.array_equal(a, variant.rng("ps1/noise").normal(10, 3, size=3)), "streams are independent"
    assert 0 <= variant.seed("ps1/split") < 2**31 and variant.student() == "alice" and not variant.is_default()
    monkeypatch.setenv(variant.KEY_ENV, keys[("mlbd", "bob")])
    assert not np.array_equal(a, variant.rng("ps1/data").normal(10, 3, size=3)), "another student, other data"

    monkeypatch.delenv(variant.KEY_ENV)
    d = variant.rng("ps1/data").normal(10, 3, size=3)
    assert variant.is_default() and variant.student() == variant.DEFAULT_STUDENT
    assert np.array_equal(d, variant.rng("ps1/data").normal(10, 3, size=3)), "the default variant is fixed"
    monkeypatch.setenv(variant.KEY_ENV, "not-hex")
    with pytest.raises(ValueError, match="64 hexadecimal digits"):
        variant.rng("ps1/data")
    with pytest.raises(ValueError, match="name the stream"):
        variant.seed("")


@pytest.mark.unit
def test_course_secret_is_made_once_private_and_checked(tmp_path):
    v = Variants()
    first = v.secret(tmp_path)
    path = v.secret_path(tmp_path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and len(first) == 64
    assert v.secret(tmp_path) == first, "kept, not regenerated: every variant would change"
    env = v.kernel_env(tmp_path, "mlbd", "alice")
    assert env == {variant.KEY_ENV: variant.student_key(first, "mlbd", "alice"), variant.STUDENT_ENV: "alice"}
    assert first.decode() not in json.dumps(env), "the kernel gets the student's key, never the secret"
    path.write_text("short")
    with pytest.raises(ValueError, match="too short"):
        v.secret(tmp_path)
    with pytest.raises(FileNotFoundError):
        Variants().secret(tmp_path / "elsewhere", create=False)
    assert Variants(config=_config(enabled=False)).kernel_env(tmp_path, "mlbd", "alice") == {}


def _config(**kw):
    from traitlets.config import Config
    c = Config()
    for k, v in kw.items():
        setattr(c.Variants, k, v)
    return c


@pytest.mark.unit
def test_hub_server_gets_its_users_key(tmp_path):
    secret_file = tmp_path / "variant_secret"
    secret_file.write_text("ab" * 32 + "\n")
    spawner = SimpleNamespace(variant_secret_file=str(secret_file), course_id="mlbd",
                              user=SimpleNamespace(name="hv_s1"), log=SimpleNamespace(warning=lambda *a: None))
    env = CourseSpawner.variant_env(spawner)
    assert env[variant.KEY_ENV] == variant.student_key(("ab" * 32).encode(), "mlbd", "hv_s1")
    assert env[variant.STUDENT_ENV] == "hv_s1"
    spawner.variant_secret_file = str(tmp_path / "missing")
    assert CourseSpawner.variant_env(spawner) == {}, "no secret: the default variant, not a failed spawn"


# -- graded end to end: mlbd grade and nbgrader autograde, real sandboxed kernels ---------------

DATA = ("import numpy as np\nfrom mlbd import variant\n"
        "data = variant.rng('ps1/data').normal(10, 3, size=50).round(3)\n"
        "print('variant of', variant.student(), 'first value', data[0])")
SOLUTION = "### BEGIN SOLUTION\nanswer = float(data.mean())\n### END SOLUTION"
TEST = ("assert isinstance(answer, float), 'answer is a float'\n"
        "### BEGIN HIDDEN TESTS\n"
        "_ref = float(variant.rng('ps1/data').normal(10, 3, size=50).round(3).mean())\n"
        "assert abs(answer - _ref) < 1e-9, 'not the mean of your data'\n"
        "### END HIDDEN TESTS")


def _variant_course(root: Path) -> Path:
    def cell(source, grade_id=None, points=None, solution=False):
        c = nbformat.v4.new_code_cell(source)
        if grade_id:
            test = points is not None
            c.metadata["nbgrader"] = {"grade": test, "solution": solution, "locked": not solution,
                                      "grade_id": grade_id, "schema_version": 3, **({"points": points} if test else {})}
        return c

    root.mkdir(parents=True)
    (root / "nbgrader_config.py").write_text(w.CONFIG.replace("TIMEOUT", "30") + w.MLBD_SETTINGS.replace("MEMORY", "512"))
    src = root / "source" / w.ASSIGNMENT
    src.mkdir(parents=True)
    nb = nbformat.v4.new_notebook(cells=[cell(DATA, "data"), cell(SOLUTION, "mean", solution=True),
                                         cell(TEST, "t_mean", 2)],
                                  metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
    nbformat.write(nb, str(src / "v.ipynb"))
    nbgrader(root, "generate_assignment", w.ASSIGNMENT, "--force")
    return root


def _submit(course: Path, student: str, answer: str) -> None:
    nb = nbformat.read(str(course / "release" / w.ASSIGNMENT / "v.ipynb"), 4)
    for c in nb.cells:
        if c.metadata.get("nbgrader", {}).get("grade_id") == "mean":
            c.source = answer
    w.submit(course, student, nb, name="v")


def _scores(course: Path) -> dict[str, float]:
    from nbgrader.api import Gradebook
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}", "testcourse") as gb:
        return {s.student.id: float(s.score) for s in gb.assignment_submissions(w.ASSIGNMENT)}


def _first_value(course: Path, student: str) -> str:
    nb = nbformat.read(str(course / "autograded" / student / w.ASSIGNMENT / "v.ipynb"), 4)
    return "".join(o.get("text", "") for o in nb.cells[0].outputs)


def test_each_submission_is_graded_against_its_own_students_variant(tmp_path):
    course = _variant_course(tmp_path / "course")
    secret = Variants().secret(course)
    key = {s: variant.student_key(secret, "testcourse", s) for s in ("alice", "bob", "carol", "dave")}
    mean = {s: float(_draw(key[s], "ps1/data", 50).round(3).mean()) for s in key}
    assert len({round(m, 6) for m in mean.values()}) == 4, "four students, four data sets"
    _submit(course, "alice", "answer = float(data.mean())")            # computed: right for anyone
    _submit(course, "bob", "answer = float(data.mean())")
    _submit(course, "carol", f"answer = {mean['alice']!r}   # alice's number, copied")
    _submit(course, "dave", f"answer = {mean['dave']!r}   # his own number, typed in\n"
                            "try:\n    print(open(" + repr(str(Variants().secret_path(course))) + ").read())\n"
                            "except OSError as e:\n    print('secret unreadable:', type(e).__name__)")
    graded = subprocess.run([sys.executable, "-m", "mlbd.cli", "grade", w.ASSIGNMENT, "--course-dir", str(course),
                             "--jobs", "2"], env=tool_env(), capture_output=True, text=True, timeout=600)
    assert graded.returncode == 0, graded.stderr[-3000:]
    scores = _scores(course)
    assert scores == {"alice": 2.0, "bob": 2.0, "carol": 0.0, "dave": 2.0}, scores
    for s in ("alice", "bob"):
        shown = _first_value(course, s)
        assert f"variant of {s} first value" in shown and str(_draw(key[s], "ps1/data", 1).round(3)[0]) in shown, shown
    assert _first_value(course, "alice") != _first_value(course, "bob")
    dave = nbformat.read(str(course / "autograded" / "dave" / w.ASSIGNMENT / "v.ipynb"), 4)
    said = json.dumps(dave.cells[1].outputs)
    assert "secret unreadable" in said and secret.decode() not in said, said

    # plain nbgrader autograde (SandboxedExecute) draws the same variants: the same scores
    again = tmp_path / "again"
    shutil.copytree(course, again, ignore=shutil.ignore_patterns("autograded", "gradebook.db"))
    (again / "nbgrader_config.py").write_text((course / "nbgrader_config.py").read_text())
    nbgrader(again, "generate_assignment", w.ASSIGNMENT, "--force")
    nbgrader(again, "autograde", w.ASSIGNMENT, "--force")
    assert _scores(again) == scores
    assert _first_value(again, "bob") == _first_value(course, "bob")


def test_validation_proves_a_variant_assignment_for_five_students(tmp_path):
    """The content suite's check (validate.prove_variants) on the variant course: it passes for
    the solution and fails when an answer that fits one variant only is called wrong for none."""
    course = _variant_course(tmp_path / "course")
    source = course / "source" / w.ASSIGNMENT / "v.ipynb"
    release = course / "release" / w.ASSIGNMENT / "v.ipynb"
    assert validate.uses_variants(source)
    first = validate.execute(source, tmp_path / "v01", student="v01")
    typed = re.search(r"first value (\S+)", "".join(o.get("text", "") for o in first.nb.cells[0].outputs)).group(1)
    wrong = validate.parse_wrong_answers(
        "%% wrong mean -> t_mean : median instead of mean\nanswer = float(np.median(data))\n"
        "%% wrong mean -> t_mean : one student's first value typed in\nanswer = " + typed + "\n")
    assert validate.prove_variants(source, release, wrong, tmp_path / "proof") == []
    # an answer right for v01's variant only (its mean typed in) is caught in the other four
    v01_mean = repr(float(_draw(variant.student_key(validate.VALIDATION_SECRET, "validation", "v01"),
                                "ps1/data", 50).round(3).mean()))
    copied = validate.parse_wrong_answers(f"%% wrong mean -> t_mean : v01's mean typed in\nanswer = {v01_mean}\n")
    problems = validate.prove_variants(source, release, copied, tmp_path / "copied")
    assert [p.split(":")[0] for p in problems] == ["v01"], problems


@pytest.mark.unit
def test_a_students_key_reaches_their_kernel_but_never_the_shared_zygote(tmp_path):
    """The key travels as the job's Sandbox.job_env: every student's kernels fork from the same
    zygote (one per worker; a zygote per student would be a process and ~200 MB each), and the
    zygote itself never holds a student's key."""
    from traitlets.config import Config

    from mlbd.grading import zygote
    from mlbd.grading.sandbox import Sandbox
    boxes = {}
    for student in ("alice", "bob"):
        c = Config({"Sandbox": {"memory_mb": 512, "job_env": Variants().kernel_env(tmp_path, "mlbd", student)}})
        boxes[student] = Sandbox(config=c)
    assert zygote._key(boxes["alice"]) == zygote._key(boxes["bob"])
    alice = boxes["alice"].kernel_env(None, str(tmp_path))
    assert alice[variant.KEY_ENV] == variant.student_key(Variants().secret(tmp_path), "mlbd", "alice")
    assert variant.KEY_ENV not in boxes["alice"].kernel_env(None, str(tmp_path), job=False)
