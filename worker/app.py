"""The Celery app: ``celery -A autoembed.worker.app worker``.

Configured from the environment (AUTOEMBED_DATABASE_URL, AUTOEMBED_BROKER_URL
and the other AUTOEMBED_* settings). Messages only say "vectorizer N has
work"; Postgres holds the work itself, so a lost, duplicated or late message
delays work but never loses or corrupts it. Each worker also runs the
dispatcher (LISTEN/NOTIFY → tasks, plus a periodic sweep) unless
AUTOEMBED_DISPATCHER=0; only one dispatcher is active per database. And each
starts the query service, which embeds text queries for SQL
(autoembed.search(name, 'text')), unless AUTOEMBED_QUERY_SERVICE=0. Each
pool process loads the models in use as it starts (worker/preload.py).
"""

from __future__ import annotations

import logging
import subprocess
import threading
from typing import Any

from celery import Celery, bootsteps
from celery.signals import worker_process_init

from autoembed.settings import Settings, broker_transport_options

log = logging.getLogger("autoembed.worker")

settings = Settings.from_env()

app = Celery("autoembed")
app.conf.update(
    broker_url=settings.broker_url,
    broker_connection_retry_on_startup=True,
    broker_transport_options=broker_transport_options(),
    task_default_queue="autoembed",
    task_ignore_result=True,
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    worker_hijack_root_logger=False,
    include=["autoembed.worker.tasks"],
)


class DispatcherStep(bootsteps.StartStopStep):  # type: ignore[misc]
    """Runs the dispatcher in a thread of the worker's main process."""

    requires = {"celery.worker.components:Pool"}

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        self.enabled = settings.dispatcher and bool(settings.database_url)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, worker: Any) -> None:
        from autoembed.worker.dispatcher import Dispatcher
        from autoembed.worker.tasks import queued_signals, signal

        dispatcher = Dispatcher(
            settings.require_database_url(), signal, settings, queued=queued_signals
        )
        self._thread = threading.Thread(
            target=dispatcher.run, args=(self._stop,), name="autoembed-dispatcher", daemon=True
        )
        self._thread.start()

    def stop(self, worker: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


class QueryServiceStep(bootsteps.StartStopStep):  # type: ignore[misc]
    """Runs the query service (text queries from SQL, worker/query_service.py)
    as a child process: it loads models, and torch in this process would hang
    the pool processes forked after it."""

    requires = {"celery.worker.components:Pool"}

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        self.enabled = settings.query_service and bool(settings.database_url)
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, worker: Any) -> None:
        from autoembed.worker.query_service import start_process

        self._proc = start_process()

    def stop(self, worker: Any) -> None:
        from autoembed.worker.query_service import stop_process

        stop_process(self._proc)
        self._proc = None

    def terminate(self, worker: Any) -> None:
        self.stop(worker)


app.steps["worker"].add(DispatcherStep)
app.steps["worker"].add(QueryServiceStep)


@worker_process_init.connect  # type: ignore[untyped-decorator]
def _preload(**_: Any) -> None:
    """Each pool process (the processes that embed) loads the models in use
    as it starts, not when its first task needs them (worker/preload.py)."""
    if settings.database_url:
        from autoembed.worker.preload import start_preload

        start_preload(settings)
