"""No student content runs in a staff or student page (issue 17, invariant 2), in headless Chromium.

One hostile submission carries every payload class: ``<script>``, ``img onerror``, ``iframe
srcdoc``, ``svg onload``, ``details ontoggle``, ``javascript:`` links, a truncating
``<math><mtext><table><mglyph><style>`` element, an id that shadows a grading input, outputs
(HTML, JavaScript, SVG, markdown, an ``isolated`` HTML output, an image whose ``width`` metadata
injects an attribute), raw cells, attachments holding HTML, a reference to a missing attachment,
a notebook named ``<img … onerror=…>.ipynb`` (quoted in the grading notes) and ``report.xht``.
It is graded with ``mlbd grade`` (sandboxed); then the real formgrader (nbgrader's server
extension plus ``mlbd.formgrader``, in a Jupyter server on this course as the hub's service runs
it, token login instead of the hub) serves the TA's grading page, and ``nbgrader
generate_feedback`` writes the student's feedback. Every payload would set a ``window.__xss_*``
flag; the test asserts none is set, that every score and comment input is there and works, that
the rubric is shown to the TA (and not in feedback), and that active files are downloads in a
CSP sandbox.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

from mlbd import authoring
from mlbd.course import nbgrader, tool_env
from mlbd.formgrader import CONFIG_DIR
from mlbd.grading import workload as w

# `browser`: headless chromium, from conftest.py
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("render-safety")]

ASSIGNMENT, NB = "ps1", "safe"
RENDER_SETTINGS = '''
c.HTMLExporter.filters = {"markdown2html": "mlbd.render.sanitize.markdown2html",
                          "clean_html": "mlbd.render.sanitize.clean_html"}
c.HTMLExporter.preprocessors = ["mlbd.render.sanitize.SanitizeNotebook", "mlbd.render.rubric.Rubrics"]
'''
SOURCE = '''%% notebook points=7 budget_s=60
%% markdown
# Render safety
%% solution q1
def double(x):
    ### BEGIN SOLUTION
    return 2 * x
    ### END SOLUTION
%% tests t1 2
assert double(2) == 4, "double(2) should be 4"
%% answer why 3
Why does the test set stay untouched?
### BEGIN SOLUTION
RUBRIC_ANSWER_7c1: 1 point for naming the optimistic bias, 2 for the remedy.
### END SOLUTION
%% task judge 2
Make the plot readable.
=== BEGIN MARK SCHEME ===
RUBRIC_TASK_7c1: 1 point per readable axis.
=== END MARK SCHEME ===
'''
MARKDOWN_PAYLOADS = """Hostile answer.

<script>window.__xss_script = 1</script>
<img src="x" onerror="window.__xss_img = 1">
<iframe srcdoc="<script>parent.__xss_iframe = 1</script>"></iframe>
<svg onload="window.__xss_svg = 1"><circle r="5"/></svg>
<details open ontoggle="window.__xss_details = 1">d</details>
[click me](javascript:window.__xss_link=1) <a href="javascript:window.__xss_a=1" id="jslink">a</a>
<h3 id="why">a heading with a grading input's id</h3>
<math><mtext><table><mglyph><style><!--</style><img title="--&gt;&lt;/mglyph&gt;&lt;img src=1 onerror=window.__xss_mxss=1&gt;">
"""
TRUNCATE = "Truncation: <math><mtext><table><mglyph><style><img src=x onerror=window.__xss_trunc=1>"
OUTPUT_CODE = r'''from IPython.display import display, HTML, Javascript, SVG, Markdown
display(HTML('<img src=x onerror="window.__xss_html_out=1"><b>html output</b>'))
display(Javascript('window.__xss_js_out = 1'))
display(SVG('<svg xmlns="http://www.w3.org/2000/svg" onload="window.__xss_svg_out=1"><script>window.__xss_svg_script=1</script></svg>'))
display(Markdown('<details open ontoggle="window.__xss_md_out=1">md output</details>'))
display({"image/png": "AAAA"}, raw=True, metadata={"image/png": {"width": "1 onerror=window.__xss_width=1"}})
display({"text/html": "<img src=x onerror=window.parent.__xss_isolated=1>"}, raw=True, metadata={"text/html": {"isolated": True}})
print("<script>window.__xss_stdout=1</script>")
'''
EVIL_NAME = "<img src=x onerror=window.__xss_filename=1>"
XHT = ('<?xml version="1.0"?><html xmlns="http://www.w3.org/1999/xhtml"><body>'
       '<script>window.__xss_xht = 1</script></body></html>')
FLAGS = "Object.keys(window).filter(k => k.startsWith('__xss'))"
# elements of the rendered notebook with an event handler or a script URL (the page's own UI is outside #notebook)
ACTIVE = """[...document.querySelectorAll('#notebook *')].filter(e => e.tagName === 'SCRIPT' || e.tagName === 'IFRAME'
    || [...e.attributes].some(a => a.name.startsWith('on') || /^\\s*javascript:/i.test(a.value))).map(e => e.outerHTML.slice(0, 200))"""


def make_course(root: Path) -> Path:
    root.mkdir(parents=True)
    config = w.CONFIG.replace("TIMEOUT", "30") + w.MLBD_SETTINGS.replace("MEMORY", "1024") + RENDER_SETTINGS
    (root / "nbgrader_config.py").write_text(config)
    (root / "source" / ASSIGNMENT).mkdir(parents=True)
    nbformat.write(authoring.to_notebook(authoring.parse(SOURCE)), str(root / "source" / ASSIGNMENT / f"{NB}.ipynb"))
    nbgrader(root, "generate_assignment", ASSIGNMENT, "--force")
    return root


def hostile_submission(root: Path) -> None:
    nb = nbformat.read(str(root / "release" / ASSIGNMENT / f"{NB}.ipynb"), as_version=4)
    cells = []
    for cell in nb.cells:
        gid = cell.metadata.get("nbgrader", {}).get("grade_id")
        if gid == "q1":
            cell.source = "def double(x):\n    return 2 * x"
        if gid == "why":
            cell.source = MARKDOWN_PAYLOADS + "\n\n" + TRUNCATE
        if gid == "t1":     # free cells the student adds before the graded answer
            md = nbformat.v4.new_markdown_cell(MARKDOWN_PAYLOADS + "\n![att](attachment:page.html)\n![gone](attachment:missing.png)")
            md.attachments = {"page.html": {"text/html": "PHNjcmlwdD53aW5kb3cuX194c3NfYXR0PTE8L3NjcmlwdD4="}}
            raw = nbformat.v4.new_raw_cell("<script>window.__xss_raw = 1</script><img src=x onerror=window.__xss_raw_img=1>",
                                           metadata={"raw_mimetype": "text/html"})
            cells += [md, raw, nbformat.v4.new_code_cell(OUTPUT_CODE)]
        cells.append(cell)
    nb.cells = cells
    folder = w.submit(root, "mallory", nb, name=NB)
    shutil.copy(folder / f"{NB}.ipynb", folder / f"{EVIL_NAME}.ipynb")
    (folder / "report.xht").write_text(XHT)


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    root = make_course(tmp_path_factory.mktemp("render") / "course")
    hostile_submission(root)
    proc = subprocess.run([sys.executable, "-m", "mlbd.cli", "grade", ASSIGNMENT, "--course-dir", str(root), "--jobs", "1"],
                          env=tool_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    graded = root / "autograded" / "mallory" / ASSIGNMENT
    assert not (graded / "report.xht").exists(), "mlbd grade keeps active files out of autograded/"
    # Files stock `nbgrader autograde` (the formgrader's Autograde button) would copy as they are.
    (graded / "report.xht").write_text(XHT)
    (graded / "page.html").write_text("<script>window.__xss_html_file = 1</script>")
    (graded / "pic.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg" onload="window.__xss_svg_file=1"/>')
    (graded / "notes.txt").write_text("<script>window.__xss_txt = 1</script>")
    nbgrader(root, "generate_feedback", ASSIGNMENT, "--force")
    return root


def _port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def formgrader(course, tmp_path_factory):
    """nbgrader's formgrader and mlbd.formgrader in a Jupyter server on the course, as the hub's
    service runs it (config dirs on JUPYTER_CONFIG_PATH), logged in by token."""
    etc = tmp_path_factory.mktemp("etc")
    (etc / "jupyter_server_config.json").write_text(json.dumps({"ServerApp": {"jpserver_extensions": {
        "nbgrader.server_extensions.formgrader": True, "nbgrader.server_extensions.assignment_list": False,
        "nbgrader.server_extensions.course_list": False, "jupyter_lsp": False, "jupyterlab_jupytext": False}}}))
    port, token = _port(), secrets.token_hex(16)
    env = tool_env({"JUPYTER_CONFIG_PATH": f"{etc}{os.pathsep}{CONFIG_DIR}", "HOME": str(etc)})
    proc = subprocess.Popen([sys.executable, "-m", "jupyter_server", "--allow-root", "--no-browser", f"--port={port}",
                             "--ip=127.0.0.1", f"--ServerApp.root_dir={course}", f"--IdentityProvider.token={token}"],
                            cwd=course, env=env, stdout=subprocess.DEVNULL, stderr=open(etc / "server.log", "w"))
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                req = urllib.request.Request(f"{url}/formgrader/manage_assignments", headers={"Authorization": f"token {token}"})
                with urllib.request.urlopen(req, timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("formgrader did not start:\n" + (etc / "server.log").read_text()[-3000:])
        yield url, token, etc / "server.log"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def _submission(course: Path):
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{course / 'gradebook.db'}", "testcourse") as gb:
        nb = gb.find_submission_notebook(NB, ASSIGNMENT, "mallory")
        return nb.id, sorted(g.name for g in nb.grades), sorted(c.name for c in nb.comments)


def _manual(course: Path, grade_id: str):
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{course / 'gradebook.db'}", "testcourse") as gb:
        nb = gb.find_submission_notebook(NB, ASSIGNMENT, "mallory")
        return next(g for g in nb.grades if g.name == grade_id).manual_score


def _watch(page) -> list[str]:
    seen: list[str] = []
    page.on("dialog", lambda d: (seen.append(f"dialog: {d.message}"), d.dismiss()))
    page.on("console", lambda m: seen.append(f"console: {m.text}") if "__xss" in m.text else None)
    return seen


def test_ta_grading_page_runs_no_student_content(course, formgrader, browser, tmp_path):
    url, token, log = formgrader
    sub_id, grades, comments = _submission(course)
    ctx = browser.new_context(viewport={"width": 1400, "height": 900}, extra_http_headers={"Authorization": f"token {token}"})
    page = ctx.new_page()
    page.set_default_timeout(60_000)
    seen = _watch(page)
    page.goto(f"{url}/formgrader/submissions/{sub_id}/?index=0")
    page.wait_for_selector("input.score")
    page.wait_for_timeout(2000)              # onload/onerror/ontoggle handlers fire by now
    for sel in ("details", "img", "a"):      # and hover/click handlers
        for el in page.locator(f"#notebook {sel}").all()[:20]:
            try:
                el.click(timeout=500, no_wait_after=True)
            except Exception:  # noqa: BLE001
                pass
    page.wait_for_timeout(500)
    page.screenshot(path=str(tmp_path / "ta-grading-page.png"), full_page=True)
    assert page.evaluate(FLAGS) == [] and seen == [], (page.evaluate(FLAGS), seen)
    # every score and comment input survives the truncating payload, and ids are not shadowed
    assert sorted(page.eval_on_selector_all("input.score", "els => els.map(e => e.id)")) == grades
    assert sorted(i[: -len("-comment")] for i in page.eval_on_selector_all("textarea.comment", "els => els.map(e => e.id)")) == comments
    assert page.evaluate("document.getElementById('why').tagName") == "INPUT"
    # the student's text is still there (escaped or formatted), and the notes name the file inertly
    html = page.content()
    assert "Hostile answer." in html and "Make the plot readable." in html and "html output" in html
    assert "Grading notes" in html               # the notes that quote the hostile file name are shown
    assert page.evaluate(ACTIVE) == []
    # the rubric of each manual cell is shown next to it, to the TA
    for marker in ("RUBRIC_ANSWER_7c1", "RUBRIC_TASK_7c1"):
        assert page.locator(f"text={marker}").is_visible(), marker
    # the page still works: a score typed by the TA reaches the gradebook
    page.fill("#why", "2")
    page.press("#why", "Tab")
    for _ in range(20):
        if _manual(course, "why") == 2:
            break
        page.wait_for_timeout(500)
    assert _manual(course, "why") == 2
    ctx.close()


def test_active_files_are_downloads_in_a_sandbox(course, formgrader, browser):
    url, token, _ = formgrader
    sub_id, _, _ = _submission(course)
    auth = {"Authorization": f"token {token}"}

    def get(name):
        req = urllib.request.Request(f"{url}/formgrader/submissions/{sub_id}/{urllib.request.quote(name)}", headers=auth)
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.headers
    for name in ("report.xht", "page.html", "pic.svg"):
        h = get(name)
        assert h["Content-Disposition"].startswith("attachment"), (name, dict(h))
        assert "sandbox" in h["Content-Security-Policy"] and h["X-Content-Type-Options"] == "nosniff", (name, dict(h))
        assert not h["Content-Type"].startswith(("text/html", "application/xhtml", "image/svg")), (name, dict(h))
    assert get("notes.txt")["Content-Type"].startswith("text/plain")
    assert get(f"{NB}.ipynb")["Content-Type"].startswith("text/plain")
    # in the browser: opening them runs nothing in the formgrader's origin
    ctx = browser.new_context(extra_http_headers=auth, accept_downloads=True)
    page = ctx.new_page()
    seen = _watch(page)
    page.goto(f"{url}/formgrader/submissions/{sub_id}/?index=0")
    page.wait_for_selector("input.score")
    for name in ("report.xht", "page.html", "pic.svg", "notes.txt"):
        page.evaluate("n => { const f = document.createElement('iframe'); f.src = n; document.body.appendChild(f); }", name)
    page.wait_for_timeout(2000)
    assert page.evaluate(FLAGS) == [] and seen == []
    frames = [f for f in page.frames if f != page.main_frame]
    for f in frames:
        try:
            assert f.evaluate(FLAGS) == []
        except Exception as exc:  # noqa: BLE001  (a sandboxed or download frame cannot be scripted: fine)
            assert "__xss" not in str(exc)
    ctx.close()


def test_feedback_runs_no_student_content(course, browser, tmp_path):
    files = [course / "feedback" / "mallory" / ASSIGNMENT / f"{NB}.html"]    # (other .html there: the student's own files)
    assert files[0].is_file(), "no feedback written"
    ctx = browser.new_context()
    page = ctx.new_page()
    seen = _watch(page)
    for f in files:
        page.goto(f.as_uri())
        page.wait_for_timeout(1500)
        for el in page.locator("details, a, img").all()[:30]:
            try:
                el.click(timeout=500, no_wait_after=True)
            except Exception:  # noqa: BLE001
                pass
        assert page.evaluate(FLAGS) == [] and seen == [], (f.name, page.evaluate(FLAGS), seen)
        assert page.evaluate(ACTIVE) == [], f.name
        html = f.read_text()
        assert "RUBRIC_" not in html, "a rubric reached the student's feedback"
    page.screenshot(path=str(tmp_path / "feedback.png"), full_page=True)
    assert "Hostile answer." in (course / "feedback" / "mallory" / ASSIGNMENT / f"{NB}.html").read_text()
    ctx.close()
