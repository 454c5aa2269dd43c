"""Execute a submission's prepared notebooks in the sandbox (the untrusted step; runs in any worker).

``execute_job(Job) -> JobOutcome`` (``protocol``) is a plain function over plain data (notebook
JSON in, notebook JSON out), so the same code runs in the local process pool and on Dask workers
anywhere. The grader's own failures are marked on their cells (``protocol.fail_cell``).

What it adds to nbclient:
- every error reply becomes an error output (an exception hidden by a patched ``showtraceback``
  still fails its cell, as in nbgrader's Execute);
- outputs are bounded in bytes per cell and per notebook while they arrive;
- a kernel that dies (``os._exit``, memory limit, CPU limit, fork loop) marks its cell with the
  reason, and a fresh kernel replays the cells before it and carries on (at most
  ``Sandbox.max_restarts`` times); a whole-notebook wall-clock limit stops runaway notebooks;
- a watchdog: whatever blocks the trusted side, the notebook returns (as failed) within
  ``wall_seconds + watchdog_seconds`` and its kernels are killed, so one submission never stops a run;
- the files the notebooks wrote come back (``files``), bounded, for ``autograded/``.
"""
from __future__ import annotations

import asyncio
import copy
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellTimeoutError, DeadKernelError
from traitlets.config import Config

from . import boxfs, integrity, literals
from .kernel import SandboxedKernelManager
from .outputs import BoundedOutputs
from .protocol import MARK, Job, JobNotebook, JobOutcome, NotebookOutcome, fail_cell, grader_error, mark_grader_error
from .sandbox import Sandbox


class WatchdogTimeout(RuntimeError):
    """The job did not finish within its bound: its kernels were killed and it was abandoned."""


TAKE = MARK + "_records"      # the user expression that reads what a test cell's judged checks saw


def _records_text(content: dict | None) -> str | None:
    """What the recorder handed over in an execute reply's content (bounded), None when it did not."""
    value = ((content or {}).get("user_expressions") or {}).get(TAKE)
    if not isinstance(value, dict) or value.get("status") != "ok":
        return None
    return str((value.get("data") or {}).get("text/plain", ""))[:literals.MAX_RECORDS_TEXT + 1]


class GradingClient(BoundedOutputs, NotebookClient):
    def __init__(self, nb, **kw):
        super().__init__(nb, **kw)
        self.on_cell_executed = self._record_error_reply
        self._timed_out = False

    async def async_execute_cell(self, cell, cell_index, execution_count=None, store_history=True):
        self._timed_out = False
        meta = cell.get("metadata", {}).get(MARK)
        meta = meta if isinstance(meta, dict) else {}
        expressions = {k: v for k, v in ((MARK, meta.get("after")), (TAKE, meta.get("take"))) if v}
        if not expressions or self.kc is None:
            return await super().async_execute_cell(cell, cell_index, execution_count, store_history)
        # a test cell runs as the kernel is to see it (its judged checks without their expected
        # values), and its checks run in the same request, after the cell
        kernel_source = meta.get("kernel_source")
        plain = self.kc.execute
        self.kc.execute = lambda code, **kw: plain(kernel_source or code, user_expressions=expressions, **kw)
        try:
            out = await super().async_execute_cell(cell, cell_index, execution_count, store_history)
        finally:
            del self.kc.execute
        if meta.get("take") and "records" not in meta and not meta.get("canary") and not self._timed_out:
            # the cell failed in the kernel: what its checks saw up to there says which failed first
            await self._fetch_records(cell, meta["take"])
        return out

    async def _fetch_records(self, cell, take: str) -> None:
        try:
            msg_id = self.kc.execute("", silent=True, store_history=False, user_expressions={TAKE: take})
            deadline = asyncio.get_running_loop().time() + 10
            while True:
                left = deadline - asyncio.get_running_loop().time()
                if left <= 0:
                    return
                reply = await self.kc._async_get_shell_msg(timeout=left)
                if reply.get("parent_header", {}).get("msg_id") == msg_id:
                    break
        except Exception:  # noqa: BLE001  (no answer: the checks are judged without it)
            return
        text = _records_text(reply.get("content"))
        if text is not None:
            cell.metadata[MARK]["records"] = text

    async def _async_handle_timeout(self, timeout, cell=None):
        self._timed_out = True          # the reply nbclient makes up now is the grader's, not the kernel's
        return await super()._async_handle_timeout(timeout, cell)

    def _record_error_reply(self, cell, cell_index, execute_reply):
        content = (execute_reply or {}).get("content", {})
        meta = cell.metadata.get(MARK)
        if isinstance(meta, dict) and not self._timed_out:
            if meta.get("take"):
                meta["exec_count"] = content.get("execution_count")
            if content.get("status") == "ok":
                if meta.get("after"):
                    meta["bindings"] = integrity.use_report(content)
                text = _records_text(content)
                if meta.get("take") and text is not None:
                    meta["records"] = text
        if self._timed_out:
            fail_cell(cell, "timeout", f"the cell ran longer than {self.timeout} s")
        elif content.get("status") == "error":
            if not any(o.get("output_type") == "error" and o.get("ename") == content.get("ename")
                       for o in cell.outputs):
                cell.outputs.append(nbformat.v4.new_output(
                    "error", ename=str(content.get("ename", "Error")), evalue=str(content.get("evalue", ""))[:2000],
                    traceback=[str(x) for x in (content.get("traceback") or [])][:100]
                    or ["ERROR: an error occurred while tracebacks were disabled"]))


def _death_reason(km, seconds: float, sandbox: Sandbox) -> str:
    events = getattr(km, "limit_events", {}) or {}
    hit = []
    if events.get("pids"):
        hit.append(f"process limit of {sandbox.pids_max} reached (fork loop?)")
    if events.get("memory"):
        hit.append(f"memory limit of {sandbox.memory_mb} MiB exceeded")
    if hit:
        return "the kernel was killed: " + " and ".join(hit)
    log = getattr(km, "kernel_log_tail", "") or ""
    if "CPU time limit" in log or "SIGXCPU" in log:
        return f"the kernel was killed: CPU time limit of {sandbox.cpu_seconds} s exceeded"
    return "the kernel died while running this cell (os._exit, a crash or a kill); later cells ran in a fresh kernel"


def _label(nb, index: int) -> str:
    """A student-readable name for a cell: its grade id, or the graded cell it follows."""
    gid = nb.cells[index].metadata.get("nbgrader", {}).get("grade_id")
    if gid:
        return f"cell {gid}"
    for j in range(index - 1, -1, -1):
        prev = nb.cells[j].metadata.get("nbgrader", {}).get("grade_id")
        if prev:
            return f"the cell after {prev}"
    return "a cell at the top"


def disk_note(sandbox: Sandbox) -> str:
    return (f"disk limit of {sandbox.disk_mb} MiB reached: the work dir was full, so writes failed "
            "with 'No space left on device'")


async def _run(nb, cfg: Config, workdir: str, kernel_name: str, timeout: int | None, kms: list | None = None
               ) -> NotebookOutcome:
    """Execute ``nb`` in place; the outcome's notes, restarts, limits, warm and truncated."""
    sandbox = Sandbox(config=cfg)
    kms = [] if kms is None else kms
    client = GradingClient(
        nb, config=cfg, kernel_manager_class=SandboxedKernelManager, kernel_name=kernel_name,
        timeout=timeout, allow_errors=True, interrupt_on_timeout=True, shutdown_kernel="immediate",
        record_timing=False, resources={"metadata": {"path": workdir}},
        max_output_bytes_cell=sandbox.max_output_bytes_cell,
        max_output_bytes_notebook=sandbox.max_output_bytes_notebook,
        error_on_timeout={"ename": "CellTimeoutError", "evalue": "timeout"},   # its reply: see _record_error_reply
    )
    loop = asyncio.get_running_loop()
    deadline = loop.time() + sandbox.wall_seconds
    code = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and c.source.strip()]
    for i in code:
        nb.cells[i].outputs = []
    pos, restarts, skip = 0, 0, set()
    notes: list[str] = []
    limits: dict[str, bool] = {}
    warm: list[bool] = []                # per kernel started: forked from the zygote or not

    def abandon(from_pos: int, kind: str, message: str) -> None:
        for j in code[from_pos:]:
            fail_cell(nb.cells[j], kind, message)

    while pos < len(code):
        died_at, why, km, started = None, "", None, False
        try:
            async with client.async_setup_kernel():
                km, started = client.km, True
                kms.append(km)
                if pos:
                    saved = {j: copy.deepcopy(nb.cells[j]) for j in code[:pos]}
                    for j in code[:pos]:
                        if j not in skip:
                            await asyncio.wait_for(client.async_execute_cell(copy.deepcopy(nb.cells[j]), j),
                                                   max(1.0, deadline - loop.time()))
                    for j, cell in saved.items():
                        nb.cells[j] = cell
                while pos < len(code):
                    i = code[pos]
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        raise asyncio.TimeoutError
                    try:
                        await asyncio.wait_for(client.async_execute_cell(nb.cells[i], i), remaining)
                    except (DeadKernelError, CellTimeoutError) as exc:
                        died_at, why = i, str(exc)
                        break
                    pos += 1
                    if (grader_error(nb.cells[i]) or {}).get("kind") == "timeout":
                        # interrupted: make sure the kernel came back before going on
                        timed_out = nb.cells[i]
                        try:
                            await asyncio.wait_for(client.async_execute_cell(nbformat.v4.new_code_cell("pass"), i), 10)
                            nb.cells[i] = timed_out
                        except Exception:  # noqa: BLE001
                            nb.cells[i] = timed_out
                            died_at, why = i, "timeout"
                            pos -= 1
                            break
        except asyncio.TimeoutError:
            i = code[min(pos, len(code) - 1)]
            fail_cell(nb.cells[i], "wall_clock", f"the notebook exceeded its wall-clock limit of {sandbox.wall_seconds} s")
            abandon(pos + 1, "not_run", "not run: the notebook exceeded its wall-clock limit")
            notes.append(f"wall-clock limit of {sandbox.wall_seconds} s exceeded")
            break
        except DeadKernelError:
            died_at, why = code[pos], "died during replay"
        except Exception as exc:  # noqa: BLE001  (sandbox or kernelspec; or the kernel sent what cannot be read)
            if started:
                msg = (f"the kernel sent a message the grader cannot read ({type(exc).__name__}: {exc}"[:300]
                       + "); this cell and the ones after it were not run")
            else:
                msg = f"the kernel could not start: {type(exc).__name__}: {exc}"[:500]
            abandon(pos, "kernel_protocol" if started else "kernel_start", msg)
            notes.append(msg)
            break
        if km is not None:
            warm.append(bool(getattr(km, "warm", False)))
            limits.update({k: v for k, v in (getattr(km, "limit_events", {}) or {}).items() if v})
        if died_at is None:
            break
        reason = ("the cell ran longer than its time limit and could not be interrupted" if why == "timeout"
                  else _death_reason(km, 0, sandbox))
        if grader_error(nb.cells[died_at]) is None:
            fail_cell(nb.cells[died_at], "kernel_died", reason)
        notes.append(f"{_label(nb, died_at)}: {reason}")
        skip.add(died_at)
        pos = code.index(died_at) + 1
        restarts += 1
        if restarts > sandbox.max_restarts and pos < len(code):
            abandon(pos, "not_run", f"not run: the kernel died {restarts} times")
            break
    for j in sorted(client.truncated):
        mark_grader_error(nb.cells[j], "output_limit", "outputs cut at the sandbox's size limit")
    for j in code:
        if (grader_error(nb.cells[j]) or {}).get("kind") == "timeout":
            notes.append(f"{_label(nb, j)}: the cell ran longer than {timeout} s and was interrupted")
    dropped = max((len(getattr(getattr(km, "harvest", None), "dropped", None) or []) for km in kms), default=0)
    if dropped:     # not their names: the kernel chose them after it saw the hidden tests
        notes.append(f"{dropped} file(s) the notebook wrote were not kept (links, FIFOs, devices, nested too deep, "
                     f"or past the limits of {sandbox.side_effect_files} files / {sandbox.side_effect_mb} MiB)")
    pages = max((getattr(getattr(km, "harvest", None), "pages", 0) for km in kms), default=0)
    if pages:
        notes.append(boxfs.PAGES_NOT_KEPT.format(n=pages))
    if limits.get("disk"):          # the box's filesystem was full when the grader took its files
        notes.append(disk_note(sandbox))
    return NotebookOutcome("", notes=notes, restarts=restarts, limits=limits, warm=warm,
                           truncated=sorted(client.truncated))


def execute_job(job: Job) -> JobOutcome:
    """Run a submission's notebooks one after another in one work dir, so that a file one notebook
    writes is there for the next (as with nbgrader autograde). Never raises for anything the
    student's code does; a notebook the watchdog abandoned comes back with ``crash_kind``
    ``watchdog``."""
    start = time.perf_counter()
    cfg = Config(job.config or {})
    sandbox = Sandbox(config=cfg)
    workdir = tempfile.mkdtemp(prefix="mlbd-job-")
    out = JobOutcome(worker_pid=os.getpid())
    try:
        for rel, data in job.files.items():
            target = Path(workdir) / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        for spec in job.notebooks:
            out.notebooks.append(_execute_notebook(spec, cfg, sandbox, workdir, job.timeout))
        out.files = _written(workdir, job.files, sandbox)
        pages = boxfs.drop_unkeepable(out.files)
        if pages and out.notebooks:
            out.notebooks[-1].notes.append(boxfs.PAGES_NOT_KEPT.format(n=pages))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    out.seconds = time.perf_counter() - start
    return out


def _execute_notebook(spec: JobNotebook, cfg: Config, sandbox: Sandbox, workdir: str, timeout: int | None
                      ) -> NotebookOutcome:
    start = time.perf_counter()
    nb = nbformat.reads(spec.notebook, as_version=4)
    kms: list = []
    try:
        out = _with_watchdog(lambda: asyncio.run(_run(nb, cfg, workdir, spec.kernel_name, timeout, kms)),
                             sandbox.wall_seconds + sandbox.watchdog_seconds, kms)
    except WatchdogTimeout as exc:
        out = NotebookOutcome(spec.name, crash=str(exc), crash_kind="watchdog")
    else:
        out.name, out.notebook = spec.name, nbformat.writes(nb)
    out.seconds = time.perf_counter() - start
    return out


def _written(workdir: str, given: dict[str, bytes], sandbox: Sandbox) -> dict[str, bytes]:
    """The files the notebooks wrote or changed in the work dir (bounded, regular files only)."""
    fd = boxfs.open_dir(workdir)
    try:
        got = boxfs.harvest(fd, sandbox.side_effect_files + len(given), sandbox.side_effect_mb * 2**20
                            + sum(map(len, given.values())), skip=lambda rel: rel.endswith(".ipynb"))
    finally:
        os.close(fd)
    return {rel: data for rel, data in got.files.items() if given.get(rel) != data}


def _with_watchdog(fn, seconds: float, kms: list):
    """``fn()`` in a thread; past ``seconds``, kill the kernels it started and raise WatchdogTimeout
    (the thread, stuck in whatever blocked it, is left behind as a daemon)."""
    box: dict = {}

    def target():
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001  (re-raised in the caller)
            box["error"] = exc

    worker = threading.Thread(target=target, name="mlbd-job", daemon=True)
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        for km in list(kms):
            try:
                km.abort()
            except Exception:  # noqa: BLE001
                pass
        raise WatchdogTimeout(f"grading watchdog: the notebook did not finish within {seconds:.0f} s "
                              "(its kernel was killed; other submissions were not held up)")
    if "error" in box:
        raise box["error"]
    return box["value"]
