"""A vectorizer's versions (autoembed.vectorizer_versions) from Python: list
them, change the model, follow a campaign until it is done."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import psycopg

COLUMNS = (
    "version, model, model_version, dimensions, storage, state, activate, embedded_rows, chunks, "
    "rows_total, rows_done, pending, in_flight, failed, percent, rows_per_second, eta, "
    "created_at, completed_at, activated_at, retired_at, error"
)


@dataclass(frozen=True)
class Version:
    version: int
    model: str
    model_version: str | None
    dimensions: int
    storage: str
    state: str
    activate: str
    embedded_rows: int
    chunks: int
    rows_total: int | None
    rows_done: int | None
    pending: int
    in_flight: int
    failed: int
    percent: float | None
    rows_per_second: float | None
    eta: dt.timedelta | None
    created_at: dt.datetime
    completed_at: dt.datetime | None
    activated_at: dt.datetime | None
    retired_at: dt.datetime | None
    error: str | None

    def as_json(self) -> dict[str, Any]:
        d = asdict(self)
        for key, value in d.items():
            if isinstance(value, dt.datetime):
                d[key] = value.isoformat()
            elif isinstance(value, dt.timedelta):
                d[key] = value.total_seconds()
        d["percent"] = None if self.percent is None else float(self.percent)
        d["rows_per_second"] = None if self.rows_per_second is None else float(self.rows_per_second)
        return d


def fetch(conn: psycopg.Connection[Any], name: str) -> list[Version]:
    """The vectorizer's versions, oldest first (the database's error, naming
    the vectorizers there are, when there is no such one)."""
    conn.execute("SELECT FROM autoembed._vectorizer(%s)", (name,))
    rows = conn.execute(
        f"SELECT {COLUMNS} FROM autoembed.vectorizer_versions "  # COLUMNS: constant
        "WHERE vectorizer = %s ORDER BY version",
        (name,),
    ).fetchall()
    return [Version(*r) for r in rows]


def set_model(
    conn: psycopg.Connection[Any],
    name: str,
    model: str,
    dimensions: int | None = None,
    activate: str = "auto",
    storage: str | None = None,
) -> int:
    """autoembed.set_model: start (or reuse) the version of ``model`` stored
    as ``storage`` (vector, halfvec, binary; None: as the active version);
    its number."""
    row = conn.execute(
        "SELECT autoembed.set_model(%s, %s, %s::int, %s, %s)",
        (name, model, dimensions, activate, storage),
    ).fetchone()
    assert row is not None
    return int(row[0])


@dataclass(frozen=True)
class Progress:
    """How far a version is (autoembed.version_progress: cheap to poll)."""

    version: int
    state: str
    rows_total: int | None
    rows_done: int | None
    pending: int
    in_flight: int
    failed: int
    percent: float | None


def progress(conn: psycopg.Connection[Any], name: str, version: str) -> Progress | None:
    """The version's progress; None when it does not exist (any more)."""
    try:
        row = conn.execute(
            "SELECT * FROM autoembed.version_progress(%s, %s)", (name, version)
        ).fetchone()
    except psycopg.errors.UndefinedObject:
        return None
    return None if row is None else Progress(*row)


def wait(
    conn: psycopg.Connection[Any],
    name: str,
    version: int,
    on_progress: Callable[[Progress], None] | None = None,
    poll_seconds: float = 1.0,
    timeout: float | None = None,
) -> Progress | None:
    """Follow version ``version`` until its campaign is over: its progress as
    it ended (active, or ready), or None when it was dropped (cancelled).
    TimeoutError after ``timeout`` seconds."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        current = progress(conn, name, str(version))
        if current is not None and on_progress is not None:
            on_progress(current)
        if current is None or current.state != "building":
            return current
        if deadline is not None and time.monotonic() >= deadline:
            raise TimeoutError(f"version {version} of {name!r} is still building")
        time.sleep(poll_seconds)


def _age(when: dt.datetime | None) -> str:
    if when is None:
        return ""
    return when.astimezone().strftime("%Y-%m-%d %H:%M")


def _eta(v: Version) -> str:
    if v.state != "building":
        return ""
    return "?" if v.eta is None else str(dt.timedelta(seconds=round(v.eta.total_seconds())))


def format_table(versions: list[Version]) -> str:
    header = [
        "version",
        "model",
        "state",
        "dims",
        "storage",
        "done",
        "%",
        "rows/s",
        "eta",
        "activated",
    ]
    body = [
        [
            str(v.version),
            v.model,
            v.state + (" (manual)" if v.state == "building" and v.activate == "manual" else ""),
            str(v.dimensions),
            v.storage,
            f"{v.rows_done}/{v.rows_total}",
            "" if v.percent is None else f"{v.percent:.1f}",
            "" if not v.rows_per_second else f"{v.rows_per_second:.1f}",
            _eta(v),
            _age(v.activated_at),
        ]
        for v in versions
    ]
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(b, widths, strict=True)) for b in body]
    for v in versions:
        lines.append(f"version {v.version}: {v.model_version or '(no vectors yet)'}")
        if v.error:
            lines.append(f"version {v.version}: {v.error}")
    return "\n".join(lines)
