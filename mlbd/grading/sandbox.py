"""The sandbox: limits (traitlets, set in ``nbgrader_config.py``) and the bubblewrap command line.

A kernel runs as::

    sh -c 'echo $$ > <cgroup>/cgroup.procs …; exec "$@"'   (enter memory + pids cgroups)
      bwrap …            (new pid/net/ipc/uts namespaces, read-only system, private /tmp, one
                          writable box directory; no course directory, gradebook or exchange)
        setpriv …        (the kernel's own uid/gid, leased from job_uid_first.. (uids.py); uid/gid
                          65534 for all with job_uids = 0; no capabilities, no_new_privs)
          prlimit …      (file size, CPU seconds, open files, no core dumps)
            python -m ipykernel_launcher -f <box>/run/connection.json

The trusted grader talks to the kernel over ZMQ ipc sockets inside ``<box>/run``; the network
namespace has no interface but loopback.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import warnings
from fnmatch import fnmatch
from pathlib import Path

import psutil
from traitlets import Bool, Dict, Enum, Integer, List, Unicode
from traitlets.config import LoggingConfigurable

from . import seccomp

DEFAULT_PASSTHROUGH = ["NBGRADER_EXECUTION", "MLBD_*", "PYTHONHASHSEED", "MPLBACKEND", "TF_CPP_MIN_LOG_LEVEL", "TF_DETERMINISTIC_OPS", "KERAS_BACKEND",
                       "LANG", "LC_*", "TZ", "CUDA_VISIBLE_DEVICES"]
# The soft CPU limit sends SIGXCPU (which names the reason); the hard one, this much later, SIGKILL.
CPU_GRACE = 5
# What the course's notebooks import (scikit-learn alone takes ~2.5 s per cold kernel). No TensorFlow:
# it starts threads at import, and a threaded process cannot be forked.
DEFAULT_PRELOAD = ["numpy", "scipy", "scipy.stats", "scipy.optimize", "pandas", "matplotlib", "matplotlib.pyplot",
                   "sklearn", "sklearn.base", "sklearn.datasets", "sklearn.linear_model", "sklearn.model_selection",
                   "sklearn.preprocessing", "sklearn.metrics", "sklearn.pipeline", "sklearn.svm", "sklearn.tree",
                   "sklearn.ensemble", "sklearn.neighbors", "sklearn.decomposition", "sklearn.impute", "mlbd.data"]


class Sandbox(LoggingConfigurable):
    """Limits and options of the grading sandbox (``c.Sandbox.*`` in ``nbgrader_config.py``)."""

    mode = Enum(["bwrap", "none"], "bwrap",
                help="'bwrap': run kernels in a bubblewrap sandbox; 'none': unsandboxed (development only)").tag(config=True)
    uid = Integer(65534, help="uid every kernel runs as inside the sandbox when job_uids is 0, and inside the "
                              "user namespace of the rootless sandbox (not root)").tag(config=True)
    gid = Integer(65534, help="gid that goes with uid").tag(config=True)
    job_uids = Integer(256, min=0, help="with root: how many uids kernels may use, each running kernel its own "
                                      "(uid and gid job_uid_first + n, leased for the kernel's life; see "
                                      "mlbd.grading.uids), so that no kernel can signal another's processes or "
                                      "read its files even past the namespaces; at least the kernels that run "
                                      "at once on this host (every grading process together). 0: every kernel "
                                      "runs as uid/gid. The range must hold no account of /etc/passwd, and must be "
                                      "mapped where the grader runs in a user namespace (a container); the default "
                                      "range falls back to uid/gid with a warning where it cannot be used, a "
                                      "configured one is an error").tag(config=True)
    job_uid_first = Integer(2_000_000_000, min=1, help="first uid (and gid) of the job_uids range").tag(config=True)
    memory_mb = Integer(2048, help="memory limit of one kernel and its children (cgroup), MiB").tag(config=True)
    pids_max = Integer(128, help="processes + threads one kernel may have (cgroup pids)").tag(config=True)
    file_size_mb = Integer(64, help="largest file the kernel may write (RLIMIT_FSIZE), MiB").tag(config=True)
    cpu_seconds = Integer(900, help="CPU time of the kernel process (RLIMIT_CPU), seconds").tag(config=True)
    wall_seconds = Integer(1800, help="wall-clock limit for a whole notebook, seconds").tag(config=True)
    open_files = Integer(1024, help="open file descriptors (RLIMIT_NOFILE)").tag(config=True)
    threads = Integer(1, help="OMP/BLAS/TF threads per kernel (kernels already run in parallel)").tag(config=True)
    max_output_bytes_cell = Integer(1_000_000, help="outputs kept per cell, bytes").tag(config=True)
    max_output_bytes_notebook = Integer(8_000_000, help="outputs kept per notebook, bytes").tag(config=True)
    max_message_bytes = Integer(32_000_000, help="largest ZMQ message accepted on the control channel, bytes (iopub outputs are truncated instead)").tag(config=True)
    copy_max_mb = Integer(200, help="data files copied into the kernel's work dir, MiB in all").tag(config=True)
    max_restarts = Integer(2, help="kernel deaths survived per notebook (state is replayed)").tag(config=True)
    ro_binds = List(Unicode(), help="extra host paths visible read-only inside the sandbox").tag(config=True)
    env = Dict(help="extra environment variables of the kernel").tag(config=True)
    job_env = Dict(help="this job's own kernel variables, set by the grader per submission (the student's "
                        "variant key, mlbd.variant): its kernels get them, the zygote shared by every job "
                        "does not (one zygote per worker, whatever the students)").tag(config=True)
    env_passthrough = List(Unicode(), DEFAULT_PASSTHROUGH,
                           help="grader environment variables (glob patterns) passed to the kernel").tag(config=True)
    runtime_dir = Unicode("", help="where sandbox boxes are created (short path: ipc socket names are limited)").tag(config=True)
    bwrap = Unicode("bwrap", help="the bubblewrap executable").tag(config=True)
    warm_kernels = Bool(True, help="fork kernels from a zygote that has imported `preload` already (see "
                                   "mlbd.grading.zygote_main); False: a fresh interpreter per kernel").tag(config=True)
    preload = List(Unicode(), DEFAULT_PRELOAD, help="modules the zygote imports once for every warm kernel").tag(config=True)
    zygote_start_seconds = Integer(120, help="how long the zygote may take to import `preload`").tag(config=True)
    disk_mb = Integer(512, help="disk quota of the kernel's work dir (a size-bounded tmpfs, charged to its memory "
                                "cgroup too), MiB").tag(config=True)
    side_effect_files = Integer(200, help="files a notebook writes that are kept (copied to autograded/), at most").tag(config=True)
    side_effect_mb = Integer(50, help="bytes of files a notebook writes that are kept, MiB in all").tag(config=True)
    watchdog_seconds = Integer(120, help="a grading job may run this long past wall_seconds (kernel starts, "
                                         "replays, teardown) before the watchdog abandons it").tag(config=True)
    per_assignment = Dict(help="limits per assignment, e.g. {'coursework2': {'memory_mb': 3072, 'wall_seconds': "
                               "3600, 'cell_timeout': 300}}: any Sandbox trait, and cell_timeout (the Execute "
                               "preprocessor's per-cell timeout)").tag(config=True)

    # -- per assignment ----------------------------------------------------------------------
    def overrides(self, assignment: str | None) -> dict:
        """This assignment's entry of ``per_assignment`` (checked: only known names)."""
        entry = dict(self.per_assignment.get(assignment or "", {}) or {})
        unknown = [k for k in entry if k == "per_assignment" or (k != "cell_timeout" and not self.has_trait(k))]
        if unknown:
            raise ValueError(f"c.Sandbox.per_assignment[{assignment!r}]: unknown setting(s) {', '.join(unknown)}")
        return entry

    def for_assignment(self, assignment: str | None) -> "Sandbox":
        """These settings with ``assignment``'s overrides applied (a new Sandbox; this one is unchanged)."""
        box = Sandbox(parent=self.parent, config=self.config)
        for k, v in self.overrides(assignment).items():
            if k != "cell_timeout":
                setattr(box, k, v)
        return box

    def cell_timeout(self, assignment: str | None, default: int | None) -> int | None:
        return self.overrides(assignment).get("cell_timeout", default)

    # -- environment -------------------------------------------------------------------------
    def kernel_env(self, base: dict | None, home: str | None, job: bool = True) -> dict:
        """The kernel's environment: an allow-list of the grader's, never its secrets; with
        ``job``, this job's ``job_env`` too (the zygote's own environment leaves it out)."""
        src = dict(os.environ)
        src.update(base or {})
        env = {k: v for k, v in src.items() if any(fnmatch(k, pat) for pat in self.env_passthrough)}
        venv_bin = str(Path(sys.executable).parent)
        env.update({
            "PATH": f"{venv_bin}:/usr/local/bin:/usr/bin:/bin",
            "LANG": env.get("LANG", "C.UTF-8"),
            # inline, whatever the grader's own backend: students see their plots in feedback
            "MPLBACKEND": "module://matplotlib_inline.backend_inline",
            "PYTHONHASHSEED": env.get("PYTHONHASHSEED", "0"),
            "PYTHONDONTWRITEBYTECODE": "1",
            "MLBD_OFFLINE": "1",
            "JOBLIB_MULTIPROCESSING": env.get("JOBLIB_MULTIPROCESSING", "0"),
        })
        if self.threads > 0:
            for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS",
                        "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS"):
                env.setdefault(var, str(self.threads))
        if home:
            # USER/LOGNAME: a leased uid has no /etc/passwd entry (getpass.getuser() reads these first)
            env.update({"HOME": home, "USER": "student", "LOGNAME": "student", "MPLCONFIGDIR": "/tmp/mpl",
                        "XDG_CACHE_HOME": "/tmp/cache", "JUPYTER_RUNTIME_DIR": "/tmp/jupyter", "IPYTHONDIR": "/tmp/ipython"})
        env.update({k: str(v) for k, v in self.env.items()})
        if job:
            env.update({k: str(v) for k, v in self.job_env.items()})
        return env

    # -- command line ------------------------------------------------------------------------
    def read_only_paths(self) -> list[str]:
        paths = [sys.prefix, str(Path(__file__).resolve().parents[2] / "mlbd"), *self.ro_binds]
        out = []
        for p in paths:
            p = os.path.realpath(p)
            if os.path.exists(p) and not any(p == q or p.startswith(q + "/") for q in out + ["/usr"]):
                out.append(p)
        return out

    @property
    def rootless(self) -> bool:
        """Not root (e.g. the formgrader under the course account): a user namespace stands in for
        setuid, and rlimits for the cgroup limits only root can create."""
        return os.geteuid() != 0

    def bwrap_args(self, box: Path, workdir: Path, env: dict, seccomp_fd: int, quota_dir: Path | None = None) -> list[str]:
        """``quota_dir``: a directory of ``box`` that becomes a tmpfs of ``disk_mb`` inside the sandbox.
        ``seccomp_fd``: where bwrap reads the filter (``seccomp.program()``) from."""
        args = [self.bwrap, "--die-with-parent", "--seccomp", str(seccomp_fd), "--new-session", "--unshare-pid", "--unshare-net",
                "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try", "--hostname", "sandbox",
                "--ro-bind", "/usr", "/usr"]
        if self.rootless:
            args[1:1] = ["--unshare-user", "--disable-userns", "--uid", str(self.uid), "--gid", str(self.gid)]
        for d in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
            if os.path.islink(d):
                args += ["--symlink", os.readlink(d), d]
            elif os.path.isdir(d):
                args += ["--ro-bind", d, d]
        args += ["--ro-bind", "/etc", "/etc", "--proc", "/proc", "--dev", "/dev",
                 "--perms", "01777", "--tmpfs", "/tmp", "--perms", "01777", "--tmpfs", "/dev/shm"]
        for dev in sorted(Path("/dev").glob("nvidia*")):   # GPU courseworks
            args += ["--dev-bind-try", str(dev), str(dev)]
        made = {"/", "/usr", "/etc", "/proc", "/dev", "/tmp", "/bin", "/sbin", "/lib", "/lib64"}

        def parents(path: str) -> list[str]:
            out = []
            for parent in reversed(Path(path).parents):
                s = str(parent)
                if s not in made:
                    made.add(s)
                    out += ["--perms", "0755", "--dir", s]
            return out

        for p in self.read_only_paths():
            args += parents(p) + ["--ro-bind", p, p]
            made.add(p)
        args += parents(str(box)) + ["--bind", str(box), str(box)]
        if quota_dir is not None:
            args += ["--size", str(self.disk_mb * 2**20), "--perms", "01777", "--tmpfs", str(quota_dir)]
        args += ["--chdir", str(workdir), "--clearenv"]
        for k, v in env.items():
            args += ["--setenv", k, v]
        return args

    def rlimits(self) -> dict[str, list[int]]:
        """Resource limits of a kernel, ``[soft, hard]`` by ``resource`` name: set by prlimit for a
        cold kernel (``drop_args``), by the zygote for a warm one. Without root, RLIMIT_DATA and
        RLIMIT_NPROC stand in for the cgroup (RLIMIT_NPROC counts all of this uid's processes)."""
        fsize = self.file_size_mb * 2**20
        limits = {"RLIMIT_FSIZE": [fsize, fsize], "RLIMIT_CPU": [self.cpu_seconds, self.cpu_seconds + CPU_GRACE],
                  "RLIMIT_NOFILE": [self.open_files, self.open_files], "RLIMIT_CORE": [0, 0]}
        if self.rootless:
            nproc = _processes_of(os.getuid()) + self.pids_max
            limits.update(RLIMIT_DATA=[self.memory_mb * 2**20] * 2, RLIMIT_NPROC=[nproc, nproc])
        return limits

    def drop_args(self, uid: int, gid: int) -> list[str]:
        """setpriv to ``uid``/``gid`` (the kernel's lease, or ``uid``/``gid``), then prlimit."""
        prlimit = ["prlimit", *(f"--{name[7:].lower()}={soft}:{hard}" for name, (soft, hard) in self.rlimits().items()), "--"]
        if self.rootless:   # bwrap already set no_new_privs and dropped every capability
            return prlimit
        return ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--no-new-privs",
                "--inh-caps=-all", "--bounding-set=-all", "--", *prlimit]

    @property
    def per_job_uids(self) -> bool:
        """Whether each kernel gets a uid of its own (root, sandboxed, ``job_uids`` > 0)."""
        if self.mode == "none" or self.rootless or self.job_uids <= 0:
            return False
        configured = any(k in self.config.get("Sandbox", {}) for k in ("job_uids", "job_uid_first"))
        if not configured and _uid_range_problem(self.job_uid_first, self.job_uids):
            warnings.warn(f"every kernel runs as uid {self.uid}: the default per-kernel uid range cannot be used here "
                          f"({_uid_range_problem(self.job_uid_first, self.job_uids)}); set c.Sandbox.job_uid_first",
                          RuntimeWarning, stacklevel=2)
            return False
        return True

    def check(self) -> None:
        """Raise ``RuntimeError`` with a one-line reason when the sandbox cannot work here."""
        if self.mode == "none":
            return
        for tool in (self.bwrap, "setpriv", "prlimit"):
            if not shutil.which(tool):
                raise RuntimeError(f"sandbox needs '{tool}' (Debian: apt-get install bubblewrap util-linux); "
                                   "or pass --sandbox none for development")
        try:
            seccomp.program()
        except seccomp.SeccompUnavailable as exc:
            raise RuntimeError(str(exc)) from exc
        if self.rootless and not _userns_works(self.bwrap):
            raise RuntimeError("not root and this kernel refuses unprivileged user namespaces, so bubblewrap cannot "
                               "sandbox: run the grader as root (or in the grader image), or --sandbox none")
        if self.per_job_uids:
            problem = _uid_range_problem(self.job_uid_first, self.job_uids)
            if problem:
                raise RuntimeError(f"c.Sandbox.job_uid_first/job_uids: {problem}")


_userns: dict[str, bool] = {}


def _userns_works(bwrap: str) -> bool:
    if bwrap not in _userns:
        try:
            _userns[bwrap] = subprocess.run([bwrap, "--unshare-user", "--ro-bind", "/", "/", "true"], capture_output=True,
                                            timeout=30).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            _userns[bwrap] = False
    return _userns[bwrap]


_uid_ranges: dict[tuple[int, int], str] = {}


def _uid_range_problem(first: int, count: int) -> str:
    """Why kernels cannot run as uids and gids ``first .. first + count - 1`` here ('' when they can)."""
    key = (first, count)
    if key not in _uid_ranges:
        last = first + count - 1
        problem = ""
        if first < 1 or last >= 2**32 - 1:
            problem = f"uids {first}..{last} are not valid uids"
        for kind in ("uid", "gid"):
            try:
                rows = [[int(x) for x in line.split()] for line in Path(f"/proc/self/{kind}_map").read_text().splitlines()]
            except (OSError, ValueError):
                continue
            if not problem and not any(lo <= first and last < lo + n for lo, _, n in rows):
                problem = f"{kind}s {first}..{last} are not mapped in this user namespace (/proc/self/{kind}_map)"
        if not problem:
            import grp
            import pwd
            taken = [f"{e.pw_name} ({e.pw_uid})" for e in pwd.getpwall() if first <= e.pw_uid <= last]
            taken += [f"group {e.gr_name} ({e.gr_gid})" for e in grp.getgrall() if first <= e.gr_gid <= last]
            if taken:
                problem = f"{first}..{last} holds accounts of this host: {', '.join(taken[:5])}"
        _uid_ranges[key] = problem
    return _uid_ranges[key]


def _processes_of(uid: int) -> int:
    """Processes and threads this uid runs now (RLIMIT_NPROC counts them all, not the kernel's own)."""
    return sum(p.info["num_threads"] or 0 for p in psutil.process_iter(["uids", "num_threads"])
               if p.info["uids"] is not None and p.info["uids"].real == uid)


def copy_inputs(src: str | None, dest: Path, max_bytes: int) -> list[str]:
    """Copy the data files of a submission folder into a kernel's work dir.

    Notebooks are never copied (the prepared notebook holds the hidden tests) and neither are
    links or hidden files. Returns the names skipped because of the size budget.
    """
    dest.mkdir(parents=True, exist_ok=True)
    skipped: list[str] = []
    if not src or not os.path.isdir(src):
        return skipped
    total = 0
    for dirpath, dirnames, filenames in os.walk(src):
        dirnames[:] = [d for d in dirnames if not d.startswith(".") and not os.path.islink(os.path.join(dirpath, d))]
        for name in filenames:
            path = os.path.join(dirpath, name)
            if name.startswith(".") or name.endswith(".ipynb") or os.path.islink(path) or not os.path.isfile(path):
                continue
            size = os.path.getsize(path)
            rel = os.path.relpath(path, src)
            if total + size > max_bytes:
                skipped.append(rel)
                continue
            total += size
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
    return skipped
