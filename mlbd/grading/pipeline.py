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
from typing import Callable

import nbformat
from nbgrader.api import Gradebook, MissingEntry
from nbgrader.coursedir import CourseDirectory
from nbgrader.preprocessors import Execute
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from traitlets.config import Config
from traitlets.config.loader import PyFileConfigLoader

from ..course import CourseError
from ..variant import Variants
from . import boxfs, executors, instructor_run, prepare, score
from .engines import shared_engines
from .execute import execute_job
from .protocol import Job, JobNotebook, JobOutcome, ResultStore
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

    run = GradingRun(cd, cfg, assignment, store=ResultStore(root, assignment), sandbox_cfg=sandbox_cfg,
                     timeout=timeout, exclude=exclude, copy_max_bytes=box.copy_max_mb * 2**20)
    todo = []
    for s in found:
        rec = run.store.read(s)
        digest = prepare.submission_digest(Path(cd.format_path(cd.submitted_directory, s, assignment)))
        done = Path(cd.format_path(cd.autograded_directory, s, assignment)).is_dir()
        if not force and rec and rec.get("digest") == digest and done:
            run.results[s] = StudentResult(s, "skipped", rec.get("score", 0.0), rec.get("max_score", 0.0),
                                           rec.get("flags", []), rec.get("errors", []))
        else:
            todo.append(s)

    if todo:
        pool = executors.make(executor, jobs)
        try:
            checks = prepare.InsertIntegrityChecks(config=cfg)
            if checks.judge_literals and checks.judge_references:
                run.instructor_values(pool, console, quiet)
            with shared_engines():
                run.run(pool, todo, f"grading {assignment} ({pool.description}, sandbox {box.mode})", console, quiet)
        finally:
            pool.close()
    ordered = [run.results[s] for s in found]
    if not quiet:
        _summary(console, assignment, ordered)
    return ordered


@dataclass
class InFlight:
    """One submission between prepare and score."""
    sub: prepare.Submission
    started: float
    job: Job | None = None


@dataclass
class GradingRun:
    """One ``mlbd grade`` of an assignment: prepares each student (trusted), sends one ``Job`` per
    submission to the pool (its notebooks in nbgrader's order in one work dir, so files a notebook
    writes are there for the next, as with ``nbgrader autograde``; students run in parallel), and
    scores each submission once its outcome is back (the only gradebook writer); a result record
    per student. One submission that fails never stops the others."""
    cd: CourseDirectory
    cfg: Config
    assignment: str
    store: ResultStore
    sandbox_cfg: dict                # {"Sandbox": {...}}: the assignment's limits, plain data for workers
    timeout: int | None              # seconds per cell
    exclude: list[str]               # Autograde.exclude_overwriting: the student's own copy of these files
    copy_max_bytes: int
    results: dict[str, StudentResult] = field(default_factory=dict)
    pending: dict = field(default_factory=dict)      # future → InFlight
    expected: dict = field(default_factory=dict)     # notebook → grade_id → position → values (references)
    advance: Callable[[str], None] = field(default=lambda student: None, repr=False)   # progress bar

    def run(self, pool, students: list[str], title: str, console: Console, quiet: bool) -> None:
        progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TimeElapsedColumn(), TextColumn("{task.fields[last]}"), console=console,
                            disable=quiet, transient=False)
        with progress:
            task = progress.add_task(title, total=len(students), last="")
            self.advance = lambda student: progress.update(task, advance=1, last=student)
            for student in students:
                self.submit(pool, student)
                while len(self.pending) > 4 * jobs_hint(pool):   # prepare ahead while workers start their zygotes
                    self.collect(pool, block=True)
                self.collect(pool, block=False)
            while self.pending:
                self.collect(pool, block=True)

    def submit(self, pool, student: str) -> None:
        started = time.perf_counter()
        try:
            sub = prepare.prepare(self.cd, self.cfg, self.cd.db_url, self.assignment, student,
                                  seed=zlib.crc32(f"{self.assignment}/{student}".encode()), expected=self.expected)
            files = prepare.input_files(self.cd, self.assignment, student, self.exclude, self.copy_max_bytes)
        except Exception as exc:  # noqa: BLE001
            self.fail(student, f"preparing failed: {type(exc).__name__}: {exc}", 0.0)
            return
        runnable = sorted((nb for nb in sub.notebooks if nb.execute and nb.notebook is not None),
                          key=lambda nb: f"{nb.name}.ipynb")          # nbgrader's order: sorted file names
        flight = InFlight(sub, started)
        if not runnable:
            self.finish(flight, JobOutcome())
            return
        flight.job = Job(student, self.assignment,
                         [JobNotebook(nb.name, nbformat.writes(nb.notebook),
                                      nb.notebook.metadata.get("kernelspec", {}).get("name", "python3")) for nb in runnable],
                         files, self.job_config(student), self.timeout)
        self.pending[pool.submit(execute_job, flight.job)] = flight

    def instructor_values(self, pool, console: Console, quiet: bool) -> None:
        """The values the tests' references take in the instructor's notebooks (``references``):
        two sandboxed runs of source/, once per change of it (``.mlbd/references/``). Without them
        those checks stay in the kernel, as before; nothing else changes."""
        src = Path(self.cd.format_path(self.cd.source_directory, ".", self.assignment))
        cache = instructor_run.Cache(Path(self.cd.root), self.assignment)
        try:
            notebooks = {p.stem: p.read_bytes() for p in sorted(src.glob("*.ipynb")) if p.is_file() and not p.is_symlink()}
            files = {rel: Path(path).read_bytes() for rel, path in prepare._declared(self.cd, self.assignment).items()
                     if os.path.getsize(path) <= self.copy_max_bytes}
            key = instructor_run.digest(notebooks, files)
            saved = cache.load(key)
            if saved is not None:
                self.expected = saved
                return
            run = instructor_run.InstructorRun(self.assignment, notebooks)
            if not run.has_references():        # nothing to record: no run
                self.expected = {}
                cache.save(key, {})
                return
            jobs = [Job(f"({who})", self.assignment, [JobNotebook(*nb) for nb in run.notebooks_to_run(perturb)], files,
                        self.job_config(who), self.timeout)
                    for who, perturb in (("instructor", None), ("instructor-2", zlib.crc32(key.encode())))]
            if not quiet:
                console.print(f"the instructor's notebooks of {self.assignment}: two runs for the tests' reference values "
                              "(once per change of source/)")
            futures = [pool.submit(execute_job, job) for job in jobs]
            pool.wait(futures)
            outcomes = [f.result().notebooks for f in futures]
            self.expected = run.expected(*({o.name: o.notebook for o in out} for out in outcomes))
            if not any(o.crash for out in outcomes for o in out):     # a crash is not kept: next time again
                cache.save(key, self.expected)
        except Exception as exc:  # noqa: BLE001  (without them the checks stay in the kernel)
            self.expected = {}
            console.print(f"[bold yellow]warning:[/] the instructor's reference values could not be computed "
                          f"({type(exc).__name__}: {exc}); checks against a reference stay in the kernel")

    def job_config(self, student: str) -> dict:
        """The assignment's sandbox settings plus this student's variant key in the kernel's
        environment (``mlbd.variant``): the trusted side decides whose variant is graded."""
        box = dict(self.sandbox_cfg["Sandbox"])
        box["job_env"] = Variants(config=self.cfg).kernel_env(self.cd.root, self.cd.course_id, student)
        return {**self.sandbox_cfg, "Sandbox": box}

    def collect(self, pool, block: bool) -> None:
        if not self.pending:
            return
        for fut in pool.wait(list(self.pending), timeout=None if block else 0):
            flight = self.pending.pop(fut)
            try:
                done: JobOutcome = fut.result()
            except Exception as exc:  # noqa: BLE001  (worker crashed: report, keep going)
                done = JobOutcome.crashed(flight.job, f"{type(exc).__name__}: {exc}"[:300])
            self.finish(flight, done)

    def finish(self, flight: InFlight, done: JobOutcome) -> None:
        sub = flight.sub
        try:
            verdicts = score.stage(self.cd, self.cfg, sub, {o.name: o for o in done.notebooks})
            score.score(Path(self.cd.root), self.cd, self.cfg, sub, verdicts)     # (re)makes autograded/
            keep_files(self.cd, self.assignment, sub.student, done.files)
            summary = score.gradebook_scores(self.cd, self.assignment, sub.student)
            self.store.write_graded(sub.student, sub.digest, sub.errors, verdicts, summary)
            rec = self.store.read(sub.student) or {}
            self.results[sub.student] = StudentResult(sub.student, "graded", summary["score"], summary["max_score"],
                                                      rec.get("flags", []), rec.get("errors", []),
                                                      time.perf_counter() - flight.started)
        except Exception as exc:  # noqa: BLE001  (one submission never stops the run)
            self.fail(sub.student, f"scoring failed: {type(exc).__name__}: {exc}", time.perf_counter() - flight.started)
        else:
            self.advance(sub.student)

    def fail(self, student: str, why: str, seconds: float) -> None:
        self.results[student] = StudentResult(student, "failed", errors=[why[:400]], seconds=seconds)
        self.store.record_failure(student, self.results[student].errors)
        self.advance(student)


def keep_files(cd: CourseDirectory, assignment: str, student: str, files: dict[str, bytes]) -> None:
    """Files the notebooks wrote land in autograded/<student>/<assignment>/, as with nbgrader
    autograde (bounded by the sandbox; regular files only, written without following links)."""
    dest = Path(cd.format_path(cd.autograded_directory, student, assignment))
    if files and dest.is_dir():
        boxfs.write_files(dest, files)


def record_failure(root: Path, assignment: str, student: str, errors: list[str]) -> None:
    """A submission that could not be graded gets a result record with ``status: failed`` and the
    reason, for ``mlbd report``; it has no digest, so the next run grades it again."""
    ResultStore(root, assignment).record_failure(student, errors)


def jobs_hint(pool) -> int:
    return max(2, getattr(pool, "jobs", 2))


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
