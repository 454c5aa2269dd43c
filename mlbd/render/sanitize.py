"""No student content runs in a staff or student page: an allowlist sanitizer (nh3) at nbconvert's hooks.

nbgrader's ``formgrade`` and ``feedback`` templates override nbconvert's ``markdowncell`` block
without its ``should_sanitize_html`` branch, so ``c.HTMLExporter.sanitize_html = True`` never
reaches markdown there (answer cells, the grading notes, TA comments): a ``<script>`` in a
student's answer ran in the TA's page. nbconvert's own image blocks also write an output's
``width``/``height`` metadata unquoted (``width=1 onerror=...`` adds an attribute), and a
markdown reference to a missing attachment makes the whole page fail to render.

So, configured in ``nbgrader_config.py`` for every ``HTMLExporter`` (the formgrader's and
``nbgrader generate_feedback``'s)::

    c.HTMLExporter.sanitize_html = True
    c.HTMLExporter.preprocessors = ["mlbd.render.sanitize.SanitizeNotebook", ...]
    c.HTMLExporter.filters = {"markdown2html": "mlbd.render.sanitize.markdown2html",
                              "clean_html": "mlbd.render.sanitize.clean_html"}

- ``markdown2html`` (every template renders markdown through it) renders as nbconvert does and
  passes the result through ``clean_html``; a cell that cannot be rendered shows as plain text;
- ``clean_html`` is one allowlist (nh3): formatting tags only, no ``id``/``name`` (a student's
  element could shadow a grading input's id), classes only of the syntax highlighter, links only
  to http(s)/mailto/relative URLs, images only from relative or ``data:image/...`` URLs;
- ``SanitizeNotebook`` cleans the data the templates insert without a filter: output types and
  metadata (numeric width/height only), attachments (images only), raw cells, nbgrader ids.
"""
from __future__ import annotations

import html
import re

import nh3
from jinja2 import pass_context
from nbconvert.preprocessors import Preprocessor
from nbformat import NotebookNode
from traitlets import Bool

TAGS = set(nh3.ALLOWED_TAGS) - {"area", "map"}
ATTRIBUTES = {tag: set(attrs) for tag, attrs in nh3.ALLOWED_ATTRIBUTES.items()}
ATTRIBUTES["*"] = {"class", "title", "lang"}
URL_SCHEMES = {"http", "https", "mailto", "data"}
IMAGE_DATA = re.compile(r"data:image/(png|jpeg|gif|webp|svg\+xml);base64,[A-Za-z0-9+/=\s]*\Z", re.I)
# The syntax highlighter's (pygments) short classes and nbconvert's own; nothing a page script keys on.
SAFE_CLASS = re.compile(r"(highlight|hll|anchor-link|language-[\w+-]{1,30}|[a-z][a-z0-9]{0,3})\Z")
IMAGE_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp", "image/svg+xml")
OUTPUT_TYPES = {"text/plain", "text/html", "text/markdown", "text/latex", "application/json", *IMAGE_TYPES}
OUTPUT_FIELDS = {"output_type", "name", "text", "data", "metadata", "execution_count", "ename", "evalue", "traceback"}
GRADE_ID = re.compile(r"[^A-Za-z0-9_.\-]")


def _attribute(tag: str, attr: str, value: str) -> str | None:
    if attr == "class":
        kept = [c for c in value.split() if SAFE_CLASS.match(c)]
        return " ".join(kept) or None
    if attr in ("src", "href"):
        low = value.strip().lower()
        if low.startswith("data:"):
            return value if tag == "img" and IMAGE_DATA.match(value.strip()) else None
        if tag == "img" and re.match(r"[a-z][a-z0-9+.\-]*:|//", low):
            return None        # no remote images: they would tell a third party who grades when
    return value


def clean_html(fragment) -> str:
    """One HTML fragment, sanitized with the allowlist above (nh3: parsed as HTML5, re-serialized
    balanced, so an unclosed element cannot swallow what the page puts after it)."""
    text = fragment.decode() if isinstance(fragment, bytes) else str(fragment)
    return nh3.clean(text, tags=TAGS, attributes=ATTRIBUTES, url_schemes=URL_SCHEMES,
                     attribute_filter=_attribute, clean_content_tags={"script", "style"},
                     link_rel="noopener noreferrer nofollow")


@pass_context
def markdown2html(context, source) -> str:
    """nbconvert's markdown rendering (attachments, math, highlighting), then ``clean_html``."""
    from nbconvert.filters.markdown_mistune import IPythonRenderer, MarkdownWithMath

    cell = context.get("cell", {}) or {}
    try:
        renderer = IPythonRenderer(escape=False, attachments=cell.get("attachments", {}))
        rendered = MarkdownWithMath(renderer=renderer).render(str(source))
    except Exception:  # noqa: BLE001  (a student's markdown must not stop the page from rendering)
        rendered = f"<pre>{html.escape(str(source))}</pre>"
    return clean_html(rendered)


def _number(value) -> int | float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)) and 0 < value < 100_000:
        return value
    if isinstance(value, str) and re.fullmatch(r"\d{1,5}(\.\d{1,3})?", value.strip()):
        return float(value) if "." in value else int(value)
    return None


def _output_metadata(meta) -> dict:
    """Per-type metadata the templates use: numeric width/height, alt text, ``unconfined``."""
    out: dict = {}
    for mime, value in dict(meta or {}).items():
        if mime not in OUTPUT_TYPES or not isinstance(value, dict):
            continue
        kept = {}
        for key in ("width", "height"):
            num = _number(value.get(key))
            if num is not None:
                kept[key] = num
        if isinstance(value.get("alt"), str):
            kept["alt"] = value["alt"][:500]
        if value.get("unconfined") is True:
            kept["unconfined"] = True
        if kept:
            out[mime] = kept
    return out


class SanitizeNotebook(Preprocessor):
    """Student data that nbconvert's templates insert without a filter, made inert before rendering."""

    enabled = Bool(True).tag(config=True)   # registered by name, nbconvert would disable it

    def preprocess(self, nb, resources):
        nb.metadata.pop("widgets", None)
        for key in ("title", "authors"):
            nb.metadata.pop(key, None)
        return super().preprocess(nb, resources)

    def preprocess_cell(self, cell, resources, index):
        meta = cell.get("metadata", {})
        tags = meta.get("tags")
        if tags is not None:
            meta["tags"] = [str(t)[:100] for t in tags if isinstance(t, str)] if isinstance(tags, list) else []
        nbg = meta.get("nbgrader")
        if isinstance(nbg, dict) and "grade_id" in nbg:
            nbg["grade_id"] = GRADE_ID.sub("_", str(nbg["grade_id"]))[:200]
        if "attachments" in cell:
            cell["attachments"] = NotebookNode({name: {m: v for m, v in bundle.items() if m in IMAGE_TYPES and isinstance(v, str)}
                                   for name, bundle in dict(cell.get("attachments") or {}).items()
                                   if isinstance(bundle, dict)})
        if cell.get("cell_type") == "raw":
            cell.source = clean_html(cell.get("source", ""))
        if cell.get("cell_type") == "code":
            cell.outputs = [self._output(o) for o in cell.get("outputs", []) if isinstance(o, dict)]
        return cell, resources

    def _output(self, out):
        for key in set(out) - OUTPUT_FIELDS:
            del out[key]
        if "data" in out:
            data = {m: v for m, v in dict(out["data"] or {}).items() if m in OUTPUT_TYPES}
            if isinstance(data.get("text/html"), (str, list)):
                value = data["text/html"]
                data["text/html"] = clean_html("".join(value) if isinstance(value, list) else value)
            out["data"] = NotebookNode(data)
        if "metadata" in out:
            out["metadata"] = NotebookNode(_output_metadata(out["metadata"]))
        return out
