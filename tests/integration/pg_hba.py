"""pg_hba.conf rules for tests that need the server to ask for a password
(the embedded server trusts its unix socket)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg


@contextmanager
def passwords_asked(conn: psycopg.Connection[Any]) -> Iterator[Callable[[str], None]]:
    """ask(role): make pg_hba.conf ask that role (only) for a password on the
    unix socket; the file is restored when the block ends."""
    row = conn.execute("SHOW hba_file").fetchone()
    assert row is not None
    hba = Path(row[0])
    original = hba.read_text()

    def ask(role: str) -> None:
        hba.write_text(f"local all {role} scram-sha-256\n" + hba.read_text())
        conn.execute("SELECT pg_reload_conf()")
        time.sleep(0.3)

    try:
        yield ask
    finally:
        hba.write_text(original)
        conn.execute("SELECT pg_reload_conf()")
