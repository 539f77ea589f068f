"""The campaign benchmark's watch over a model change: the new version's
progress (autoembed.version_progress) polled, printed and kept during the
campaign phase until the version is no longer building."""

from __future__ import annotations

import os
import time
from typing import Any

from campaign_base import Conn, say
from campaign_load import Phase
from campaign_report import fmt
from campaign_worker import Worker

from autoembed import versions


def fmt_duration(seconds: float | None) -> str:
    if seconds is None or seconds != seconds:
        return "?"
    whole = round(seconds)
    h, rest = divmod(whole, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


class CampaignWatch:
    """Polls the campaign's progress; prints and keeps it (rows done, rows/s
    since set_model and over the last minute, ETA at the pace since
    set_model); done when its version is no longer building."""

    def __init__(
        self, conn: Conn, name: str, ordinal: int, worker: Worker, started: float, stall_s: float
    ) -> None:
        self.conn, self.name, self.ordinal, self.worker = conn, name, ordinal, worker
        self.started, self.stall_s = started, stall_s
        self.state = "building"
        self.last_done, self.last_change = -1, time.monotonic()

    def __call__(self, phase: Phase) -> bool:
        mine = versions.progress(self.conn, self.name, str(self.ordinal))
        if mine is None:
            raise RuntimeError(f"version {self.ordinal} of {self.name} is gone")
        elapsed = time.monotonic() - self.started
        done, total = int(mine.rows_done or 0), int(mine.rows_total or 0)
        rate = done / elapsed if elapsed > 0 else float("nan")
        eta = (total - done) / rate if rate > 0 else None
        minute_ago = next((p for p in phase.progress if p["t"] >= elapsed - 60), None)
        recent = (
            (done - minute_ago["rows_done"]) / (elapsed - minute_ago["t"])
            if minute_ago is not None and elapsed - minute_ago["t"] >= 1
            else float("nan")
        )
        snapshot: dict[str, Any] = {
            "t": round(elapsed, 1),
            "state": mine.state,
            "rows_done": done,
            "rows_total": total,
            "pending": int(mine.pending),
            "in_flight": int(mine.in_flight),
            "percent": float(mine.percent or 0),
            "rows_per_second": rate,
            "rows_per_second_last_minute": recent,
            "eta_s": eta,
            "searches": len(phase.searches),
            "probes": len(phase.probes),
            "loadavg": os.getloadavg()[0],
        }
        phase.progress.append(snapshot)
        self.state = str(mine.state)
        say(
            f"  {fmt_duration(elapsed):>9}  v{self.ordinal} {self.state:<8} "
            f"rows {done:,}/{total:,} ({snapshot['percent']:.1f}%)  "
            f"{rate:.2f} rows/s since set_model, {fmt(recent)} over the last minute  "
            f"ETA {fmt_duration(eta) if self.state == 'building' else '-'}  "
            f"[{len(phase.searches)} searches, {len(phase.probes)} inserts; "
            f"load {snapshot['loadavg']:.1f}]"
        )
        if self.state != "building":
            return True
        if not self.worker.alive():
            raise RuntimeError(f"the worker exited during the campaign; see {self.worker.log_path}")
        if done != self.last_done:
            self.last_done, self.last_change = done, time.monotonic()
        elif time.monotonic() - self.last_change > self.stall_s:
            raise RuntimeError(
                f"no progress for {self.stall_s:.0f}s (rows_done {done}); "
                f"see {self.worker.log_path}"
            )
        return False
