"""The user server's command (``python -m mlbd.hub.singleuser``): ``jupyterhub-singleuser``,
started lighter. `mlbd bench hub` measures what this saves on every spawn.

- jsonschema (imported through jupyter_events by every Jupyter server) builds an Earley parser for
  RFC 3987 IRIs at import when ``rfc3987_syntax`` is installed: about 0.9 s of CPU and 15 MiB per
  server, for a format check that no event schema of a user server uses. jsonschema skips that
  check when the import fails, so the server marks the module as absent before importing anything.
- glibc gives each thread that allocates its own malloc arena; the server's few threads then hold
  memory they no longer use. Two arenas are enough for an idle server (set with ``mallopt`` here,
  not through ``MALLOC_ARENA_MAX``, so the students' kernels keep glibc's default).
- Its kernels are managed by mlbd.hub.kernels.NoticeKernelManager: a kernel restarted after the
  server's memory limit stopped it tells the student so in its first cell's output.
"""
from __future__ import annotations

import ctypes
import sys

M_ARENA_MAX = -8  # glibc's mallopt parameter
KERNEL_MANAGER = "--MappingKernelManager.kernel_manager_class=mlbd.hub.kernels.NoticeKernelManager"


def _limit_malloc_arenas(n: int = 2) -> None:
    try:
        ctypes.CDLL("libc.so.6").mallopt(M_ARENA_MAX, n)
    except (OSError, AttributeError):  # not glibc: nothing to tune
        pass


def main() -> int:
    sys.modules.setdefault("rfc3987_syntax", None)  # `import rfc3987_syntax` now raises ImportError
    _limit_malloc_arenas()
    if not any("KernelManager.kernel_manager_class=" in arg for arg in sys.argv[1:]):
        sys.argv[1:1] = [KERNEL_MANAGER]  # not twice: traitlets refuses an option given twice
    from jupyterhub.singleuser import main as singleuser

    return singleuser()


if __name__ == "__main__":
    sys.exit(main())
