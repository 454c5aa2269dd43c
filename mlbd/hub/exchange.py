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
* collect: every inbound entry is untrusted. One listing of ``inbound`` (stock nbgrader globs,
  then fails the whole run on one unparsable name); an entry whose name does not parse, which is
  not a folder, which its owner did not make for themself (a folder named after another student),
  that holds more than ``SubmissionQuota.max_files`` entries or ``CourseDirectory.max_dir_size``
  bytes (measured with ``lstat`` before anything is read) or that cannot be read is skipped with
  the reason in the log, and every other student is still collected: of a student's own entries
  the newest acceptable one is taken. Symbolic links, FIFOs, devices and files owned by someone
  else inside a submission are dropped, never followed (the course account reads what it copies:
  a link would fetch ``source/``), so are pages and scripts (``.html``, ``.svg``, ``.js``…: the
  formgrader would serve them); ``submitted/`` stays private to the course account;
* the submission time is the exchange's, not the student's: collect writes the latest change time
  (ctime, which no user can set back) of the submission folder and everything in it into
  ``submitted/<student>/<assignment>/timestamp.txt``, replacing the student's ``timestamp.txt``;
* release_feedback: a student whose feedback cannot be released (no ``submission_secret.txt``, an
  unreadable file) is skipped with the reason; everyone else gets theirs;
* ``clean_inbound`` (``mlbd hub clean-inbound``, as root): removes what collect skips, which the
  course account cannot (it may not delete inside a student's folder);
* every operation: the exchange root need only be traversable (stock nbgrader wants it
  world-writable).
"""
from __future__ import annotations

import datetime
import errno
import glob
import os
import pwd
import secrets
import shutil
import stat
import tempfile
from dataclasses import dataclass

from nbgrader.api import Gradebook, MissingEntry
from nbgrader.exchange import default
from nbgrader.utils import ignore_patterns, parse_utc
from traitlets import Integer
from traitlets.config import Config, LoggingConfigurable

from ..course import ACTIVE_CONTENT
from ..deadlines import Deadlines, LatePenalty, due_from_notice
from ..grading.boxfs import read_chunks

INBOUND_MODE = 0o3733   # setgid + sticky, rwx for the course account, wx for others
SUBMISSION_DIR_MODE = 0o750
SUBMISSION_FILE_MODE = 0o640
DEADLINE_FILE = "DEADLINE.md"   # written at release when the assignment has a due date


class _TraversableRoot:
    def ensure_root(self):
        """The exchange root must exist and be traversable; its course folder does the rest."""
        if not os.path.isdir(self.root) or not os.access(self.root, os.X_OK):
            self.fail(f"Exchange directory missing or not accessible, please contact your instructor: {self.root}")


class SubmissionQuota(LoggingConfigurable):
    """What one inbound submission may hold before collect skips it (bytes: ``CourseDirectory.max_dir_size``)."""

    max_files = Integer(200, help="Most files and folders in one submission; a larger one is skipped "
                        "before anything is copied (grading lists files in time quadratic in their number: "
                        "nbgrader's find_all_files)").tag(config=True)
    max_depth = Integer(16, help="Deepest folder nesting in one submission").tag(config=True)
    max_entries_per_student = Integer(20, help="A student's newest inbound entries that collect "
                                      "considers (by the time in their names); older ones are ignored").tag(config=True)
    secret_max_bytes = Integer(1024, help="Largest submission_secret.txt release_feedback reads").tag(config=True)


@dataclass
class Entry:
    """One inbound folder as collect sees it: ``reason`` is why it is skipped (None: acceptable)."""

    name: str
    path: str
    student: str | None = None
    claimed: datetime.datetime | None = None   # the time in the folder's name: the student's word
    reason: str | None = None
    files: int = 0
    size: int = 0
    changed: float = 0.0                        # latest ctime inside: the exchange's word

    @property
    def changed_utc(self) -> datetime.datetime:
        return datetime.datetime.fromtimestamp(self.changed, datetime.timezone.utc).replace(tzinfo=None)


def utc_text(ts: datetime.datetime) -> str:
    """nbgrader's timestamp format (what parse_utc reads) for a naive UTC time."""
    return ts.strftime("%Y-%m-%d %H:%M:%S.%f UTC")


def parse_entry_name(name: str, assignment: str) -> tuple[str, datetime.datetime]:
    """``<student>+<assignment>+<timestamp>[+<random>]`` → (student, claimed time); ValueError if not."""
    for parts in (name.rsplit("+", 3), name.rsplit("+", 2)):
        if len(parts) >= 3 and parts[1] == assignment and parts[0]:
            try:
                return parts[0], parse_utc(parts[2])
            except (ValueError, OverflowError, TypeError) as exc:
                raise ValueError(f"the time in its name does not parse ({exc})") from None
    raise ValueError("its name is not <student>+<assignment>+<time>")


def inspect_entry(path: str, assignment: str, quota: SubmissionQuota, max_bytes: int) -> Entry:
    """Name, owner and size of one inbound entry from ``lstat`` alone, stopping at the first quota
    exceeded: linear in the entry's size and bounded by the quota, whatever the entry holds."""
    e = Entry(name=os.path.basename(path), path=path)
    try:
        e.student, e.claimed = parse_entry_name(e.name, assignment)
    except ValueError as exc:
        e.reason = str(exc)
        return e
    try:
        st = os.lstat(path)
    except OSError as exc:
        e.reason = f"cannot be examined ({exc.strerror})"
        return e
    if not stat.S_ISDIR(st.st_mode):
        e.reason = "not a folder"
        return e
    try:
        uid = pwd.getpwnam(e.student).pw_uid
    except KeyError:
        uid = None
    if uid is None or st.st_uid != uid:
        try:
            owner = pwd.getpwuid(st.st_uid).pw_name
        except KeyError:
            owner = f"uid {st.st_uid}"
        e.reason = f"it names {e.student} but belongs to {owner}"
        return e
    e.changed = st.st_ctime
    stack = [(path, 0)]
    try:
        while stack:
            folder, depth = stack.pop()
            with os.scandir(folder) as it:
                for item in it:
                    e.files += 1
                    if e.files > quota.max_files:
                        e.reason = f"more than {quota.max_files} files (SubmissionQuota.max_files)"
                        return e
                    s = item.stat(follow_symlinks=False)
                    e.changed = max(e.changed, s.st_ctime)
                    if stat.S_ISDIR(s.st_mode):
                        if depth + 1 > quota.max_depth:
                            e.reason = f"folders nested deeper than {quota.max_depth} (SubmissionQuota.max_depth)"
                            return e
                        stack.append((item.path, depth + 1))
                    elif stat.S_ISREG(s.st_mode) and s.st_uid == uid:
                        e.size += s.st_size
                        if e.size > max_bytes:
                            e.reason = f"more than {max_bytes} bytes (CourseDirectory.max_dir_size)"
                            return e
    except OSError as exc:
        e.reason = f"cannot be read ({exc.strerror}: {exc.filename})"
    return e


def copy_without_links(src: str, dest: str, max_bytes: int, log, *, owner_uid: int | None = None,
                       max_files: int | None = None) -> float:
    """Copy a folder its owner may still be changing, never following a link out of it; return the
    latest change time (ctime) of what was copied, read after the copy.

    Each entry is opened relative to its parent's descriptor with O_NOFOLLOW, so a file or folder
    swapped for a link mid-copy is refused rather than followed. Links, FIFOs, devices, files not
    owned by ``owner_uid`` and pages or scripts a browser would run (``ACTIVE_CONTENT``) are left out
    with a warning; a file is read up to the size it had when opened; more than ``max_bytes`` or
    ``max_files`` in all raises, as nbgrader's size limit does."""
    total = count = 0
    latest = 0.0

    def copy_dir(dir_fd: int, shown: str, out: str) -> None:
        nonlocal total, count, latest
        os.mkdir(out, 0o700)
        for entry in sorted(os.scandir(dir_fd), key=lambda e: e.name):
            count += 1
            if max_files is not None and count > max_files:
                raise RuntimeError(f"more than {max_files} files")
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
                if owner_uid is not None and st.st_uid != owner_uid:
                    log.warning("skipping %s: it belongs to uid %d, not to the submission's owner", path, st.st_uid)
                    continue
                if stat.S_ISDIR(st.st_mode):
                    copy_dir(fd, path, target)
                elif stat.S_ISREG(st.st_mode):
                    total += st.st_size
                    if total > max_bytes:
                        raise RuntimeError(f"Directory size is too big; the maximum is {max_bytes} bytes")
                    with open(target, "wb") as fout:
                        for chunk in read_chunks(fd, st.st_size):
                            fout.write(chunk)
                else:
                    log.warning("skipping %s: not a regular file or folder", path)
                    continue
                latest = max(latest, os.fstat(fd).st_ctime)
                os.chmod(target, stat.S_IMODE(st.st_mode) & 0o755 | (0o700 if stat.S_ISDIR(st.st_mode) else 0o600))
                os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
            finally:
                os.close(fd)

    top = os.open(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_DIRECTORY)
    try:
        copy_dir(top, src, dest)
        latest = max(latest, os.fstat(top).st_ctime)
    finally:
        os.close(top)
    return latest


class PrivateExchange(_TraversableRoot, default.Exchange):
    pass


class PrivateFetchAssignment(_TraversableRoot, default.ExchangeFetchAssignment):
    pass


class PrivateFetchFeedback(_TraversableRoot, default.ExchangeFetchFeedback):
    pass


class PrivateList(_TraversableRoot, default.ExchangeList):
    """nbgrader's list, with each released assignment's due date (``due``: as ``DEADLINE.md`` words
    it, ``due_utc``: ISO 8601) read from the release in the exchange, which the course account
    wrote: what the students' Assignment List shows (``mlbd.hub.labextension``)."""

    def parse_assignments(self):
        assignments = super().parse_assignments()
        for info in assignments:
            due = self._due(info.get("course_id", ""), info.get("assignment_id", ""))
            if due is not None:
                info["due"], info["due_utc"] = due[0], due[1].strftime("%Y-%m-%dT%H:%M:%SZ")
        return assignments

    def _due(self, course_id: str, assignment_id: str):
        path = os.path.join(self.root, course_id, "outbound", assignment_id, DEADLINE_FILE)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            return None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return None
            text = os.read(fd, 8192).decode("utf-8", "replace")
        finally:
            os.close(fd)
        return due_from_notice(text)


class PrivateReleaseFeedback(_TraversableRoot, default.ExchangeReleaseFeedback):
    """nbgrader's release, one student at a time: a student whose feedback folder is broken (no
    ``submission_secret.txt``: a hand-made inbound folder; an unreadable or oversized file) is
    skipped with the reason, and every other student still gets their feedback."""

    def copy_files(self):
        limit = SubmissionQuota(parent=self).secret_max_bytes
        pattern, skipped = self.src_path, []
        for folder in sorted(glob.glob(pattern)):
            secret = os.path.join(folder, "submission_secret.txt")
            try:
                st = os.lstat(secret)
                if not stat.S_ISREG(st.st_mode) or st.st_size > limit:
                    raise ValueError(f"submission_secret.txt is not a file of at most {limit} bytes")
                self.src_path = folder
                super().copy_files()
            except FileNotFoundError as exc:
                skipped.append((folder, f"{os.path.basename(exc.filename or secret)} is missing "
                                        "(the submission did not come through nbgrader submit)"))
            except (OSError, ValueError, UnicodeDecodeError) as exc:
                skipped.append((folder, str(exc)))
            finally:
                self.src_path = pattern
        for folder, why in skipped:
            self.log.warning("skipping the feedback in %s: %s", folder, why)


class PrivateReleaseAssignment(_TraversableRoot, default.ExchangeReleaseAssignment):
    def init_dest(self):
        super().init_dest()
        if not self.coursedir.groupshared and stat.S_IMODE(os.stat(self.inbound_path).st_mode) != INBOUND_MODE:
            os.chmod(self.inbound_path, INBOUND_MODE)

    def copy_files(self):
        """nbgrader's release, then the configured due date (``mlbd.deadlines``) into the gradebook
        and, as ``DEADLINE.md``, into the released folder students fetch."""
        super().copy_files()
        deadlines, assignment = Deadlines(parent=self), self.coursedir.assignment_id
        text = deadlines.notice(assignment, LatePenalty(parent=self))
        if text is None:
            return
        with Gradebook(self.coursedir.db_url, self.coursedir.course_id) as gb:
            deadlines.apply(gb, assignment)
        notice = os.path.join(self.dest_path, DEADLINE_FILE)
        with open(notice, "w") as fh:
            fh.write(text)
        os.chmod(notice, 0o644)
        self.log.info("Due: %s", text.splitlines()[0].split(": ", 1)[1])


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
    """nbgrader's collect with every inbound entry treated as untrusted (see the module's notes)."""

    def init_src(self):
        if not self.coursedir.course_id:
            self.fail("No course id specified. Re-run with --course flag.")
        self.course_path = os.path.join(self.root, self.coursedir.course_id)
        self.inbound_path = os.path.join(self.course_path, "inbound")
        if not os.path.isdir(self.inbound_path) or not os.access(self.inbound_path, os.R_OK | os.X_OK):
            self.fail(f"Course not found or not readable: {self.inbound_path}")
        quota = SubmissionQuota(parent=self)
        chosen, self.skipped = choose_submissions(
            self.inbound_path, self.coursedir.assignment_id, quota, 1000 * self.coursedir.max_dir_size,
            student=self.coursedir.student_id if self.coursedir.student_id not in ("", "*") else None, not_after=self._duedate() if self.before_duedate else None)
        for e in self.skipped:
            self.log.warning("skipping %s: %s", e.path, e.reason)
        self.src_records = [{"username": e.student, "filename": e.name, "timestamp": e.changed_utc, "entry": e}
                            for e in chosen]
        self.quota = quota

    def _duedate(self):
        with Gradebook(self.coursedir.db_url, self.coursedir.course_id) as gb:
            try:
                return gb.find_assignment(self.coursedir.assignment_id).duedate
            except MissingEntry:
                return None

    def init_dest(self):
        submitted = self.coursedir.format_path(self.coursedir.submitted_directory, ".", ".")
        os.makedirs(submitted, exist_ok=True)
        os.chmod(submitted, 0o700)

    def copy_files(self):
        """Each student on their own: one that fails is logged and the rest are still collected."""
        assignment = self.coursedir.assignment_id
        if not self.src_records:
            self.log.warning("No submissions of '%s' for course '%s' to collect", assignment, self.coursedir.course_id)
        failed, collected = [], 0
        for rec in self.src_records:
            student, entry = rec["username"], rec["entry"]
            dest = self.coursedir.format_path(self.coursedir.submitted_directory, student, assignment)
            try:
                existing = _existing_time(dest)
                if os.path.isdir(dest) and not (self.update and (existing is None or rec["timestamp"] > existing)):
                    self.log.info("%s: %s %s", "No newer submission to collect" if self.update else
                                  "Submission already exists, use --update to update", student, assignment)
                    continue
                self.log.info("Collecting submission: %s %s (received %s)", student, assignment, utc_text(rec["timestamp"]))
                self._collect_one(entry, dest)
                collected += 1
            except Exception as exc:  # one student's entry must never stop the others
                failed.append((entry.path, f"{type(exc).__name__}: {exc}"))
        for path, why in failed:
            self.log.warning("skipping %s: %s", path, why)
        self.log.info("collected %d submission(s) of %s; skipped %d inbound entr%s (reasons above)",
                      collected, assignment, len(self.skipped) + len(failed),
                      "y" if len(self.skipped) + len(failed) == 1 else "ies")

    def _collect_one(self, entry: Entry, dest: str) -> None:
        """Private link-free copy → nbgrader's copy (ignore/include patterns, file size limit) → the
        exchange's time in timestamp.txt → swapped in for the previous copy."""
        parent = os.path.dirname(dest)
        os.makedirs(parent, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".mlbd-collect-", dir=parent) as tmp:
            staged, ready = os.path.join(tmp, "staged"), os.path.join(tmp, "ready")
            changed = copy_without_links(entry.path, staged, 1000 * self.coursedir.max_dir_size, self.log,
                                         owner_uid=pwd.getpwnam(entry.student).pw_uid, max_files=self.quota.max_files)
            super().do_copy(staged, ready)
            received = datetime.datetime.fromtimestamp(max(changed, entry.changed), datetime.timezone.utc).replace(tzinfo=None)
            claim = _existing_time(ready)
            if claim is not None and abs((claim - received).total_seconds()) > 600:
                self.log.warning("%s says it was submitted at %s; the exchange received it at %s (used)",
                                 entry.path, utc_text(claim), utc_text(received))
            with open(os.path.join(ready, "timestamp.txt"), "w") as fh:
                fh.write(utc_text(received))
            if not os.path.isfile(os.path.join(ready, "submission_secret.txt")):
                self.log.warning("%s has no submission_secret.txt (not made by nbgrader submit): it is graded, "
                                 "but its feedback cannot be released to the student", entry.path)
            if os.path.isdir(dest):
                shutil.rmtree(dest)
            os.rename(ready, dest)


def _existing_time(folder: str) -> datetime.datetime | None:
    """The time in ``folder/timestamp.txt``, or None when it is missing or does not parse."""
    try:
        with open(os.path.join(folder, "timestamp.txt")) as fh:
            return parse_utc(fh.read(200).strip())
    except (OSError, ValueError, OverflowError, TypeError, UnicodeDecodeError):
        return None


def choose_submissions(inbound: str, assignment: str, quota: SubmissionQuota, max_bytes: int, *,
                       student: str | None = None, not_after: datetime.datetime | None = None
                       ) -> tuple[list[Entry], list[Entry]]:
    """(one acceptable entry per student, the entries skipped with their reasons) from one listing
    of ``inbound``. A student's entries are tried newest first (by the time in their names, which
    only the student's own entries can influence) and the first acceptable one is taken; with
    ``not_after`` (``--before-duedate``) the newest received by then, else the newest."""
    marker = f"+{assignment}+"
    by_student: dict[str, list[Entry]] = {}
    skipped: list[Entry] = []
    with os.scandir(inbound) as it:
        names = [d.name for d in it if marker in d.name and not d.name.startswith(".")]
    for name in names:
        if student and not name.startswith(f"{student}+"):
            continue
        e = Entry(name=name, path=os.path.join(inbound, name))
        try:
            e.student, e.claimed = parse_entry_name(name, assignment)
        except ValueError as exc:
            e.reason = str(exc)
            skipped.append(e)
            continue
        by_student.setdefault(e.student, []).append(e)
    chosen = []
    for who in sorted(by_student):
        entries = sorted(by_student[who], key=lambda e: e.claimed, reverse=True)
        for e in entries[quota.max_entries_per_student:]:
            e.reason = f"older than {who}'s {quota.max_entries_per_student} newest entries (SubmissionQuota.max_entries_per_student)"
            skipped.append(e)
        good = []
        for e in entries[:quota.max_entries_per_student]:
            checked = inspect_entry(e.path, assignment, quota, max_bytes)
            if checked.reason:
                skipped.append(checked)
                continue
            good.append(checked)
            if not_after is None:
                break
        if good:
            on_time = [e for e in good if not_after is not None and e.changed_utc <= not_after]
            chosen.append(max(on_time or good, key=lambda e: e.changed))
    return chosen, skipped


def clean_inbound(inbound: str, assignments: list[str], config: Config | None = None, log=None) -> list[Entry]:
    """Remove (as root) the inbound entries collect skips for ``assignments``, and submit's staging
    folders older than a day: the planted folders, the oversized and the unparsable. The course
    account cannot (a sticky ``inbound`` lets it rename a student's folder, not empty it).
    Superseded but acceptable submissions stay. Returns what was removed, with the reasons."""
    import logging
    from nbgrader.coursedir import CourseDirectory

    log = log or logging.getLogger("mlbd.exchange")
    config = config or Config()
    quota, coursedir = SubmissionQuota(config=config), CourseDirectory(config=config)
    removed = []
    for a in assignments:
        _, skipped = choose_submissions(inbound, a, quota, 1000 * coursedir.max_dir_size)
        removed += [e for e in skipped if not e.reason.startswith("older than")]
    day_ago = datetime.datetime.now().timestamp() - 86400
    with os.scandir(inbound) as it:
        for d in it:
            if d.name.startswith(".staging-") and d.stat(follow_symlinks=False).st_mtime < day_ago:
                removed.append(Entry(name=d.name, path=d.path, reason="a submit's staging folder left over"))
    for e in removed:
        st = os.lstat(e.path)
        if stat.S_ISDIR(st.st_mode):
            shutil.rmtree(e.path)   # fd-based on Linux: never follows a link planted inside
        else:
            os.unlink(e.path)
        log.warning("removed %s (uid %d): %s", e.path, st.st_uid, e.reason)
    return removed


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


def clean_inbound_of_hub(s, assignments: list[str]) -> list[Entry]:
    """``mlbd hub clean-inbound ASSIGNMENT…``: ``clean_inbound`` on the hub's exchange, with the
    quotas of the hub's grading config (root-only: not the copy the course account can edit)."""
    from traitlets.config.loader import PyFileConfigLoader

    from ..course import CourseError

    if os.geteuid() != 0:
        raise CourseError("only root can remove what a student made in the exchange: run it with sudo")
    if not assignments:
        raise CourseError("name the assignment(s) whose inbound entries to clean")
    cfg_file = s.grading_config if s.grading_config.is_file() else s.course_dir / "nbgrader_config.py"
    cfg = PyFileConfigLoader(cfg_file.name, path=str(cfg_file.parent)).load_config() if cfg_file.is_file() else Config()
    removed = clean_inbound(str(s.exchange / s.course_id / "inbound"), assignments, cfg)
    for e in removed:
        print(f"removed {e.name}: {e.reason}")
    print(f"{len(removed)} inbound entr{'y' if len(removed) == 1 else 'ies'} removed")
    return removed
