"""``autoembed worker --once``: drain everything in this process and exit,
with a progress bar on a terminal."""

from __future__ import annotations

import sys

from tqdm import tqdm

from autoembed.db import connect
from autoembed.settings import Settings
from autoembed.worker import queue
from autoembed.worker.connection import WORKER_APPLICATION, secure_session
from autoembed.worker.drain import DrainStats, drain_all
from autoembed.worker.pipeline import BatchResult


def run_once(settings: Settings, show_progress: bool | None = None) -> DrainStats:
    url = settings.require_database_url()
    if show_progress is None:
        show_progress = sys.stderr.isatty()
    with connect(url, application_name=f"{WORKER_APPLICATION} --once") as conn:
        secure_session(conn, settings.statement_timeout)
        queue.prepare(conn)
        total = sum(p for p, _failed in queue.pending(conn).values())
        with tqdm(total=total, unit="row", desc="embedding", disable=not show_progress) as bar:

            def progress(_vid: int, result: BatchResult) -> None:
                bar.update(result.written + result.failed)

            return drain_all(conn, settings, progress=progress)
