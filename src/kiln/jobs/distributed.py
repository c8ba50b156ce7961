"""Scale-out: Celery with Redis as broker. ``kiln serve --broker URL`` queues job ids;
``kiln worker --broker URL --db-url URL`` processes, on as many machines as you like, run them.

Same job semantics as the local pool, because a worker runs the same
:meth:`LocalExecutor.run`: the job is claimed in the shared database (STARTING -> INPROGRESS,
so a job is never run twice), the compile runs in a subprocess with its time limit, stop
requests are read from the database, and the worker sends heartbeats. The server's reaper fails
jobs whose worker stopped sending them (a ``kill -9``'d worker, a lost machine). Only job ids
travel through Redis (JSON), never job data.
"""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path

from kiln.jobs.executor import HEARTBEAT_S, ExecutorConfig, LocalExecutor
from kiln.jobs.store import JobStore

TASK = "kiln.run_compilation_job"


def celery_app(broker_url: str):
    try:
        from celery import Celery
    except ImportError as exc:
        from kiln.errors import KilnError

        raise KilnError("invalid_options", f"--broker needs {exc.name}",
                        hint="pip install 'kilnml[distributed]'") from None
    app = Celery("kiln", broker=broker_url)
    app.conf.update(task_serializer="json", accept_content=["json"], task_acks_late=False,
                    worker_prefetch_multiplier=1, broker_connection_retry_on_startup=True,
                    worker_hijack_root_logger=False, task_default_queue="kiln-jobs")
    return app


class CeleryExecutor:
    """The server's side: queue each new job id; fail jobs whose worker stopped beating."""

    def __init__(self, store: JobStore, broker_url: str, *, worker_timeout_s: float = 120) -> None:
        self.store, self.app = store, celery_app(broker_url)
        self._stop = threading.Event()
        self._reap_every, self.worker_timeout_s = HEARTBEAT_S, worker_timeout_s
        self._thread = threading.Thread(target=self._reaper, name="kiln-reaper", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def shutdown(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def submit(self, job_id: int) -> None:
        self.app.send_task(TASK, args=[job_id])

    def _reaper(self) -> None:
        while not self._stop.wait(self._reap_every):
            try:
                self.store.reap(self.worker_timeout_s)
            except Exception:  # the database is busy or away for a moment: next round
                pass


def run_worker(*, broker_url: str, db_url: str, state_dir: Path, concurrency: int,
               storage_options: dict) -> None:
    """``kiln worker``: a Celery worker (threads pool) running compilation jobs."""
    from kiln.jobs.store import migrate

    migrate(db_url)
    store = JobStore(db_url)
    executor = LocalExecutor(store, ExecutorConfig(state_dir=state_dir, concurrency=0,
                                                   storage_options=storage_options))
    me = f"{socket.gethostname()}:{os.getpid()}"
    app = celery_app(broker_url)

    @app.task(name=TASK)
    def run_compilation_job(job_id: int) -> str:
        row = store.claim(job_id, worker=me)
        if row is None:  # stopped while queued, or taken by another worker
            return "skipped"
        executor.run(row)
        return "done"

    app.worker_main(["worker", "--pool", "threads", "--concurrency", str(concurrency),
                     "--loglevel", "WARNING", "--queues", "kiln-jobs", "--without-gossip",
                     "--without-mingle", "--hostname", f"kiln@{me}"])
