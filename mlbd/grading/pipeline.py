"""`mlbd grade`: prepare (trusted) ▸ execute (sandboxed, N workers) ▸ score (trusted, one writer).

Resumable: a student counts as graded once its result record (``.mlbd/results/<assignment>/``)
matches the current submission's content hash and its autograded folder exists; the record is
written only after the gradebook commit, and every gradebook write is an idempotent upsert keyed
by (student, assignment, notebook, cell). ``kill -9`` at any point followed by a rerun grades the
unfinished students again and nothing twice. ``--force`` regrades everyone.
"""
from __future__ import annotations

import json
import os
import time
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from nbgrader.api import Gradebook, MissingEntry
from nbgrader.coursedir import CourseDirectory
from nbgrader.preprocessors import Execute
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from traitlets.config import Config
from traitlets.config.loader import PyFileConfigLoader

from ..course import CourseError
from . import boxfs, executors, prepare, score
from .engines import shared_engines
from .execute import WatchdogTimeout, execute_job
from .sandbox import Sandbox


@dataclass
class StudentResult:
    student: str
    status: str                      # graded | skipped | failed
    score: float = 0.0
    max_score: float = 0.0
    flags: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0


def load_config(course_dir: Path, config_file: Path | None = None) -> Config:
    """The course's nbgrader_config.py, or ``config_file`` for a course whose own copy the grader
    must not execute (the hub grades as root a course its course account can write to)."""
    path = Path(config_file) if config_file else course_dir / "nbgrader_config.py"
    if not path.is_file():
        raise CourseError(f"{path.parent} has no {path.name}")
    try:
        cfg = PyFileConfigLoader(path.name, path=str(path.parent)).load_config()
    except Exception as exc:  # noqa: BLE001
        raise CourseError(f"{path.name} does not load: {type(exc).__name__}: {exc}") from exc
    if config_file:
        cfg.CourseDirectory.root = str(course_dir)
    return cfg


def course_directory(course_dir: Path, cfg: Config) -> CourseDirectory:
    cd = CourseDirectory(config=cfg)
    if "root" not in cfg.get("CourseDirectory", {}):
        cd.root = str(course_dir)
    return cd


def _submitted_students(cd: CourseDirectory, assignment: str) -> list[str]:
    """Student ids with a submission folder for ``assignment`` (any nbgrader directory structure)."""
    import glob
    import re

    rx = re.compile(cd.format_path(cd.submitted_directory, "(?P<student_id>[^/]+)", re.escape(assignment),
                                   escape=True) + "$")
    out = []
    for p in sorted(glob.glob(cd.format_path(cd.submitted_directory, "*", assignment))):
        m = rx.match(p)
        if m and os.path.isdir(p):
            out.append(m.group("student_id"))
    return out


def grade(course_dir: Path, assignment: str, students: list[str] | None = None, jobs: int | None = None,
          executor: str = "local", force: bool = False, sandbox: str | None = None,
          console: Console | None = None, quiet: bool = False,
          config_file: Path | None = None) -> list[StudentResult]:
    console = console or Console(stderr=True)
    warnings.filterwarnings("ignore", module="nbgrader")
    warnings.filterwarnings("ignore", message=".*not in session.*")
    cfg = load_config(course_dir, config_file)
    if not (executor in (None, "", "local", "dask") or executor.startswith(("tcp://", "tls://"))):
        raise CourseError(f"unknown executor {executor!r}: use local, dask or tcp://HOST:PORT")
    if sandbox:
        cfg.Sandbox.mode = sandbox
    box = Sandbox(config=cfg)
    try:
        box.check()
    except RuntimeError as exc:
        raise CourseError(str(exc)) from exc
    if box.mode == "none":
        console.print("[bold yellow]warning:[/] --sandbox none: student code runs unsandboxed as this user "
                      "(files, network, secrets); use it for development only")
    if not cfg.get("HTMLExporter", {}).get("sanitize_html", False):
        console.print("[bold yellow]warning:[/] the formgrader and feedback render students' HTML and scripts as "
                      "they are; add c.HTMLExporter.sanitize_html = True to nbgrader_config.py")
    cd = course_directory(course_dir, cfg)
    root = Path(cd.root)
    try:
        with Gradebook(cd.db_url, cd.course_id) as gb:
            gb.find_assignment(assignment)
    except MissingEntry:
        raise CourseError(f"assignment {assignment!r} is not in the gradebook; run nbgrader generate_assignment {assignment}")
    except Exception as exc:  # noqa: BLE001
        raise CourseError(f"cannot open the gradebook {cd.db_url}: {exc}") from exc
    found = _submitted_students(cd, assignment)
    if students:
        missing = [s for s in students if s not in found]
        if missing:
            raise CourseError(f"no submission of {assignment} for: {', '.join(missing)}")
        found = [s for s in found if s in students]
    jobs = jobs or os.cpu_count() or 1
    try:   # c.Sandbox.per_assignment: this assignment's limits, as nbgrader autograde reads them
        limits = {k: v for k, v in box.overrides(assignment).items() if k != "cell_timeout"}
        timeout = box.cell_timeout(assignment, Execute(config=cfg).timeout)
    except ValueError as exc:
        raise CourseError(str(exc)) from exc
    sandbox_cfg = {"Sandbox": json.loads(json.dumps({**dict(cfg.get("Sandbox", {})), **limits}))}
    sandbox_cfg["Sandbox"]["mode"] = box.mode
    box = box.for_assignment(assignment)
    exclude = list(cfg.get("Autograde", {}).get("exclude_overwriting", {}).get(assignment, []))

    results: dict[str, StudentResult] = {}
    todo = []
    for s in found:
        rec = score.read_record(root, assignment, s)
        digest = prepare.submission_digest(Path(cd.format_path(cd.submitted_directory, s, assignment)))
        done = Path(cd.format_path(cd.autograded_directory, s, assignment)).is_dir()
        if not force and rec and rec.get("digest") == digest and done:
            results[s] = StudentResult(s, "skipped", rec.get("score", 0.0), rec.get("max_score", 0.0),
                                       rec.get("flags", []), rec.get("errors", []))
        else:
            todo.append(s)

    if todo:
        pool = executors.make(executor, jobs)
        try:
            with shared_engines():
                _run(pool, todo, results, root, cd, cfg, assignment, sandbox_cfg, timeout, exclude, box,
                     console, quiet)
        finally:
            pool.close()
    ordered = [results[s] for s in found]
    if not quiet:
        _summary(console, assignment, ordered)
    return ordered


def _run(pool, todo, results, root, cd, cfg, assignment, sandbox_cfg, timeout, exclude, box, console, quiet):
    pending: dict = {}            # future -> (student, notebook name)
    subs: dict[str, prepare.Submission] = {}
    outcomes: dict[str, dict] = {}
    waiting: dict[str, int] = {}
    started: dict[str, float] = {}

    progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), TextColumn("{task.fields[last]}"), console=console,
                        disable=quiet, transient=False)

    def finish(student: str) -> None:
        sub = subs.pop(student)
        try:
            done = outcomes.pop(student, {})
            verdict = score.stage(root, cd, sub, done)
            keep_files(cd, assignment, student, done)
            score.score(root, cd, cfg, sub, verdict)
            summary = score.gradebook_scores(cd, assignment, student)
            score.write_record(root, sub, verdict, summary)
            rec = score.read_record(root, assignment, student) or {}
            results[student] = StudentResult(student, "graded", summary["score"], summary["max_score"],
                                              rec.get("flags", []), rec.get("errors", []),
                                              time.perf_counter() - started[student])
        except Exception as exc:  # noqa: BLE001  (one submission never stops the run)
            results[student] = StudentResult(student, "failed", errors=[f"scoring failed: {type(exc).__name__}: {exc}"[:400]],
                                              seconds=time.perf_counter() - started[student])
            record_failure(root, assignment, student, results[student].errors)
        progress.update(task, advance=1, last=student)

    def collect(block: bool) -> None:
        if not pending:
            return
        done = pool.wait(list(pending), timeout=None if block else 0)
        for fut in done:
            student, name = pending.pop(fut)
            try:
                outcomes.setdefault(student, {})[name] = fut.result()
            except Exception as exc:  # noqa: BLE001  (worker crashed: report, keep going)
                outcomes.setdefault(student, {})[name] = {
                    "crash": f"{type(exc).__name__}: {exc}"[:300],
                    "kind": "watchdog" if isinstance(exc, WatchdogTimeout) else "crash"}
            waiting[student] -= 1
            if waiting[student] == 0:
                finish(student)

    with progress:
        task = progress.add_task(f"grading {assignment} ({pool.description}, sandbox {box.mode})",
                                 total=len(todo), last="")
        for student in todo:
            started[student] = time.perf_counter()
            try:
                sub = prepare.prepare(cd, cfg, cd.db_url, assignment, student,
                                      seed=zlib.crc32(f"{assignment}/{student}".encode()))
                files = prepare.input_files(cd, assignment, student, exclude, box.copy_max_mb * 2**20)
            except Exception as exc:  # noqa: BLE001
                results[student] = StudentResult(student, "failed", errors=[f"preparing failed: {type(exc).__name__}: {exc}"[:400]])
                record_failure(root, assignment, student, results[student].errors)
                progress.update(task, advance=1, last=student)
                continue
            subs[student] = sub
            runnable = [j for j in sub.notebooks if j.execute and j.notebook is not None]
            waiting[student] = len(runnable)
            for job in runnable:
                payload = {"id": f"{student}/{job.name}", "notebook": _dumps(job.notebook), "files": files,
                           "config": sandbox_cfg, "timeout": timeout,
                           "kernel_name": job.notebook.metadata.get("kernelspec", {}).get("name", "python3")}
                pending[pool.submit(execute_job, payload)] = (student, job.name)
            if not runnable:
                finish(student)
            while len(pending) > 4 * jobs_hint(pool):   # prepare ahead while workers start their zygotes
                collect(block=True)
            collect(block=False)
        while pending:
            collect(block=True)


def keep_files(cd: CourseDirectory, assignment: str, student: str, done: dict) -> None:
    """Files the notebooks wrote land in autograded/<student>/<assignment>/, as with nbgrader
    autograde (bounded by the sandbox; regular files only, written without following links)."""
    dest = Path(cd.format_path(cd.autograded_directory, student, assignment))
    for name in sorted(done):
        files = (done[name] or {}).get("files") or {}
        if files and dest.is_dir():
            boxfs.write_files(dest, files)


def record_failure(root: Path, assignment: str, student: str, errors: list[str]) -> None:
    """A submission that could not be graded gets a result record with ``status: failed`` and the
    reason, for ``mlbd report``; it has no digest, so the next run grades it again."""
    folder = root / score.RESULTS / assignment
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".tmp-failed-{student}"
    tmp.write_text(json.dumps({"student": student, "assignment": assignment, "status": "failed", "errors": errors}))
    os.replace(tmp, folder / f"{student}.json")


def jobs_hint(pool) -> int:
    return max(2, getattr(pool, "jobs", 2))


def _dumps(nb) -> str:
    import nbformat
    return nbformat.writes(nb)


def _summary(console: Console, assignment: str, rows: list[StudentResult]) -> None:
    table = Table(title=f"{assignment}: grading summary")
    for col in ("student", "status", "score", "max", "flags", "errors", "seconds"):
        table.add_column(col)
    for r in rows:
        table.add_row(r.student, r.status, f"{r.score:g}", f"{r.max_score:g}",
                      str(len(r.flags)) + (" (needs review)" if r.flags else ""),
                      (r.errors[0][:70] + (f" (+{len(r.errors) - 1})" if len(r.errors) > 1 else "")) if r.errors else "",
                      f"{r.seconds:.1f}" if r.seconds else "")
    Console().print(table)
    graded = sum(r.status == "graded" for r in rows)
    failed = sum(r.status == "failed" for r in rows)
    flagged = sum(bool(r.flags) for r in rows)
    Console().print(f"{graded} graded, {len(rows) - graded - failed} already up to date, {failed} failed, "
                    f"{flagged} flagged for review")
