"""A Jupyter server extension for nbgrader's formgrader: what it serves of a submission's files.

nbgrader's ``SubmissionFilesHandler`` serves any file of ``autograded/<student>/<assignment>/``
under ``/formgrader/submissions/<id>/<path>`` with the type its name suggests; behind the hub
that is the hub's own origin, so a student's ``report.xht`` (``application/xhtml+xml``) or
``.html`` ran its script as the TA. This extension serves those paths instead, by an allowlist
(``files.SafeSubmissionFiles``): images inline, text as ``text/plain``, anything else as a
download; every response carries ``Content-Security-Policy: sandbox`` and ``nosniff``.

Enabled in the formgrader service (``jupyter_config/``, on its ``JUPYTER_CONFIG_PATH``). Jupyter
server loads extensions in sorted name order and tornado matches the first rule added, so
``mlbd.formgrader`` (added before ``nbgrader.server_extensions.formgrader``) answers these paths.
"""
from __future__ import annotations

from pathlib import Path

from jupyter_server.utils import url_path_join

CONFIG_DIR = Path(__file__).resolve().parent / "jupyter_config"


def _jupyter_server_extension_points():
    return [{"module": "mlbd.formgrader"}]


def _load_jupyter_server_extension(serverapp) -> None:
    from .files import ROUTE, SafeSubmissionFiles

    webapp = serverapp.web_app
    webapp.add_handlers(".*$", [(url_path_join(webapp.settings["base_url"], ROUTE), SafeSubmissionFiles)])
    serverapp.log.info("mlbd.formgrader: submission files served by allowlist (%s)", ROUTE)
