"""Hostile submissions against `mlbd grade` (real bubblewrap, real cgroups).

One small course in a temporary folder, one honest control student and one submission per
attack, graded in one run (2 workers) and given feedback by plain `nbgrader generate_feedback`.
Every case asserts: nothing secret leaks into its autograded notebook or feedback, the gradebook
holds what the scorer wrote (the control keeps full marks), the submission is flagged for review
or scored no higher than its honest answers deserve, and the run went on (every student graded).
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from mlbd.course import nbgrader, tool_env
from mlbd.grading import workload as w

from conftest import _cached

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("grading-adversarial")]

R, PW = w.RIGHT, w.PARTLY_WRONG
WRONG = {k: v.replace("return", "return None and") if k != "q1" else v for k, v in R.items()}   # q2..q5 wrong
ENV_SECRET = "GRADER_TOKEN_5b9e1c"
CONTROL_MARK = "CONTROL_MARKER_c0ffee"
HIDDEN_ONLY = ["train_test_split(X, y, test_size=0.25, random_state=0)[0]", "LogisticRegression(C=v).fit(Str, ytr)",
               "abs(acc - model.score(Ste, yte))"]


def _leak_everything(course: Path) -> str:
    return f'''
import os, glob
found = []
for base in ["/", "/tmp", "/work", "/root", "/home", "/srv", "/var", os.path.expanduser("~"), "..", "../..", "{course}",
             "{course}/source", "{course}/submitted"]:
    try:
        found.append((base, sorted(os.listdir(base))[:50]))
    except OSError as e:
        found.append((base, str(e)))
for path in ["{course}/gradebook.db", "{course}/source/ps1/sk.ipynb", "{course}/submitted/control/ps1/sk.ipynb",
             "/proc/1/environ", "/root/.bash_history", "/etc/shadow"]:
    try:
        print(path, open(path, errors="replace").read()[:20000])
    except OSError as e:
        print(path, e)
for p in glob.glob("/proc/[0-9]*/environ") + glob.glob("/proc/[0-9]*/cmdline"):
    try:
        print(p, open(p, errors="replace").read()[:2000])
    except OSError:
        pass
print(found)
print(dict(os.environ))
'''


_ALWAYS_EQUAL = """
class _Any(float):
    __hash__ = float.__hash__
    def __eq__(self, other): return True
    def __lt__(self, other): return True
    __le__ = __gt__ = __ge__ = __lt__
    def __sub__(self, other): return _Any(0.0)
"""


_SCRIPTS = """
from IPython.display import HTML, Javascript, Markdown, display
display(HTML('<b>hi</b><script>window.MLBD_PWNED = 1</script><img src=x onerror="window.MLBD_PWNED = 2">'))
display(Javascript('window.MLBD_PWNED = 3'))
display(Markdown('<img src=y onerror="window.MLBD_PWNED = 4">'))
"""
_LIVE_SCRIPT = re.compile(r"<script[^>]*>[^<]*MLBD_PWNED|<img[^>]*onerror", re.I)


def _formgrader_view(course: Path, notebook: Path) -> str:
    """The autograded notebook as the formgrader's exporter renders it under the course's config."""
    from nbconvert.exporters import HTMLExporter

    from mlbd.grading.pipeline import load_config

    return HTMLExporter(config=load_config(course)).from_filename(str(notebook))[0]


def _with_surrogate(nb) -> str:
    """JSON may spell a lone surrogate, which no UTF-8 file can hold once decoded."""
    d = json.loads(nbformat.writes(nb))
    (cell,) = [c for c in d["cells"] if c["metadata"].get("nbgrader", {}).get("grade_id") == "q1"]
    cell["source"] = "".join(cell["source"]) + "\nlabel = '\ud800'"
    return json.dumps(d)


# Swallows failures of any cell that looks like a test (several lines, an assert), patching the
# shell's class: the probe compares the shell's methods with its class's, so it does not see this,
# and the static scan sees no hook name. One-line canaries would have failed as expected.
_SWALLOW = """
import textwrap
_cls = type(get_ipython())
_orig = _cls.run_cell_async
async def _wrapped(self, raw_cell, *a, **k):
    if "assert" in raw_cell and raw_cell.count(chr(10)) >= 2:
        raw_cell = "try:" + chr(10) + textwrap.indent(raw_cell, "    ") + chr(10) + "except BaseException:" + chr(10) + "    pass" + chr(10)
        if k.get("transformed_cell") is not None:
            k["transformed_cell"] = raw_cell
    return await _orig(self, raw_cell, *a, **k)
_cls.run_cell_async = _wrapped
"""

# Prints everything the kernel has seen of the tests, encoded: input history, outputs, the source of
# every frame (from a student function a hidden test calls), the history database.
_DUMP = """
import base64, codecs, inspect, linecache, zlib
def _dump(tag):
    text = chr(10).join(In) + chr(10).join(map(str, _ih)) + chr(10).join(map(str, Out.values()))
    for f in inspect.stack():
        text += "".join(linecache.getlines(f.filename))
    try:
        text += str(list(get_ipython().history_manager.get_range(raw=True)))
    except Exception:
        pass
    print(tag, base64.b64encode(zlib.compress(text.encode())).decode())     # one line each: first
    print(tag, base64.b64encode(text.encode()).decode())
    print(tag, text[::-1].replace(chr(10), " "))
    print(tag, codecs.encode(text, "rot13"))
    raise ValueError(codecs.encode(text[-3000:], "rot13"))
"""
_SPY_MODEL = """
class _Spy(LogisticRegression):
    def score(self, *a, **k):
        try:
            _dump("SCORE")
        except ValueError:
            pass
        return super().score(*a, **k)
def fit(Xtr, ytr):
    return _Spy(C=1.0).fit(Xtr, ytr)
"""


def cases(course: Path) -> dict[str, dict]:
    """name → {answers, extra: [(after_id, code)], raw, expect: 'flag'|'honest'|'either', max, error}"""
    hook = "get_ipython()"
    return {
        "read_secrets": dict(answers=R, extra=[("q1", _leak_everything(course))], max=10),
        "gradebook_write": dict(answers=R, extra=[("q1", f'''
import sqlite3
try:
    db = sqlite3.connect("{course}/gradebook.db"); db.execute("update grade set auto_score = 99"); db.commit(); print("DB_" + "WRITTEN")
except Exception as e:
    print("no db", e)
''')], max=10, absent=["DB_WRITTEN"]),
        "network": dict(answers=R, extra=[("q1", '''
import socket
for host, port in [("1.1.1.1", 53), ("127.0.0.1", 22), ("example.com", 80)]:
    try:
        socket.create_connection((host, port), timeout=2); print("NET" + "_OK", host)
    except OSError as e:
        print("no net", host, e)
''')], max=10, absent=["NET_OK"]),
        "input_transformer": dict(answers=WRONG, extra=[("q1", f'''
{hook}.input_transformers_post.append(lambda lines: ["pass\\n"] if any("assert" in l for l in lines) else lines)
''')], expect="flag", max=2),
        "ast_transformer": dict(answers=WRONG, extra=[("q1", f'''
import ast
class _NoAssert(ast.NodeTransformer):
    def visit_Assert(self, node):
        return ast.Pass()
{hook}.ast_transformers.append(_NoAssert())
''')], expect="flag", max=2),
        "custom_exc": dict(answers=WRONG, extra=[("q1", f'''
{hook}.set_custom_exc((AssertionError, NameError, TypeError, AttributeError), lambda *a, **k: None)
''')], expect="either", max=2),
        "showtraceback": dict(answers=WRONG, extra=[("q1", f'''
{hook}.showtraceback = lambda *a, **k: None
{hook}._showtraceback = lambda *a, **k: None
''')], expect="either", max=2),
        "excepthook": dict(answers=WRONG, extra=[("q1", "import sys\nsys.excepthook = lambda *a: None\n")], expect="either", max=2),
        "pre_run_cell": dict(answers=WRONG, extra=[("q1", f'''
def _swallow(info):
    if "assert" in (info.raw_cell or ""):
        info.raw_cell = "pass"
{hook}.events.register("pre_run_cell", _swallow)
''')], expect="flag", max=2),
        "patch_allclose": dict(answers=PW, extra=[("q1", "np.allclose = lambda *a, **k: True\n")], expect="flag", max=6),
        "patch_numpy_testing": dict(answers=PW, extra=[("q1", "import numpy.testing as npt\nnpt.assert_allclose = lambda *a, **k: None\n")],
                                    expect="flag", max=6),
        "patch_isclose": dict(answers=PW, extra=[("q1", "import math\nmath.isclose = lambda *a, **k: True\n")], expect="flag", max=6),
        "patch_builtin_abs": dict(answers=dict(R, q4="def accuracy(model, X, y):\n    return 0.7"),
                                  extra=[("q1", "import builtins\nbuiltins.abs = lambda x: 0\n")], expect="flag", max=8),
        "leak_hidden_tests": dict(answers=R, extra=[("q1", f'''
_seen = []
def _spy(lines):
    _seen.extend(lines); print("".join(_seen)[-3000:]); return lines
{hook}.input_transformers_cleanup.append(_spy)
''')], expect="flag", max=10),
        "always_equal": dict(answers=dict(R, q4="def accuracy(model, X, y):\n    return _Any(0.1)",
                                          q5="def best_c(*a, **k):\n    return _Any(3.0)"),
                             extra=[("q1", _ALWAYS_EQUAL)], expect="flag", max=6),
        "html_script": dict(answers=R, extra=[("q1", _SCRIPTS)], max=10, min=10, scripts=True),
        "active_files": dict(answers=R, files={"evil.html": "<script>window.MLBD_PWNED = 5</script>",
                                               "pic.svg": "<svg onload='window.MLBD_PWNED = 6'/>", "data.csv": "a,b\n1,2\n"},
                             max=10, min=10, error=["evil.html was not copied", "pic.svg was not copied"]),
        "os_exit": dict(answers=dict(R, q2="import os\nos._exit(0)"), max=4, error="kernel"),
        "sys_exit": dict(answers=dict(R, q2="import sys\nsys.exit(3)"), max=4),
        "kill_parent": dict(answers=dict(R, q3="import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\nos.kill(1, signal.SIGKILL)"), max=6),
        "infinite_loop": dict(answers=dict(R, q3="while True:\n    pass"), max=6, error="longer than"),
        "memory_bomb": dict(answers=dict(R, q3="blob = bytearray(6 * 2**30)"), max=6, error="memory limit"),
        "fork_loop": dict(answers=dict(R, q3="import os, time\nfor _ in range(10000):\n    try:\n        os.fork()\n    except OSError:\n        time.sleep(0.01)"),
                          max=8, error=["kernel", "process limit", "longer than"]),
        "huge_output": dict(answers=dict(R, q1=R["q1"] + "\nprint('x' * 50_000_000)\nprint('y\\n' * 2_000_000)"), max=10, min=10,
                            truncated=True),
        "display_update": dict(answers=R, extra=[("q1", "h = display('small', display_id=True)\nh.update('y' * 30_000_000)\n")],
                               max=10, min=10, truncated=True),
        "comm_flood": dict(answers=R, extra=[("q1", "from comm import create_comm\nfor i in range(100):\n"
                                                    "    create_comm(target_name='jupyter.widget', data={'state': {'v': 'z' * 1_000_000}})\n")],
                           max=10, min=10),
        "garbled_messages": dict(answers=R, extra=[("q1", f"s = {hook}.kernel.session\ns.pack = lambda o: b'[' * 200_000\n"
                                                          "print('boom', flush=True)\nimport time\ntime.sleep(0.5)\n")],
                                 max=0, error="message the grader cannot read", not_flagged="rewritten"),
        "disk_fill": dict(answers=R, extra=[("q1", "try:\n    open('big.bin', 'wb').write(b'0' * 500 * 2**20)\nexcept OSError as e:\n    print('fsize', e)\n")], max=10),
        "stderr_warning_in_test": dict(answers=dict(R, q1="import warnings\ndef split(X, y):\n    warnings.warn('this API will change', FutureWarning)\n"
                                                          "    return train_test_split(X, y, test_size=0.25, random_state=0)"),
                                       max=10, min=10),
        "corrupt_json": dict(raw='{"cells": [{"cell_type": "code", "source": "x = ', max=0, error="not valid JSON"),
        "linked_to_source": dict(link=f"{course}/source/{w.ASSIGNMENT}/{w.NOTEBOOK}.ipynb", max=0, error="symbolic link"),
        "deep_json": dict(raw='{"cells": [], "metadata": ' + "[" * 100_000 + "]" * 100_000 + "}", max=0, error="nested too deeply"),
        "utf16_file": dict(raw=lambda: nbformat.writes(w.answered(course, R)).encode("utf-16"), max=0, error="cannot be read"),
        "notebook_v3": dict(raw=json.dumps({"nbformat": 3, "nbformat_minor": 0, "metadata": {}, "worksheets": [{"cells": []}]}),
                            max=0, error="not a notebook"),
        "cells_not_objects": dict(raw=json.dumps({"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": [1, "x", None]}),
                                  max=0, error="malformed"),
        "lone_surrogate": dict(raw=lambda: _with_surrogate(w.answered(course, R)), max=10, min=10, error="not valid Unicode"),
        "missing_notebook": dict(raw_name="other", raw=nbformat.writes(nbformat.v4.new_notebook()), max=0, error="missing"),
        "renamed_grade_id": dict(answers=R, meta="rename", expect="flag", max=10),
        "deleted_test_cell": dict(answers=dict(R, q5="def best_c(*a, **k):\n    return 10.0"), meta="delete", expect="flag", max=8),
        "duplicated_test_cell": dict(answers=R, meta="duplicate", expect="flag", max=10, min=10),
        "metadata_stripped": dict(answers=R, meta="strip", expect="flag", max=10, min=10),   # re-typed in another editor
        "unlocked_test_edit": dict(answers=WRONG, meta="unlock", max=2),
        # attack classes of issue 13: failures swallowed by a patched kernel, however it got there
        "swallow_inline": dict(answers=WRONG, extra=[("q1", _SWALLOW)], expect="flag", max=2, strict=True),
        "shipped_module": dict(answers=WRONG, extra=[("q1", "import tools")], files={"tools.py": _SWALLOW},
                               max=2, strict=True, error="tools.py is not part of"),
        "shipped_pth": dict(answers=WRONG, extra=[("q1", "import os, site\nsite.addsitedir(os.getcwd())")],
                            files={"zz.pth": "import tools_pth\n", "tools_pth.py": _SWALLOW,
                                   "sitecustomize.py": _SWALLOW, "usercustomize.py": _SWALLOW},
                            max=2, strict=True, error="zz.pth is not part of"),
        "shipped_import_hook": dict(answers=WRONG, extra=[("q1", "import sys\nsys.path.insert(0, '.')\nimport hook")],
                                    files={"hook.py": "import sys, importlib.abc\n" + _SWALLOW.replace("get_ipython()", "__import__('IPython').get_ipython()")},
                                    max=2, strict=True),
        "forged_mlbd_metadata": dict(answers=WRONG, extra=[("q1", _SWALLOW)], meta="forge_mlbd", expect="flag", max=2,
                                     strict=True, autograded=["_cls.run_cell_async = _wrapped"]),
        "forged_nbgrader_metadata": dict(answers=WRONG, meta="forge_nbgrader", expect="flag", max=2, strict=True),
        # issue 13 point 2: hidden tests never reach feedback, in any encoding
        "leak_history_encoded": dict(answers=dict(PW, q3=_SPY_MODEL), extra=[("q1", _DUMP), ("t2", "_dump('CELL')"), ("t5", "_dump('END')")],
                                     max=6, min=6, leak=True,
                                     honest=["HIDDEN_TEST_TWO: scale the test part with the training statistics",
                                             "HIDDEN_TEST_FIVE: pick the best validation accuracy"]),
        # issue 17 point 3: malformed metadata costs only the cell that carries it
        "malformed_metadata": dict(answers=R, meta="malformed", max=10, min=10, error="invalid", no_flags=True),
        # issue 14: an empty notebook is graded 0 with one clear note
        "empty_notebook": dict(raw=nbformat.writes(nbformat.v4.new_notebook()), max=0, error="has no answers", no_flags=True),
        "unchanged_release": dict(answers={}, max=0, error="has no answers", no_flags=True),
    }


def _build(course: Path, name: str, case: dict) -> None:
    if "link" in case:       # collected by some other means than our exchange, which drops links
        folder = w.submit(course, name)
        (folder / f"{w.NOTEBOOK}.ipynb").symlink_to(case["link"])
        return
    if "raw" in case:            # bytes or text as they are (a function: built once the course exists)
        raw = case["raw"]() if callable(case["raw"]) else case["raw"]
        w.submit(course, name, raw=raw, name=case.get("raw_name", w.NOTEBOOK))
        return
    nb = w.answered(course, case["answers"], case.get("extra"))
    meta = case.get("meta")
    for cell in list(nb.cells):
        md = cell.metadata.get("nbgrader", {})
        if meta == "rename" and md.get("grade_id") == "t1":
            md["grade_id"] = "t1_renamed"
            md["points"] = 50
        if meta == "delete" and md.get("grade_id") == "t5":
            nb.cells.remove(cell)
        if meta == "duplicate" and md.get("grade_id") == "t1":
            nb.cells.insert(nb.cells.index(cell), nbformat.from_dict(json.loads(json.dumps(cell))))
        if meta == "strip":
            cell.metadata = nbformat.NotebookNode()
        if meta == "forge_mlbd" and not md:        # the student's own cells pass for the grader's
            cell.metadata["mlbd"] = {"canary": "x", "kind": 0} if "_wrapped" in cell.source else {"probe": "last", "nonce": "x"}
        if meta == "forge_nbgrader" and md.get("grade") and not md.get("solution") and md.get("grade_id") != "t1":
            md.update(grade=False, solution=True, points=0, checksum="0" * 32)
        if meta == "malformed" and md.get("grade_id") == "q1":
            cell.metadata["tags"] = ["a,b", "fine"]
            cell["id"] = "an id with spaces"
        if meta == "malformed" and md.get("grade_id") == "t1":
            cell.metadata["collapsed"] = "not a boolean"
        if meta == "unlock" and md.get("grade") and not md.get("solution"):
            md["locked"] = False
            cell.source = "pass"
    folder = w.submit(course, name, nb)
    for fname, text in case.get("files", {}).items():
        (folder / fname).write_text(text)


@pytest.fixture(scope="module")
def graded(tmp_path_factory, _cache):
    # once per worker: xdist may tear a module fixture down between two of its tests and set it up again
    return _cached(_cache, "adversarial-graded", lambda: _grade_everyone(tmp_path_factory))


def _grade_everyone(tmp_path_factory):
    course = w.make_course(tmp_path_factory.mktemp("adv") / "course", timeout=10, memory_mb=512)
    all_cases = cases(course)
    control = w.answered(course, dict(R, q1=R["q1"] + f"\n# {CONTROL_MARK}"))
    w.submit(course, "control", control)
    for name, case in all_cases.items():
        _build(course, name, case)
    env = tool_env({ENV_SECRET: "s3cr3t-" + ENV_SECRET, "MLBD_TOKEN_TEST": ENV_SECRET + "_viaMLBD"})
    env.pop("MLBD_TOKEN_TEST")   # the grader's own MLBD_* passthrough must not matter here
    proc = subprocess.run([sys.executable, "-m", "mlbd.cli", "grade", w.ASSIGNMENT, "--course-dir", str(course),
                           "--jobs", "2"], env=env, capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, proc.stderr[-3000:]
    fb = nbgrader(course, "generate_feedback", w.ASSIGNMENT, "--force", check=False)
    report = subprocess.run([sys.executable, "-m", "mlbd.cli", "report", w.ASSIGNMENT, "--course-dir", str(course),
                             "--format", "json"], env=env, capture_output=True, text=True, timeout=300)
    assert report.returncode == 0, report.stderr
    rows = {r["student"]: r for r in json.loads(report.stdout)["submissions"]}
    return {"course": course, "cases": all_cases, "rows": rows, "feedback_rc": fb.returncode,
            "grade_out": proc.stdout + proc.stderr}


def _hidden_lines() -> list[str]:
    return [line.strip() for block in re.findall(r"BEGIN HIDDEN TESTS\n(.*?)### END", w.SOURCE, re.S)
            for line in block.splitlines() if line.strip()] + HIDDEN_ONLY


def _decoded(text: str) -> list[str]:
    """Every base64 run in ``text`` decoded (and inflated, when it is zlib)."""
    import base64
    import zlib
    out = []
    for token in re.findall(r"[A-Za-z0-9+/]{40,}={0,2}", text):
        token = token.rstrip("=")
        try:
            raw = base64.b64decode(token[: len(token) // 4 * 4])
        except ValueError:
            continue
        try:
            raw = zlib.decompressobj().decompress(raw)      # a cut stream still inflates up to the cut
        except zlib.error:
            pass
        out.append(raw.decode("utf-8", "replace"))
    return out


def _assert_no_hidden_test(text: str) -> None:
    import codecs
    import html
    plain = html.unescape(text)
    views = [plain, codecs.encode(plain, "rot13"), plain[::-1], *_decoded(plain)]
    for line in _hidden_lines():
        for view in views:
            assert line not in view, f"hidden test line in feedback: {line}"


def _texts(course: Path, student: str) -> list[tuple[str, str]]:
    out = []
    for folder in ("autograded", "feedback"):
        for p in sorted((course / folder / student).rglob("*")):
            if p.is_file():
                out.append((str(p), p.read_text(errors="replace")))
    return out


def test_everyone_graded_and_control_intact(graded):
    rows = graded["rows"]
    assert set(rows) == {"control", *graded["cases"]}
    assert rows["control"]["score"] == 10.0 and not rows["control"]["flags"], rows["control"]
    assert graded["feedback_rc"] == 0


@pytest.mark.parametrize("name", list(cases(Path("/course"))))
def test_attack(graded, name):
    case = graded["cases"][name]
    row = graded["rows"][name]
    course = graded["course"]
    texts = _texts(course, name)
    feedback = [t for p, t in texts if "/feedback/" in p]
    for path, text in texts:
        assert w.SECRET not in text, f"solution leaked into {path}"
        assert CONTROL_MARK not in text, f"another student's submission leaked into {path}"
        assert ENV_SECRET not in text, f"grader environment leaked into {path}"
        for absent in case.get("absent", []):
            assert absent not in text, f"{absent} in {path}"
        assert os.path.getsize(path) < 12_000_000, f"{path} is {os.path.getsize(path)} bytes"
    for text in feedback:
        for line in HIDDEN_ONLY:
            assert line not in text, f"hidden test source in feedback: {line}"
        assert len(text) < 6_000_000
    expect = case.get("expect", "honest")
    if expect == "flag":
        assert row["flags"], f"{name} not flagged: {row}"
    if expect in ("honest", "either") or not row["flags"] or case.get("strict"):
        assert row["score"] <= case["max"], f"{name} got {row['score']} > {case['max']}: {row}"
    if "min" in case:
        assert row["score"] >= case["min"], row
    if "not_flagged" in case:       # cells the grader could not run are not the student rewriting messages
        assert not [f for f in row["flags"] if case["not_flagged"] in f], row["flags"]
    if case.get("scripts"):         # rendered for the TA and the student, nothing runs
        (nb,) = (p for p, _ in texts if "/autograded/" in p and p.endswith(".ipynb"))
        html = [t for p, t in texts if p.endswith(".html")] + [_formgrader_view(course, Path(nb))]
        assert len(html) == 2 and "MLBD_PWNED" in html[1]
        for text in html:
            assert not _LIVE_SCRIPT.search(text), _LIVE_SCRIPT.search(text).group(0)
    if "data.csv" in case.get("files", {}):     # pages and scripts stay out of what the formgrader serves
        kept = {Path(p).name for p, _ in texts if "/autograded/" in p}
        assert "data.csv" in kept and not kept & {"evil.html", "pic.svg"}, kept
    if case.get("truncated"):     # the output was cut with a visible marker, not dropped
        assert any("mlbd: output truncated" in t for p, t in texts if "/autograded/" in p)
    if case.get("no_flags"):
        assert not row["flags"], row["flags"]
        assert not any("needs review" in t or "flagged" in t for t in feedback)
    for text in case.get("autograded", []):       # the TA sees the code that ran
        assert any(text in t for p, t in texts if "/autograded/" in p and p.endswith(".ipynb")), text
    if case.get("leak"):
        assert feedback, "no feedback generated"
        for text in feedback:
            _assert_no_hidden_test(text)
        for msg in case["honest"]:
            assert any(msg in t for t in feedback), f"honest failure message {msg!r} missing from feedback"
    if "error" in case:
        wanted = case["error"] if isinstance(case["error"], list) else [case["error"]]
        assert any(x.lower() in e.lower() for e in row["errors"] for x in wanted), row["errors"]
        if feedback:      # the student reads the same reason
            assert any(x.lower() in t.lower() for t in feedback for x in wanted)
