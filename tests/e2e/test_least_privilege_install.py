"""The managed-PostgreSQL set-up, on PostgreSQL 18 (embedded) and 15 (+
pgvector 0.8.0, scripts/pg15): a superuser does only the one-time steps
(docs/least-privilege.md); an owner role that is NOT a superuser (and has no
CREATEROLE either) installs autoembed with the CLI and makes a vectorizer
over a table under row-level security; a real ``autoembed worker --once``
process logged in as the worker role embeds it; ``autoembed query-server``
as the worker role answers text queries; the reader types one in the real
psql and sees only its own rows. Before the superuser's steps, the owner's
``autoembed install`` fails with one line and the exact SQL to run — which
the test then runs, as the superuser."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from autoembed.db import connect
from autoembed.embedded import PostgresServer
from tests.conftest import PG_VERSIONS, url_as_role

pytestmark = pytest.mark.e2e

# id -> whose row it is (the reader sees only its own)
NOTES = {
    1: ("reader", "some text about the sea and its tides"),
    2: ("other", "some text about the sea, not for the reader"),
    3: ("reader", "a recipe for bread with some text"),
    4: ("other", "tax forms and other text"),
    5: ("reader", "mountain walks in the rain"),
    6: ("other", "some text the reader must never see"),
}


def autoembed_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTOEMBED_")}
    return subprocess.run(
        [sys.executable, "-m", "autoembed.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )


def psql(server: PostgresServer, url: str, *commands: str) -> subprocess.CompletedProcess[str]:
    """The server's own psql binary: no psqlrc, unaligned, tuples only."""
    args = [str(server.bindir / "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"]
    args += ["-d", url]
    for c in commands:
        args += ["-c", c]
    return subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)


class Cluster:
    """A fresh database on a server, with unique role names; dropped after."""

    def __init__(self, server: PostgresServer) -> None:
        tag = uuid.uuid4().hex[:8]
        self.server = server
        self.database = f"lp_{tag}"
        self.owner, self.worker, self.reader = (f"{r}_{tag}" for r in ("owner", "worker", "reader"))
        self.loopback = f"aeq_{tag}"
        with connect(server.url) as c:
            c.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.database)))
        self.superuser_url = server.url_for(self.database)

    def url(self, role: str) -> str:
        return url_as_role(self.superuser_url, role)

    def drop(self) -> None:
        with connect(self.server.url) as c:
            c.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                    sql.Identifier(self.database)
                )
            )
            for role in (self.owner, self.worker, self.reader, self.loopback):
                c.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


@pytest.fixture(params=PG_VERSIONS, ids=[f"pg{v}" for v in PG_VERSIONS])
def cluster(request: pytest.FixtureRequest, pg_servers: Callable[[str], Any]) -> Iterator[Cluster]:
    c = Cluster(pg_servers(request.param))
    try:
        yield c
    finally:
        c.drop()


@contextlib.contextmanager
def password_for_loopback(superuser: psycopg.Connection[Any], role: str) -> Iterator[None]:
    """pg_hba.conf asks the loopback role for its password on the unix socket
    (the superuser's one-time step for text queries); undone afterwards."""
    row = superuser.execute("SHOW hba_file").fetchone()
    assert row is not None
    hba = Path(row[0])
    original = hba.read_text()
    hba.write_text(f"local all {role} scram-sha-256\n" + original)
    superuser.execute("SELECT pg_reload_conf()")
    time.sleep(0.3)
    try:
        yield
    finally:
        hba.write_text(original)
        superuser.execute("SELECT pg_reload_conf()")


def superuser_sql_in(stderr: str) -> list[str]:
    """The statements ``autoembed install`` printed (its hint line) for a
    superuser to run."""
    hint = next(line for line in stderr.splitlines() if line.startswith("hint: a superuser"))
    sql_text = hint.split(": ", 2)[2].split(" then autoembed install again")[0]
    return [stmt.strip() + ";" for stmt in sql_text.split(";") if stmt.strip()]


def test_an_owner_that_is_not_a_superuser_installs_and_runs_everything(
    cluster: Cluster, tmp_path: Path
) -> None:
    ident = sql.Identifier
    with connect(cluster.superuser_url) as su:
        # One-time, superuser: the roles (RDS/Cloud SQL make the owner for you).
        su.execute(
            sql.SQL("CREATE ROLE {} LOGIN NOSUPERUSER NOCREATEROLE").format(ident(cluster.owner))
        )
        su.execute(sql.SQL("CREATE ROLE {} LOGIN").format(ident(cluster.worker)))
        su.execute(sql.SQL("CREATE ROLE {} LOGIN").format(ident(cluster.reader)))
        # (PostgreSQL 15+: only the database owner may create in schema public)
        su.execute(sql.SQL("GRANT CREATE ON SCHEMA public TO {}").format(ident(cluster.owner)))
        assert su.execute(
            "SELECT rolsuper, rolcreaterole FROM pg_roles WHERE rolname = %s", (cluster.owner,)
        ).fetchone() == (False, False)

        # The owner tries first: one line, the exact SQL, a non-zero exit.
        failed = autoembed_cli("install", "--db", cluster.url(cluster.owner))
        assert failed.returncode == 1, failed
        assert "Traceback" not in failed.stderr
        first = failed.stderr.splitlines()[0]
        assert first.startswith(f"Error: autoembed install cannot run as role {cluster.owner}: ")
        assert f"extension vector is not installed in database {cluster.database}" in first
        assert "no CREATE privilege on database" in first
        statements = superuser_sql_in(failed.stderr)
        assert statements == [
            "CREATE EXTENSION vector;",
            f"GRANT CREATE ON DATABASE {cluster.database} TO {cluster.owner};",
        ]
        # Nothing was made.
        assert su.execute("SELECT to_regnamespace('autoembed')").fetchone() == (None,)

        # The superuser runs exactly that; the owner installs, with a note
        # that text queries from SQL need dblink ...
        for statement in statements:
            su.execute(statement)
        done = autoembed_cli("install", "--db", cluster.url(cluster.owner))
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith("autoembed installed (schema revision ")
        assert (
            f"a superuser runs once in database {cluster.database}: CREATE EXTENSION dblink;"
            in done.stdout
        ), done.stdout
        # ... which the superuser creates; the owner's next install (an
        # upgrade runs the same steps) has nothing more to say.
        su.execute("CREATE EXTENSION dblink")
        again = autoembed_cli("install", "--db", cluster.url(cluster.owner))
        assert again.returncode == 0, again.stderr
        assert again.stdout.startswith("autoembed installed (schema revision ")
        assert "note:" not in again.stdout

    with connect(cluster.superuser_url) as su:
        # The loopback for text queries: setup-queries fails (exit 1, with
        # the pg_hba.conf line) while the socket is trusted ...
        trusted = autoembed_cli(
            "setup-queries", "--db", cluster.superuser_url, "--role", cluster.loopback
        )
        assert trusted.returncode == 1, trusted
        assert f"local all {cluster.loopback} scram-sha-256" in trusted.stderr
        assert "Error: NOT usable by role" in trusted.stderr
        # Checked by a role that is not a superuser, the hint names the
        # loopback role too (not the caller's, which the check cannot use).
        with connect(cluster.url(cluster.owner)) as owner:
            notices: list[str] = []
            owner.add_notice_handler(lambda d: notices.append(d.message_hint or ""))
            row = owner.execute("SELECT autoembed.check_query_loopback()").fetchone()
            assert row is not None
            assert row[0].startswith(f"NOT usable by role {cluster.owner}"), row
            assert any(f"local all {cluster.loopback} scram-sha-256" in n for n in notices), notices
        # ... and works once pg_hba.conf asks the loopback role for its password.
        with password_for_loopback(su, cluster.loopback):
            ok = autoembed_cli(
                "setup-queries", "--db", cluster.superuser_url, "--role", cluster.loopback
            )
            assert ok.returncode == 0, ok.stderr
            assert ok.stdout.startswith(f"ok: role {cluster.loopback} reaches"), ok.stdout
            run_as_owner_worker_reader(cluster, tmp_path)


def run_as_owner_worker_reader(cluster: Cluster, tmp_path: Path) -> None:
    ident = sql.Identifier
    with connect(cluster.url(cluster.owner)) as owner:
        assert owner.execute(
            "SELECT rolsuper FROM pg_roles WHERE rolname = current_user"
        ).fetchone() == (False,)
        owner.execute(
            "CREATE TABLE notes (id int PRIMARY KEY, owner_name text NOT NULL, body text)"
        )
        with owner.cursor() as cur:
            cur.executemany(
                "INSERT INTO notes VALUES (%s, %s, %s)",
                [
                    (i, cluster.reader if who == "reader" else "someone_else", body)
                    for i, (who, body) in NOTES.items()
                ],
            )
        owner.execute("ALTER TABLE notes ENABLE ROW LEVEL SECURITY")
        owner.execute("CREATE POLICY mine ON notes USING (owner_name = current_user)")
        owner.execute(sql.SQL("GRANT SELECT ON notes TO {}").format(ident(cluster.reader)))
        owner.execute(
            "SELECT autoembed.create_vectorizer('notes', ARRAY['body'], model => 'hash:32')"
        )
        owner.execute("SELECT autoembed.grant_worker(%s)", (cluster.worker,))
        owner.execute("SELECT autoembed.grant_search('notes', %s)", (cluster.reader,))

        # A real worker process, as the worker role, embeds every row.
        worked = autoembed_cli("worker", "--once", "--db", cluster.url(cluster.worker))
        assert worked.returncode == 0, worked.stderr
        assert f"done: {len(NOTES)} rows embedded" in worked.stdout, worked.stdout
        embedded = owner.execute(
            "SELECT count(DISTINCT id) FROM autoembed.notes_embeddings"
        ).fetchone()
        assert embedded == (len(NOTES),)

    # The query service, as the worker role.
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTOEMBED_")}
    log_path = tmp_path / "query-server.log"
    with open(log_path, "wb") as log:
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "autoembed.cli",
                "query-server",
                "--db",
                cluster.url(cluster.worker),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        # The reader types a text query in psql: only its own rows come back.
        found = psql(
            cluster.server,
            cluster.url(cluster.reader),
            "SET autoembed.query_timeout = '60s'",
            "SELECT pk ->> 'id' FROM autoembed.search('notes', 'some text', 10)",
        )
        assert found.returncode == 0, f"{found.stderr}\nquery server log:\n{log_path.read_text()}"
        ids = sorted(int(x) for x in found.stdout.split())
        assert ids == sorted(i for i, (who, _) in NOTES.items() if who == "reader"), found.stdout
    finally:
        server.terminate()
        server.wait(15)
    log_text = log_path.read_text()
    assert "Traceback" not in log_text, log_text
    assert "query service ready" in log_text, log_text
