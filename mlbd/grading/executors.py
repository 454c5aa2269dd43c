"""Where the sandboxed executions run: a local process pool, a Dask LocalCluster, or a remote scheduler.

All three take plain-data jobs (``protocol.Job`` for ``execute.execute_job``) and hand back futures; the trusted
process keeps preparing and scoring while they run.
"""
from __future__ import annotations

import concurrent.futures as cf
import logging
import multiprocessing
import os

from ..course import CourseError
from .protocol import Job


def _exit_with(pid: int, started: float) -> None:
    """A pool worker's initializer: the worker (and so, through bubblewrap's ``--die-with-parent``,
    its zygote and kernels) ends within a second of the grading process that started it, however
    that process ended (``kill -9`` of it alone leaves the forkserver's workers to init otherwise)."""
    import threading
    import time

    import psutil

    def alive() -> bool:
        try:
            return psutil.Process(pid).create_time() == started
        except psutil.Error:
            return False

    def watch() -> None:
        while alive():
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="mlbd-exit-with-grader", daemon=True).start()


class LocalPool:
    kind = "local"

    def __init__(self, jobs: int):
        import psutil

        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["mlbd.grading.execute"])
        self.jobs = jobs
        me = os.getpid()
        self.pool = cf.ProcessPoolExecutor(max_workers=jobs, mp_context=ctx, initializer=_exit_with,
                                           initargs=(me, psutil.Process(me).create_time()))
        self.description = f"local process pool, {jobs} worker(s)"

    def submit(self, fn, job: Job):
        return self.pool.submit(fn, job)

    def wait(self, futures, timeout: float | None = None):
        done, _ = cf.wait(futures, timeout=timeout, return_when=cf.FIRST_COMPLETED)
        return done

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


class DaskPool:
    kind = "dask"

    def __init__(self, jobs: int, address: str | None = None):
        try:
            from distributed import Client, LocalCluster
        except ImportError as exc:  # pragma: no cover
            raise CourseError("--executor dask needs dask[distributed] installed") from exc
        self.cluster = None
        self.jobs = jobs
        if address is None:
            self.cluster = LocalCluster(n_workers=jobs, threads_per_worker=1, processes=True,
                                        dashboard_address=None, silence_logs=logging.ERROR)
            self.client = Client(self.cluster)
            self.description = f"Dask LocalCluster, {jobs} worker(s)"
        else:
            try:
                self.client = Client(address, timeout="15s")
            except (OSError, TimeoutError) as exc:
                raise CourseError(f"cannot reach the Dask scheduler at {address}: {exc}") from exc
            n = len(self.client.scheduler_info().get("workers", {}))
            self.jobs = max(n, 1)
            self.description = f"Dask scheduler {address}, {n} worker(s)"

    def submit(self, fn, job: Job):
        return self.client.submit(fn, job, pure=False, key=f"mlbd-{job.id}-{os.urandom(4).hex()}")

    def wait(self, futures, timeout: float | None = None):
        from distributed import wait
        try:
            res = wait(list(futures), timeout=timeout, return_when="FIRST_COMPLETED")
        except TimeoutError:
            return set()
        return set(res.done)

    def close(self) -> None:
        try:
            self.client.close()
        finally:
            if self.cluster is not None:
                self.cluster.close()


def make(executor: str, jobs: int):
    if executor in (None, "", "local"):
        return LocalPool(jobs)
    if executor == "dask":
        return DaskPool(jobs)
    if executor.startswith(("tcp://", "tls://")):
        return DaskPool(jobs, address=executor)
    raise CourseError(f"unknown executor {executor!r}: use local, dask or tcp://HOST:PORT")
