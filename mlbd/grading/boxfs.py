"""The trusted side's only way into a sandbox's files: never follows a link, never blocks.

Everything inside a box may have been replaced by the kernel (a FIFO where the grader expects its
log, a link to the gradebook where it expects an output file). So every path is walked one
component at a time from a directory descriptor, each step with ``O_NOFOLLOW``; files are opened
with ``O_NONBLOCK`` and read only when ``fstat`` says they are regular; reads and walks are bounded.
"""
from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from ..course import ACTIVE_CONTENT

# the exchange's own files of a submission: in autograded/ they are the submission's, never the kernel's
EXCHANGE_FILES = frozenset({"timestamp.txt", "submission_secret.txt", "DEADLINE.md"})

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY


def open_dir(path: str | Path, *, trusted_prefix: str = "/") -> int:
    """A descriptor of directory ``path``: components below ``trusted_prefix`` are walked with
    O_NOFOLLOW (``trusted_prefix`` itself may be a link, e.g. ``/proc/PID/root``)."""
    path = os.path.normpath(str(path))
    prefix = os.path.normpath(trusted_prefix)
    rest = os.path.relpath(path, prefix)
    if rest.startswith(".."):
        raise ValueError(f"{path} is not below {prefix}")
    fd = os.open(prefix, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in ([] if rest == "." else rest.split("/")):
            nxt = os.open(part, DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = nxt
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_chunks(fd: int, limit: int):
    """The bytes of open file ``fd`` from its position, in chunks of at most 1 MiB, ``limit`` at most
    (a file that grows while it is read cannot push more than that through)."""
    while limit > 0:
        chunk = os.read(fd, min(limit, 1 << 20))
        if not chunk:
            return
        yield chunk
        limit -= len(chunk)


def read_regular(name: str, dir_fd: int, max_bytes: int, tail: bool = False) -> bytes | None:
    """At most ``max_bytes`` of regular file ``name`` in ``dir_fd`` (its end when ``tail``);
    None when it is missing, a link, a FIFO, a device, a socket or a directory."""
    try:
        fd = os.open(name, FILE_FLAGS, dir_fd=dir_fd)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return None
        if tail and st.st_size > max_bytes:
            os.lseek(fd, st.st_size - max_bytes, os.SEEK_SET)
        return b"".join(read_chunks(fd, max_bytes))
    except OSError:
        return None
    finally:
        os.close(fd)


def read_tail(path: str | Path, max_bytes: int, trusted_prefix: str) -> str:
    """The last ``max_bytes`` of a log inside a box, decoded; '' for anything but a regular file."""
    path = Path(path)
    try:
        fd = open_dir(path.parent, trusted_prefix=trusted_prefix)
    except (OSError, ValueError):
        return ""
    try:
        data = read_regular(path.name, fd, max_bytes, tail=True)
    finally:
        os.close(fd)
    return (data or b"").decode("utf-8", "replace")


@dataclass
class Harvest:
    """Regular files found under a directory, within the bounds; what was left out, and why."""
    files: dict[str, bytes] = field(default_factory=dict)
    dropped: list[str] = field(default_factory=list)
    full: bool = False            # the directory's filesystem had no space left
    pages: int = 0                # pages or scripts left out (drop_unkeepable)


def harvest(dir_fd: int, max_files: int, max_bytes: int, skip=lambda rel: False, max_depth: int = 8) -> Harvest:
    """Regular files under ``dir_fd`` (hidden ones too), at most ``max_files`` and ``max_bytes`` in
    all; links, FIFOs, sockets and devices are dropped and named in ``dropped``."""
    out = Harvest()
    try:
        vfs = os.fstatvfs(dir_fd)
        out.full = vfs.f_bavail == 0 or vfs.f_favail == 0
    except OSError:
        pass
    total = 0

    def walk(fd: int, prefix: str, depth: int) -> None:
        nonlocal total
        try:
            names = sorted(os.listdir(fd))
        except OSError:
            return
        for name in names:
            rel = prefix + name
            try:
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            except OSError:
                continue
            if stat.S_ISDIR(st.st_mode):
                if depth >= max_depth:
                    out.dropped.append(rel + "/ (nested too deep)")
                    continue
                try:
                    sub = os.open(name, DIR_FLAGS, dir_fd=fd)
                except OSError:
                    continue
                try:
                    walk(sub, rel + "/", depth + 1)
                finally:
                    os.close(sub)
                continue
            if skip(rel):
                continue
            if not stat.S_ISREG(st.st_mode):
                out.dropped.append(rel + " (not a regular file)")
                continue
            if len(out.files) >= max_files:
                out.dropped.append(rel + f" (more than {max_files} files)")
                continue
            if total + st.st_size > max_bytes:
                out.dropped.append(rel + f" (over {max_bytes // 2**20} MiB in all)")
                continue
            data = read_regular(name, fd, max_bytes - total + 1)
            if data is None or total + len(data) > max_bytes:
                out.dropped.append(rel + " (changed while read, or unreadable)")
                continue
            total += len(data)
            out.files[rel] = data

    walk(dir_fd, "", 0)
    return out


def write_files(dest: str | Path, files: dict[str, bytes]) -> list[str]:
    """Write ``files`` (relative names) under ``dest`` without following links: a name whose path
    meets a link or a non-directory is skipped. Returns the names written."""
    written = []
    for rel, data in sorted(files.items()):
        parts = [p for p in rel.split("/") if p]
        if not parts or any(p in (".", "..") for p in parts):
            continue
        try:
            fd = open_dir(dest)
        except (OSError, ValueError):
            return written
        try:
            for part in parts[:-1]:
                try:
                    os.mkdir(part, 0o755, dir_fd=fd)
                except FileExistsError:
                    pass
                nxt = os.open(part, DIR_FLAGS, dir_fd=fd)
                os.close(fd)
                fd = nxt
            try:
                st = os.stat(parts[-1], dir_fd=fd, follow_symlinks=False)
                if not stat.S_ISREG(st.st_mode):
                    continue
            except FileNotFoundError:
                pass
            out = os.open(parts[-1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                          0o644, dir_fd=fd)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(out, view):]
            finally:
                os.close(out)
            written.append(rel)
        except OSError:
            continue
        finally:
            os.close(fd)
    return written


PAGES_NOT_KEPT = ("{n} page or script file(s) the notebook wrote (.html, .svg, .js ...) were not kept: the "
                  "formgrader would serve them as the grader")


def drop_unkeepable(files: dict[str, bytes]) -> int:
    """Remove, in place, what a kernel wrote that never lands in autograded/: the exchange's files
    (timestamp.txt ...: the submission's) and pages or scripts (``course.ACTIVE_CONTENT``), which the
    formgrader would serve from the hub's address. Returns how many pages or scripts it removed."""
    pages = 0
    for rel in list(files):
        if rel in EXCHANGE_FILES:
            del files[rel]
        elif os.path.splitext(rel)[1].lower() in ACTIVE_CONTENT:
            del files[rel]
            pages += 1
    return pages
