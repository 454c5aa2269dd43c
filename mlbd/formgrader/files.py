"""Submission files in the formgrader by allowlist: images inline, text as text/plain, the rest downloads."""
from __future__ import annotations

import os
from urllib.parse import quote

from nbgrader.server_extensions.formgrader.handlers import SubmissionFilesHandler

# nbgrader's own routes under /formgrader/submissions/ (the grading page, navigation, static
# components) keep theirs; every other path there is a submission's file.
ROUTE = (r"/formgrader/submissions/(?!components/)"
         r"([^/]+/(?!(?:next_incorrect|prev_incorrect|next|prev)/?$).+)")

IMAGES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif", ".webp": "image/webp"}
TEXT = frozenset({".txt", ".csv", ".tsv", ".py", ".md", ".json", ".ipynb", ".log", ".dat", ".yaml", ".yml", ".r"})
POLICY = "sandbox; default-src 'none'; img-src 'self' data:; style-src 'unsafe-inline'"


def inline_type(name: str) -> str | None:
    """The content type a file is shown with in the browser, or None: download only."""
    ext = os.path.splitext(name)[1].lower()
    if ext in IMAGES:
        return IMAGES[ext]
    if ext in TEXT:
        return "text/plain; charset=utf-8"
    return None


class SafeSubmissionFiles(SubmissionFilesHandler):
    @property
    def content_security_policy(self) -> str:
        return POLICY

    def get_content_type(self) -> str:
        return inline_type(self.absolute_path or "") or "application/octet-stream"

    def set_extra_headers(self, path: str) -> None:
        self.set_header("Content-Security-Policy", POLICY)
        self.set_header("X-Content-Type-Options", "nosniff")
        if inline_type(path) is None:
            self.set_header("Content-Disposition", "attachment; filename*=UTF-8''" + quote(os.path.basename(path), safe=""))
