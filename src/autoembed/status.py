"""``autoembed status``: the vectorizer_status view, as a table or JSON."""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass
from typing import Any

import psycopg


@dataclass(frozen=True)
class VectorizerStatus:
    id: int
    name: str
    source: str
    model: str
    model_version: str | None
    embedded_rows: int
    chunks: int
    pending: int
    in_flight: int
    failed: int
    lag: dt.timedelta
    last_activity: dt.datetime | None
    paused: bool
    error: str | None
    # a running re-embedding campaign (autoembed versions NAME shows more)
    campaign_version: int | None = None
    campaign_model: str | None = None
    campaign_percent: float | None = None
    campaign_eta: dt.timedelta | None = None

    def as_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["lag_seconds"] = self.lag.total_seconds()
        del d["lag"]
        d["last_activity"] = self.last_activity.isoformat() if self.last_activity else None
        d["campaign_percent"] = (
            None if self.campaign_percent is None else float(self.campaign_percent)
        )
        d["campaign_eta"] = None if self.campaign_eta is None else self.campaign_eta.total_seconds()
        return d


def fetch(conn: psycopg.Connection[Any], name: str | None = None) -> list[VectorizerStatus]:
    """Every vectorizer's status, or ``name``'s (an error naming the
    vectorizers there are when there is no such one)."""
    if name is not None:
        conn.execute("SELECT FROM autoembed._vectorizer(%s)", (name,))
    rows = conn.execute(
        "SELECT id, name, source, model, model_version, embedded_rows, chunks, pending, "
        "in_flight, failed, lag, last_activity, paused, error, campaign_version, campaign_model, "
        "campaign_percent, campaign_eta "
        "FROM autoembed.vectorizer_status WHERE %s::text IS NULL OR name = %s ORDER BY id",
        (name, name),
    ).fetchall()
    return [VectorizerStatus(*r) for r in rows]


def _lag(td: dt.timedelta) -> str:
    s = td.total_seconds()
    if s < 60:
        return f"{s:.1f}s"
    if s < 3600:
        return f"{s / 60:.1f}m"
    return f"{s / 3600:.1f}h"


def format_table(rows: list[VectorizerStatus]) -> str:
    if not rows:
        return "no vectorizers (create one with SELECT autoembed.create_vectorizer(...))"
    header = [
        "name",
        "source",
        "embedded",
        "chunks",
        "pending",
        "in flight",
        "failed",
        "lag",
        "state",
        "model version",
    ]
    body = [
        [
            r.name,
            r.source,
            str(r.embedded_rows),
            str(r.chunks),
            str(r.pending),
            str(r.in_flight),
            str(r.failed),
            _lag(r.lag),
            "paused" if r.paused else ("error" if r.error else "ok"),
            r.model_version or f"{r.model} (not embedded yet)",
        ]
        for r in rows
    ]
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(b, widths, strict=True)) for b in body]
    for r in rows:
        if r.campaign_version is not None:
            eta = "" if r.campaign_eta is None else f", about {_lag(r.campaign_eta)} to go"
            lines.append(
                f"{r.name}: re-embedding with {r.campaign_model} (version {r.campaign_version}): "
                f"{r.campaign_percent}%{eta}; autoembed versions {r.name}"
            )
        if r.error:
            lines.append(f"{r.name}: {r.error}")
    return "\n".join(lines)
