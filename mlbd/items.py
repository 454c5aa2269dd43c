"""Question statistics (item analysis) of one assignment: pure maths on typed records.

Input: one :class:`Response` per graded submission (its points per test cell, the visible/hidden
outcome the grader recorded, its flags, errors and execution time) and the :class:`Item` list.
Output: :class:`ItemStats` per test cell and one :class:`AssignmentStats`. No I/O here; the
gradebook reader and the HTML/CSV/JSON writer are in :mod:`mlbd.items_report`.

Definitions (classical test theory):

- **discrimination** of item *j*: the corrected item-total correlation, Pearson's *r* between the
  item's points and the sum of the *other* items' points. ``None`` when either has no variance
  (an item everyone passes, or a single item): undefined, not zero.
- **Cronbach's alpha** over the *k* items: ``k/(k-1) · (1 − Σ var(item) / var(total))`` with sample
  variances (ddof 1). ``None`` when ``k < 2`` or the totals do not vary.
- **weak visible test**: the share of submissions that passed the visible test but failed the
  hidden one. Two layouts are understood: one cell with visible asserts and then nbgrader's hidden
  block (the grader records which part failed: :mod:`mlbd.grading.outcomes`), and a pair of cells
  ``<name>_visible`` / ``<name>_hidden`` in the same notebook (read from the two cells' points; the
  figure is reported on the hidden cell).
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

FULL_EPS = 1e-9


@dataclass(frozen=True)
class Item:
    id: str                  # "<notebook>/<grade_id>"
    max_score: float


@dataclass
class Response:
    student: str
    cells: dict[str, float]                                # points per item id (missing = 0)
    outcomes: dict[str, str] = field(default_factory=dict)  # item id -> passed|visible|hidden|failed
    flags: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    seconds: float | None = None                           # execution time of the submission
    score: float | None = None                             # the gradebook's total (manual parts included)
    failed: bool = False                                   # grading failed outright (no scores)


@dataclass(frozen=True)
class ItemStats:
    item: str
    max_score: float
    n: int
    mean: float
    full: float              # shares of submissions, 0..1
    zero: float
    partial: float
    discrimination: float | None
    visible_only: float | None     # passed the visible test, failed the hidden one
    visible_only_n: int            # submissions that share is computed over


@dataclass(frozen=True)
class AssignmentStats:
    n: int
    failed: int
    max_score: float
    mean: float
    sd: float | None
    median: float
    alpha: float | None
    totals: list[float]
    flags_by_cause: dict[str, int]       # submissions with at least one flag of that cause
    errors_by_cause: dict[str, int]
    seconds: list[float]
    seconds_mean: float | None
    seconds_median: float | None
    seconds_p95: float | None


def score_matrix(items: list[Item], responses: list[Response]) -> np.ndarray:
    """Submissions × items points (a missing cell counts 0)."""
    return np.array([[r.cells.get(it.id, 0.0) or 0.0 for it in items] for r in responses], dtype=float).reshape(
        len(responses), len(items))


def _pearson(x: np.ndarray, y: np.ndarray) -> float | None:
    if len(x) < 2:
        return None
    dx, dy = x - x.mean(), y - y.mean()
    den = np.sqrt((dx * dx).sum() * (dy * dy).sum())
    if den <= FULL_EPS:
        return None
    return float((dx * dy).sum() / den)


def discrimination(matrix: np.ndarray) -> list[float | None]:
    """Corrected item-total correlation of each column (``None`` where undefined)."""
    total = matrix.sum(axis=1)
    return [_pearson(matrix[:, j], total - matrix[:, j]) for j in range(matrix.shape[1])]


def cronbach_alpha(matrix: np.ndarray) -> float | None:
    n, k = matrix.shape
    if k < 2 or n < 2:
        return None
    total_var = matrix.sum(axis=1).var(ddof=1)
    if total_var <= FULL_EPS:
        return None
    return float(k / (k - 1) * (1 - matrix.var(axis=0, ddof=1).sum() / total_var))


def visible_pairs(items: list[Item]) -> dict[str, str]:
    """``{hidden item id: visible item id}`` for ``<name>_hidden`` / ``<name>_visible`` cells."""
    ids = {it.id for it in items}
    out = {}
    for it in items:
        if it.id.endswith("_hidden") and it.id[: -len("_hidden")] + "_visible" in ids:
            out[it.id] = it.id[: -len("_hidden")] + "_visible"
    return out


def _visible_only(item: Item, pair: str | None, max_of: dict[str, float],
                  responses: list[Response]) -> tuple[float | None, int]:
    if pair is not None:
        hits = [r.cells.get(pair, 0.0) >= max_of[pair] - FULL_EPS and r.cells.get(item.id, 0.0) < item.max_score - FULL_EPS
                for r in responses]
        return (sum(hits) / len(hits) if hits else None), len(hits)
    known = [r.outcomes[item.id] for r in responses if r.outcomes.get(item.id) in ("passed", "visible", "hidden")]
    if not known:
        return None, 0
    return sum(o == "hidden" for o in known) / len(known), len(known)


def item_stats(items: list[Item], responses: list[Response]) -> list[ItemStats]:
    graded = [r for r in responses if not r.failed]
    m = score_matrix(items, graded)
    disc = discrimination(m) if len(graded) else [None] * len(items)
    pairs = visible_pairs(items)
    max_of = {it.id: it.max_score for it in items}
    out = []
    for j, it in enumerate(items):
        col = m[:, j]
        n = len(col)
        full = float(np.mean(col >= it.max_score - FULL_EPS)) if n else 0.0
        zero = float(np.mean(col <= FULL_EPS)) if n else 0.0
        vis, vis_n = _visible_only(it, pairs.get(it.id), max_of, graded)
        out.append(ItemStats(it.id, it.max_score, n, float(col.mean()) if n else 0.0, full, zero,
                             max(0.0, 1.0 - full - zero), disc[j], vis, vis_n))
    return out


# A cause is the message with its notebook, cell, numbers and quoted text taken out, so that the same
# problem in 40 submissions counts once; these known messages get a short name.
CAUSES = [
    ("canary", "a canary test passed (failures swallowed or rewritten)"),
    ("swallow", "a canary test passed (failures swallowed or rewritten)"),
    ("metadata edited", "cell metadata edited"),
    ("deleted", "test cell deleted or missing"),
    ("missing", "test cell deleted or missing"),
    ("time limit", "time limit"),
    ("ran longer", "time limit"),
    ("wall-clock", "time limit"),
    ("memory", "memory limit"),
    ("killed", "kernel killed or died"),
    ("died", "kernel killed or died"),
    ("truncated", "output truncated (size limit)"),
    ("could not be executed", "could not be executed"),
    ("scoring failed", "scoring failed"),
    ("preparing failed", "preparing failed"),
    ("not copied", "file not copied (page or script)"),
    ("extra notebook", "extra notebook ignored"),
    ("graded as blank", "notebook unreadable, graded as blank"),
]
_NOTEBOOK = re.compile(r"^[^\s:]+(\.ipynb)?: ")
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")
_NUMBER = re.compile(r"\d+(\.\d+)?")


def cause(message: str) -> str:
    low = message.lower()
    for key, name in CAUSES:
        if key in low:
            return name
    text = _NOTEBOOK.sub("", message)
    text = _QUOTED.sub("…", text.split(":")[0] if ":" in text else text)
    return _NUMBER.sub("N", text).strip()[:80] or "other"


def by_cause(messages_per_submission: list[list[str]]) -> dict[str, int]:
    counts: Counter = Counter()
    for messages in messages_per_submission:
        counts.update({cause(m) for m in messages})
    return dict(counts.most_common())


def _quantile(values: list[float], q: float) -> float | None:
    return float(np.quantile(values, q)) if values else None


def assignment_stats(items: list[Item], responses: list[Response], max_score: float | None = None) -> AssignmentStats:
    graded = [r for r in responses if not r.failed]
    m = score_matrix(items, graded)
    totals = [float(r.score) if r.score is not None else float(m[i].sum()) for i, r in enumerate(graded)]
    seconds = [float(r.seconds) for r in graded if r.seconds is not None]
    arr = np.array(totals, dtype=float)
    return AssignmentStats(
        n=len(graded), failed=len(responses) - len(graded),
        max_score=float(max_score if max_score is not None else sum(it.max_score for it in items)),
        mean=float(arr.mean()) if len(arr) else 0.0, sd=float(arr.std(ddof=1)) if len(arr) > 1 else None,
        median=float(np.median(arr)) if len(arr) else 0.0, alpha=cronbach_alpha(m), totals=totals,
        flags_by_cause=by_cause([r.flags for r in responses]),
        errors_by_cause=by_cause([r.errors for r in responses]),
        seconds=seconds, seconds_mean=float(np.mean(seconds)) if seconds else None,
        seconds_median=_quantile(seconds, 0.5), seconds_p95=_quantile(seconds, 0.95))
