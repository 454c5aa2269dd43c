"""`mlbd`: the command line, a thin layer over the library modules.

Every subcommand parses its arguments, calls one library function and turns ``CourseError`` into
a one-line message with exit status 2.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .course import CourseError, find_course_dir


def _course(args) -> Path:
    if getattr(args, "course_dir", None):
        path = Path(args.course_dir).resolve()
        if not (path / "nbgrader_config.py").is_file():
            raise CourseError(f"{path} is not a course directory (no nbgrader_config.py)")
        return path
    return find_course_dir()


def cmd_build(args) -> int:
    from .build import build

    build(_course(args), args.assignments, only_changed=args.only_changed)
    return 0


def cmd_nb(args) -> int:
    from . import authoring

    if args.action == "import":
        authoring.import_text(Path(args.src), Path(args.dest))
        print(f"wrote {args.dest}")
    else:
        text = authoring.export_text(Path(args.src))
        if args.dest:
            Path(args.dest).write_text(text)
        else:
            sys.stdout.write(text)
    return 0


def cmd_bench(args) -> int:
    from . import bench

    return bench.run(args.what, _course(args), args)


def cmd_demo(args) -> int:
    from .demo import run_demo

    return run_demo(_course(args), args.assignment, workdir=args.workdir)


def cmd_otter(args) -> int:
    from . import otter

    course = _course(args)
    out = Path(args.out or course / "otter" / args.assignment).resolve()
    for name, paths in otter.convert(course, args.assignment, out).items():
        print(f"{name}:")
        for key in ("student", "autograder_zip", "master"):
            print(f"  {key:15} {paths[key]}")
    print("not expressible in otter (graded by hand on Gradescope):")
    for line in otter.UNSUPPORTED:
        print(f"  - {line}")
    return 0


def cmd_grade(args) -> int:
    from .grading.pipeline import grade

    grade(_course(args), args.assignment, students=args.student or None, jobs=args.jobs,
          executor=args.executor, force=args.force, sandbox=args.sandbox, config_file=args.config)
    return 0


def cmd_report(args) -> int:
    from .report import report

    if args.items:
        from .items_report import write

        for kind, path in write(_course(args), args.assignment, args.out).items():
            print(f"{kind:5} {path}")
        return 0
    return report(_course(args), args.assignment, fmt=args.format, plots=args.plots)


def cmd_similarity(args) -> int:
    from .similarity import run

    return run(_course(args), args.assignment, source=args.source, archive=args.archive, out=args.out,
               top=args.top)


def cmd_mutants(args) -> int:
    from .mutants.session import main as mutants_main

    return mutants_main(_course(args), args.assignments, function=args.function, jobs=args.jobs,
                        size=args.sample, seed=args.seed, timeout=args.timeout, out=args.out)


def cmd_deadlines(args) -> int:
    from .deadlines import show

    show(_course(args), args.assignment, args.config)
    return 0


def cmd_hub(args) -> int:
    from .hub import launcher

    if args.action == "clean-inbound":
        from .hub.exchange import clean_inbound_of_hub

        clean_inbound_of_hub(launcher.settings_for(_course(args), args.state_dir), args.assignments)
        return 0
    return launcher.main(args.action, _course(args), args)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mlbd", description="Autograded coursework platform for Machine Learning with Big-Data")
    sub = p.add_subparsers(dest="command", required=True)

    b = sub.add_parser("build", help="regenerate release/ from source/ with nbgrader")
    b.add_argument("assignments", nargs="*", metavar="ASSIGNMENT")
    b.add_argument("--course-dir")
    b.add_argument("--only-changed", action="store_true",
                   help="skip assignments whose release was built from today's source (release/.build.json)")
    b.set_defaults(func=cmd_build)

    n = sub.add_parser("nb", help="convert an instructor notebook to/from the plain-text authoring format")
    n.add_argument("action", choices=["import", "export"])
    n.add_argument("src")
    n.add_argument("dest", nargs="?")
    n.set_defaults(func=cmd_nb)

    be = sub.add_parser("bench", help="benchmarks that print tables (content: per-notebook runtime; data)")
    from .bench import BENCHES

    be.add_argument("what", choices=sorted(BENCHES))
    be.add_argument("assignments", nargs="*", metavar="ASSIGNMENT")
    be.add_argument("--course-dir")
    be.add_argument("--out", help="also write the table as CSV here")
    be.add_argument("--users", type=int, default=50, help="hub benchmark: concurrent students")
    be.add_argument("--repeat", type=int, default=3,
                    help="grade benchmark: alternating sandboxed/unsandboxed runs the overhead is the median of")
    be.add_argument("--coursework", default="coursework2",
                    help="grade benchmark: also time one reference submission of this assignment ('' to skip)")
    be.add_argument("--sizes", default="100,300,1000", help="analytics benchmark: synthetic cohort sizes")
    be.set_defaults(func=cmd_bench)

    o = sub.add_parser("otter", help="convert an assignment to otter-grader (student notebook + Gradescope autograder zip)")
    o.add_argument("assignment")
    o.add_argument("--out", help="output folder (default: otter/ASSIGNMENT)")
    o.add_argument("--course-dir")
    o.set_defaults(func=cmd_otter)

    g = sub.add_parser("grade", help="autograde submissions: sandboxed, parallel, resumable, tamper-aware")
    g.add_argument("assignment")
    g.add_argument("--course-dir")
    g.add_argument("--student", action="append", metavar="ID", help="grade only this student (repeatable)")
    g.add_argument("--jobs", type=int, help="parallel kernels (default: number of cores)")
    g.add_argument("--executor", default="local", help="local (process pool), dask (LocalCluster) or tcp://HOST:PORT")
    g.add_argument("--force", action="store_true", help="regrade submissions that are already graded")
    g.add_argument("--sandbox", choices=["bwrap", "none"], help="none: no sandbox (development only)")
    g.add_argument("--config", help="settings from this nbgrader_config.py, not the course's own (mlbd hub grade: a root-owned copy)")
    g.set_defaults(func=cmd_grade)

    dl = sub.add_parser("deadlines", help="apply the configured due date, extensions and late policy to the "
                        "gradebook (no regrading) and show who was late")
    dl.add_argument("assignment")
    dl.add_argument("--course-dir")
    dl.add_argument("--config", help="settings from this nbgrader_config.py, not the course's own")
    dl.set_defaults(func=cmd_deadlines)

    r = sub.add_parser("report", help="grades of an assignment: table, csv (nbgrader export), json, canvas, plots")
    r.add_argument("assignment")
    r.add_argument("--course-dir")
    r.add_argument("--format", default="table", choices=["table", "csv", "json", "canvas"])
    r.add_argument("--plots", metavar="DIR", help="write per-question and total score histograms (PNG) here")
    r.add_argument("--items", action="store_true",
                   help="question statistics (difficulty, discrimination, weak visible tests, alpha, flags, times): HTML+CSV+JSON")
    r.add_argument("--out", metavar="DIR", help="--items: output folder (default .mlbd/reports/ASSIGNMENT)")
    r.set_defaults(func=cmd_report)

    si = sub.add_parser("similarity", help="flag similar solution cells between students (copydetect); never changes a grade")
    si.add_argument("assignment")
    si.add_argument("--course-dir")
    si.add_argument("--source", choices=["submitted", "autograded"], default="submitted", help="where the students' notebooks are read")
    si.add_argument("--archive", action="append", metavar="DIR",
                    help="earlier cohorts: folders holding <student>/ASSIGNMENT/*.ipynb (repeatable)")
    si.add_argument("--out", metavar="DIR", help="output folder (default .mlbd/reports/ASSIGNMENT)")
    si.add_argument("--top", type=int, default=50, help="pairs shown side by side in the HTML report")
    si.set_defaults(func=cmd_similarity)

    h = sub.add_parser("hub", help="the embedded JupyterHub: start (prepare + run), stop, restart (the hub only), status, release/grade/feedback ASSIGNMENT, "
                       "clean-inbound ASSIGNMENT (root: remove the inbound entries collect skips)")
    h.add_argument("action", choices=["start", "stop", "restart", "status", "prepare", "release", "grade", "feedback",
                                        "clean-inbound"])
    h.add_argument("assignments", nargs="*", metavar="ASSIGNMENT")
    h.add_argument("--course-dir")
    h.add_argument("--state-dir", help="runtime state (default: .hub/ when every user can traverse to it)")
    h.add_argument("--port", type=int, help="public port (default 8000)")
    h.add_argument("--roster", help="roster CSV (default hub_config/roster.csv)")
    h.add_argument("--background", action="store_true", help="return once the hub answers")
    h.set_defaults(func=cmd_hub)

    m = sub.add_parser("mutants", help="mutation testing: mutate each solution cell, run its tests, report survivors")
    m.add_argument("assignments", nargs="*", metavar="ASSIGNMENT")
    m.add_argument("--function", help="only this solution cell (grade id) or function name")
    m.add_argument("--jobs", type=int, help="parallel warm kernels (default: number of cores)")
    m.add_argument("--sample", type=int, metavar="N", help="a fixed sample of N mutants per assignment")
    m.add_argument("--seed", type=int, default=0, help="the sample's seed")
    m.add_argument("--timeout", type=int, default=60, help="seconds per cell before a mutant counts as killed")
    m.add_argument("--out", help="write every result as JSON here")
    m.add_argument("--course-dir")
    m.set_defaults(func=cmd_mutants)

    d = sub.add_parser("demo", help="the whole cycle without a browser: release, 3 students submit, grade, feedback")
    d.add_argument("--assignment", default="lecture01")
    d.add_argument("--workdir", help="scratch course copy (default: a temporary folder)")
    d.add_argument("--course-dir")
    d.set_defaults(func=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except CourseError as exc:
        print(f"mlbd: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
