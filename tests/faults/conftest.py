"""Fault suite fixtures: the end-to-end ones (a real Redis server, real
Celery worker processes) plus the report printed at the end of the run and,
with AUTOEMBED_FAULTS_FULL=1, written to benchmarks/results/faults.json."""

from __future__ import annotations

from typing import Any

from tests.e2e.conftest import broker, redis_server, start_worker
from tests.faults import helpers

__all__ = ["broker", "redis_server", "start_worker"]


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not helpers.RESULTS:
        return
    mode = "full" if helpers.FULL else "fast subset"
    terminalreporter.section(f"fault scenarios ({mode})")
    terminalreporter.write_line(helpers.table())
    if helpers.FULL:
        path = helpers.write_report()
        terminalreporter.write_line(f"report: {path}")


def pytest_collection_modifyitems(config: Any, items: list[Any]) -> None:
    """The faults_full scenarios run only in the full suite (scripts/faults)."""
    if helpers.FULL:
        return
    keep = [i for i in items if i.get_closest_marker("faults_full") is None]
    if len(keep) < len(items):
        config.hook.pytest_deselected(items=[i for i in items if i not in keep])
        items[:] = keep
