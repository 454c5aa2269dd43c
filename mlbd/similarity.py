"""`mlbd similarity ASSIGNMENT`: flag pairs of students whose solution cells are alike, for a human.

Fingerprinting is copydetect's (tokenised with Pygments: every name becomes ``V``/``F``, strings
``S``, comments and whitespace dropped; k-grams winnowed, Schleimer et al. 2003), so renamed
variables, added comments, blank lines and reordered functions do not hide a copy. What this module
adds for notebooks:

- a student's document is the code of their **solution cells** only (the cells whose nbgrader
  ``grade_id`` the release marks as solutions), one document per student over all notebooks;
- the **release's handed-out code** (stubs, signatures, set-up cells) is boilerplate: its
  fingerprints are removed, and a cell left unchanged or **trivial** (under ``min_tokens``
  Python tokens) is dropped;
- fingerprints shared by more than ``common_share`` of the cohort (the one obvious way to write
  a short exercise) are removed too, as MOSS does, so independent correct solutions do not rank
  above copies;
- pairs are pre-selected with one sparse product (shared fingerprints), then compared exactly with
  ``copydetect.compare_files``; earlier cohorts (``--archive``) are compared with this one only.

It reads notebooks and writes a report (HTML with side-by-side highlighted matches, every text
escaped, and CSV); it never opens the gradebook for writing or changes a grade.
"""
from __future__ import annotations

import csv
import html
import io
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import nbformat
import numpy as np
from copydetect import CodeFingerprint, compare_files
from copydetect.utils import get_token_coverage, highlight_overlap

K = 25              # copydetect's default noise threshold (k-gram length, tokenised characters)
WINDOW = 6          # guarantee threshold 30 - noise threshold 25 + 1 (copydetect's defaults)


@dataclass(frozen=True)
class Settings:
    k: int = K
    window: int = WINDOW
    min_tokens: int = 12         # a cell with fewer Python tokens than this is trivial
    common_share: float = 0.25   # fingerprints in more than this share of the cohort are common knowledge
    min_overlap: float = 0.2     # pre-selection: shared fingerprints / the smaller document's
    top: int = 50                # pairs shown side by side
    jobs: int | None = None      # fingerprinting processes (default: one per core)
    max_cell_chars: int = 20_000  # a pasted data dump must not make the report take hours


@dataclass(frozen=True)
class Document:
    label: str                   # the student id, or "<archive>/<student>"
    code: str
    archived: bool = False


@dataclass(frozen=True)
class Pair:
    a: str
    b: str
    similarity_a: float          # share of a's fingerprinted code found in b
    similarity_b: float
    shared_tokens: int
    archived: bool               # b is from an earlier cohort

    @property
    def score(self) -> float:
        return (self.similarity_a + self.similarity_b) / 2


# ---------------------------------------------------------------------------------------------
# Documents from notebooks
# ---------------------------------------------------------------------------------------------

def _grade_id(cell) -> str | None:
    meta = cell.get("metadata", {}) if isinstance(cell, dict) else {}
    return (meta.get("nbgrader") or {}).get("grade_id") if isinstance(meta, dict) else None


def release_code(release_dir: Path) -> tuple[dict[str, dict[str, str]], str]:
    """``({notebook: {solution grade_id: handed-out source}}, all handed-out code)`` of a release."""
    solutions: dict[str, dict[str, str]] = {}
    handed_out = []
    for path in sorted(release_dir.glob("*.ipynb")):
        nb = nbformat.read(str(path), as_version=4)
        sol = solutions.setdefault(path.stem, {})
        for cell in nb.cells:
            if cell.cell_type != "code":
                continue
            handed_out.append(cell.source)
            if cell.metadata.get("nbgrader", {}).get("solution"):
                sol[_grade_id(cell)] = cell.source
    return solutions, "\n\n".join(handed_out)


def _cells(path: Path) -> list:
    """A notebook's cells as plain JSON (nbformat's validation costs more than the comparison)."""
    nb = json.loads(path.read_text(encoding="utf-8"))
    if nb.get("nbformat", 0) < 4:
        return nbformat.reads(json.dumps(nb), as_version=4).cells
    return nb.get("cells", [])


def _tokens(code: str) -> int:
    """Python tokens other than comments and layout (cheap: the fingerprint lexes each document once)."""
    import tokenize

    skip = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT,
            tokenize.ENDMARKER, tokenize.ENCODING}
    try:
        return sum(t.type not in skip for t in tokenize.generate_tokens(io.StringIO(code).readline))
    except (tokenize.TokenError, SyntaxError, ValueError):
        return len(code.split())


def student_code(folder: Path, solutions: dict[str, dict[str, str]], settings: Settings) -> str:
    """The student's non-trivial, changed solution cells of every notebook in ``folder``, joined."""
    parts = []
    for name, stubs in solutions.items():
        try:
            cells = _cells(folder / f"{name}.ipynb")
        except Exception:  # noqa: BLE001  (missing or unreadable: nothing to compare)
            continue
        for cell in cells:
            gid = _grade_id(cell)
            if not isinstance(cell, dict) or cell.get("cell_type") != "code" or gid not in stubs:
                continue
            src = cell.get("source", "")
            src = (src if isinstance(src, str) else "".join(src))[: settings.max_cell_chars]
            if src.strip() == stubs[gid].strip() or _tokens(src) < settings.min_tokens:
                continue
            parts.append(f"# {name}/{gid}\n{src.rstrip()}\n")
    return "\n".join(parts)


def documents(base: Path, assignment: str, solutions, settings: Settings, archived: bool = False,
              prefix: str = "") -> list[Document]:
    """One document per ``<base>/<student>/<assignment>/`` folder (nbgrader's submitted/ layout),
    searched recursively under an archive."""
    pattern = f"**/{assignment}" if archived else f"*/{assignment}"
    out = []
    for folder in sorted(p for p in base.glob(pattern) if p.is_dir()):
        student = folder.parent.relative_to(base).as_posix()
        code = student_code(folder, solutions, settings)
        if code:
            out.append(Document(f"{prefix}{student}", code, archived))
    return out


# ---------------------------------------------------------------------------------------------
# Fingerprints and comparison
# ---------------------------------------------------------------------------------------------

def _fingerprint(job: tuple[str, str, int, int]) -> tuple[str, CodeFingerprint]:
    label, code, k, window = job
    return label, CodeFingerprint(f"{label}.py", k, window, fp=io.StringIO(code), language="python")


def fingerprints(docs: list[Document], boilerplate: str, settings: Settings) -> dict[str, CodeFingerprint]:
    """copydetect fingerprints with the release's code and the cohort's common k-grams removed.

    Both are removed from each fingerprint's hash set and index afterwards (copydetect's own
    ``boilerplate=`` argument removes only the first occurrence of a repeated k-gram)."""
    bp = _fingerprint(("release", boilerplate, settings.k, settings.window))[1]
    work = [(d.label, d.code, settings.k, settings.window) for d in docs]
    jobs = min(settings.jobs or os.cpu_count() or 1, max(1, len(docs) // 20))
    if jobs > 1:    # lexing dominates; fork keeps the hash seed, so k-gram hashes agree across processes
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("fork")) as pool:
            fps = dict(pool.map(_fingerprint, work, chunksize=max(1, len(work) // (4 * jobs))))
    else:
        fps = dict(map(_fingerprint, work))
    counts: dict[int, int] = {}
    current = [fps[d.label] for d in docs if not d.archived]
    for fp in current:
        for h in fp.hashes:
            counts[h] = counts.get(h, 0) + 1
    limit = max(3, settings.common_share * len(current))
    ignored = set(bp.hashes) | {h for h, c in counts.items() if c > limit}
    for fp in fps.values():
        drop = fp.hashes & ignored
        if drop:
            fp.hashes -= drop
            for h in drop:
                del fp.hash_idx[h]
            fp.token_coverage = get_token_coverage(fp.hash_idx, fp.k, len(fp.filtered_code))
    return fps


def candidates(docs: list[Document], fps: dict[str, CodeFingerprint], settings: Settings) -> list[tuple[str, str]]:
    """Pairs (current-current, current-archive) sharing at least ``min_overlap`` of the smaller
    document's fingerprints: one sparse matrix product instead of n² set intersections."""
    from scipy import sparse

    labels = [d.label for d in docs if fps[d.label].hashes]
    index: dict[int, int] = {}
    rows, cols = [], []
    for i, label in enumerate(labels):
        for h in fps[label].hashes:
            rows.append(i)
            cols.append(index.setdefault(h, len(index)))
    if not labels or not index:
        return []
    x = sparse.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=(len(labels), len(index)))
    shared = (x @ x.T).tocoo()
    sizes = np.asarray(x.sum(axis=1)).ravel()
    archived = {d.label for d in docs if d.archived}
    out = []
    for i, j, v in zip(shared.row, shared.col, shared.data):
        if i >= j:
            continue
        a, b = labels[i], labels[j]
        if a in archived and b in archived:
            continue
        if v / min(sizes[i], sizes[j]) >= settings.min_overlap:
            out.append((b, a) if a in archived else (a, b))
    return out


def compare(docs: list[Document], boilerplate: str, settings: Settings = Settings()) -> tuple[list[Pair], dict]:
    """Ranked pairs (most similar first) and the fingerprints (for highlighting)."""
    fps = fingerprints(docs, boilerplate, settings)
    archived = {d.label for d in docs if d.archived}
    pairs = []
    for a, b in candidates(docs, fps, settings):
        shared, (sa, sb), _ = compare_files(fps[a], fps[b])
        if shared:
            pairs.append(Pair(a, b, float(sa), float(sb), int(shared), b in archived))
    pairs.sort(key=lambda p: (-p.score, p.a, p.b))
    return pairs, fps


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------

def pairs_csv(pairs: list[Pair]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["rank", "student_a", "student_b", "score", "similarity_a", "similarity_b", "shared_tokens", "archive"])
    for rank, p in enumerate(pairs, 1):
        w.writerow([rank, p.a, p.b, f"{p.score:.4f}", f"{p.similarity_a:.4f}", f"{p.similarity_b:.4f}",
                    p.shared_tokens, int(p.archived)])
    return buf.getvalue()


def pairs_html(assignment: str, pairs: list[Pair], fps: dict, settings: Settings, n_docs: int) -> str:
    esc = html.escape
    rows = "".join(
        f"<tr><td>{r}</td><td>{esc(p.a)}</td><td>{esc(p.b)}{' (archive)' if p.archived else ''}</td>"
        f"<td>{p.score:.0%}</td><td>{p.similarity_a:.0%}</td><td>{p.similarity_b:.0%}</td><td>{p.shared_tokens}</td></tr>"
        for r, p in enumerate(pairs, 1))
    blocks = []
    for r, p in enumerate(pairs[: settings.top], 1):
        _, _, (sa, sb) = compare_files(fps[p.a], fps[p.b])
        left, _ = highlight_overlap(fps[p.a].raw_code, sa, "<mark>", "</mark>", escape_html=True)
        right, _ = highlight_overlap(fps[p.b].raw_code, sb, "<mark>", "</mark>", escape_html=True)
        blocks.append(f"<h3>{r}. {esc(p.a)} ↔ {esc(p.b)}: {p.score:.0%}</h3><div class=pair>"
                      f"<pre>{left}</pre><pre>{right}</pre></div>")
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{esc(assignment)}: similar solutions</title>
<style>body{{font-family:sans-serif;margin:1.5em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:.2em .5em}}
.pair{{display:flex;gap:1em}}.pair pre{{flex:1;overflow:auto;max-height:40em;background:#f7f7f7;padding:.5em;font-size:85%}}
mark{{background:#ffd27f}}</style></head><body>
<h1>{esc(assignment)}: similar solution cells</h1>
<p>A flag for a person to look at, not a finding: similar code can be honest (a hint given in class, the one
obvious way to write a short function). Grades are not changed. {n_docs} submissions compared; the release's
code, trivial cells and code shared by more than {settings.common_share:.0%} of the cohort are ignored.
Score: mean of the two shares of fingerprinted code found in the other submission.</p>
<table><tr><th>rank</th><th>student</th><th>student</th><th>score</th><th>share of first</th><th>share of second</th>
<th>shared tokens</th></tr>{rows}</table>
<h2>Top {min(settings.top, len(pairs))} pairs side by side</h2>
{''.join(blocks)}
</body></html>
"""


def run(course_dir: Path, assignment: str, source: str = "submitted", archive: list[str] | None = None,
        out: str | None = None, top: int = 50, settings: Settings | None = None) -> int:
    from .course import CourseError

    settings = settings or Settings(top=top)
    release = course_dir / "release" / assignment
    if not any(release.glob("*.ipynb")):
        raise CourseError(f"no release of {assignment} in {release}: run mlbd build {assignment}")
    start = time.perf_counter()
    solutions, handed_out = release_code(release)
    docs = documents(course_dir / source, assignment, solutions, settings)
    for folder in archive or []:
        base = Path(folder)
        if not base.is_dir():
            raise CourseError(f"archive {folder} is not a folder")
        docs += documents(base, assignment, solutions, settings, archived=True, prefix=f"{base.name}/")
    pairs, fps = compare(docs, handed_out, settings)
    out_dir = Path(out) if out else course_dir / ".mlbd" / "reports" / assignment
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "similarity.csv").write_text(pairs_csv(pairs))
    (out_dir / "similarity.html").write_text(pairs_html(assignment, pairs, fps, settings, len(docs)))
    print(f"{len(docs)} submissions, {len(pairs)} similar pairs in {time.perf_counter() - start:.1f} s")
    for p in pairs[:10]:
        print(f"  {p.score:5.0%}  {p.a}  {p.b}{'  (archive)' if p.archived else ''}")
    print(f"html  {out_dir / 'similarity.html'}\ncsv   {out_dir / 'similarity.csv'}")
    return 0
