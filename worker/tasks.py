"""The Celery task: drain one vectorizer for a while."""

from __future__ import annotations

import logging
import time

import kombu.exceptions
import psycopg

from autoembed.worker import queue
from autoembed.worker.app import app, settings
from autoembed.worker.connection import discard, worker_connection
from autoembed.worker.drain import drain_vectorizer
from autoembed.worker.pipeline import VectorizerUnavailable

log = logging.getLogger("autoembed.worker")


@app.task(name="autoembed.drain", ignore_result=True)  # type: ignore[untyped-decorator]
def drain(vectorizer_id: int, continuation: bool = False) -> dict[str, int]:
    """Claim and embed batches of the vectorizer until it has no claimable
    work or the task's time budget is spent (then signal a continuation)."""
    url = settings.require_database_url()
    started = continuation
    try:
        conn = worker_connection(url, settings.statement_timeout)
        if not continuation:
            queue.drain_started(conn, vectorizer_id)  # the dispatcher counts its signals
            started = True
        stats = drain_vectorizer(
            conn, vectorizer_id, settings, deadline=time.monotonic() + settings.task_seconds
        )
    except VectorizerUnavailable as e:
        log.error("%s", e)
        return {"written": 0, "failed": 0}
    except (psycopg.errors.UndefinedObject, psycopg.errors.UndefinedTable) as e:
        # dropped while queued, or its table is gone: nothing to do
        log.warning("vectorizer %s: %s", vectorizer_id, e.diag.message_primary or e)
        return {"written": 0, "failed": 0}
    except psycopg.OperationalError as e:
        # Database gone or restarting: the rows stay queued. Try again in a
        # moment on a new connection, so the signal is not lost (the
        # dispatcher would count it as waiting in the broker until
        # redeliver_seconds); the sweep is the backstop.
        log.warning(
            "database unavailable while draining vectorizer %s (again in %.0f s): %s",
            vectorizer_id,
            DB_RETRY_SECONDS,
            e,
        )
        discard()
        _send(vectorizer_id, started, countdown=DB_RETRY_SECONDS)
        return {"written": 0, "failed": 0}
    if stats.more_work:
        _send(vectorizer_id, True)
    if stats.written or stats.failed:
        log.info(
            "vectorizer %s: %d rows embedded (%d chunks), %d failed",
            vectorizer_id,
            stats.written,
            stats.chunks,
            stats.failed,
        )
    return {"written": stats.written, "failed": stats.failed}


# Seconds a drain task waits before trying again when the database is away.
DB_RETRY_SECONDS = 2.0


def _send(vectorizer_id: int, continuation: bool, countdown: float | None = None) -> None:
    try:
        drain.apply_async(args=(vectorizer_id, continuation), countdown=countdown)
    except kombu.exceptions.OperationalError as e:
        # Broker gone: the work stays queued in Postgres, and the
        # dispatcher's sweep signals it again once the broker is back.
        log.warning("broker unavailable, vectorizer %s continues later: %s", vectorizer_id, e)


def signal(vectorizer_id: int) -> bool:
    """Tell some worker that the vectorizer has work; False when the broker
    is unavailable (the dispatcher's next sweep signals again)."""
    try:
        drain.apply_async(args=(vectorizer_id,))
    except kombu.exceptions.OperationalError as e:
        log.warning("broker unavailable, vectorizer %s signalled later: %s", vectorizer_id, e)
        return False
    return True


def queued_signals() -> int | None:
    """How many messages the broker holds for drain tasks (the dispatcher's
    signals and continuations): those waiting in its queue and, with Redis,
    those delivered to a worker and not yet acknowledged (tasks acknowledge
    late), so a message a busy worker has taken but not yet started is not
    counted as lost. None when the broker cannot be asked."""
    try:
        with app.connection_for_read() as conn:
            conn.ensure_connection(max_retries=1, interval_start=0)
            channel = conn.default_channel
            unacked_key = getattr(channel, "unacked_key", None)
            delivered = int(channel.client.hlen(unacked_key)) if unacked_key else 0
            try:
                ok = channel.queue_declare(queue=app.conf.task_default_queue, passive=True)
            except conn.channel_errors:
                return delivered  # no such queue: Redis drops an empty one
            return int(ok.message_count) + delivered
    except (kombu.exceptions.OperationalError, OSError) as e:
        log.debug("cannot count the broker's messages: %s", e)
        return None
