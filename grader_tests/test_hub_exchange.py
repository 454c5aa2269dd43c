"""The hub's exchange keeps each submission private to the course account (real Unix users), and
no student can stop, slow or hijack collection or feedback release for anyone else; submission
times come from the exchange (issue 17, invariants 1 and 4; due dates: issue 14, point 3).

Needs root (it creates throw-away accounts). No hub process: the same config dirs the hub's
spawner gives users, and nbgrader run as each user.
"""
from __future__ import annotations

import contextlib
import datetime
import io
import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from nbgrader.api import Gradebook
from nbgrader.utils import notebook_hash

from mlbd.hub import accounts, exchange, launcher

from hub_support import ROOT, cleanup, make_settings, nbgrader_as, probe, run_as

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(os.geteuid() != 0, reason="creates Unix accounts: run as root"),
              pytest.mark.xdist_group("hub")]

NB = "L01_quickcheck.ipynb"


@pytest.fixture(scope="module")
def course():
    s = make_settings("hx", students=5)
    s.release = ["lecture01"]
    try:
        launcher.prepare(s)
        yield s
    finally:
        cleanup(s)


def test_students_load_the_private_exchange(course):
    code = ("from nbgrader.apps.nbgraderapp import NbGraderApp\nfrom nbgrader.exchange import ExchangeFactory\n"
            "app = NbGraderApp(); app.initialize([])\nf = ExchangeFactory(config=app.config)\n"
            "print(f.submit.__module__ + '.' + f.submit.__name__, f.collect.__name__, app.config.Exchange.root)")
    out = run_as("hx_s1", code, course).stdout.split()
    assert out[:2] == ["mlbd.hub.exchange.PrivateSubmit", "PrivateCollect"]
    assert out[2] == str(course.exchange)


def test_submission_is_private_to_the_course_account(course):
    nbgrader_as("hx_s1", course, "fetch_assignment", "lecture01")
    nbgrader_as("hx_s1", course, "submit", "lecture01")
    inbound = course.exchange / course.course_id / "inbound"
    assert stat.S_IMODE(inbound.stat().st_mode) == 0o3733
    (sub,) = [p for p in inbound.iterdir() if p.name.startswith("hx_s1+lecture01+")]
    grader_gid = accounts.user_exists(accounts.course_account(course.course_id)) and \
        __import__("grp").getgrnam(accounts.course_account(course.course_id)).gr_gid
    assert stat.S_IMODE(sub.stat().st_mode) == 0o750
    for f in sub.iterdir():
        st = f.stat()
        assert stat.S_IMODE(st.st_mode) == 0o640, f
        assert st.st_gid == grader_gid, f"{f.name} is not in the course account's group"
    assert not [p for p in inbound.iterdir() if p.name.startswith(".staging")]

    # Another student, even one who knows the exact path, can do nothing with it.
    seen = probe("hx_s2", course, sub, NB)
    assert seen == {k: "denied" for k in seen}, seen

    # The course account reads and collects it.
    launcher.nbgrader_as_grader(course, "collect", "lecture01")
    collected = course.course_dir / "submitted" / "hx_s1" / "lecture01" / NB
    assert collected.is_file()
    assert stat.S_IMODE((course.course_dir / "submitted").stat().st_mode) == 0o700


def test_forged_submission_is_not_collected(course):
    """A student who plants a folder named after someone else does not get it collected."""
    code = ("import os, sys, shutil\nd = os.path.join(sys.argv[1], 'hx_s1+lecture01+2099-01-01 00:00:00.000000 UTC+forged')\n"
            "os.mkdir(d)\nopen(os.path.join(d, 'L01_quickcheck.ipynb'), 'w').write('{}')\n"
            "open(os.path.join(d, 'timestamp.txt'), 'w').write('2099-01-01 00:00:00.000000 UTC')\n")
    run_as("hx_s2", code, course, str(course.exchange / course.course_id / "inbound"))
    proc = launcher.nbgrader_as_grader(course, "collect", "lecture01", "--update", check=False)
    assert "forged" in (proc.stderr + proc.stdout) and "skipping" in (proc.stderr + proc.stdout)
    ts = (course.course_dir / "submitted" / "hx_s1" / "lecture01" / "timestamp.txt").read_text()
    assert not ts.startswith("2099")


def test_links_in_a_submission_are_not_followed(course):
    """The course account collects: a link planted in a student's own submission must not make it
    copy the instructor's notebook (or the gradebook) into that student's submission."""
    source_nb = course.course_dir / "source" / "lecture01" / NB
    assert source_nb.is_file()
    code = ("import os, sys\nd = os.path.join(sys.argv[1], 'hx_s2+lecture01+2026-01-01 00:00:00.000000 UTC+links')\n"
            "os.mkdir(d)\nos.symlink(sys.argv[2], os.path.join(d, 'L01_quickcheck.ipynb'))\n"
            "os.symlink(sys.argv[3], os.path.join(d, 'course'))\nos.mkfifo(os.path.join(d, 'pipe'))\n"
            "open(os.path.join(d, 'notes.txt'), 'w').write('mine')\n"
            "open(os.path.join(d, 'page.html'), 'w').write('<script>1</script>')\n"
            "open(os.path.join(d, 'timestamp.txt'), 'w').write('2026-01-01 00:00:00.000000 UTC')\n")
    run_as("hx_s2", code, course, str(course.exchange / course.course_id / "inbound"), str(source_nb), str(course.course_dir))
    proc = launcher.nbgrader_as_grader(course, "collect", "lecture01", "--update", check=False)
    out = proc.stderr + proc.stdout
    assert "a symbolic link is not followed" in out and "not a regular file" in out, out[-3000:]
    assert "page.html: the formgrader would serve" in out
    got = course.course_dir / "submitted" / "hx_s2" / "lecture01"
    assert sorted(p.name for p in got.iterdir()) == ["notes.txt", "timestamp.txt"]
    assert (got / "notes.txt").read_text() == "mine"


def test_homes_are_private(course):
    home1 = os.path.expanduser("~hx_s1")
    assert stat.S_IMODE(os.stat(home1).st_mode) == 0o700
    out = run_as("hx_s2", "import os, sys\ntry:\n    os.listdir(sys.argv[1]); print('allowed')\nexcept PermissionError:\n    print('denied')",
                 course, home1).stdout.strip()
    assert out == "denied"
    assert stat.S_IMODE(course.course_dir.stat().st_mode) == 0o700


# -- hostile inbound entries (issue 17: collect DoS, victim's work dropped, cost blow-up, feedback
# release DoS) and due dates (issue 14). One scene, collected, graded and released once:
#   hx_s3 (attacker) plants an unparsable folder, a 2 GB sparse file, 5,000 files, a folder named
#     after hx_s4 (dated 2099), and a hand-made folder with no submission_secret.txt;
#   hx_s4 submits before the due date; hx_s5 after it, then forges timestamp.txt and the folder's
#     name back to before the due date.
PLANT = r"""
import os, shutil, sys
inbound, name, kind, notebook = sys.argv[1:5]
d = os.path.join(inbound, name)
os.mkdir(d)
shutil.copyfile(notebook, os.path.join(d, "L01_quickcheck.ipynb"))
open(os.path.join(d, "timestamp.txt"), "w").write("2026-01-01 00:00:00.000000 UTC")
if kind == "sparse":
    with open(os.path.join(d, "data.bin"), "wb") as fh:
        fh.truncate(2 * 1024 ** 3)
elif kind == "many":
    for i in range(5000):
        open(os.path.join(d, f"f{i:04}.txt"), "w").write("x")
elif kind == "unreadable":
    os.chmod(d, 0o300)
"""

FORGE = r"""
import os, sys
inbound, me, mine = sys.argv[1:4]   # submit printed the name; inbound cannot be listed
os.chmod(mine, 0o755)
os.chmod(os.path.join(mine, "timestamp.txt"), 0o644)
open(os.path.join(mine, "timestamp.txt"), "w").write("2026-01-01 00:00:00.000000 UTC")
os.rename(mine, os.path.join(inbound, me + "+lecture01+2026-01-01 00:00:00.000000 UTC+early"))
"""

PLANTED = {"unparsable": "hx_s3+lecture01+not-a-date",
           "sparse": "hx_s3+lecture01+2026-11-01 00:00:00.000000 UTC+sparse",
           "many": "hx_s3+lecture01+2026-11-02 00:00:00.000000 UTC+many",
           "victim": "hx_s4+lecture01+2099-01-01 00:00:00.000000 UTC+planted",
           "unreadable": "hx_s3+lecture01+2026-10-15 00:00:00.000000 UTC+unreadable",
           "handmade": "hx_s3+lecture01+2026-10-01 00:00:00.000000 UTC+handmade"}


def _inbound(s) -> Path:
    return s.exchange / s.course_id / "inbound"


def _fetch_and_answer(s, user: str) -> Path:
    from mlbd.demo import _answer

    nbgrader_as(user, s, "fetch_assignment", "lecture01")
    fetched = Path(os.path.expanduser(f"~{user}")) / s.course_id / "lecture01"
    _answer(fetched / NB, ROOT / "source" / "lecture01" / NB, "correct", ROOT / "grader_tests" / "wrong_answers" / "lecture01.txt")
    return fetched


def _configure(s, lines: str) -> None:
    """Course settings, where the course account (collect, release) and `mlbd hub grade` read them."""
    for cfg in (s.course_dir / "nbgrader_config.py", getattr(s, "grading_config", None)):
        if cfg is not None and cfg.is_file():
            with open(cfg, "a") as fh:
                fh.write("\n" + lines + "\n")


@pytest.fixture(scope="module")
def attacked(course):
    inbound = _inbound(course)
    fetched3 = _fetch_and_answer(course, "hx_s3")
    for kind, name in PLANTED.items():
        run_as("hx_s3", PLANT, course, str(inbound), name, kind, str(fetched3 / NB))
    fetched4 = _fetch_and_answer(course, "hx_s4")
    nbgrader_as("hx_s4", course, "submit", "lecture01")
    time.sleep(0.05)
    due = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
    _configure(course, f"c.Deadlines.due = {{'lecture01': '{exchange.utc_text(due)}'}}")
    release = launcher.nbgrader_as_grader(course, "release_assignment", "lecture01", "--force")
    time.sleep(0.05)
    fetched5 = _fetch_and_answer(course, "hx_s5")
    nbgrader_as("hx_s5", course, "submit", "lecture01")
    (mine,) = [p for p in inbound.iterdir() if p.name.startswith("hx_s5+lecture01+")]
    run_as("hx_s5", FORGE, course, str(inbound), "hx_s5", str(mine))

    t0 = time.monotonic()
    collect = launcher.nbgrader_as_grader(course, "collect", "lecture01", "--update", check=False)
    collect_s = time.monotonic() - t0
    with contextlib.redirect_stdout(io.StringIO()) as hub_grade:   # what `mlbd hub grade` prints
        launcher.collect_and_grade(course, "lecture01")
    launcher.nbgrader_as_grader(course, "generate_feedback", "lecture01", "--force")
    feedback = launcher.nbgrader_as_grader(course, "release_feedback", "lecture01", check=False)
    return {"due": due, "collect": collect, "hub_grade": hub_grade.getvalue(), "collect_s": collect_s, "feedback": feedback, "release": release,
            "fetched4": fetched4, "fetched5": fetched5, "submitted": course.course_dir / "submitted"}


def _log(proc) -> str:
    return proc.stdout + proc.stderr


def test_one_students_unparsable_or_oversized_entry_stops_nobody(attacked):
    """collect DoS: stock collect crashed on the unparsable name (or exited 1 on the 2 GB file) and
    collected nobody."""
    out = _log(attacked["collect"])
    assert attacked["collect"].returncode == 0, out[-3000:]
    assert "hx_s3+lecture01+not-a-date: the time in its name does not parse" in out, out[-3000:]
    assert f"{PLANTED['sparse']}: more than" in out and "bytes (CourseDirectory.max_dir_size)" in out, out[-3000:]
    assert f"{PLANTED['unreadable']}: cannot be read (Permission denied" in out, out[-3000:]
    for student in ("hx_s4", "hx_s5"):
        assert (attacked["submitted"] / student / "lecture01" / NB).is_file(), student
    got3 = attacked["submitted"] / "hx_s3" / "lecture01"   # the attacker's own acceptable entry only
    assert sorted(p.name for p in got3.iterdir()) == [NB, "timestamp.txt"]


def test_hub_grade_tells_the_instructor_what_collect_skipped_and_the_summary(attacked):
    out = attacked["hub_grade"]
    assert "the time in its name does not parse" in out and "bytes (CourseDirectory.max_dir_size)" in out, out[-3000:]
    assert "skipped" in out and "inbound entr" in out, out[-3000:]
    assert "grading summary" in out and "hx_s4" in out and "graded" in out, out[-3000:]


def test_a_folder_named_after_the_victim_does_not_drop_their_work(attacked, course):
    """victim's work dropped: stock collect took the planted folder as hx_s4's newest, refused it,
    and never collected the real one. The course account cannot remove it; root can."""
    out = _log(attacked["collect"])
    assert f"{PLANTED['victim']}: it names hx_s4 but belongs to hx_s3" in out, out[-3000:]
    got = attacked["submitted"] / "hx_s4" / "lecture01"
    assert (got / NB).read_text() == (attacked["fetched4"] / NB).read_text()
    assert not (got / "timestamp.txt").read_text().startswith("2099")
    planted = _inbound(course) / PLANTED["victim"]

    # The course account may rename it (it owns the sticky inbound) but not empty it.
    rm = "import shutil, sys\ntry:\n    shutil.rmtree(sys.argv[1]); print('removed')\nexcept PermissionError:\n    print('denied')"
    assert launcher.as_user(accounts.course_account(course.course_id), [sys.executable, "-c", rm, str(planted)],
                            cwd="/").stdout.strip() == "denied"
    proc = subprocess.run([sys.executable, "-m", "mlbd.cli", "hub", "clean-inbound", "lecture01",
                           "--state-dir", course.state_dir, "--course-dir", str(ROOT)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    left = sorted(p.name for p in _inbound(course).iterdir())
    for kind in ("unparsable", "sparse", "many", "victim"):
        assert PLANTED[kind] not in left and f"removed {PLANTED[kind]}" in proc.stdout, (kind, proc.stdout)
    # acceptable entries stay: the hand-made one, the victim's and the late student's real ones
    assert PLANTED["handmade"] in left
    assert any(n.startswith("hx_s4+lecture01+") and not n.endswith("planted") for n in left)
    assert "hx_s5+lecture01+2026-01-01 00:00:00.000000 UTC+early" in left


def test_five_thousand_files_cost_one_bounded_listing(attacked, course, tmp_path):
    """cost blow-up: 5,000 files in one submission were collected and listed once per file while
    grading (212 s). Collect now refuses it after max_files+1 entries; a raised quota stays linear."""
    out = _log(attacked["collect"])
    quota = exchange.SubmissionQuota()
    assert f"{PLANTED['many']}: more than {quota.max_files} files" in out, out[-3000:]
    assert not list((attacked["submitted"] / "hx_s3").rglob("f0*.txt"))
    # linear: the 5,000-file folder measured whole, as root, with the quota raised past it
    folder = tmp_path / "root+lecture01+2026-01-01 00:00:00.000000 UTC"
    folder.mkdir()
    for i in range(5000):
        (folder / f"f{i:04}.txt").write_text("x")
    quota.max_files = 10_000
    t0 = time.perf_counter()
    e = exchange.inspect_entry(str(folder), "lecture01", quota, 10 ** 9)
    assert e.reason is None and e.files == 5000
    assert time.perf_counter() - t0 < 5


def test_feedback_release_skips_a_broken_entry_and_serves_everyone_else(attacked, course):
    """feedback release DoS: stock release_feedback crashed at the hand-made submission (no
    submission_secret.txt) and left the students after it without feedback."""
    out = _log(attacked["feedback"])
    assert attacked["feedback"].returncode == 0, out[-3000:]
    assert "hx_s3" in out and "submission_secret.txt is missing" in out, out[-3000:]
    released = {p.name for p in (course.exchange / course.course_id / "feedback").iterdir()}
    for student in ("hx_s4", "hx_s5"):
        secret = (course.course_dir / "feedback" / student / "lecture01" / "submission_secret.txt").read_text()
        assert notebook_hash(secret=secret, notebook_id=NB[:-6]) + ".html" in released, student


def _late(course, student: str):
    with Gradebook(f"sqlite:///{course.course_dir / 'gradebook.db'}", course.course_id) as gb:
        sub = gb.find_submission("lecture01", student)
        nb = gb.find_submission_notebook(NB[:-6], "lecture01", student)
        return sub.timestamp, sub.duedate, nb.score, nb.late_submission_penalty or 0.0


def test_lateness_is_judged_by_the_exchange_not_the_student(attacked, course):
    """A due date in the config reaches the gradebook and the released folder; hx_s4 (on time) keeps
    every point, hx_s5 (late, then forged timestamp.txt and the folder name) loses 10 %."""
    due = attacked["due"]
    assert "DEADLINE.md" in os.listdir(attacked["fetched5"])
    assert "10% of its score" in (attacked["fetched5"] / "DEADLINE.md").read_text()
    received4, due4, score4, penalty4 = _late(course, "hx_s4")
    received5, due5, score5, penalty5 = _late(course, "hx_s5")
    assert due4 == due5 == due
    assert received4 <= due < received5, (received4, due, received5)
    assert not (attacked["submitted"] / "hx_s5" / "lecture01" / "timestamp.txt").read_text().startswith("2026-01-01")
    assert score4 > 0 and penalty4 == 0
    assert score5 > 0 and penalty5 == pytest.approx(0.1 * score5)
    assert "says it was submitted at 2026-01-01" in _log(attacked["collect"])


def test_an_extension_removes_the_penalty_without_regrading(attacked, course):
    _configure(course, "c.Deadlines.extensions = {'lecture01': {'hx_s5': 24}}")
    proc = launcher.as_user(accounts.course_account(course.course_id),
                            [sys.executable, "-m", "mlbd.cli", "deadlines", "lecture01", "--course-dir", str(course.course_dir)],
                            cwd=course.course_dir, env=launcher.grader_env(course))
    assert "hx_s5" in proc.stdout and "on time" in proc.stdout.split("hx_s5")[1].splitlines()[0], proc.stdout
    _, due5, score5, penalty5 = _late(course, "hx_s5")
    assert due5 == attacked["due"] + datetime.timedelta(hours=24)
    assert penalty5 == 0 and score5 > 0
    assert _late(course, "hx_s4")[3] == 0
