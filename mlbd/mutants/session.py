"""`mlbd mutants`: mutate an assignment's solutions, run its tests, report the mutation score."""
from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

from ..course import check_assignments, notebooks
from .records import Decisions, score, unrecorded
from .runner import MutantResult, notebook_mutants, run, sample


def decisions_path(course_dir: Path, assignment: str) -> Path:
    return course_dir / "grader_tests" / "mutants" / f"{assignment}.txt"


def mutate_assignment(course_dir: Path, assignment: str, *, function: str | None = None, jobs: int = 2,
                      size: int | None = None, seed: int = 0, timeout: int = 60,
                      workdir: Path | None = None, progress=None) -> list[MutantResult]:
    """Run (a fixed sample of) the mutants of every notebook of one assignment."""
    plan = {}
    for nb in notebooks(course_dir, assignment, "source"):
        plan[nb] = notebook_mutants(nb, function)
    if size is not None:
        total = sum(len(m) for m in plan.values()) or 1
        plan = {nb: sample(ms, max(1, round(size * len(ms) / total)) if ms else 0, seed) for nb, ms in plan.items()}
    with tempfile.TemporaryDirectory(prefix=f"mlbd-mutants-{assignment}-", dir=workdir) as tmp:
        return run(plan, Path(tmp), jobs=jobs, timeout=timeout, progress=progress)


def main(course_dir: Path, assignments: list[str], *, function: str | None, jobs: int | None,
         size: int | None, seed: int, timeout: int, out: str | None, show: int = 40) -> int:
    """Print each assignment's mutation score and its survivors; 1 if a survivor is unrecorded."""
    jobs = jobs or os.cpu_count() or 1
    report, status = {}, 0
    for a in check_assignments(course_dir, assignments):
        start = time.perf_counter()
        results = mutate_assignment(course_dir, a, function=function, jobs=jobs, size=size, seed=seed,
                                    timeout=timeout)
        seconds = time.perf_counter() - start
        decisions = Decisions.read(decisions_path(course_dir, a))
        s = score(results, decisions)
        new = unrecorded(results, decisions)
        print(f"{a}: {s.killed}/{s.total - s.equivalent} killed ({100 * s.score:.1f}%), "
              f"{s.equivalent} equivalent, {len(s.survived)} survived ({len(new)} not recorded), {seconds:.0f} s")
        for r in new[:show]:
            print(f"  survivor {r.mutant.key}")
        if len(new) > show:
            print(f"  … {len(new) - show} more (--out FILE lists all)")
        status |= bool(new)
        report[a] = {"total": s.total, "killed": s.killed, "equivalent": s.equivalent,
                     "survived": len(s.survived), "score": s.score, "seconds": round(seconds, 1),
                     "results": [r.as_dict() for r in results]}
    if out:
        Path(out).write_text(json.dumps(report, indent=1))
    return status
