"""IPython extension loaded into a kernel that replaces one the server's memory limit stopped
(mlbd.hub.kernels): the first cell run shows the student why their variables are gone.

The server passes the text on the kernel's command line (``--KernelNotice.message=...``), so this
module imports nothing heavy and a kernel without a notice never loads it.
"""
from __future__ import annotations

import sys

from traitlets import Unicode
from traitlets.config import Configurable


class KernelNotice(Configurable):
    message = Unicode("", help="shown once, in the output of the first cell the kernel runs").tag(config=True)


def load_ipython_extension(ip) -> None:
    notice = KernelNotice(parent=ip)
    if not notice.message:
        return

    def show(info=None) -> None:
        ip.events.unregister("pre_run_cell", show)
        print(notice.message, file=sys.stderr, flush=True)

    ip.events.register("pre_run_cell", show)
