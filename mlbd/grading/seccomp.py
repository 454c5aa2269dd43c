"""The sandbox's seccomp filter, built with libseccomp (through ctypes) and handed to bubblewrap.

The kernel keyring is not namespaced by anything the sandbox unshares: every process of the
sandbox uid reaches the same user and user-session keyrings, which outlive the kernels. So one
submission's kernel could leave a value there for the next to read. The filter makes ``add_key``,
``request_key`` and ``keyctl`` fail with ENOSYS (as Docker's default profile does); libseccomp
also refuses the other ABIs of this machine (32-bit ``int 0x80``, x32), through which the same
calls have other numbers. bwrap applies the filter to the sandboxed process right before exec;
the zygote's forked kernels inherit it.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os

BLOCKED = ("add_key", "request_key", "keyctl")
SCMP_ACT_ALLOW = 0x7FFF0000
SCMP_ACT_ERRNO = 0x00050000


class SeccompUnavailable(RuntimeError):
    """libseccomp is not installed (Debian: libseccomp2)."""


_program: bytes | None = None


def _lib():
    name = ctypes.util.find_library("seccomp") or "libseccomp.so.2"
    try:
        lib = ctypes.CDLL(name, use_errno=True)
    except OSError as exc:
        raise SeccompUnavailable(f"the sandbox needs libseccomp (Debian: apt-get install libseccomp2): {exc}") from exc
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_rule_add.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_export_bpf.argtypes = [ctypes.c_void_p, ctypes.c_int]
    lib.seccomp_release.argtypes = [ctypes.c_void_p]
    return lib


def program() -> bytes:
    """The compiled BPF program (``struct sock_filter`` array), as ``bwrap --seccomp FD`` reads it."""
    global _program
    if _program is None:
        lib = _lib()
        ctx = lib.seccomp_init(SCMP_ACT_ALLOW)
        if not ctx:
            raise SeccompUnavailable("seccomp_init failed")
        fd = os.memfd_create("mlbd-seccomp")
        try:
            for name in BLOCKED:
                nr = lib.seccomp_syscall_resolve_name(name.encode())
                if nr < 0 or lib.seccomp_rule_add(ctx, SCMP_ACT_ERRNO | errno.ENOSYS, nr, 0) != 0:
                    raise SeccompUnavailable(f"libseccomp cannot filter {name}")
            if lib.seccomp_export_bpf(ctx, fd) != 0:
                raise SeccompUnavailable("seccomp_export_bpf failed")
            os.lseek(fd, 0, os.SEEK_SET)
            chunks = []
            while chunk := os.read(fd, 65536):
                chunks.append(chunk)
            _program = b"".join(chunks)
        finally:
            os.close(fd)
            lib.seccomp_release(ctx)
    return _program


def write(path: str) -> str:
    """Write the program to ``path`` (for a shell redirection onto the fd bwrap reads)."""
    with open(path, "wb") as fh:
        fh.write(program())
    return path
