"""`mlbd similarity`: planted copies (renamed, reordered, commented) are found and ranked above
independent correct solutions of the same exercise; the release's code and trivial cells are ignored;
archives are compared with the cohort; the report escapes student code; grades are untouched."""
from __future__ import annotations

import csv
import io
from pathlib import Path

import nbformat
import pytest

from mlbd import similarity as sim
from mlbd.cli import main

pytestmark = pytest.mark.unit

STUBS = {
    "knn": "def distances(A, B):\n    # YOUR CODE HERE\n    raise NotImplementedError()\n\n"
           "def knn_predict(Xtr, ytr, Xte, k):\n    # YOUR CODE HERE\n    raise NotImplementedError()\n\n"
           "def accuracy(y, yhat):\n    # YOUR CODE HERE\n    raise NotImplementedError()",
    "cv": "def kfold_indices(n, k):\n    # YOUR CODE HERE\n    raise NotImplementedError()\n\n"
          "def cv_score(X, y, k, folds):\n    # YOUR CODE HERE\n    raise NotImplementedError()",
    "quiz": "ANSWER = None  # 'a', 'b' or 'c'",
}

# Six independent correct solutions, five in styles of their own.
INDEPENDENT = {
    "alice": {
        "knn": '''def distances(A, B):
    diff = A[:, None, :] - B[None, :, :]
    return np.sqrt((diff ** 2).sum(axis=-1))

def knn_predict(Xtr, ytr, Xte, k):
    d = distances(Xte, Xtr)
    nearest = np.argsort(d, axis=1)[:, :k]
    votes = ytr[nearest]
    out = []
    for row in votes:
        values, counts = np.unique(row, return_counts=True)
        out.append(values[np.argmax(counts)])
    return np.array(out)

def accuracy(y, yhat):
    return float(np.mean(np.asarray(y) == np.asarray(yhat)))''',
        "cv": '''def kfold_indices(n, k):
    sizes = np.full(k, n // k)
    sizes[: n % k] += 1
    folds, start = [], 0
    for size in sizes:
        val = np.arange(start, start + size)
        train = np.concatenate([np.arange(0, start), np.arange(start + size, n)])
        folds.append((train, val))
        start += size
    return folds

def cv_score(X, y, k, folds):
    scores = []
    for train, val in folds:
        pred = knn_predict(X[train], y[train], X[val], k)
        scores.append(accuracy(y[val], pred))
    return float(np.mean(scores))''',
        "quiz": 'ANSWER = "b"',
    },
    "bob": {
        "knn": '''from collections import Counter
import math

def distances(A, B):
    result = np.zeros((len(A), len(B)))
    for i in range(len(A)):
        for j in range(len(B)):
            result[i, j] = math.sqrt(sum((a - b) ** 2 for a, b in zip(A[i], B[j])))
    return result

def knn_predict(Xtr, ytr, Xte, k):
    predictions = []
    table = distances(Xte, Xtr)
    for i in range(len(Xte)):
        order = sorted(range(len(Xtr)), key=lambda j: table[i, j])
        label_counts = Counter(ytr[j] for j in order[:k])
        predictions.append(label_counts.most_common(1)[0][0])
    return np.array(predictions)

def accuracy(y, yhat):
    correct = 0
    for truth, guess in zip(y, yhat):
        if truth == guess:
            correct += 1
    return correct / len(y)''',
        "cv": '''def kfold_indices(n, k):
    everything = list(range(n))
    result = []
    base, extra = divmod(n, k)
    pos = 0
    for f in range(k):
        length = base + (1 if f < extra else 0)
        held_out = everything[pos:pos + length]
        rest = everything[:pos] + everything[pos + length:]
        result.append((np.array(rest), np.array(held_out)))
        pos = pos + length
    return result

def cv_score(X, y, k, folds):
    total = 0.0
    for tr, va in folds:
        total += accuracy(y[va], knn_predict(X[tr], y[tr], X[va], k))
    return total / len(folds)''',
        "quiz": "ANSWER = 'b'",
    },
    "carol": {
        "knn": '''from scipy.spatial.distance import cdist
from scipy.stats import mode

def distances(A, B):
    return cdist(A, B)

def knn_predict(Xtr, ytr, Xte, k):
    idx = np.argpartition(distances(Xte, Xtr), k - 1, axis=1)[:, :k]
    return mode(ytr[idx], axis=1, keepdims=False).mode

def accuracy(y, yhat):
    return (np.asarray(y) == np.asarray(yhat)).mean()''',
        "cv": '''from sklearn.model_selection import KFold

def kfold_indices(n, k):
    return list(KFold(n_splits=k).split(np.zeros(n)))

def cv_score(X, y, k, folds):
    return np.mean([accuracy(y[v], knn_predict(X[t], y[t], X[v], k)) for t, v in folds])''',
        "quiz": "ANSWER='b'",
    },
    "dave": {
        "knn": '''def distances(A, B):
    sq = (A ** 2).sum(1)[:, None] + (B ** 2).sum(1)[None, :] - 2 * A @ B.T
    return np.sqrt(np.maximum(sq, 0))

def knn_predict(Xtr, ytr, Xte, k):
    D = distances(Xte, Xtr)
    labels = np.unique(ytr)
    nn = np.argsort(D, axis=1, kind="stable")[:, :k]
    tally = np.stack([(ytr[nn] == c).sum(axis=1) for c in labels], axis=1)
    return labels[tally.argmax(axis=1)]

def accuracy(y, yhat):
    y, yhat = np.asarray(y), np.asarray(yhat)
    return np.count_nonzero(y == yhat) / y.size''',
        "cv": '''def kfold_indices(n, k):
    chunks = np.array_split(np.arange(n), k)
    return [(np.setdiff1d(np.arange(n), c), c) for c in chunks]

def cv_score(X, y, k, folds):
    accs = np.empty(len(folds))
    for i, (a, b) in enumerate(folds):
        accs[i] = accuracy(y[b], knn_predict(X[a], y[a], X[b], k))
    return accs.mean()''',
        "quiz": 'ANSWER = "a"',
    },
    "erin": {
        "knn": '''def distances(A, B):
    return np.linalg.norm(A[:, np.newaxis] - B[np.newaxis], axis=2)

def _majority(labels):
    best, best_count = None, -1
    for lab in sorted(set(labels.tolist())):
        c = int((labels == lab).sum())
        if c > best_count:
            best, best_count = lab, c
    return best

def knn_predict(Xtr, ytr, Xte, k):
    ranks = distances(Xte, Xtr).argsort(axis=1)
    return np.array([_majority(ytr[r[:k]]) for r in ranks])

def accuracy(y, yhat):
    hits = sum(int(a == b) for a, b in zip(y, yhat))
    return hits / float(len(y))''',
        "cv": '''def kfold_indices(n, k):
    bounds = [round(i * n / k) for i in range(k + 1)]
    idx = np.arange(n)
    pairs = []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        mask = (idx >= lo) & (idx < hi)
        pairs.append((idx[~mask], idx[mask]))
    return pairs

def cv_score(X, y, k, folds):
    results = [accuracy(y[val_i], knn_predict(X[tr_i], y[tr_i], X[val_i], k)) for tr_i, val_i in folds]
    return sum(results) / len(results)''',
        "quiz": 'ANSWER = "b"   # final',
    },
    # gina takes alice's approach (broadcast distances, argsort, np.unique votes, contiguous folds), written
    # independently: convergent honest code must still rank below the copies
    "gina": {
        "knn": '''def distances(A, B):
    return np.sqrt(((A[:, None, :] - B[None, :, :]) ** 2).sum(axis=2))

def knn_predict(Xtr, ytr, Xte, k):
    nearest = np.argsort(distances(Xte, Xtr), axis=1)[:, :k]
    preds = []
    for labels in ytr[nearest]:
        vals, counts = np.unique(labels, return_counts=True)
        preds.append(vals[counts.argmax()])
    return np.array(preds)

def accuracy(y, yhat):
    return np.mean(np.array(y) == np.array(yhat))''',
        "cv": '''def kfold_indices(n, k):
    folds = []
    start = 0
    for i in range(k):
        size = n // k + (1 if i < n % k else 0)
        val = np.arange(start, start + size)
        folds.append((np.setdiff1d(np.arange(n), val), val))
        start = start + size
    return folds

def cv_score(X, y, k, folds):
    return float(np.mean([accuracy(y[va], knn_predict(X[tr], y[tr], X[va], k)) for tr, va in folds]))''',
        "quiz": 'ANSWER = "b"',
    },
}

# mallory copies alice: every name renamed, functions reordered, comments and blank lines added.
MALLORY = {
    "knn": '''def score_fn(labels_true, labels_pred):
    # fraction of predictions that are right
    return float(np.mean(np.asarray(labels_true) == np.asarray(labels_pred)))


def knn_predict(train_X, train_y, test_X, n_neigh):
    # k nearest neighbours, majority vote
    dd = distances(test_X, train_X)
    closest = np.argsort(dd, axis=1)[:, :n_neigh]
    ballots = train_y[closest]
    res = []
    for line in ballots:
        vals, cnts = np.unique(line, return_counts=True)   # count each label
        res.append(vals[np.argmax(cnts)])
    return np.array(res)


def distances(P, Q):
    # pairwise euclidean distances
    delta = P[:, None, :] - Q[None, :, :]
    return np.sqrt((delta ** 2).sum(axis=-1))''',
    "cv": '''def cv_score(data, target, n_neigh, splits):
    # mean validation accuracy
    accs = []
    for tr_rows, va_rows in splits:
        guess = knn_predict(data[tr_rows], target[tr_rows], data[va_rows], n_neigh)
        accs.append(accuracy(target[va_rows], guess))
    return float(np.mean(accs))

def kfold_indices(count, n_folds):
    # contiguous folds, the first n % k one larger
    lens = np.full(n_folds, count // n_folds)
    lens[: count % n_folds] += 1
    out, begin = [], 0
    for ln in lens:
        held = np.arange(begin, begin + ln)
        kept = np.concatenate([np.arange(0, begin), np.arange(begin + ln, count)])
        out.append((kept, held))
        begin += ln
    return out''',
    "quiz": 'ANSWER = "b"',
}

# trudy copies bob with new names and comments only (and a payload the report must escape).
TRUDY = {
    "knn": INDEPENDENT["bob"]["knn"].replace("result", "mat").replace("predictions", "preds")
    .replace("label_counts", "cnt").replace("correct", "ok") + '\n\nNOTE = "</pre><script>alert(1)</script>"',
    "cv": "# my own work\n" + INDEPENDENT["bob"]["cv"].replace("everything", "allidx").replace("held_out", "val")
    .replace("total", "acc_sum"),
    "quiz": "ANSWER = 'b'",
}


def _nb(cells: dict[str, str], solution=True):
    nb = nbformat.v4.new_notebook()
    nb.cells.append(nbformat.v4.new_markdown_cell("# Exercise"))
    nb.cells.append(nbformat.v4.new_code_cell("import numpy as np\nrng = np.random.default_rng(0)"))
    for gid, src in cells.items():
        cell = nbformat.v4.new_code_cell(src)
        cell.metadata["nbgrader"] = {"grade_id": gid, "solution": solution, "grade": False, "locked": False,
                                     "schema_version": 3}
        nb.cells.append(cell)
        test = nbformat.v4.new_code_cell(f"assert True  # tests for {gid}")
        test.metadata["nbgrader"] = {"grade_id": f"test_{gid}", "solution": False, "grade": True, "points": 1,
                                     "locked": True, "schema_version": 3}
        nb.cells.append(test)
    return nb


def write_cohort(root: Path, cohort: dict[str, dict[str, str]], base: str = "submitted") -> None:
    for student, cells in cohort.items():
        folder = root / base / student / "ex"
        folder.mkdir(parents=True, exist_ok=True)
        nbformat.write(_nb(cells), str(folder / "ex.ipynb"))


@pytest.fixture
def course(tmp_path):
    (tmp_path / "nbgrader_config.py").write_text("c = get_config()\n")
    (tmp_path / "release" / "ex").mkdir(parents=True)
    nbformat.write(_nb(STUBS), str(tmp_path / "release" / "ex" / "ex.ipynb"))
    cohort = dict(INDEPENDENT, mallory=MALLORY, trudy=TRUDY, blank=dict(STUBS))
    write_cohort(tmp_path, cohort)
    return tmp_path


def _pairs(course: Path, *extra: str) -> list[dict]:
    assert main(["similarity", "ex", "--course-dir", str(course), "--out", str(course / "out"), *extra]) == 0
    return list(csv.DictReader(io.StringIO((course / "out" / "similarity.csv").read_text())))


def test_planted_copies_rank_first(course):
    rows = _pairs(course)
    top = [frozenset((r["student_a"], r["student_b"])) for r in rows[:2]]
    assert set(top) == {frozenset({"alice", "mallory"}), frozenset({"bob", "trudy"})}, rows[:4]
    honest = [float(r["score"]) for r in rows[2:]]
    assert all(float(r["score"]) > 0.6 for r in rows[:2])
    assert not honest or max(honest) < min(float(r["score"]) for r in rows[:2]) - 0.2, rows
    assert all("blank" not in (r["student_a"], r["student_b"]) for r in rows), "handed-out code is boilerplate"


def test_autograded_folder_as_source(course):
    import shutil

    shutil.move(str(course / "submitted"), str(course / "autograded"))
    rows = _pairs(course, "--source", "autograded")
    assert {frozenset((r["student_a"], r["student_b"])) for r in rows[:2]} == {
        frozenset({"alice", "mallory"}), frozenset({"bob", "trudy"})}


def test_report_escapes_code_and_highlights(course):
    _pairs(course)
    page = (course / "out" / "similarity.html").read_text()
    assert "<script>alert(1)" not in page and "&lt;script&gt;alert(1)" in page
    assert page.count("<mark>") >= 4 and "mallory" in page


def test_trivial_and_unchanged_cells_are_not_documents(course):
    solutions, handed_out = sim.release_code(course / "release" / "ex")
    assert set(solutions["ex"]) == {"knn", "cv", "quiz"}
    docs = {d.label: d for d in sim.documents(course / "submitted", "ex", solutions, sim.Settings())}
    assert "blank" not in docs
    assert "ANSWER" not in docs["alice"].code and "def cv_score" in docs["alice"].code
    assert "import numpy" not in docs["alice"].code, "set-up cells are not the student's"


def test_huge_cells_are_cut(tmp_path):
    folder = tmp_path / "s" / "ex"
    folder.mkdir(parents=True)
    nbformat.write(_nb({"knn": "x = [" + "1, " * 500_000 + "]"}), str(folder / "ex.ipynb"))
    docs = sim.documents(tmp_path, "ex", {"ex": {"knn": ""}}, sim.Settings())
    assert len(docs) == 1 and len(docs[0].code) < 20_100


def test_archive_of_an_earlier_cohort(course, tmp_path):
    archive = tmp_path / "cohort2024"
    # last year's frank wrote what erin hands in this year (renamed); two archived students copy each other
    frank = {k: v.replace("ranks", "order").replace("pairs", "splits") for k, v in INDEPENDENT["erin"].items()}
    write_cohort(archive, {"frank": frank, "old1": MALLORY, "old2": MALLORY}, base="submitted")
    rows = _pairs(course, "--archive", str(archive))
    found = {(r["student_a"], r["student_b"]): r for r in rows}
    assert ("erin", "cohort2024/submitted/frank") in found
    assert found[("erin", "cohort2024/submitted/frank")]["archive"] == "1"
    assert not any(r["student_a"].startswith("cohort2024") for r in rows), "archive pairs are not compared"
    assert float(found[("erin", "cohort2024/submitted/frank")]["score"]) > 0.6


def test_grades_and_submissions_untouched(course):
    before = {p: p.read_bytes() for p in (course / "submitted").rglob("*") if p.is_file()}
    _pairs(course)
    assert {p: p.read_bytes() for p in (course / "submitted").rglob("*") if p.is_file()} == before
    assert not (course / "gradebook.db").exists()
