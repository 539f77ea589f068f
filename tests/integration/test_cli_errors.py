"""What the real ``autoembed`` console script says when something is wrong:
an unknown vectorizer, a role without access, a server it cannot reach or
log in to, a database without autoembed or pgvector, a bad option. Each is
one line and a hint on stderr with a non-zero exit status, never a
traceback; ``autoembed --debug`` (or AUTOEMBED_DEBUG=1) shows the traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from autoembed.cli_support import UserError, user_error
from autoembed.db import connect
from autoembed.embedded import EmbeddedPostgres
from tests.conftest import as_superuser, drain
from tests.integration.helpers import Conn, make_texts
from tests.integration.pg_hba import passwords_asked
from tests.integration.security_helpers import roles, url_as

AUTOEMBED = str(Path(sys.executable).with_name("autoembed"))
TEXTS = ["red apples and green pears", "fast cars on the road", "the roman empire"]


def autoembed(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("AUTOEMBED_")}
    return subprocess.run(
        [AUTOEMBED, *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**clean, **env},
    )


def assert_user_error(
    done: subprocess.CompletedProcess[str], message: str, hint: str, status: int = 1
) -> None:
    """Exit status ``status``; on stderr exactly ``Error: ...message...`` and
    ``hint: ...hint...``; no traceback anywhere."""
    shown = f"exit {done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    assert done.returncode == status, shown
    assert "Traceback" not in done.stdout + done.stderr, shown
    lines = done.stderr.splitlines()
    assert len(lines) == 2, shown
    assert lines[0].startswith("Error: "), shown
    assert message in lines[0], shown
    assert lines[1].startswith("hint: "), shown
    assert hint in lines[1], shown


@pytest.fixture
def docs(conn: Conn, db_url: str) -> Conn:
    make_texts(conn, TEXTS, model="hash:16")
    make_texts(conn, TEXTS, name="notes", model="hash:16")
    drain(db_url)
    return conn


@pytest.mark.parametrize(
    "args",
    [
        ("search", "nope", "apples"),
        ("status", "nope"),
        ("versions", "nope"),
        ("set-model", "nope", "hash:8"),
        ("health", "nope"),
    ],
)
def test_an_unknown_vectorizer_names_those_there_are(
    docs: Conn, db_url: str, args: tuple[str, ...]
) -> None:
    done = autoembed(args[0], "--db", db_url, *args[1:])
    assert_user_error(done, 'no vectorizer named "nope"', 'The vectorizers: "docs", "notes".')


def test_a_role_without_access_is_told_what_to_grant(docs: Conn, db_url: str) -> None:
    with roles(docs, "nobody") as (role,):
        as_role = url_as(db_url, role)
        assert_user_error(
            autoembed("status", "--db", as_role),
            "permission denied for view vectorizer_status",
            f"as a worker role (the owner runs SELECT autoembed.grant_worker('{role}'))",
        )
        assert_user_error(
            autoembed("search", "--db", as_role, "docs", "apples"),
            f'role "{role}" may not search vectorizer "docs"',
            f"SELECT autoembed.grant_search('docs', '{role}');",
        )
        # What the hints say is enough.
        docs.execute(sql.SQL("GRANT SELECT ON docs TO {}").format(sql.Identifier(role)))
        docs.execute("SELECT autoembed.grant_search('docs', %s)", (role,))
        docs.execute("SELECT autoembed.grant_worker(%s)", (role,))
        found = autoembed("search", "--db", as_role, "docs", "apples")
        assert found.returncode == 0, found.stderr
        assert '{"id": 1}' in found.stdout.splitlines()[0]
        status = autoembed("status", "--db", as_role)
        assert status.returncode == 0, status.stderr
        assert "docs" in status.stdout


def test_a_server_it_cannot_reach_or_log_in_to(
    conn: Conn,
    db_url: str,
    pg_server: EmbeddedPostgres,
    tmp_path: Path,
) -> None:
    host_and_port = "check the host and port in --db (or $AUTOEMBED_DATABASE_URL)"
    assert_user_error(
        autoembed("status", "--db", "postgresql://someone@127.0.0.1:1/db"),
        "cannot connect to PostgreSQL: connection to server at",
        host_and_port,
    )
    assert_user_error(
        autoembed("status", "--db", f"postgresql://someone@/db?host={tmp_path}"),
        "No such file or directory",
        host_and_port,
    )
    assert_user_error(
        autoembed("status", "--db", pg_server.url_for("no_such_database")),
        'database "no_such_database" does not exist',
        "createdb",
    )
    assert_user_error(
        autoembed("status", "--db", make_conninfo(db_url, user="no_such_role")),
        'role "no_such_role" does not exist',
        "name an existing role",
    )
    assert_user_error(
        autoembed("status", "--db", "not a url"),
        "cannot connect to PostgreSQL",
        "a database URL reads postgresql://",
    )
    with roles(conn, "locked") as (role,), as_superuser(conn) as su, passwords_asked(su) as ask:
        su.execute(sql.SQL("ALTER ROLE {} PASSWORD 'right'").format(sql.Identifier(role)))
        ask(role)
        assert_user_error(
            autoembed("status", "--db", make_conninfo(db_url, user=role, password="wrong")),
            f'password authentication failed for user "{role}"',
            "check the user and password",
        )
    # No --db and no $AUTOEMBED_DATABASE_URL: a usage error.
    assert_user_error(autoembed("status"), "no database given", "--db postgresql://", status=2)


@pytest.fixture
def bare_database(pg_server: EmbeddedPostgres) -> Iterator[str]:
    """A database without autoembed or pgvector, and a role owning it."""
    with connect(pg_server.url) as admin, roles(admin, "dbowner") as (owner,):
        admin.execute(sql.SQL("CREATE DATABASE bare_cli OWNER {}").format(sql.Identifier(owner)))
        try:
            url = pg_server.url_for("bare_cli")  # postgresql://postgres:@/bare_cli?host=...
            assert url.startswith("postgresql://postgres:@/")
            yield url.replace("postgres:", f"{owner}:", 1)  # install takes URLs only
        finally:
            admin.execute("DROP DATABASE bare_cli WITH (FORCE)")


def test_a_database_without_autoembed_or_pgvector(
    bare_database: str, pg_server: EmbeddedPostgres
) -> None:
    for args in (("status",), ("search", "docs", "apples"), ("versions", "docs")):
        assert_user_error(
            autoembed(args[0], "--db", bare_database, *args[1:]),
            "autoembed is not installed in this database",
            "autoembed install --db URL",
        )
    # The owner, not a superuser, may not create the extension pgvector.
    assert_user_error(
        autoembed("install", "--db", bare_database),
        "extension vector is not installed in database bare_cli",
        "a superuser runs once in database bare_cli: CREATE EXTENSION vector;",
    )
    # ... and once a superuser has, the owner installs autoembed.
    with connect(pg_server.url_for("bare_cli")) as superuser:
        superuser.execute("CREATE EXTENSION vector")
    done = autoembed("install", "--db", bare_database)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize(
    ("args", "message", "hint"),
    [
        (
            ("search", "-k", "many", "docs", "apples"),
            "Invalid value for '-k': 'many' is not a valid integer",
            "autoembed search --help shows its options",
        ),
        (("status", "--colour"), "No such option '--colour'", "autoembed status --help"),
        (("stauts",), "No such command 'stauts'", "autoembed --help"),
        (("search", "docs"), "Missing argument 'QUERY'", "autoembed search --help"),
        (("--verbose", "status"), "No such option '--verbose'", "autoembed --help"),
        (("status", "--debug"), "No such option '--debug'", "autoembed --debug COMMAND"),
    ],
)
def test_a_bad_command_line(db_url: str, args: tuple[str, ...], message: str, hint: str) -> None:
    done = autoembed(*args, AUTOEMBED_DATABASE_URL=db_url)
    assert_user_error(done, message, hint, status=2)


def test_evaluate_and_the_lifecycle_commands_too(docs: Conn, db_url: str) -> None:
    dataset = Path(__file__).parent.parent / "data" / "beir_tiny"
    assert_user_error(
        autoembed("evaluate", str(dataset), "--db", "postgresql://someone@127.0.0.1:1/db"),
        "cannot connect to PostgreSQL",
        "check the host and port",
    )
    assert_user_error(
        autoembed("activate", "--db", db_url, "docs", "7"),
        'vectorizer "docs" has no version "7"',
        "Its versions: 1 (hash:16, active).",
    )


def test_debug_shows_the_traceback(docs: Conn, db_url: str) -> None:
    for done in (
        autoembed("--debug", "search", "--db", db_url, "nope", "apples"),
        autoembed("search", "--db", db_url, "nope", "apples", AUTOEMBED_DEBUG="1"),
    ):
        assert done.returncode == 1
        assert "Traceback (most recent call last)" in done.stderr
        assert 'psycopg.errors.UndefinedObject: autoembed: no vectorizer named "nope"' in (
            done.stderr
        )


def test_an_extension_the_server_does_not_have(conn: Conn) -> None:
    """As `autoembed install` reports a server without pgvector (this one
    has it, so another extension it lacks stands in; the same mapping)."""
    with pytest.raises(psycopg.Error) as info:
        conn.execute("CREATE EXTENSION autoembed_no_such_extension")
    shown = user_error(info.value)
    assert isinstance(shown, UserError)
    assert shown.message == 'extension "autoembed_no_such_extension" is not available'
    assert shown.hint == (
        "autoembed_no_such_extension must be installed on the PostgreSQL server first"
    )
