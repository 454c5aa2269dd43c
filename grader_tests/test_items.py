"""Question statistics (`mlbd report --items`): the maths on a synthetic cohort with known properties,
checked against values computed here another way; the visible/hidden outcome the grader records."""
from __future__ import annotations

import nbformat
import numpy as np
import pandas as pd
import pytest

from mlbd import items as it
from mlbd.grading import outcomes

unit = pytest.mark.unit   # all but the plotting test (matplotlib takes seconds to import)


@unit
def test_hand_computed_small_case():
    # 4 students x 3 one-point items, a Guttman pattern; by hand:
    # item variances (ddof 1) .25, 1/3, .25; totals 3,2,1,0 -> var 5/3; alpha = 3/2 (1 - (5/6)/(5/3)) = .75
    # item 1 [1,1,1,0] against the rest [2,1,0,0]: r = .75 / sqrt(.75 * 2.75) = sqrt(3/11)
    m = np.array([[1, 1, 1], [1, 1, 0], [1, 0, 0], [0, 0, 0]], dtype=float)
    assert it.cronbach_alpha(m) == pytest.approx(0.75)
    assert it.discrimination(m)[0] == pytest.approx(np.sqrt(3 / 11))
    # item 3 [1,0,0,0] against [2,2,1,0]: dx = [.75,-.25,-.25,-.25], dy = [.75,.75,-.25,-1.25]
    # sum dx dy = .5625 - .1875 + .0625 + .3125 = .75; sum dx2 = .75; sum dy2 = 2.75
    assert it.discrimination(m)[2] == pytest.approx(np.sqrt(3 / 11))


@unit
def test_undefined_statistics_are_none_not_zero():
    m = np.array([[2, 1], [2, 0], [2, 1]], dtype=float)   # item 1: everyone full marks
    disc = it.discrimination(m)
    assert disc[0] is None, "an item everyone passes has no discrimination (no variance)"
    assert disc[1] is None, "the rest of the score (item 1 alone) does not vary either"
    assert it.cronbach_alpha(m[:, :1]) is None          # one item
    assert it.cronbach_alpha(np.ones((5, 3))) is None   # totals do not vary
    assert it.cronbach_alpha(np.ones((1, 3))) is None   # one student


def synthetic_cohort(n=400, seed=11):
    """Ability theta ~ N(0,1). Items: 'easy' everyone passes; q1..q4 pass with P = sigmoid(1.7(theta-b));
    'anti' passes with P = sigmoid(-2 theta) (anti-discriminating); a pair weak_visible/weak_hidden where
    the visible test passes for 95% and the hidden one only for able students; 'single' one cell whose
    recorded outcome is passed / visible / hidden; 'part' a 4-point item with partial credit."""
    rng = np.random.default_rng(seed)
    theta = rng.normal(size=n)
    p = lambda x: 1 / (1 + np.exp(-x))  # noqa: E731
    data = {"nb/easy": np.full(n, 2.0)}
    for j, b in enumerate((-1.0, -0.3, 0.3, 1.0), 1):
        data[f"nb/q{j}"] = (rng.random(n) < p(1.7 * (theta - b))) * 3.0
    data["nb/anti"] = (rng.random(n) < p(-2 * theta)) * 1.0
    vis = rng.random(n) < 0.95
    data["nb/weak_visible"] = vis * 1.0
    data["nb/weak_hidden"] = (vis & (rng.random(n) < p(2 * theta))) * 3.0
    single = np.where(rng.random(n) < 0.2, "visible", np.where(rng.random(n) < p(theta), "passed", "hidden"))
    data["nb/single"] = (single == "passed") * 2.0
    data["nb/part"] = np.clip(np.round(rng.normal(2 + theta, 1.0)), 0, 4)
    df = pd.DataFrame(data, index=[f"s{i:03d}" for i in range(n)])
    items = [it.Item("nb/easy", 2), *(it.Item(f"nb/q{j}", 3) for j in range(1, 5)), it.Item("nb/anti", 1),
             it.Item("nb/weak_visible", 1), it.Item("nb/weak_hidden", 3), it.Item("nb/single", 2), it.Item("nb/part", 4)]
    responses = [it.Response(s, df.loc[s].to_dict(), {"nb/single": str(single[i])}, seconds=float(1 + i % 7))
                 for i, s in enumerate(df.index)]
    return items, responses, df, single


@unit
def test_synthetic_cohort_against_pandas():
    items, responses, df, single = synthetic_cohort()
    stats = {s.item: s for s in it.item_stats(items, responses)}
    maxes = {i.id: i.max_score for i in items}
    for col in df:
        s = stats[col]
        assert s.n == len(df)
        assert s.mean == pytest.approx(df[col].mean())
        assert s.full == pytest.approx((df[col] == maxes[col]).mean())
        assert s.zero == pytest.approx((df[col] == 0).mean())
        assert s.partial == pytest.approx(((df[col] > 0) & (df[col] < maxes[col])).mean())
        rest = df.drop(columns=col).sum(axis=1)
        if df[col].nunique() > 1:      # pandas' own correlation, not our formula
            assert s.discrimination == pytest.approx(df[col].corr(rest))
    # the known properties
    assert stats["nb/easy"].discrimination is None and stats["nb/easy"].full == 1.0
    assert stats["nb/anti"].discrimination < -0.2
    assert all(stats[f"nb/q{j}"].discrimination > 0.2 for j in range(1, 5))
    assert stats["nb/part"].partial > 0.3
    # alpha from the covariance matrix: k/(k-1) (1 - trace(C) / sum(C))
    c = df.cov().to_numpy()
    k = c.shape[0]
    alpha = it.assignment_stats(items, responses).alpha
    assert alpha == pytest.approx(k / (k - 1) * (1 - np.trace(c) / c.sum()))
    # weak visible tests: paired cells from points, one cell from the recorded outcome
    want = ((df["nb/weak_visible"] == 1) & (df["nb/weak_hidden"] < 3)).mean()
    assert stats["nb/weak_hidden"].visible_only == pytest.approx(want) and want > 0.3
    assert stats["nb/weak_hidden"].visible_only_n == len(df)
    assert stats["nb/single"].visible_only == pytest.approx((single == "hidden").mean())
    assert stats["nb/q1"].visible_only is None and stats["nb/weak_visible"].visible_only is None


@unit
def test_assignment_summary_causes_and_times():
    items, responses, df, _ = synthetic_cohort(n=50)
    responses[0].flags = ["nb: a canary test passed: failures are swallowed", "nb: cell metadata edited: t1"]
    responses[1].flags = ["nb: a canary test passed: failures are swallowed"]
    responses[2].errors = ["nb: cell t3: the cell ran longer than 30 s and was interrupted",
                           "nb: cell t4: the cell ran longer than 30 s and was interrupted"]
    responses[3].errors = ["nb: wall-clock limit of 300 s exceeded"]
    responses[4].errors = ["nb: output of 2 cell(s) truncated (size limit)"]
    responses.append(it.Response("broken", {}, failed=True, errors=["scoring failed: OSError: disk"]))
    s = it.assignment_stats(items, responses)
    assert s.n == 50 and s.failed == 1
    assert s.flags_by_cause == {"a canary test passed (failures swallowed or rewritten)": 2, "cell metadata edited": 1}
    assert s.errors_by_cause == {"time limit": 2, "output truncated (size limit)": 1, "scoring failed": 1}
    totals = df.iloc[:50].sum(axis=1)
    assert s.mean == pytest.approx(totals.mean()) and s.sd == pytest.approx(totals.std())
    assert s.median == pytest.approx(totals.median())
    secs = [float(1 + i % 7) for i in range(50)]
    assert s.seconds_median == pytest.approx(np.median(secs)) and s.seconds_p95 == pytest.approx(np.percentile(secs, 95))
    assert it.cause("nb: unexpected thing 12 in 'x'") == "unexpected thing N in …"


def test_report_page_escapes_and_embeds_plots(tmp_path):
    from mlbd import items_report

    items, responses, _, _ = synthetic_cohort(n=40)
    responses[0].flags = ["nb: odd <img src=x onerror=alert(1)> thing"]
    stats = it.item_stats(items, responses)
    summary = it.assignment_stats(items, responses)
    page = items_report.page("cw<1>", stats, summary, items_report.plots(stats, summary))
    assert "<img src=x" not in page and "&lt;img src=x" in page and "cw&lt;1&gt;" in page
    assert page.count('src="data:image/png;base64,iVBOR') == 3
    csv_rows = items_report.items_csv(stats).splitlines()
    assert csv_rows[0].startswith("item,max_score,n,mean,full,zero,partial,discrimination,visible_only")
    assert len(csv_rows) == len(items) + 1
    easy = next(r for r in csv_rows if r.startswith("nb/easy,"))
    assert easy.split(",")[7] == "", "undefined discrimination is empty in the CSV, not 0"


# ---------------------------------------------------------------------------------------------
# The visible/hidden split, from real IPython tracebacks
# ---------------------------------------------------------------------------------------------

def _run_cell(source: str):
    """Run ``source`` in an in-process IPython shell; return the cell as the kernel would report it."""
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    cell = nbformat.v4.new_code_cell(source)
    cell.metadata["nbgrader"] = {"grade": True, "solution": False, "grade_id": "t", "points": 1}
    captured = {}

    def showtraceback(*args, **kwargs):
        import sys
        etype, value, tb = sys.exc_info()
        captured["tb"] = shell.InteractiveTB.structured_traceback(etype, value, tb)
    shell.showtraceback = showtraceback
    try:
        shell.run_cell(source, store_history=True)
    finally:
        del shell.showtraceback
    if "tb" in captured:
        cell.outputs = [nbformat.v4.new_output("error", ename="AssertionError", evalue="", traceback=captured["tb"])]
    return cell


CELL = """x = 3
def helper(v):
    assert v > 0, "positive"
assert x == @V@, "visible part"
### BEGIN HIDDEN TESTS
helper(@H@)
### END HIDDEN TESTS
"""


@unit
@pytest.mark.parametrize("visible,hidden,want", [(3, 1, "passed"), (4, 1, "visible"), (3, -1, "hidden"), (4, -1, "visible")])
def test_outcome_from_a_real_traceback(visible, hidden, want):
    cell = _run_cell(CELL.replace("@V@", str(visible)).replace("@H@", str(hidden)))
    assert outcomes.classify(cell) == want
    nb = nbformat.v4.new_notebook(cells=[cell])
    assert outcomes.cell_outcomes(nb) == {"t": want}


@unit
def test_outcome_unknown_without_marker_or_frame():
    cell = _run_cell("assert 1 == 2")
    assert outcomes.classify(cell) == outcomes.FAILED
    cell = nbformat.v4.new_code_cell(CELL)
    cell.outputs = [nbformat.v4.new_output("error", ename="GradingError", evalue="crash", traceback=["crash"])]
    assert outcomes.classify(cell) == outcomes.FAILED


# ---------------------------------------------------------------------------------------------
# End to end: mlbd grade records the outcomes, mlbd report --items reads them
# ---------------------------------------------------------------------------------------------

def test_grade_then_items_report(tmp_path):
    """Three real submissions of the workload course graded in the sandbox: 'partly' passes the visible
    asserts of t2 and t5 but fails their hidden tests; 'blank' (the release unchanged) is not executed."""
    import json
    import subprocess
    import sys

    from mlbd.course import tool_env
    from mlbd.grading import workload as w

    course = w.make_course(tmp_path / "course", timeout=30)
    for student, answers in {"right": w.RIGHT, "partly": w.PARTLY_WRONG, "blank": None}.items():
        w.submit(course, student, w.answered(course, answers) if answers else w.release_notebook(course))
    def mlbd(*args):
        proc = subprocess.run([sys.executable, "-m", "mlbd.cli", *args, "--course-dir", str(course)], env=tool_env(),
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]

    mlbd("grade", w.ASSIGNMENT, "--jobs", "2")
    # a submission mlbd grade could not grade leaves a failure record (and no gradebook entry)
    (course / ".mlbd" / "results" / w.ASSIGNMENT / "ghost.json").write_text(json.dumps(
        {"student": "ghost", "assignment": w.ASSIGNMENT, "status": "failed", "errors": ["preparing failed: OSError: x"]}))
    mlbd("report", w.ASSIGNMENT, "--items", "--out", str(tmp_path / "r"))
    record = json.loads((course / ".mlbd" / "results" / w.ASSIGNMENT / "partly.json").read_text())
    assert record["tests"] == {"sk/t1": "passed", "sk/t2": "hidden", "sk/t3": "passed", "sk/t4": "passed",
                               "sk/t5": "hidden"}
    assert record["execute_seconds"] > 0
    blank = json.loads((course / ".mlbd" / "results" / w.ASSIGNMENT / "blank.json").read_text())
    assert blank["tests"] == {}, "an unanswered notebook is graded without running it: no outcome to record"
    data = json.loads((tmp_path / "r" / "items.json").read_text())
    stats = {s["item"]: s for s in data["items"]}
    assert set(stats) == {f"sk/t{i}" for i in range(1, 6)}
    assert stats["sk/t2"]["visible_only"] == pytest.approx(1 / 2) and stats["sk/t2"]["visible_only_n"] == 2
    assert stats["sk/t1"]["visible_only"] == 0 and stats["sk/t1"]["mean"] == pytest.approx(4 / 3)
    assert data["assignment_stats"]["n"] == 3 and len(data["assignment_stats"]["seconds"]) == 3
    assert data["assignment_stats"]["failed"] == 1 and data["assignment_stats"]["errors_by_cause"]["preparing failed"] == 1
    assert sorted(data["assignment_stats"]["totals"]) == [0.0, 6.0, 10.0]
    page = (tmp_path / "r" / "items.html").read_text()
    assert "sk/t2" in page and "Weak visible tests" in page and "data:image/png;base64," in page
