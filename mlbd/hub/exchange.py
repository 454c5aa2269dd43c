"""nbgrader's filesystem exchange, made private: no student can read another student's submission.

Stock nbgrader 0.9 makes the inbound directory ``2733`` and each submission directory ``0777`` with
``0644`` files, hidden only by an unguessable name: a student who learns the name (a shared screen,
a log line) can read it or write into it. These subclasses, plugged in through nbgrader's own
extension points (``c.ExchangeFactory.submit = "mlbd.hub.exchange.PrivateSubmit"`` …), change that:

* release: ``inbound`` becomes ``3733`` owned by the course account: others may create entries but
  not list them, and the sticky bit stops them renaming or removing anyone else's entry;
* submit: the copy is assembled in a private (0700) staging directory, its directories made
  ``0750`` and files ``0640`` (group: the course account's, inherited from the setgid ``inbound``),
  and only then renamed into ``inbound`` in one atomic step. So the course account can read it and
  nobody else (other students included) can, at any moment;
* collect: only submissions whose directory belongs to the student they name are collected (stock
  nbgrader only warns), symbolic links, FIFOs and devices inside a submission are dropped, never
  followed (the course account reads what it copies: a link would fetch ``source/``), so are
  pages and scripts (``.html``, ``.svg``, ``.js``…: the formgrader would serve them), and
  ``submitted/`` stays private to the course account;
* every operation: the exchange root need only be traversable (stock nbgrader wants it
  world-writable).
"""
from __future__ import annotations

import errno
import os
import pwd
import secrets
import shutil
import stat
import tempfile

from nbgrader.exchange import default
from nbgrader.utils import ignore_patterns

from ..course import ACTIVE_CONTENT

INBOUND_MODE = 0o3733   # setgid + sticky, rwx for the course account, wx for others
SUBMISSION_DIR_MODE = 0o750
SUBMISSION_FILE_MODE = 0o640


class _TraversableRoot:
    def ensure_root(self):
        """The exchange root must exist and be traversable; its course folder does the rest."""
        if not os.path.isdir(self.root) or not os.access(self.root, os.X_OK):
            self.fail(f"Exchange directory missing or not accessible, please contact your instructor: {self.root}")


def copy_without_links(src: str, dest: str, max_bytes: int, log) -> None:
    """Copy a folder its owner may still be changing, never following a link out of it.

    Each entry is opened relative to its parent's descriptor with O_NOFOLLOW, so a file or folder
    swapped for a link mid-copy is refused rather than followed. Links, FIFOs, devices and pages or
    scripts a browser would run (``ACTIVE_CONTENT``) are left out with a warning; more than
    ``max_bytes`` in all raises, as nbgrader's size limit does."""
    total = 0

    def copy_dir(dir_fd: int, shown: str, out: str) -> None:
        nonlocal total
        os.mkdir(out, 0o700)
        for entry in sorted(os.scandir(dir_fd), key=lambda e: e.name):
            path = os.path.join(shown, entry.name)
            if os.path.splitext(entry.name)[1].lower() in ACTIVE_CONTENT:
                log.warning("skipping %s: the formgrader would serve this page or script as the grader", path)
                continue
            try:
                fd = os.open(entry.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dir_fd)
            except OSError as exc:
                log.warning("skipping %s: %s", path,
                            "a symbolic link is not followed" if exc.errno == errno.ELOOP else exc.strerror)
                continue
            try:
                st = os.fstat(fd)
                target = os.path.join(out, entry.name)
                if stat.S_ISDIR(st.st_mode):
                    copy_dir(fd, path, target)
                elif stat.S_ISREG(st.st_mode):
                    total += st.st_size
                    if total > max_bytes:
                        raise RuntimeError(f"Directory size is too big; the maximum is {max_bytes} bytes")
                    with os.fdopen(os.dup(fd), "rb") as fin, open(target, "wb") as fout:
                        shutil.copyfileobj(fin, fout)
                else:
                    log.warning("skipping %s: not a regular file or folder", path)
                    continue
                os.chmod(target, stat.S_IMODE(st.st_mode) & 0o755 | (0o700 if stat.S_ISDIR(st.st_mode) else 0o600))
                os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
            finally:
                os.close(fd)

    top = os.open(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_DIRECTORY)
    try:
        copy_dir(top, src, dest)
    finally:
        os.close(top)


class PrivateExchange(_TraversableRoot, default.Exchange):
    pass


class PrivateFetchAssignment(_TraversableRoot, default.ExchangeFetchAssignment):
    pass


class PrivateFetchFeedback(_TraversableRoot, default.ExchangeFetchFeedback):
    pass


class PrivateList(_TraversableRoot, default.ExchangeList):
    pass


class PrivateReleaseFeedback(_TraversableRoot, default.ExchangeReleaseFeedback):
    pass


class PrivateReleaseAssignment(_TraversableRoot, default.ExchangeReleaseAssignment):
    def init_dest(self):
        super().init_dest()
        if not self.coursedir.groupshared and stat.S_IMODE(os.stat(self.inbound_path).st_mode) != INBOUND_MODE:
            os.chmod(self.inbound_path, INBOUND_MODE)


class PrivateSubmit(_TraversableRoot, default.ExchangeSubmit):
    def _stamp(self, folder: str, secret: str) -> None:
        for name, text in (("timestamp.txt", self.timestamp), ("submission_secret.txt", secret)):
            with open(os.path.join(folder, name), "w") as fh:
                fh.write(text)

    def _copy_into(self, src: str, dest: str) -> None:
        """nbgrader's do_copy (size limit, ignore/include patterns) into an existing folder."""
        if self.get_size(src) > 1000 * self.coursedir.max_dir_size:
            raise RuntimeError(f"Directory size is too big; the maximum is {1000 * self.coursedir.max_dir_size} bytes")
        shutil.copytree(src, dest, dirs_exist_ok=True, symlinks=False,
                        ignore=ignore_patterns(exclude=self.coursedir.ignore, include=self.coursedir.include,
                                               max_file_size=self.coursedir.max_file_size, log=self.log))

    def copy_files(self):
        self.init_release()
        self.check_filename_diff()
        secret = secrets.token_hex(64)
        dest = os.path.join(self.inbound_path, self.assignment_filename)
        # Assemble the submission where nobody else can look (mkdtemp: 0700, owned by the student;
        # the setgid inbound gives it the course account's group), fix its modes, then publish it
        # with one rename: at no moment is a readable partial or public copy in the exchange.
        staging = tempfile.mkdtemp(prefix=".staging-", dir=self.inbound_path)
        try:
            part = os.path.join(staging, "submission")
            # Every file must be created while its folder still carries the setgid bit inherited
            # from inbound (so it gets the course account's group): copying restores the source's
            # mode at the end, which drops that bit, so write the stamps first.
            os.mkdir(part, 0o700)
            self._stamp(part, secret)
            self._copy_into(self.src_path, part)
            self.set_perms(part, fileperms=SUBMISSION_FILE_MODE, dirperms=SUBMISSION_DIR_MODE)
            os.rename(part, dest)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        self.log.info("Source: %s", self.src_path)
        self.log.info("Destination: %s (private to the course account)", dest)

        # The student's own record of the submission (their home is 0700).
        name = self.assignment_filename.rsplit("+", 1)[0] if self.add_random_string else self.assignment_filename
        cache_path = os.path.join(self.cache_path, name)
        os.makedirs(self.cache_path, exist_ok=True)
        self.do_copy(self.src_path, cache_path)
        self._stamp(cache_path, secret)
        self.log.info("Submitted as: %s %s %s", self.coursedir.course_id, self.coursedir.assignment_id, self.timestamp)


class PrivateCollect(_TraversableRoot, default.ExchangeCollect):
    def init_src(self):
        super().init_src()
        kept = []
        for rec in self.src_records:
            path = os.path.join(self.inbound_path, rec["filename"])
            try:
                owner = pwd.getpwuid(os.lstat(path).st_uid).pw_name
            except KeyError:
                owner = None
            if os.path.islink(path) or owner != rec["username"]:
                self.log.warning("skipping %s: it names %s but belongs to %s", path, rec["username"], owner)
                continue
            kept.append(rec)
        self.src_records = kept

    def do_copy(self, src, dest, log=None):
        """nbgrader's copy (ignore/include patterns, size limits), from a link-free private copy."""
        with tempfile.TemporaryDirectory(prefix="mlbd-collect-") as tmp:
            staged = os.path.join(tmp, "submission")
            copy_without_links(src, staged, 1000 * self.coursedir.max_dir_size, self.log)
            super().do_copy(staged, dest, log)

    def init_dest(self):
        super().init_dest()
        submitted = self.coursedir.format_path(self.coursedir.submitted_directory, ".", ".")
        os.makedirs(submitted, exist_ok=True)
        os.chmod(submitted, 0o700)


#: ``c.ExchangeFactory.<trait>`` → class, for config files.
FACTORY = {
    "exchange": PrivateExchange,
    "fetch_assignment": PrivateFetchAssignment,
    "fetch_feedback": PrivateFetchFeedback,
    "release_assignment": PrivateReleaseAssignment,
    "release_feedback": PrivateReleaseFeedback,
    "list": PrivateList,
    "submit": PrivateSubmit,
    "collect": PrivateCollect,
}


def config_lines() -> str:
    """The nbgrader config lines that install these classes."""
    return "".join(f'c.ExchangeFactory.{trait} = "{cls.__module__}.{cls.__name__}"\n' for trait, cls in FACTORY.items())
