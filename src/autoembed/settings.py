"""Settings shared by the CLI, the worker and the dispatcher, read from the
environment (``AUTOEMBED_*``) so Celery's own command line needs no flags."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

DEFAULT_BROKER_URL = "redis://localhost:6379/0"


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number, got {raw!r}") from None


def _env_int(name: str, default: int | None) -> int | None:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from None


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "1") not in ("0", "false", "no")


def broker_transport_options() -> dict[str, object]:
    """Celery's broker_transport_options: a one-hour visibility timeout (how
    long Redis waits before it delivers an unacknowledged task message again),
    updated by the JSON object in AUTOEMBED_BROKER_TRANSPORT_OPTIONS, e.g.
    ``{"visibility_timeout": 600}``."""
    options: dict[str, object] = {"visibility_timeout": 3600}
    raw = os.environ.get("AUTOEMBED_BROKER_TRANSPORT_OPTIONS")
    if raw:
        try:
            extra = json.loads(raw)
        except ValueError:
            extra = None
        if not isinstance(extra, dict):
            raise ValueError(
                f"AUTOEMBED_BROKER_TRANSPORT_OPTIONS must be a JSON object, got {raw!r}"
            )
        options.update(extra)
    return options


@dataclass(frozen=True)
class Settings:
    database_url: str | None = None
    broker_url: str = DEFAULT_BROKER_URL
    # Rows per claim; None picks by device (CPU 16, CUDA 128).
    batch_size: int | None = None
    # How long a claim is held before another worker may take the rows over.
    lease_seconds: float = 300.0
    # A task returns (and re-signals itself) after this long, for fairness.
    task_seconds: float = 30.0
    # Most drain tasks the dispatcher keeps running per vectorizer.
    parallelism: int = 4
    sweep_seconds: float = 5.0
    # Signals that wait this long with no drain task starting are sent again.
    redeliver_seconds: float = 60.0
    # cpu, cuda, cuda:N; None picks CUDA when available.
    device: str | None = None
    dispatcher: bool = True
    # Run the query service (text queries from SQL) next to each Celery worker.
    query_service: bool = True
    # Query embeddings cached per model version (the most recently used).
    query_cache_size: int = 10000
    # CPU threads for the query service's model (0: torch's default). One
    # short query gains nothing from more, and several threads on busy CPUs
    # wait on each other (MiniLM, 2 busy cores: 16 ms with 1 thread, 0.5 s with 2).
    query_threads: int = 1
    # Where an application (the SQLAlchemy integration) embeds a search's
    # query text: "database" asks autoembed.embed_query, which a worker's
    # query service answers (no model in the application's processes: the
    # default, for web apps); "process" embeds it in this process when it
    # loads exactly the stored vectors' model version (on query_threads CPU
    # threads; off the event loop for async callers), else asks the database.
    query_embedding: str = "database"
    # Distinct chunk texts whose vectors a worker process remembers, so that
    # identical texts are embedded once (0: off).
    embed_cache: int = 0
    # Seconds any one statement of a worker may run (0: the role's setting).
    # A hung statement then fails and its rows go back to the queue.
    statement_timeout: float = 300.0
    # The share of a worker's batches a re-embedding campaign (and keeping
    # other versions current) may take while the active version has fresh
    # work waiting (0: only when there is none; 1: campaign first).
    campaign_share: float = 0.25
    # A campaign's batches are sized to take about this long, so fresh work
    # arriving meanwhile waits at most that for a worker.
    campaign_batch_seconds: float = 1.0
    # The active version's batches too while changes are coming in (at most
    # batch_size rows), so a change made during a backfill waits about that
    # for the batch in flight; with none coming in, batches of batch_size.
    batch_seconds: float = 0.5

    def __post_init__(self) -> None:
        checks = [
            ("batch_size", self.batch_size is None or self.batch_size >= 1, "at least 1"),
            ("lease_seconds", self.lease_seconds > 0, "positive"),
            ("task_seconds", self.task_seconds > 0, "positive"),
            ("parallelism", self.parallelism >= 1, "at least 1"),
            ("sweep_seconds", self.sweep_seconds > 0, "positive"),
            ("redeliver_seconds", self.redeliver_seconds > 0, "positive"),
            ("query_cache_size", self.query_cache_size >= 0, "at least 0"),
            ("query_threads", self.query_threads >= 0, "at least 0"),
            (
                "query_embedding",
                self.query_embedding in ("database", "process"),
                "database or process",
            ),
            ("embed_cache", self.embed_cache >= 0, "0 or more"),
            ("statement_timeout", self.statement_timeout >= 0, "0 or more"),
            ("campaign_share", 0 <= self.campaign_share <= 1, "between 0 and 1"),
            ("campaign_batch_seconds", self.campaign_batch_seconds > 0, "positive"),
            ("batch_seconds", self.batch_seconds > 0, "positive"),
        ]
        for name, ok, want in checks:
            if not ok:
                raise ValueError(f"{name} must be {want}, got {getattr(self, name)!r}")

    @classmethod
    def from_env(cls) -> Settings:
        return cls(
            database_url=os.environ.get("AUTOEMBED_DATABASE_URL") or None,
            broker_url=os.environ.get("AUTOEMBED_BROKER_URL") or DEFAULT_BROKER_URL,
            batch_size=_env_int("AUTOEMBED_BATCH_SIZE", None),
            lease_seconds=_env_float("AUTOEMBED_LEASE_SECONDS", 300.0),
            task_seconds=_env_float("AUTOEMBED_TASK_SECONDS", 30.0),
            parallelism=_env_int("AUTOEMBED_PARALLELISM", 4) or 0,
            sweep_seconds=_env_float("AUTOEMBED_SWEEP_SECONDS", 5.0),
            redeliver_seconds=_env_float("AUTOEMBED_REDELIVER_SECONDS", 60.0),
            device=os.environ.get("AUTOEMBED_DEVICE") or None,
            dispatcher=_env_flag("AUTOEMBED_DISPATCHER"),
            query_service=_env_flag("AUTOEMBED_QUERY_SERVICE"),
            query_cache_size=_env_int("AUTOEMBED_QUERY_CACHE_SIZE", 10000) or 0,
            query_threads=_env_int("AUTOEMBED_QUERY_THREADS", 1) or 0,
            query_embedding=os.environ.get("AUTOEMBED_QUERY_EMBEDDING") or "database",
            embed_cache=_env_int("AUTOEMBED_EMBED_CACHE", 0) or 0,
            statement_timeout=_env_float("AUTOEMBED_STATEMENT_TIMEOUT", 300.0),
            campaign_share=_env_float("AUTOEMBED_CAMPAIGN_SHARE", 0.25),
            campaign_batch_seconds=_env_float("AUTOEMBED_CAMPAIGN_BATCH_SECONDS", 1.0),
            batch_seconds=_env_float("AUTOEMBED_BATCH_SECONDS", 0.5),
        )

    def require_database_url(self) -> str:
        if not self.database_url:
            raise ValueError(
                "no database given: pass --db URL or set AUTOEMBED_DATABASE_URL "
                "(e.g. postgresql://user@localhost/mydb)"
            )
        return self.database_url
