"""The hub's exchange keeps each submission private to the course account (real Unix users).

Needs root (it creates throw-away accounts). No hub process: the same config dirs the hub's
spawner gives users, and nbgrader run as each user.
"""
from __future__ import annotations

import os
import stat
import sys

import pytest

from mlbd.hub import accounts, launcher

from hub_support import cleanup, make_settings, nbgrader_as, probe, run_as

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(os.geteuid() != 0, reason="creates Unix accounts: run as root"),
              pytest.mark.xdist_group("hub")]

NB = "L01_quickcheck.ipynb"


@pytest.fixture(scope="module")
def course():
    s = make_settings("hx", students=2)
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
