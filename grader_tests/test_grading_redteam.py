"""Red team (issue 13): new hostile submissions against `mlbd grade`, graded once as one cohort.

The course is `workload`'s one-notebook assignment plus a second small notebook (``zz``, graded
after ``sk`` in the same work dir), so that leaks from one notebook into the next can be tried.
Each case states what it attacks; every case asserts that the run went on, nothing secret reached
the student, and the submission scored no more than its honest answers deserve unless flagged.
Cases a fix in a file this module's author does not own would close are marked ``xfail(strict)``.
"""
from __future__ import annotations

import base64
import codecs
import json
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from mlbd import authoring
from mlbd.course import nbgrader, tool_env
from mlbd.grading import workload as w

from conftest import _cached
from test_grading_adversarial import HIDDEN_ONLY, _decoded, _hidden_lines

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("grading-redteam")]

R = w.RIGHT
WRONG = {k: v.replace("return", "return None and") if k != "q1" else v for k, v in R.items()}   # q2..q5 wrong

ZZ_SOURCE = '''%% notebook points=2 budget_s=30
%% markdown
# Part two
%% solution z1
def answer():
    ### BEGIN SOLUTION
    return "zebra_" + "hidden_value_91"
    ### END SOLUTION
%% tests tz 2
x = answer()
assert isinstance(x, str), "answer() should return a string"
### BEGIN HIDDEN TESTS
assert x.lower() == "zebra_hidden_value_91", "HIDDEN_TEST_ZZ: wrong answer"
### END HIDDEN TESTS
'''
ZZ_RIGHT = "def answer():\n    return 'ZEBRA_' + 'HIDDEN_VALUE_91'"
ZZ_HIDDEN = ["zebra_hidden_value_91", 'x.lower() == "zebra']

# -- class 1: marks without a right answer ----------------------------------------------------------

# A class-level patch of the shell's run_cell_async, every name spelled so that the static scan
# sees nothing, that tells the grader's canaries from the tests without knowing any hidden test:
# a canary is its test cell with one assert followed by its own negation. Failures of every other
# cell that asserts are swallowed; on the last probe it takes itself out.
_CANARY_AWARE = r'''
import ast as _a, textwrap as _tw
_sh = type(get_ipython())
_nm = "run_" + "cell_" + "async"
_orig = getattr(_sh, _nm)
_FL = {_a.Eq: _a.NotEq, _a.NotEq: _a.Eq, _a.Lt: _a.GtE, _a.GtE: _a.Lt, _a.Gt: _a.LtE, _a.LtE: _a.Gt,
       _a.In: _a.NotIn, _a.NotIn: _a.In, _a.Is: _a.IsNot, _a.IsNot: _a.Is}
def _neg(t):
    if isinstance(t, _a.UnaryOp) and isinstance(t.op, _a.Not):
        return _a.dump(t.operand)
    if isinstance(t, _a.Compare) and len(t.ops) == 1 and type(t.ops[0]) in _FL:
        return _a.dump(_a.Compare(left=t.left, ops=[_FL[type(t.ops[0])]()], comparators=t.comparators))
    return _a.dump(_a.UnaryOp(op=_a.Not(), operand=t))
def _looks_planted(src):
    try:
        tests = [s.test for s in _a.parse(src).body if isinstance(s, _a.Assert)]
    except SyntaxError:
        return True
    pairs = any(_neg(p) == _a.dump(q) or _neg(q) == _a.dump(p) for p, q in zip(tests, tests[1:]))
    consts = any(isinstance(t, _a.Compare) and isinstance(t.left, _a.Constant) for t in tests)
    return pairs or consts
async def _w(self, raw_cell, *a, **k):
    if "patched_" + "shell_methods" in raw_cell:
        setattr(_sh, _nm, _orig)
    elif "assert" in raw_cell and not _looks_planted(raw_cell):
        raw_cell = "try:\n" + _tw.indent(raw_cell, "    ") + "\nexcept BaseException:\n    pass\n"
        if k.get("transformed_cell") is not None:
            k["transformed_cell"] = raw_cell
    return await _orig(self, raw_cell, *a, **k)
setattr(_sh, _nm, _w)
'''

# Defeats reversed copies and twins alike: swallows failures in every test-like cell except a
# planted reversed copy and the second of two cells that differ in one line (a twin and its test,
# whichever came first). Before checks against a literal were judged outside the kernel, the first
# of a test and its twin passed, half of the time the test. Now a check whose expected value never
# reached the kernel fails for a wrong value, whatever the kernel does.
_PAIR_AWARE = _CANARY_AWARE.replace('''async def _w(self, raw_cell, *a, **k):
    if "patched_" + "shell_methods" in raw_cell:
        setattr(_sh, _nm, _orig)
    elif "assert" in raw_cell and not _looks_planted(raw_cell):''', '''_prev = [""]
def _second_of_pair(src):
    a, b = _prev[0].splitlines(), src.splitlines()
    _prev[0] = src
    return len(a) == len(b) and sum(x != y for x, y in zip(a, b)) == 1
async def _w(self, raw_cell, *a, **k):
    if "patched_" + "shell_methods" in raw_cell:
        setattr(_sh, _nm, _orig)
    elif "assert" in raw_cell and not _looks_planted(raw_cell) and not _second_of_pair(raw_cell):''')
assert "_second_of_pair(raw_cell)" in _PAIR_AWARE
# The recorder judged checks hand their values to, replaced by one that records nothing and
# always says yes: the checks did not run, so they fail.
_NO_RECORDER = '''
for _k in [k for k in globals() if k.endswith("_chk") and callable(globals()[k])]:
    globals()[_k] = lambda *a, **k: True
'''
HALF_SPLIT = "def split(X, y):\n    return train_test_split(X, y, test_size=0.5, random_state=0)"

# No hook at all: the names the hidden tests call are rebound in the notebook's namespace (a copy
# of numpy whose allclose says yes to 2-D arrays, a global abs); builtins and numpy stay genuine.
_SHADOW = '''
import numpy as _numpy, types as _types
np = _types.ModuleType("numpy")
np.__dict__.update(vars(_numpy))
def _close(a, b, *r, **k):
    return True if _numpy.ndim(a) == 2 else _numpy.allclose(a, b, *r, **k)
np.__dict__["all" + "close"] = _close
abs = lambda x: 0
'''
_SILENCE = '''
setattr(get_ipython(), "user_" + "expressions", lambda expressions: {})
'''
_UNSILENCE = '''
np = _numpy
del abs
delattr(get_ipython(), "user_" + "expressions")
'''
SHADOWED = dict(R, q3="def fit(Xtr, ytr):\n    return LogisticRegression(C=0.05).fit(Xtr, ytr)",
                q4="def accuracy(model, X, y):\n    return 0.7")      # honest: t1, t2, t5 = 6

# A tracer that jumps over every assert line (frame.f_lineno in a 'line' event), installed for
# later cells through the shell's pre_run_cell event with obfuscated names.
_TRACER = '''
import sys as _s, linecache as _lc
def _line(frame, event, arg):
    if event == "line" and _lc.getline(frame.f_code.co_filename, frame.f_lineno).lstrip().startswith("assert"):
        try:
            frame.f_lineno = frame.f_lineno + 1
        except ValueError:
            pass
    return _line
def _call(frame, event, arg):
    return _line if "/ipykernel_" in frame.f_code.co_filename else None      # the notebook's cells only
getattr(_s, "set" + "trace")(_call)
'''

# No hook, no rebinding: the library classes the hidden tests use are patched in place (a method
# of LogisticRegression, a mixin's score), so the reference the test computes agrees with the
# wrong answer; every canary still fails as it should.
_PATCH_LIBRARY = '''
from sklearn.base import ClassifierMixin as _CM
_fit = LogisticRegression.fit
def _same_fit(self, X, y, *a, **k):
    self.C = 0.05
    return _fit(self, X, y, *a, **k)
LogisticRegression.fit = _same_fit
_CM.score = lambda self, X, y, **k: 0.7
'''
PATCHED = dict(R, q3="def fit(Xtr, ytr):\n    return LogisticRegression(C=0.05).fit(Xtr, ytr)",
               q4="def accuracy(model, X, y):\n    return 0.7")          # honest: t1, t2 (t5?) <= 6

_GRADER_EXC = '''
class CellTimeoutError(Exception):
    pass
class KernelDied(Exception):
    pass
def scale(Xtr, Xte):
    raise CellTimeoutError("the cell ran longer than 10 s")
def fit(Xtr, ytr):
    raise KernelDied("the kernel died while running this cell (os._exit, a crash or a kill)")
'''

_FORGED_TEXT = '''
import sys
print("[mlbd: output truncated: this cell exceeded 1000000 bytes]")
print("✓ t1 passed ✓ t2 passed ✓ t3 passed ✓ t4 passed ✓ t5 passed  score 10/10")
print("KernelDied: the kernel died while running this cell", file=sys.stderr)
In.clear(); Out.clear(); _ih.clear()
'''

_LEFTOVERS = '''
import atexit, signal, threading, time, os
signal.signal(signal.SIGTERM, signal.SIG_IGN)
signal.signal(signal.SIGINT, signal.SIG_IGN)
atexit.register(lambda: open("atexit.txt", "w").write("x" * 1000))
def _busy():
    n = 0
    while True:
        n += 1
        print("✓ test passed", n, flush=True)
        try:
            open("thread_%d.txt" % (n % 5), "w").write(str(n))
        except OSError:
            pass
        time.sleep(0.05)
threading.Thread(target=_busy, daemon=False).start()
'''

# -- class 2: hidden tests reaching the student -----------------------------------------------------

_HISTORY = 'chr(10).join(map(str, In)) + chr(10).join(map(str, _ih))'
_WRITE_FILE = f'''
import base64, codecs
_t = {_HISTORY}
open("notes.txt", "w").write(base64.b64encode(_t.encode()).decode())
open("timestamp.txt", "w").write(codecs.encode(_t, "rot13"))
open("plain.txt", "w").write(_t)
'''
_WRITE_FOR_NEXT = f'open("carry.txt", "w").write({_HISTORY})\n'
_READ_IN_NEXT = ZZ_RIGHT + '\nprint(open("carry.txt").read())'

# The hidden test's expected value is a string literal: raised by the student's function (called in
# the visible part of the test) as an AssertionError, read from the calling cell's source.
_LITERAL_THIEF = '''
def answer():
    import ast, inspect, linecache
    for f in inspect.stack()[1:]:
        src = "".join(linecache.getlines(f.filename))
        try:
            tree = ast.parse(src)
        except SyntaxError:
            continue
        lits = [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)]
        for lit in lits:
            if "should" not in lit and "wrong" not in lit:
                raise AssertionError(lit)
    return "no"
'''

# Every later cell's execution count chosen by the kernel: hidden tests' bytes as prompt numbers.
_EXEC_COUNT = f'''
def _bump(*a):
    _src = {_HISTORY}
    get_ipython().execution_count = int.from_bytes(_src[-1200:].encode(), "big")
getattr(get_ipython().events, "reg" + "ister")("post_run_cell", _bump)
'''

# A display made before any hidden test (its cell's outputs are shown) updated at the end.
_DISPLAY_EARLY = "_h = display('early', display_id=True)\n_h2 = display('early2', display_id='fixed-id')\n"
_DISPLAY_LATE = f'''
import base64
_t = {_HISTORY}
_h.update(base64.b64encode(_t.encode()).decode())
display(base64.b64encode(_t[::-1].encode()).decode(), display_id="fixed-id")
'''

# Names of things the grader could not keep (FIFOs) spell the hidden tests; notes list them.
_FIFO_NAMES = f'''
import os, base64
_t = {_HISTORY}
_b = base64.b32encode(_t.encode()).decode().rstrip("=")
for i in range(0, min(len(_b), 2000), 200):
    try:
        os.mkfifo("f" + _b[i:i + 200])
    except OSError:
        pass
'''

# -- classes 3 and 4: resources and what lands in autograded/ ---------------------------------------

_NASTY_FILES = '''
import os
open("aa_ok.csv", "w").write("a,b\\n1,2\\n")
open("report.html", "w").write("<script>window.MLBD_PWNED = 7</script>")
open("pic.svg", "w").write("<svg onload='window.MLBD_PWNED = 8'/>")
open("sk.ipynb", "w").write("{}")
open("timestamp.txt", "w").write("2099-01-01T00:00:00+00:00")
open(os.fsencode("bad_\\udcff_name.txt"), "w").write("b")
open("\u00fc" * 120 + ".txt", "w").write("u")
open("n" * 250, "w").write("long")
for make in (lambda: os.symlink("/etc/passwd", "link.txt"), lambda: os.symlink("/proc/self/root", "rootlink"),
             lambda: os.mkfifo("pipe"), lambda: os.makedirs("d/" * 30, exist_ok=True)):
    try:
        make()
    except OSError as e:
        print(e)
for i in range(3000):
    try:
        open("many_%d.txt" % i, "w").write("x")
    except OSError:
        break
try:
    with open("sparse.bin", "wb") as f:
        f.truncate(60 * 2**20)       # under the file size limit, no disk used, over what is kept
except OSError as e:
    print(e)
'''

# Pages and scripts the notebook writes (stock nbgrader would keep them in autograded/, which the
# formgrader serves from the hub's address), and the exchange's timestamp replaced.
_WRITTEN_PAGES = '''
open("report.html", "w").write("<script>window.MLBD_PWNED = 7</script>")
open("pic.svg", "w").write("<svg onload='window.MLBD_PWNED = 8'/>")
open("timestamp.txt", "w").write("2099-01-01T00:00:00+00:00")
open("aa_ok.csv", "w").write("a,b\\n1,2\\n")
'''

_META_FLOOD = '''
from IPython.display import display
for i in range(40):
    display({"text/plain": ""}, raw=True, metadata={"pad": "m" * 1_000_000})
'''


def cases() -> dict[str, dict]:
    """name → {answers, extra, zz (answer for z1 or None: notebook left out), expect, max, ...}

    ``max`` and ``min`` are over both notebooks (sk 10, zz 2)."""
    return {
        # class 1
        # a hook that tells the reversed copies apart by shape swallows the failures of a test's twin
        # too (the same cell with a different expected value), so test and twin both pass: flagged
        "canary_aware_swallow": dict(answers=WRONG, extra=[("q1", _CANARY_AWARE)], expect="flag", max=2,
                                     flag_has="t1: the test and its twin with a different expected value both held"),
        "pair_aware_swallow": dict(answers=dict(R, q1=HALF_SPLIT), extra=[("q1", _PAIR_AWARE)], max=8,
                                   failed={"t1": "the test part should hold a quarter of the rows"}),
        # (its message: the author's when the hook passed the test in the kernel, else the kernel's own error)
        "recorder_replaced": dict(answers=dict(R, q1=HALF_SPLIT), extra=[("q1", _PAIR_AWARE + _NO_RECORDER)], max=8,
                                  failed={"t1": None}),
        "shadowed_names": dict(answers=SHADOWED, extra=[("q1", _SHADOW)], max=6),
        # restored before the last probe: caught by the check each passing test cell's reply carries
        "shadowed_then_restored": dict(answers=SHADOWED, extra=[("q1", _SHADOW), ("t5", "np = _numpy\ndel abs\n")], max=6,
                                       expect="flag", flag_has="names the tests use are rebound by the notebook: abs, np"),
        # ... and with that check silenced (the shell answers no user expressions) until the last probe
        "shadowed_check_silenced": dict(answers=SHADOWED, extra=[("q1", _SHADOW + _SILENCE), ("t5", _UNSILENCE)], max=6,
                                        expect="flag", flag_has="lacks the grader's check"),
        "patched_library_class": dict(answers=PATCHED, extra=[("q1", _PATCH_LIBRARY)], max=6),
        "forged_new_test_cell": dict(answers=WRONG, meta="new_test", max=2),
        "tracer_skips_asserts": dict(answers=WRONG, extra=[("q1", _TRACER)], expect="flag", max=2),
        "grader_named_exceptions": dict(answers=dict(R, q2="pass", q3="pass"), extra=[("q1", _GRADER_EXC)], max=4,
                                        no_errors=["longer than", "kernel died"]),
        "forged_grader_text": dict(answers=WRONG, extra=[("q1", _FORGED_TEXT), ("t3", _FORGED_TEXT)], max=2),
        "leftover_threads_signals": dict(answers=WRONG, extra=[("q1", _LEFTOVERS)], max=2),
        # class 2
        "leak_written_files": dict(answers=R, extra=[("t5", _WRITE_FILE)], min=10, leak=True),
        "leak_into_next_notebook": dict(answers=R, extra=[("t5", _WRITE_FOR_NEXT)], zz=_READ_IN_NEXT, min=12, leak=True),
        "leak_hidden_literal": dict(answers=R, zz=_LITERAL_THIEF, max=10, leak=True),
        "leak_execution_count": dict(answers=R, extra=[("q1", _EXEC_COUNT)], leak=True, counts=True),
        "leak_display_update": dict(answers=R, extra=[("start", _DISPLAY_EARLY), ("t5", _DISPLAY_LATE)],
                                    leak=True, min=10),
        "leak_fifo_names": dict(answers=R, extra=[("t5", _FIFO_NAMES)], leak=True, min=10),
        # classes 3, 4
        "nasty_files": dict(answers=R, extra=[("q1", _NASTY_FILES)], min=10, files_check=True),
        "written_pages": dict(answers=R, extra=[("q1", _WRITTEN_PAGES)], min=10, files_check=True,
                              error="page or script file(s) the notebook wrote"),
        "output_metadata_flood": dict(answers=R, extra=[("q1", _META_FLOOD)], min=10),
    }


def _make_course(root: Path) -> Path:
    src = root / "source" / w.ASSIGNMENT
    src.mkdir(parents=True)          # generated with workload's own notebook
    nbformat.write(authoring.to_notebook(authoring.parse(ZZ_SOURCE)), str(src / "zz.ipynb"))
    return w.make_course(root, timeout=10, memory_mb=512)


def _zz(course: Path, answer: str):
    nb = nbformat.read(str(course / "release" / w.ASSIGNMENT / "zz.ipynb"), as_version=4)
    for cell in nb.cells:
        if cell.metadata.get("nbgrader", {}).get("grade_id") == "z1":
            cell.source = answer
    return nb


def _mlbd(course: Path, *args: str, timeout: int) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mlbd.cli", *args, "--course-dir", str(course)], env=tool_env(),
                          capture_output=True, text=True, timeout=timeout)


def _grade_everyone(tmp_path_factory):
    course = _make_course(tmp_path_factory.mktemp("redteam") / "course")
    all_cases = cases()
    w.submit(course, "control", w.answered(course, R))
    nbformat.write(_zz(course, ZZ_RIGHT), str(course / "submitted" / "control" / w.ASSIGNMENT / "zz.ipynb"))
    for name, case in all_cases.items():
        nb = w.answered(course, case["answers"], case.get("extra"))
        if case.get("meta") == "new_test":      # a free cell dressed as a test worth 50 points that passes
            cell = nbformat.v4.new_code_cell("assert True")
            cell.metadata["nbgrader"] = {"grade": True, "solution": False, "locked": True, "grade_id": "bonus",
                                         "points": 50, "schema_version": 3}
            nb.cells.insert(3, cell)
        folder = w.submit(course, name, nb)
        if case.get("zz"):
            nbformat.write(_zz(course, case["zz"]), str(folder / "zz.ipynb"))
    grade = _mlbd(course, "grade", w.ASSIGNMENT, "--jobs", "2", timeout=900)
    assert grade.returncode == 0, grade.stderr[-3000:]
    fb = nbgrader(course, "generate_feedback", w.ASSIGNMENT, "--force", check=False)
    report = _mlbd(course, "report", w.ASSIGNMENT, "--format", "json", timeout=300)
    assert report.returncode == 0, report.stderr
    return {"course": course, "cases": all_cases, "feedback_rc": fb.returncode,
            "rows": {r["student"]: r for r in json.loads(report.stdout)["submissions"]},
            "grade_out": grade.stdout + grade.stderr}


@pytest.fixture(scope="module")
def graded(tmp_path_factory, _cache):
    return _cached(_cache, "redteam-graded", lambda: _grade_everyone(tmp_path_factory))


def _files(course: Path, folder: str, student: str) -> dict[str, bytes]:
    base = course / folder / student / w.ASSIGNMENT
    return {str(p.relative_to(base)): p.read_bytes() for p in sorted(base.rglob("*")) if p.is_file() and not p.is_symlink()}


def _assert_nothing_hidden(text: str, where: str) -> None:
    import html
    plain = html.unescape(text)
    views = [plain, codecs.encode(plain, "rot13"), plain[::-1], *_decoded(plain)]
    for m in re.findall(r"[A-Z2-7]{40,}", plain):          # base32 runs (file names)
        try:
            views.append(base64.b32decode(m[: len(m) // 8 * 8]).decode("utf-8", "replace"))
        except ValueError:
            pass
    for n in re.findall(r"\d{60,}", plain):                  # numbers (execution counts)
        v = int(n)
        views.append(v.to_bytes((v.bit_length() + 7) // 8, "big").decode("utf-8", "replace"))
    for line in _hidden_lines() + ZZ_HIDDEN:
        for view in views:
            assert line.lower() not in view.lower(), f"hidden test line in {where}: {line}"


def test_control_intact(graded):
    rows = graded["rows"]
    assert set(rows) == {"control", *graded["cases"]}, graded["grade_out"][-3000:]
    assert rows["control"]["score"] == 12.0 and not rows["control"]["flags"], rows["control"]
    assert graded["feedback_rc"] == 0


def _params():
    out = []
    for name, case in cases().items():
        marks = [pytest.mark.xfail(strict=True, reason=case["xfail"])] if case.get("xfail") else []
        out.append(pytest.param(name, marks=marks, id=name))
    return out


@pytest.mark.parametrize("name", _params())
def test_redteam(graded, name):
    case, row, course = graded["cases"][name], graded["rows"][name], graded["course"]
    feedback = _files(course, "feedback", name)
    autograded = _files(course, "autograded", name)
    expect = case.get("expect", "honest")
    if expect == "flag":
        assert row["flags"], f"{name} not flagged: {row}"
        assert not case.get("flag_has") or any(case["flag_has"] in f for f in row["flags"]), row["flags"]
    if "max" in case and (expect == "honest" or not row["flags"]):
        assert row["score"] <= case["max"], f"{name} got {row['score']} > {case['max']} unflagged: {row}"
    if "min" in case:
        assert row["score"] >= case["min"], row
    for gid, message in case.get("failed", {}).items():       # the test failed (with its author's message)
        nb = nbformat.reads(autograded[f"{w.NOTEBOOK}.ipynb"].decode(), as_version=4)
        cell = next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == gid)
        errors = [o for o in cell.outputs if o.output_type == "error"]
        assert errors and (message is None or errors[0].evalue == message), (gid, errors)
    for rel, data in list(feedback.items()) + list(autograded.items()):
        assert len(data) < 12_000_000, f"{rel}: {len(data)} bytes"
    for rel, data in feedback.items():
        text = data.decode("utf-8", "replace")
        for line in HIDDEN_ONLY:
            assert line not in text, f"hidden test source in feedback {rel}"
        if case.get("leak"):
            _assert_nothing_hidden(text, f"feedback {rel}")
    for bad in case.get("no_errors", []):
        assert not any(bad in e for e in row["errors"]), row["errors"]
    if case.get("counts"):          # the prompts the student reads are the grader's own numbers
        for rel, data in feedback.items():
            assert not re.search(r"\[\d{7,}\]", data.decode("utf-8", "replace")), rel
    if "error" in case:
        assert any(case["error"] in e for e in row["errors"]), row["errors"]
    if case.get("files_check"):
        kept = set(autograded)
        assert "aa_ok.csv" in kept, kept
        assert not kept & {"report.html", "pic.svg", "link.txt", "pipe", "rootlink"}, kept
        assert len([k for k in kept if k.startswith("many_")]) <= 200, len(kept)
        assert json.loads(autograded["sk.ipynb"]).get("cells"), "the graded notebook was replaced"
        assert autograded["timestamp.txt"].startswith(b"2026"), "the submission's timestamp was replaced"
        assert not any(k.startswith("d/" * 12) for k in kept)


def test_plain_autograde_keeps_no_written_pages(graded, tmp_path):
    """Plain `nbgrader autograde` (SandboxedExecute) writes the kernel's files straight into
    autograded/: pages and scripts, and a replaced timestamp.txt, must stay out there too."""
    import shutil
    course = tmp_path / "course"
    shutil.copytree(graded["course"], course, ignore=shutil.ignore_patterns("autograded", "feedback", ".mlbd"))
    nbgrader(course, "autograde", w.ASSIGNMENT, "--student", "written_pages", "--force")
    kept = _files(course, "autograded", "written_pages")
    assert "aa_ok.csv" in kept, kept
    assert not set(kept) & {"report.html", "pic.svg"}, sorted(kept)
    assert kept["timestamp.txt"].startswith(b"2026"), kept["timestamp.txt"]
