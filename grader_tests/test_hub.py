"""The embedded hub, live: a real JupyterHub on free ports in a throw-away state dir, with its own
Unix accounts (prefix ``ht_``), stopped in teardown. Needs root, configurable-http-proxy and, for
the browser test, Debian's chromium.

The browser test walks the course cycle through the real pages and saves a screenshot at each step
under its tmp dir (printed at the end).
"""
from __future__ import annotations

import datetime
import json
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

import pytest

from mlbd.hub import launcher
from mlbd.hub.client import HubUser

from hub_support import cleanup, login as hub_login, make_settings, password_for, probe, run_as

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("hub"),
              pytest.mark.skipif(os.geteuid() != 0, reason="creates Unix accounts: run as root"),
              pytest.mark.skipif(not shutil.which("configurable-http-proxy"), reason="needs configurable-http-proxy (make hub installs it)")]

ROOT = Path(__file__).resolve().parent.parent
ASSIGNMENT = "lecture01"
NB = "L01_quickcheck.ipynb"

@pytest.fixture(scope="module")
def hub():
    s = make_settings("ht", students=3)
    proc = None
    try:
        launcher.prepare(s)
        # lecture 1 due in ten days: released again with its DEADLINE.md (the Assignment List shows it)
        s.due = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=10, minutes=5)  # type: ignore[attr-defined]
        for cfg in (s.course_dir / "nbgrader_config.py", s.grading_config):
            with open(cfg, "a") as fh:
                fh.write(f"\nc.Deadlines.due = {{{ASSIGNMENT!r}: '{s.due:%Y-%m-%d %H:%M} UTC'}}\n")
        launcher.release(s, ASSIGNMENT, force=True)
        t0 = time.monotonic()
        proc = launcher.start(s, background=True, timeout=180)
        s.started_in = time.monotonic() - t0  # type: ignore[attr-defined]
        yield s
    finally:
        if proc is not None:
            launcher.stop(s, proc)
        cleanup(s)


def user(s, name) -> HubUser:
    return hub_login(s, name)


def answered(nb: dict, mode: str) -> dict:
    """The fetched notebook with the instructor's answers (``correct``) or one known wrong answer."""
    from mlbd.demo import _answer

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / NB
        path.write_text(json.dumps(nb))
        _answer(path, ROOT / "source" / ASSIGNMENT / NB, mode, ROOT / "grader_tests" / "wrong_answers" / f"{ASSIGNMENT}.txt")
        return json.loads(path.read_text())


def _gradebook(s):
    from nbgrader.api import Gradebook

    return Gradebook(s.gradebook_url)


def submission_id(s, student: str) -> str:
    with _gradebook(s) as gb:
        return gb.find_submission_notebook(NB[:-6], ASSIGNMENT, student).id


def manual_grade(s, student: str, grade_id: str):
    with _gradebook(s) as gb:
        nb = gb.find_submission_notebook(NB[:-6], ASSIGNMENT, student)
        grade = next(g for g in nb.grades if g.name == grade_id)
        comment = next(c for c in nb.comments if c.name == grade_id)
        return grade.manual_score, comment.manual_comment or ""


def test_roles_services_and_profiles(hub):
    s1 = user(hub, "ht_s1")
    # the formgrader service: students are refused, TAs and instructors get in
    r = s1.http.get(f"{hub.url}/services/formgrader/formgrader", timeout=60)
    assert r.status_code == 403
    for staff in ("ht_ta", "ht_instructor"):
        r = user(hub, staff).http.get(f"{hub.url}/services/formgrader/formgrader", timeout=120)
        assert r.status_code == 200 and "Manage Assignments" in r.text, staff
    # groups from the roster
    groups = {g["name"]: set(g["users"]) for g in user(hub, "ht_instructor").hub_api("GET", "/groups").json()}
    assert groups["students"] == {"ht_s1", "ht_s2", "ht_s3"} and groups["tas"] == {"ht_ta"}

    # no GPU here: the GPU profile says so at spawn time
    s3 = user(hub, "ht_s3")
    r = s3.hub_api("POST", "/users/ht_s3/server", json={"profile": "gpu"})
    said = r.text  # a spawn that fails at once answers with the error; a slower one reports it as progress
    if r.status_code in (201, 202):
        said = s3.http.get(f"{hub.url}/hub/api/users/ht_s3/server/progress", headers={"X-XSRFToken": s3._xsrf()},
                           timeout=120).text
    assert "needs a GPU" in said and "CPU (standard)" in said, said[:500]

    # a student's own server has the Assignments extension but no formgrader
    spawn_s = s1.spawn("cpu")
    assert spawn_s < 120
    assert s1.server("GET", "/formgrader").status_code == 404
    # nor server extensions students do not need (lighter spawns): the LSP proxy, Notebook 7
    assert [s1.server("GET", p).status_code for p in ("/lsp/status", "/tree")] == [404, 404]
    assert s1.server("GET", "/lab").status_code == 200
    assert s1.server("GET", "/assignments", params={"course_id": hub.course_id}).status_code == 200
    page_cfg = json.loads((hub.etc / "student" / "labconfig" / "page_config.json").read_text())
    assert page_cfg["disabledExtensions"]["@jupyter/nbgrader:create-assignment"]
    s1.stop_server()


# -- the browser ---------------------------------------------------------------------------------
class Shots:
    def __init__(self, folder: Path):
        self.folder = folder
        self.n = 0

    def __call__(self, page, name: str) -> None:
        self.n += 1
        page.screenshot(path=str(self.folder / f"{self.n:02d}-{name}.png"), full_page=False)


def login(page, s, name: str) -> None:
    page.goto(f"{s.url}/hub/login")
    page.fill("#username_input", name)
    page.fill("#password_input", password_for(s, name))
    page.click("#login_submit")


def start_lab(page, s, name: str, shots: Shots) -> None:
    page.wait_for_url(re.compile(r".*/hub/(spawn|home|spawn-pending).*|.*/user/.*"), timeout=60_000)
    if "/hub/spawn/" in page.url or page.url.rstrip("/").endswith("/hub/spawn"):
        shots(page, f"{name}-profiles")
        page.check("#profile-cpu")
        page.click("input[type=submit], button[type=submit]")
    elif "/hub/home" in page.url:
        page.goto(f"{s.url}/hub/spawn/{name}")
        return start_lab(page, s, name, shots)
    page.wait_for_url(re.compile(rf".*/user/{name}/lab.*"), timeout=180_000)
    page.wait_for_selector(".jp-LabShell, #jp-main-dock-panel", timeout=180_000)
    page.wait_for_timeout(1500)


def open_assignments(page) -> None:
    page.locator(".lm-MenuBar-itemLabel", has_text="Nbgrader").click()
    page.locator(".lm-Menu-itemLabel", has_text="Assignment List").click()
    page.wait_for_selector("#nbgrader-assignment-list", timeout=60_000)
    page.wait_for_timeout(1500)


def test_browser_course_cycle(hub, browser, tmp_path):
    shots = Shots(tmp_path)
    folder = f"{hub.course_id}/{ASSIGNMENT}"

    # 1. student1 logs in, opens Assignments, fetches lecture 1
    ctx = browser.new_context(viewport={"width": 1400, "height": 900})
    page = ctx.new_page()
    page.set_default_timeout(60_000)
    login(page, hub, "ht_s1")
    start_lab(page, hub, "ht_s1", shots)
    shots(page, "student1-lab")
    open_assignments(page)
    # the due date, under the assignment's name (mlbd's labextension, from the exchange's list)
    due = page.locator("#released_assignments_list .mlbd-due")
    due.wait_for(timeout=60_000)
    assert re.fullmatch(rf"Due \w+ \d+ \w+ \d{{4}}, \d\d:\d\d \(Europe/London\) · in (9|10) days", due.inner_text()), due.inner_text()
    shots(page, "student1-assignments")
    page.locator("#released_assignments_list button", has_text="Fetch").first.click()
    page.wait_for_selector("#fetched_assignments_list >> text=" + ASSIGNMENT, timeout=60_000)
    page.locator("#fetched_assignments_list .mlbd-due").wait_for(timeout=60_000)
    shots(page, "student1-fetched")

    # 2. answers (saved through the server's contents API, as the editor saves), validates, submits
    s1 = user(hub, "ht_s1")
    path = f"{folder}/{NB}"
    s1.write_notebook(path, answered(s1.read_notebook(path), "correct"))
    page.goto(f"{hub.url}/user/ht_s1/lab/tree/{path}")
    page.wait_for_selector(".jp-Notebook", timeout=120_000)
    page.wait_for_timeout(2000)
    shots(page, "student1-notebook-answered")
    page.locator(".jp-Toolbar-item button, .jp-ToolbarButtonComponent", has_text="Validate").first.click()
    dialog = page.locator(".jp-Dialog")
    dialog.wait_for(timeout=180_000)
    page.wait_for_function("document.querySelector('.jp-Dialog') && !/Validating/.test(document.querySelector('.jp-Dialog').innerText)",
                           timeout=180_000)
    shots(page, "student1-validated")
    text = dialog.inner_text()
    assert "Success" in text or "passes" in text, text[:500]
    page.keyboard.press("Escape")
    open_assignments(page)
    page.locator("#fetched_assignments_list button", has_text="Submit").first.click()
    page.wait_for_selector("#submitted_assignments_list >> text=" + ASSIGNMENT, timeout=120_000)
    shots(page, "student1-submitted")

    # 3. student2 submits a partly wrong answer (through the same server endpoints the panel uses)
    s2 = user(hub, "ht_s2")
    s2.spawn("cpu")
    s2.assignment_action("fetch", ASSIGNMENT, hub.course_id)
    s2.write_notebook(path, answered(s2.read_notebook(path), "partly wrong"))
    s2.assignment_action("submit", ASSIGNMENT, hub.course_id)

    # a student can read neither another student's home nor their submission
    home1 = os.path.expanduser("~ht_s1")
    code = "import os, sys\ntry:\n    os.listdir(sys.argv[1]); print('allowed')\nexcept PermissionError:\n    print('denied')"
    assert run_as("ht_s2", code, hub, home1).stdout.strip() == "denied"
    inbound = hub.exchange / hub.course_id / "inbound"
    sub1 = next(p for p in inbound.iterdir() if p.name.startswith(f"ht_s1+{ASSIGNMENT}+"))
    seen = probe("ht_s2", hub, sub1, NB)
    assert set(seen.values()) == {"denied"}, seen
    # and is refused the formgrader
    page.goto(f"{hub.url}/services/formgrader/formgrader")
    page.wait_for_load_state()
    shots(page, "student1-formgrader-403")
    assert "403" in page.content()
    ctx.close()

    # 4. the instructor collects and grades (mlbd grade, sandboxed) and looks at the formgrader
    launcher.collect_and_grade(hub, ASSIGNMENT)
    ctx = browser.new_context(viewport={"width": 1400, "height": 900})
    page = ctx.new_page()
    page.set_default_timeout(60_000)
    login(page, hub, "ht_instructor")
    page.wait_for_load_state()
    page.goto(f"{hub.url}/services/formgrader/formgrader/gradebook/{ASSIGNMENT}/{NB[:-6]}")
    page.wait_for_selector("text=Submission #2", timeout=60_000)  # names are hidden by default
    shots(page, "instructor-formgrader-submissions")
    ctx.close()

    # 5. the TA grades the manual answer of student1 and comments
    ctx = browser.new_context(viewport={"width": 1400, "height": 900})
    page = ctx.new_page()
    page.set_default_timeout(60_000)
    login(page, hub, "ht_ta")
    page.wait_for_load_state()
    page.goto(f"{hub.url}/services/formgrader/formgrader/gradebook/{ASSIGNMENT}/{NB[:-6]}")
    page.wait_for_selector("text=Submission #1", timeout=60_000)
    shots(page, "ta-formgrader-manual-grading")
    page.goto(f"{hub.url}/services/formgrader/formgrader/submissions/{submission_id(hub, 'ht_s1')}/?index=0")
    page.wait_for_selector("#why_not_test", timeout=60_000)
    page.locator("#why_not_test").scroll_into_view_if_needed()
    page.fill("#why_not_test", "2")
    page.press("#why_not_test", "Tab")
    page.fill("#why_not_test-comment", "Good: the test set stays untouched until the very end. (TA)")
    page.press("#why_not_test-comment", "Tab")
    page.wait_for_timeout(3000)
    shots(page, "ta-graded-manual-answer")
    ctx.close()
    grade, comment = manual_grade(hub, "ht_s1", "why_not_test")
    assert grade == 2 and "TA" in comment

    # 6. feedback released (as the course account)
    launcher.release_feedback(hub, ASSIGNMENT)

    # 7. student1 fetches the feedback and sees the score
    ctx = browser.new_context(viewport={"width": 1400, "height": 900})
    page = ctx.new_page()
    page.set_default_timeout(60_000)
    login(page, hub, "ht_s1")
    page.wait_for_url(re.compile(r".*/user/ht_s1/.*|.*/hub/.*"), timeout=120_000)
    page.goto(f"{hub.url}/user/ht_s1/lab")
    page.wait_for_selector(".jp-LabShell", timeout=180_000)
    open_assignments(page)
    page.locator("#submitted_assignments_list button", has_text="Fetch Feedback").first.click()
    page.wait_for_selector("#submitted_assignments_list >> text=view feedback", timeout=120_000)
    shots(page, "student1-feedback-fetched")
    feedback = sorted((Path(os.path.expanduser("~ht_s1")) / hub.course_id / ASSIGNMENT / "feedback").rglob("*.html"))
    assert feedback, "no feedback file in the student's home"
    rel = feedback[-1].relative_to(os.path.expanduser("~ht_s1"))
    page.goto(f"{hub.url}/user/ht_s1/files/{rel}")
    page.wait_for_load_state()
    shots(page, "student1-feedback")
    html = page.content()
    assert re.search(r"Score: 20\.0 / 20\.0|20(\.0)?\s*/\s*20", html), html[:2000]
    ctx.close()
    print(f"screenshots: {tmp_path}")


def test_admin_page_offers_only_what_works_here(hub, browser):
    """The instructor's admin page: students' servers can be started, stopped and opened; the
    controls the roster and `mlbd hub stop` own (add or edit users, groups, shutting the hub down)
    are not offered, since each would fail (403) or diverge from the roster."""
    ctx = browser.new_context(viewport={"width": 1400, "height": 900})
    page = ctx.new_page()
    page.set_default_timeout(60_000)
    try:
        login(page, hub, "ht_instructor")
        page.wait_for_url(re.compile(r".*/(hub|user)/.*"), timeout=60_000)
        page.goto(f"{hub.url}/hub/admin")
        page.wait_for_selector("text=ht_s3", timeout=60_000)            # the user table rendered
        page.wait_for_timeout(1000)
        works = [label for label in ("Start Server", "Stop Server", "Start All", "Stop All")
                 if page.get_by_role("button", name=label).first.is_visible()]
        assert works, "the page offers no server control at all (did it render?)"
        offered = [label for label in ("Add Users", "Edit User", "Manage Groups", "Shutdown Hub")
                   if page.get_by_text(label, exact=True).first.is_visible()]
        assert not offered, f"controls that cannot work here are offered: {offered}"
    finally:
        ctx.close()
