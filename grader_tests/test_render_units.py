"""Fast checks of the pieces behind safe pages and safe exports (no kernel, server or browser):
the HTML allowlist, the notebook sanitizer, rubric extraction, the formgrader's file types,
CSV/Canvas export neutralisation and the report table. The browser proof is test_render_safety.py."""
from __future__ import annotations

import io
import re

import nbformat
import pytest
from rich.console import Console

from mlbd import report
from mlbd.export import neutralise
from mlbd.formgrader.files import ROUTE, inline_type
from mlbd.render import rubric
from mlbd.render.sanitize import SanitizeNotebook, clean_html

pytestmark = pytest.mark.unit

PAYLOADS = [
    '<script>window.x=1</script>', '<img src=x onerror="window.x=1">', '<iframe srcdoc="<script>parent.x=1</script>">',
    '<svg onload="window.x=1"><circle/></svg>', '<details open ontoggle="window.x=1">d</details>',
    '<a href="javascript:window.x=1">l</a>', '<a href=" JaVaScRiPt:window.x=1">l</a>', '<form action="javascript:1"><button>b',
    '<math><mtext><table><mglyph><style><!--</style><img title="--&gt;&lt;img src=1 onerror=alert(1)&gt;">',
    '<object data="x.swf"></object>', '<embed src="x">', '<base href="//evil/">', '<meta http-equiv="refresh" content="0;url=//evil">',
    '<link rel=stylesheet href=//evil/x.css>', '<div style="position:fixed;top:0">cover</div>', '<input autofocus onfocus=alert(1)>',
    '<a href="data:text/html,<script>alert(1)</script>">d</a>', '<img src="data:text/html;base64,PHNjcmlwdD4=">',
]


@pytest.mark.parametrize("payload", PAYLOADS)
def test_clean_html_leaves_nothing_active(payload):
    out = clean_html(payload).lower()
    assert not re.search(r"<(script|iframe|svg|style|object|embed|base|meta|link|form|input|button|math)\b", out), out
    assert not re.search(r"\son\w+\s*=", out) and "javascript:" not in out and "style=" not in out, out
    assert "data:text" not in out, out


def test_clean_html_keeps_formatting_images_and_highlighting():
    html = ('<p><b>bold</b> <a href="https://example.org/x">link</a></p><img src="plot.png" width="100">'
            '<img src="data:image/png;base64,iVBORw0KGgo="><div class="highlight"><pre><span class="k">def</span></pre></div>')
    out = clean_html(html)
    for kept in ("<b>bold</b>", 'href="https://example.org/x"', 'src="plot.png"', 'width="100"',
                 'src="data:image/png;base64,iVBORw0KGgo="', 'class="highlight"', 'class="k"'):
        assert kept in out, (kept, out)


def test_clean_html_drops_ids_foreign_classes_and_remote_images():
    out = clean_html('<h2 id="why" class="navbar-fixed-top score k">x</h2><img src="https://tracker.example/p.gif">')
    assert 'id=' not in out and "navbar" not in out and "score" not in out and 'class="k"' in out
    assert "tracker" not in out


def test_unclosed_elements_are_balanced():
    out = clean_html("<div><table><tr><td><b>open")
    assert out.count("<div>") == out.count("</div>") and out.count("<b>") == out.count("</b>")


def _code_cell(outputs):
    cell = nbformat.v4.new_code_cell("x")
    cell.outputs = [nbformat.from_dict(o) for o in outputs]
    return cell


def test_sanitize_notebook_outputs_metadata_attachments_raw_ids():
    pp = SanitizeNotebook()
    cell = _code_cell([
        {"output_type": "display_data", "data": {"image/png": "AAAA", "application/javascript": "alert(1)",
                                                 "text/html": "<img src=x onerror=alert(1)>",
                                                 "application/vnd.jupyter.widget-view+json": {"model_id": "x"}},
         "metadata": {"image/png": {"width": "1 onerror=alert(1)", "height": 50, "alt": "a\"b"},
                      "filenames": {"image/png": "javascript:alert(1)"}, "text/html": {"isolated": True}}},
    ])
    cell.outputs[0]["svg_filename"] = "javascript:1"
    out, _ = pp.preprocess_cell(cell, {}, 0)
    o = out.outputs[0]
    assert set(o.data) == {"image/png", "text/html"} and "onerror" not in o.data["text/html"]
    assert o.metadata == {"image/png": {"height": 50, "alt": 'a"b'}}
    assert "svg_filename" not in o
    md = nbformat.v4.new_markdown_cell("![a](attachment:p.html)")
    md.attachments = {"p.html": {"text/html": "PHNjcmlwdD4="}, "ok.png": {"image/png": "AAAA"}}
    md.metadata["nbgrader"] = {"grade_id": 'x" onfocus="alert(1)', "solution": True}
    md.metadata["tags"] = ['a" onmouseover="x', 3]
    out, _ = pp.preprocess_cell(md, {}, 0)
    assert out.attachments == {"p.html": {}, "ok.png": {"image/png": "AAAA"}}
    assert re.fullmatch(r"[A-Za-z0-9_.\-]+", out.metadata.nbgrader.grade_id)
    assert out.metadata.tags == ['a" onmouseover="x']      # the template quotes and escapes tags
    raw = nbformat.v4.new_raw_cell("<script>alert(1)</script><b>b</b>")
    assert pp.preprocess_cell(raw, {}, 0)[0].source == "<b>b</b>"


def test_rubrics_of_answers_and_tasks_and_removal():
    answer = nbformat.v4.new_markdown_cell("Why?\n### BEGIN SOLUTION\nRUBRIC A\n### END SOLUTION")
    answer.metadata["nbgrader"] = {"grade_id": "a", "solution": True, "grade": True, "points": 2}
    task = nbformat.v4.new_markdown_cell("Do it.\n=== BEGIN MARK SCHEME ===\nRUBRIC T\n=== END MARK SCHEME ===\nafter")
    task.metadata["nbgrader"] = {"grade_id": "t", "task": True, "points": 1}
    plain = nbformat.v4.new_markdown_cell("### BEGIN SOLUTION\nnot graded\n### END SOLUTION")
    assert (rubric.rubric_of(answer), rubric.rubric_of(task), rubric.rubric_of(plain)) == ("RUBRIC A", "RUBRIC T", "")
    assert rubric.without_rubric(task.source) == "Do it.\nafter"


def test_formgrader_serves_only_inert_types_inline():
    assert inline_type("plot.PNG") == "image/png" and inline_type("data.csv").startswith("text/plain")
    assert inline_type("answer.py").startswith("text/plain")
    for active in ("report.xht", "page.html", "x.xhtml", "pic.svg", "a.js", "b.mht", "c.xml", "d.pdf", "Makefile", "e.htm"):
        assert inline_type(active) is None, active
    rx = re.compile(ROUTE + "$")
    assert rx.match("/formgrader/submissions/abc/report.xht") and rx.match("/formgrader/submissions/abc/sub/x.html")
    for nbgrader_own in ("/formgrader/submissions/abc/", "/formgrader/submissions/abc/next", "/formgrader/submissions/abc/prev_incorrect",
                         "/formgrader/submissions/components/bootstrap/x.css"):
        assert not rx.match(nbgrader_own), nbgrader_own


@pytest.mark.parametrize("text", ["=HYPERLINK(\"http://x\")", "+1+1", "-2+3", "@SUM(A1)", "\tx", "\rx"])
def test_neutralise_formula_prefixes(text):
    assert neutralise(text) == "'" + text


def test_neutralise_leaves_plain_text():
    assert neutralise("Smith, Jo") == "Smith, Jo" and neutralise(None) == "" and neutralise(3.5) == "3.5"


def test_report_table_wraps_and_lists_every_status():
    long_flag = "rewrote a test cell: " + "the assertion on line 3 of t1 was replaced by a pass statement " * 3 + "END_OF_FLAG"
    data = {"assignment": "ps1", "questions": {"sk/t1": 2.0}, "submissions": [
        report.Row("alice", report.GRADED, 2.0, 2.0, flags=[long_flag], cells={"sk/t1": 2.0}),
        report.Row("bob", report.FAILED, 0.0, 2.0, errors=["preparing failed: ValueError: bad notebook END_OF_REASON"]),
        report.Row("carol", report.MISSING, 0.0, 2.0, errors=["no submission"]),
    ]}
    buf = io.StringIO()
    report.table(data, Console(file=buf, width=80))
    text = buf.getvalue()
    assert max(len(line) for line in text.splitlines()) <= 80
    flat = re.sub(r"[\s│┃|]+", "", text)
    for whole in (long_flag, "preparing failed: ValueError: bad notebook END_OF_REASON", "no submission"):
        assert re.sub(r"\s+", "", whole) in flat, whole
    assert all(w in text for w in ("failed", "missing", "alice", "bob", "carol"))
