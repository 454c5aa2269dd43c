"""Per-student variants: each student's own data and parameters, drawn from a stream only the
course can compute.

In a notebook::

    from mlbd import variant
    rng = variant.rng("lecture05/data")          # a numpy Generator: this student's stream
    noise = rng.uniform(0.5, 1.5)
    X, y = make_regression(n_samples=200, noise=noise, random_state=variant.seed("lecture05/split"))

A hidden test calls the same function with the same stream name and gets the same numbers, so it
computes the reference for exactly the data the student had.

**Where the stream comes from.** ``MLBD_VARIANT_KEY`` in the kernel's environment holds the
student's key, ``HMAC-SHA256(course secret, course id + student id)`` (``student_key``). The
trusted side puts it there: the hub's spawner in the student's server, ``mlbd grade`` and
``nbgrader autograde`` (``mlbd.grading.kernel.SandboxedExecute``) in the sandboxed kernel of the
submission's student, the validation suite for each of its test ids. A stream's seed is
``HMAC-SHA256(student key, stream name)``. The course secret (``c.Variants.secret_file``, created
0600 on first use) never reaches a kernel, so a student knows their own key only: they can
neither compute a classmate's variant nor choose one that a classmate's answers fit.

**Without a key** (the release opened outside the hub, otter's ``check`` on a laptop, the
instructor's own runs) every call uses the public *default* variant, the same for everyone:
``is_default()`` says so, and grading never uses it (the grader always passes a key).
"""
from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
from pathlib import Path

from traitlets import Bool, Unicode
from traitlets.config import Configurable

KEY_ENV = "MLBD_VARIANT_KEY"          # the student's key, 64 hex digits
STUDENT_ENV = "MLBD_VARIANT_STUDENT"  # whose key it is (shown to the student; not secret)
DEFAULT_STUDENT = "default"
_DEFAULT_SECRET = b"mlbd public default variant"   # public on purpose: the default variant is no secret
_HEX64 = re.compile(r"[0-9a-f]{64}")


# -- the kernel's side --------------------------------------------------------------------------

def student_key(secret: bytes, course_id: str, student: str) -> str:
    """The key of ``student`` in ``course_id`` (hex). Only the holder of ``secret`` can compute it."""
    if not secret:
        raise ValueError("the course's variant secret is empty")
    return hmac.new(secret, f"{course_id}\0{student}".encode(), hashlib.sha256).hexdigest()


def _key() -> bytes:
    raw = os.environ.get(KEY_ENV, "").strip().lower()
    if not raw:
        return bytes.fromhex(student_key(_DEFAULT_SECRET, "", DEFAULT_STUDENT))
    if not _HEX64.fullmatch(raw):
        raise ValueError(f"{KEY_ENV} must be 64 hexadecimal digits (it is set by the hub or the grader, "
                         "not by hand); unset it to use the default variant")
    return bytes.fromhex(raw)


def _digest(stream: str) -> bytes:
    if not isinstance(stream, str) or not stream:
        raise ValueError("name the stream, e.g. variant.rng('lecture05/data'): one name per quantity drawn")
    return hmac.new(_key(), stream.encode(), hashlib.sha256).digest()


def rng(stream: str):
    """A new ``numpy.random.Generator`` on this student's ``stream``: the same numbers on every
    call with the same name, in the student's kernel and in the grader's."""
    import numpy as np
    return np.random.default_rng(int.from_bytes(_digest(stream)[:16], "big"))


def seed(stream: str) -> int:
    """This student's integer seed for ``stream`` (0 ≤ seed < 2**31), for ``random_state=``."""
    return int.from_bytes(_digest(stream)[:4], "big") >> 1


def is_default() -> bool:
    """True where no key was given: everyone gets the same default variant here."""
    return not os.environ.get(KEY_ENV, "").strip()


def student() -> str:
    """Whose variant this kernel draws (``default`` without a key)."""
    return DEFAULT_STUDENT if is_default() else os.environ.get(STUDENT_ENV, "") or "?"


# -- the trusted side ---------------------------------------------------------------------------

class Variants(Configurable):
    """The course secret behind every student's variant key, and the kernel environment that
    carries a student's key (read the same way by ``mlbd grade``, ``nbgrader autograde``, the
    formgrader and the hub)."""

    enabled = Bool(True, help="pass each student's variant key into their kernels (hub server, grading); "
                              "without it every kernel draws the default variant").tag(config=True)
    secret_file = Unicode(".mlbd/variant_secret",
                          help="the course secret the per-student keys derive from, relative to the course root "
                               "(created 0600 with 32 random bytes on first use; keep it, or every variant changes; "
                               "never readable by students)").tag(config=True)

    def secret_path(self, root: str | Path) -> Path:
        p = Path(self.secret_file)
        return p if p.is_absolute() else Path(root) / p

    def secret(self, root: str | Path, create: bool = True) -> bytes:
        """The course secret; created (0600, owned like the course root) when missing and ``create``."""
        path = self.secret_path(root)
        try:
            data = path.read_bytes().strip()
        except FileNotFoundError:
            if not create:
                raise
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_hex(32) + "\n")
            if os.geteuid() == 0:   # root creating it for a course account: the account must read it
                st = os.stat(Path(root))
                os.chown(path, st.st_uid, st.st_gid)
            data = path.read_bytes().strip()
        if len(data) < 32:
            raise ValueError(f"{path}: the variant secret is too short ({len(data)} bytes); "
                             "delete it to have a new one made (every variant changes)")
        return data

    def kernel_env(self, root: str | Path, course_id: str, student: str, create: bool = True) -> dict[str, str]:
        """What a kernel of ``student`` gets in its environment (empty when disabled); ``create``:
        make the secret if it is missing (the graders), or raise (the hub's spawner)."""
        if not self.enabled:
            return {}
        return {KEY_ENV: student_key(self.secret(root, create), course_id, student), STUDENT_ENV: student}
