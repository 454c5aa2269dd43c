"""`mlbd bench ...`: benchmarks that print tables. Speed targets live here, not in unit tests."""
from __future__ import annotations

import csv
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from .course import check_assignments, notebook_meta, notebooks


def _emit(table: Table, rows: list[dict], out: str | None) -> None:
    Console().print(table)
    if out and rows:
        with open(out, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)


def bench_content(course_dir: Path, args) -> int:
    """Execute every instructor notebook once and compare its wall time with its budget."""
    from . import validate

    table = Table(title="Instructor notebooks: execution time (this machine)")
    for col in ("assignment", "notebook", "seconds", "budget s", "tests", "auto pts", "manual pts", "ok"):
        table.add_column(col)
    rows = []
    with tempfile.TemporaryDirectory(prefix="mlbd-bench-") as tmp:
        for assignment in check_assignments(course_dir, args.assignments):
            for nb in notebooks(course_dir, assignment):
                run = validate.execute(nb, Path(tmp) / assignment / nb.stem)
                budget = notebook_meta(nb).get("budget_s", 60)
                pts = validate.points_summary(nb)
                ok = not run.errors and run.seconds <= budget
                row = {"assignment": assignment, "notebook": nb.name, "seconds": round(run.seconds, 2),
                       "budget_s": budget, "tests": len(run.max_scores), "auto_points": pts["auto"],
                       "manual_points": pts["manual"], "ok": ok}
                rows.append(row)
                table.add_row(*(str(v) for v in row.values()))
    _emit(table, rows, args.out)
    return 0


def bench_data(course_dir: Path, args) -> int:
    """Time the synthetic generators at the sizes the notebooks use."""
    from . import data

    cases = [
        ("make_shapes(5000)", lambda: data.make_shapes(5000, seed=0), 1.0),
        ("make_shapes(6000)", lambda: data.make_shapes(6000, seed=0), 1.2),
        ("make_segmentation_shapes(768)", lambda: data.make_segmentation_shapes(768, seed=0), 0.5),
        ("iris_frame()", data.iris_frame, 0.5),
    ]
    table = Table(title="Data generators (best of 3)")
    for col in ("generator", "seconds", "target s", "ratio to target"):
        table.add_column(col)
    rows = []
    for name, fn, target in cases:
        best = min(_timed(fn) for _ in range(3))
        rows.append({"generator": name, "seconds": round(best, 4), "target_s": target, "ratio": round(best / target, 3)})
        table.add_row(name, f"{best:.4f}", str(target), f"{best / target:.3f}")
    _emit(table, rows, args.out)
    return 0


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


BENCHES = {"content": bench_content, "data": bench_data}


def run(what: str, course_dir: Path, args) -> int:
    return BENCHES[what](course_dir, args)
