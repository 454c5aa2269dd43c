"""Every assignment in source/: solutions pass, blanks fail, known wrong answers lose marks, known
right answers keep them,
releases leak nothing, no network, deterministic, within budget."""
from __future__ import annotations

import json
import re

import nbformat
import pytest

from mlbd import validate
from mlbd.course import notebook_meta

from conftest import RIGHT_DIR, WRONG_DIR, _cached, release_path, source_notebooks, uses_tensorflow


def test_assignment_has_notebooks_and_release(assignment):
    nbs = source_notebooks(assignment)
    assert nbs, f"source/{assignment} has no notebook"
    for nb in nbs:
        assert release_path(nb).exists(), f"release/{assignment}/{nb.name} missing: run `mlbd build {assignment}`"


def test_points_match_declared_total(assignment):
    for nb in source_notebooks(assignment):
        meta = notebook_meta(nb)
        totals = validate.points_summary(nb)
        assert "points" in meta, f"{nb.name}: declare the curriculum's total as notebook metadata 'points'"
        assert totals["total"] == pytest.approx(meta["points"]), f"{nb.name}: cells carry {totals} points, curriculum says {meta['points']}"
        assert totals["manual"] <= 0.25 * totals["total"], f"{nb.name}: too many manual points {totals}"


def test_solution_passes_every_test(assignment, instructor_runs):
    for run in instructor_runs:
        assert run.max_scores, "no autograded test cells"
        assert run.errors == {}, f"instructor solution fails: {json.dumps(run.errors, indent=1)}"
        assert run.score == run.max_score


def test_blank_release_scores_zero(assignment, blank_runs):
    for run in blank_runs:
        passing = [gid for gid, s in run.scores.items() if s > 0]
        assert not passing, f"these tests pass on the blank notebook (vacuous): {passing}"


def _wrong_answers_by_notebook(assignment):
    path = WRONG_DIR / f"{assignment}.txt"
    assert path.exists(), f"no wrong answers recorded for {assignment} in {path}"
    wrong = validate.parse_wrong_answers(path.read_text(), str(path))
    return wrong, _by_notebook(assignment, wrong)


def _by_notebook(assignment, answers):
    """Each source notebook's share of ``answers`` (by the solution cell they replace)."""
    out = {}
    for nb in source_notebooks(assignment):
        ids = {c.metadata.get("nbgrader", {}).get("grade_id") for c in nbformat.read(str(nb), as_version=4).cells}
        out[nb] = [a for a in answers if a.solution_id in ids]
    return out


@pytest.fixture
def second_runs(assignment, _cache, scratch):
    """Per notebook: a second whole run of the instructor notebook, then the known wrong and right
    answers tried in that same kernel (one execution serves three checks), then, but for
    TensorFlow assignments, the canary run in that kernel cleared (no second start-up and imports),
    once per worker."""
    def make():
        _, by_solution = _wrong_answers_by_notebook(assignment)
        _, right_by_nb = _right_answers_by_notebook(assignment)
        canaries = not uses_tensorflow(assignment)
        return {nb: validate.execute_with_answers(nb, ws, right_by_nb[nb], scratch / assignment / "answers" / nb.stem,
                                                  canaries=canaries)
                for nb, ws in by_solution.items()}
    return _cached(_cache, ("second", assignment), make)


def test_known_wrong_answers_lose_marks(assignment, second_runs):
    wrong, by_solution = _wrong_answers_by_notebook(assignment)
    nbs = source_notebooks(assignment)
    orphans = [w.solution_id for w in wrong if not any(w in ws for ws in by_solution.values())]
    assert not orphans, f"wrong answers name unknown solution cells: {orphans}"
    solution_ids = {c.metadata["nbgrader"]["grade_id"] for nb in nbs for c in nbformat.read(str(nb), as_version=4).cells
                    if validate.kind_of(c) == "solution"}
    uncovered = solution_ids - {w.solution_id for w in wrong}
    assert not uncovered, f"every solution cell needs at least one known wrong answer; missing: {sorted(uncovered)}"
    problems = []
    for nb, ws in by_solution.items():
        results = second_runs[nb].wrong
        for n, w in enumerate(ws):
            r = results[n]
            if r["passed"]:
                problems.append(f"line {w.line} ({w.description}): still passes {r['passed']}")
    assert not problems, "known wrong answers that keep their marks:\n" + "\n".join(problems)


def _right_answers_by_notebook(assignment):
    path = RIGHT_DIR / f"{assignment}.txt"
    right = validate.parse_right_answers(path.read_text(), str(path)) if path.exists() else []
    return right, _by_notebook(assignment, right)


def test_right_answers_keep_full_marks(assignment, second_runs):
    """Correct solutions written in another style than the reference lose no mark (issue 15)."""
    path = RIGHT_DIR / f"{assignment}.txt"
    if not path.exists():
        pytest.skip(f"no right answers recorded for {assignment} yet ({path.relative_to(RIGHT_DIR.parent.parent)})")
    right, by_nb = _right_answers_by_notebook(assignment)
    orphans = [r.solution_id for r in right if not any(r in rs for rs in by_nb.values())]
    assert not orphans, f"right answers name unknown solution cells: {orphans}"
    problems = []
    for nb, rs in by_nb.items():
        results = second_runs[nb].right
        for n, r in enumerate(rs):
            res = results[n]
            if res["setup_error"]:
                problems.append(f"line {r.line} ({r.description}): the answer itself raised {res['setup_error']}")
            if not res["tests"]:
                problems.append(f"line {r.line} ({r.description}): no test cell uses {r.solution_id}'s names")
            for gid, err in res["failed"].items():
                problems.append(f"line {r.line} ({r.description}): loses {gid}: {err}")
    assert not problems, "correct answers that lose marks (false fails):\n" + "\n".join(problems)


def test_variants_hold_for_every_student(assignment, scratch):
    """An assignment that draws per-student variants (mlbd.variant) is proved for five students'
    variants: solution full marks, blank zero, every known wrong answer loses marks (issue 16)."""
    nbs = [nb for nb in source_notebooks(assignment) if validate.uses_variants(nb)]
    if not nbs:
        pytest.skip("draws no per-student variant (mlbd.variant)")
    _, by_solution = _wrong_answers_by_notebook(assignment)
    problems = [p for nb in nbs for p in validate.prove_variants(nb, release_path(nb), by_solution[nb],
                                                                 scratch / assignment / "variants" / nb.stem)]
    assert not problems, "\n".join(problems)


def test_release_leaks_nothing(assignment):
    for nb in source_notebooks(assignment):
        found = validate.leaks(nb, release_path(nb))
        assert not found, "\n".join(found)


def test_no_network_or_downloader(assignment):
    for nb in source_notebooks(assignment):
        for path in (nb, release_path(nb)):
            assert validate.network_uses(path) == [], f"{path}: {validate.network_uses(path)}"


def test_graded_twice_same_score(assignment, instructor_runs, second_runs):
    for nb, first in zip(source_notebooks(assignment), instructor_runs):
        second = second_runs[nb].first
        assert second.scores == first.scores
        # stdout only (stderr carries library logs with timestamps), object addresses masked; a cell's
        # stdout is joined because how the kernel splits it into stream messages depends on timing
        outputs = lambda run: [re.sub(r"0x[0-9a-f]+", "0x?", "".join(  # noqa: E731
                                   o.get("text", "") for o in c.get("outputs", []) if o.get("name") == "stdout"))
                               for c in run.nb.cells if validate.kind_of(c) == "tests"]
        assert outputs(second) == outputs(first), "test-cell stdout differs between two runs: something is unseeded"


def test_every_canary_fails_on_the_solution_and_costs_it_nothing(assignment, request):
    """Every canary `mlbd grade` could insert, where it could insert it, fails on the solution and
    leaves every test passing: otherwise an honest submission is zeroed as tampered or loses points
    (issue 13). The canary run (validate.run_with_every_canary) happens in second_runs' kernel."""
    if uses_tensorflow(assignment):
        pytest.skip("TensorFlow test cells train models; their canaries are covered by the unit test")
    second_runs = request.getfixturevalue("second_runs")
    for nb in source_notebooks(assignment):
        held, broken = second_runs[nb].canaries
        assert not held, f"{nb.name}: canaries that pass on the solution: {held}"
        assert not broken, f"{nb.name}: tests that fail on the solution with canaries before them: {broken}"


def test_within_budget(assignment, instructor_runs):
    for nb, run in zip(source_notebooks(assignment), instructor_runs):
        budget = notebook_meta(nb).get("budget_s", 60)
        # A generous guard against gross regressions; exact timings come from `mlbd bench content`.
        assert run.seconds < max(3 * budget, budget + 60), f"{nb.name} took {run.seconds:.1f} s, budget {budget} s"


# --- What a student sees: written tasks have somewhere to write, graded cells say what they are and
# --- what they are worth, visible tests say when they pass, intros say how to check. These read
# --- notebooks only (no kernel).

# An instruction that asks for words: an imperative verb opening a sentence or bullet, a sentence count,
# "in your own words", or a "Why ...?" question. Lower-case verbs inside sentences ("see why scaling
# matters" in a list of learning goals) do not count.
ASKS_FOR_WORDS = re.compile(
    r"(?:^|[.!?:]\s+|\*\*\s*|\n\s*(?:[*-]\s+)?)(?:Explain|Describe|Discuss|Interpret|Justify|Argue|Comment on|Compare)\b"
    r"|\b[Ii]n (?:\d+|one|two|three|a few)(?:\s*[–-]\s*\d+)? sentences?\b|\(\d+\s*[–-]\s*\d+ sentences"
    r"|\bin your own words\b|(?:^|[.!?:]\s+|\n\s*)Why\b[^.?!]*\?")
# A heavy library: its modules (Keras 3 imports TensorFlow, so the two count as one) and their aliases.
HEAVY_IMPORTS = {"TensorFlow": (("tensorflow", "keras"), ("tf", "keras")), "PyTorch": (("torch",), ("torch",))}


def _cells(path):
    return nbformat.read(str(path), as_version=4).cells


def _instructions(cell) -> str:
    """What a student reads in a markdown or task cell: rubrics and answers removed."""
    return validate.MARK_SCHEME_RE.sub("", validate.SOLUTION_RE.sub("", cell.source))


def _points(value) -> str:
    return f"{float(value):g}"


def unanswered_word_tasks(cells) -> list[str]:
    """Instructions asking for words with no manually graded answer cell after them before the next
    graded code cell (a locked task cell is no place to write)."""
    problems = []
    for i, cell in enumerate(cells):
        if validate.kind_of(cell) not in {"markdown", "task"}:
            continue
        asked = ASKS_FOR_WORDS.search(_instructions(cell))
        if not asked:
            continue
        answered = False
        for later in cells[i + 1:]:
            kind = validate.kind_of(later)
            if kind == "answer":
                answered = True
            if kind in {"answer", "solution", "tests"}:
                break
        if not answered:
            problems.append(f"cell {i} asks {asked.group(0).strip()!r} but no answer cell follows it")
    return problems


def _section(cells, i) -> range:
    """Indices of the cells in the same section as cell i (between Markdown headings)."""
    heading = lambda c: c.cell_type == "markdown" and c.source.lstrip().startswith("#")  # noqa: E731
    start = max((j for j in range(i + 1) if heading(cells[j])), default=0)
    end = next((j for j in range(i + 1, len(cells)) if heading(cells[j])), len(cells))
    return range(start, end)


def dangling_references(cells) -> list[str]:
    """References that point at nothing: "the Markdown/answer cell below", "the task cell" as a place
    to write (task cells are locked), "Exercise N", a coursework part such as "A2", "the cell above/below"."""
    kinds = [validate.kind_of(c) for c in cells]
    text = [_instructions(c) if k in {"markdown", "task", "answer"} else "" for c, k in zip(cells, kinds)]
    exercises = {m for t in text for m in re.findall(r"^#+ Exercise (\d+)\b", t, re.M)}
    parts = {m for t in text for m in re.findall(r"^#+ ([A-F][1-9])\b", t, re.M)}
    problems = []
    for i, t in enumerate(text):
        for m in re.finditer(r"\b(?:[Mm]arkdown|answer) cell below\b", t):
            if "answer" not in [kinds[j] for j in _section(cells, i) if j > i]:
                problems.append(f"cell {i}: {m.group(0)!r} but no answer cell follows in this section")
        for m in re.finditer(r"\b(?:answer|write|type)\b[^.]{0,40}\b(?:the|this) task cell\b", t):
            problems.append(f"cell {i}: {m.group(0)!r}: task cells are locked, students cannot write in them")
        if re.search(r"\b(?:cell|figure|output) below\b|\bnext cell\b", t) and i == len(cells) - 1:
            problems.append(f"cell {i} refers to a cell below but is the last cell")
        if re.search(r"\b(?:cell|figure|output) above\b", t) and "code" not in kinds[:i] and "scratch" not in kinds[:i]:
            problems.append(f"cell {i} refers to a cell above but no code cell precedes it")
        for n in re.findall(r"\bExercise (\d+)\b", t):
            if n not in exercises:
                problems.append(f"cell {i} refers to Exercise {n}, which has no heading")
        if parts:
            for p in re.findall(r"(?<![\w`'\"])([A-F][1-9])(?![\w`'\"])", t):
                if p not in parts:
                    problems.append(f"cell {i} refers to part {p}, which has no heading")
    return problems


def unlabelled_graded_cells(cells) -> list[str]:
    """Graded cells of a release notebook that do not say what they are and what they are worth:
    hidden-test cells '# hidden tests, N points: <what>', visible tests '# tests, N points',
    manual cells '(N points, graded by a TA)'."""
    problems = []
    for i, cell in enumerate(cells):
        kind = validate.kind_of(cell)
        if kind not in {"tests", "answer", "task"}:
            continue
        points = _points(cell.metadata["nbgrader"]["points"])
        first = cell.source.split("\n", 1)[0]
        if kind == "tests":
            hidden_only = not [line for line in cell.source.splitlines() if line.strip() and not line.lstrip().startswith("#")]
            label = re.match(r"# (hidden tests|tests), (\d+(?:\.\d+)?) points?\b(:\s*\S)?", first)
            want = "hidden tests" if hidden_only else "tests"
            if not label or label.group(1) != want or _points(label.group(2)) != points or (hidden_only and not label.group(3)):
                problems.append(f"cell {i}: first line {first!r} should be '# {want}, {points} points"
                                + (": <what they check>'" if hidden_only else "'"))
        else:
            found = re.search(r"\((\d+(?:\.\d+)?) points?, graded by a TA\)", cell.source)
            if not found or _points(found.group(1)) != points:
                problems.append(f"cell {i} ({kind}) should say '({points} points, graded by a TA)'")
    return problems


def silent_visible_tests(cells) -> list[str]:
    """Release test cells with visible asserts whose last line does not print that they passed."""
    problems = []
    for i, cell in enumerate(cells):
        if validate.kind_of(cell) != "tests":
            continue
        code = [line for line in cell.source.splitlines() if line.strip() and not line.lstrip().startswith("#")]
        if code and not re.match(r"passed\(", code[-1]):
            problems.append(f"cell {i}: visible tests end with {code[-1]!r}, not passed(...)")
    return problems


def unused_heavy_imports(cells) -> list[str]:
    """TensorFlow/Keras/PyTorch imported although no graded cell (solution or tests) uses it:
    the import costs every kernel seconds and memory."""
    graded = "\n".join(c.source for c in cells if validate.kind_of(c) in {"solution", "tests"})
    problems = []
    for library, (modules, aliases) in HEAVY_IMPORTS.items():
        imported = any(re.search(rf"^\s*(?:import|from) (?:{'|'.join(modules)})\b", c.source, re.M)
                       for c in cells if c.cell_type == "code")
        if imported and not re.search(rf"\b(?:{'|'.join(aliases)})\.", graded):
            problems.append(f"imports {library} but no solution or test cell uses it")
    return problems


@pytest.mark.unit
def test_written_tasks_have_answer_cells(assignment):
    for nb in source_notebooks(assignment):
        assert unanswered_word_tasks(_cells(nb)) == [], nb.name


@pytest.mark.unit
def test_cross_references_point_at_something(assignment):
    for nb in source_notebooks(assignment):
        assert dangling_references(_cells(nb)) == [], nb.name


@pytest.mark.unit
def test_graded_cells_say_what_they_are_worth(assignment):
    for nb in source_notebooks(assignment):
        assert unlabelled_graded_cells(_cells(release_path(nb))) == [], release_path(nb)


@pytest.mark.unit
def test_visible_tests_say_when_they_pass(assignment):
    for nb in source_notebooks(assignment):
        assert silent_visible_tests(_cells(release_path(nb))) == [], release_path(nb)


@pytest.mark.unit
def test_intro_says_how_to_check(assignment):
    for nb in source_notebooks(assignment):
        intro = next(c for c in _cells(release_path(nb)) if c.cell_type == "markdown").source
        assert "Validate" in intro and "Run All" in intro, f"{nb.name}: the intro must say how to check (Validate, Run All)"


@pytest.mark.unit
def test_no_unused_heavy_imports(assignment):
    for nb in source_notebooks(assignment):
        assert unused_heavy_imports(_cells(nb)) == [], nb.name
