"""Models loaded when a worker process starts, not by its first task.

A Celery pool process (``worker_process_init``, app.py) loads the model of
every vectorizer's active version and of any campaign's building version, and
embeds one text with each (the first call of a model costs more than the
next), so the first change after a worker starts is embedded as fast as the
ones after it, instead of waiting seconds for a model to load. It runs in a
thread of that process: the pool process reports itself up to Celery at
once (Celery kills one that takes more than a few seconds), and a task that
arrives meanwhile waits for the model in ``load_embedder`` rather than
loading it a second time.
"""

from __future__ import annotations

import logging
import os
import threading
import time

from autoembed.db import connect
from autoembed.settings import Settings
from autoembed.worker.connection import secure_session
from autoembed.worker.embedders import load_embedder

log = logging.getLogger("autoembed.worker")

# What `preload_models` logs for each model, before any task needs it.
LOADED = "model %s loaded at start in %.1f s (process %d)"


def models_in_use(url: str, statement_timeout: float = 0.0) -> list[str]:
    """The models of the vectorizers' active and building versions."""
    with connect(url, application_name="autoembed worker") as conn:
        secure_session(conn, statement_timeout)
        rows = conn.execute(
            "SELECT DISTINCT model FROM autoembed.vectorizer_version "
            "WHERE state IN ('active', 'building') ORDER BY model"
        ).fetchall()
    return [str(r[0]) for r in rows]


def preload_models(settings: Settings) -> list[str]:
    """Load (and warm up) the models drain tasks will use, as they load them;
    returns those loaded. A model that fails to load is left to the tasks,
    which record why on the version."""
    try:
        models = models_in_use(settings.require_database_url(), settings.statement_timeout)
    except Exception as e:  # database away or not installed yet: tasks load lazily
        log.warning("no models loaded at start (%s); tasks load them when needed", e)
        return []
    loaded = []
    for model in models:
        start = time.monotonic()
        try:
            load_embedder(model, settings.device).embed(["autoembed warm-up"])
            if settings.embed_cache:
                load_embedder(model, settings.device, settings.embed_cache)
        except Exception as e:
            log.warning("model %s not loaded at start: %s", model, e)
            continue
        log.info(LOADED, model, time.monotonic() - start, os.getpid())
        loaded.append(model)
    return loaded


def start_preload(settings: Settings) -> threading.Thread:
    """Preload in a daemon thread of this process."""
    thread = threading.Thread(
        target=preload_models, args=(settings,), name="autoembed-preload", daemon=True
    )
    thread.start()
    return thread
