"""Text queries from SQL: autoembed.embed_query and the text overloads of
search and hybrid_search, answered by the query service (run here in a
thread, with the hash: embedder): overload resolution, the cache, exact
model versions, errors, timeouts, isolation levels, the loopback set-up for
non-superusers, and pruning."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import psycopg
import pytest
from psycopg import sql

from autoembed.db import connect
from autoembed.worker.embedders import HashingEmbedder
from tests.conftest import SUPERUSER, drain, url_as_role
from tests.integration.helpers import QueryServiceThread as Service
from tests.integration.helpers import call_search, ids, make_texts
from tests.integration.pg_hba import passwords_asked

Conn = psycopg.Connection[Any]
DIMS = 32
TEXTS = [
    "red apples and green pears in a basket",
    "fast cars racing on the road",
    "how to reset a forgotten password",
    "the history of the roman empire",
]


@pytest.fixture
def db_url(db_url: str) -> str:
    """A superuser's session: text queries from it need no loopback set-up,
    and the loopback tests below set it up (as only a superuser may). The
    owner's side: tests/e2e/test_least_privilege_install.py."""
    return url_as_role(db_url, SUPERUSER)


@pytest.fixture
def docs(conn: Conn, db_url: str) -> Conn:
    """Vectorizer "docs" (hash:32) over TEXTS, embedded; the session waits
    for workers at most 10 s."""
    make_texts(conn, TEXTS, model=f"hash:{DIMS}")
    drain(db_url)
    conn.execute("SET autoembed.query_timeout = '10s'")
    return conn


@pytest.fixture
def service(db_url: str) -> Iterator[Service]:
    s = Service(db_url)
    yield s
    s.stop()


def embed(text: str, dims: int = DIMS) -> Any:
    return HashingEmbedder(dims).embed([text])[0]


def cache(conn: Conn) -> list[tuple[Any, ...]]:
    return conn.execute(
        "SELECT model_version_id, query FROM autoembed.query_cache ORDER BY 1, 2"
    ).fetchall()


def version_id(conn: Conn, name: str = "docs") -> int:
    """The model version of the vectorizer's active version."""
    row = conn.execute(
        "SELECT ver.model_version_id FROM autoembed.vectorizer_version AS ver "
        "JOIN autoembed.vectorizer AS v ON v.id = ver.vectorizer_id "
        "WHERE v.name = %s AND ver.state = 'active'",
        (name,),
    ).fetchone()
    assert row is not None
    assert row[0] is not None
    return int(row[0])


# ------------------------------------------------ answers and overloads


def test_text_search_and_hybrid_search_from_sql_literals(docs: Conn, service: Service) -> None:
    # Untyped literals, as a psql user types them, pick the text variants.
    rows = docs.execute(
        "SELECT pk, rank FROM autoembed.search('docs', 'green pears', 3)"
    ).fetchall()
    assert rows[0] == ({"id": 1}, 1)
    assert len(rows) == 3
    rows = docs.execute(
        "SELECT pk FROM autoembed.hybrid_search('docs', 'reset password', 2)"
    ).fetchall()
    assert rows[0] == ({"id": 3},)
    # The text variant equals the vector variant given the same embedding.
    by_vector = call_search(docs, "search", "docs", embed("fast road"), 4)
    by_text = call_search(docs, "search", "docs", "fast road", 4)
    assert by_text == by_vector
    hybrid_vector = call_search(docs, "hybrid_search", "docs", "fast road", embed("fast road"), 4)
    assert call_search(docs, "hybrid_search", "docs", "fast road", 4) == hybrid_vector
    # Options by name reach the vector variant.
    assert ids(call_search(docs, "search", "docs", "apples", 4, chunks=True))[0] == 1
    rrf = call_search(docs, "hybrid_search", "docs", "fast road", 4, fusion="rrf", rrf_k=1)
    assert rrf == call_search(
        docs, "hybrid_search", "docs", "fast road", embed("fast road"), 4, fusion="rrf", rrf_k=1
    )


def test_vector_arguments_still_pick_the_vector_variants(docs: Conn) -> None:
    # No service runs: these must never ask for an embedding.
    docs.execute("SET autoembed.query_timeout = '0.2s'")
    q = embed("green pears")
    assert docs.execute("SELECT pk FROM autoembed.search('docs', %s, 1)", (q,)).fetchone() == (
        {"id": 1},
    )
    literal = "[" + ",".join(str(float(x)) for x in q) + "]"
    row = docs.execute(
        "SELECT pk FROM autoembed.search('docs', %s::vector, 1)", (literal,)
    ).fetchone()
    assert row == ({"id": 1},)
    with pytest.raises(psycopg.errors.DatatypeMismatch, match="3 dimensions"):
        docs.execute("SELECT * FROM autoembed.search('docs', '[1,2,3]'::vector, 1)")
    rows = docs.execute(
        "SELECT pk FROM autoembed.hybrid_search('docs', 'green pears', %s, 1)", (q,)
    ).fetchall()
    assert rows == [({"id": 1},)]
    assert docs.execute("SELECT count(*) FROM autoembed.query_request").fetchone() == (0,)


def test_embed_query_returns_exactly_what_the_model_makes(docs: Conn, service: Service) -> None:
    row = docs.execute("SELECT autoembed.embed_query('docs', 'green pears')").fetchone()
    assert row is not None
    assert np.allclose(row[0].to_numpy(), embed("green pears"), atol=1e-6)
    assert cache(docs) == [(version_id(docs), "green pears")]
    assert docs.execute("SELECT count(*) FROM autoembed.query_request").fetchone() == (0,)


# ------------------------------------------------------------- the cache


def test_a_cached_query_needs_no_worker(docs: Conn, service: Service) -> None:
    first = docs.execute("SELECT pk, score FROM autoembed.search('docs', 'apples', 4)").fetchall()
    service.stop()
    docs.execute("SET autoembed.query_timeout = '0.2s'")
    start = time.monotonic()
    again = docs.execute("SELECT pk, score FROM autoembed.search('docs', 'apples', 4)").fetchall()
    assert again == first
    assert time.monotonic() - start < 0.2
    # In another session too, one that never opened a loopback connection.
    with connect(docs.info.dsn) as other:
        other.execute("SET autoembed.query_timeout = '0.2s'")
        assert (
            other.execute("SELECT pk, score FROM autoembed.search('docs', 'apples', 4)").fetchall()
            == first
        )


def test_the_cache_never_returns_another_model_versions_vector(
    docs: Conn, db_url: str, service: Service
) -> None:
    # A second vectorizer on the same table with another model: the same
    # text gets one entry per model version, each of its own model.
    docs.execute(
        "SELECT autoembed.create_vectorizer('docs', ARRAY['body'], name => 'docs16', "
        "model => 'hash:16')"
    )
    drain(db_url)
    for name, dims in (("docs", DIMS), ("docs16", 16), ("docs", DIMS)):
        row = docs.execute("SELECT autoembed.embed_query(%s, 'green pears')", (name,)).fetchone()
        assert row is not None
        assert np.allclose(row[0].to_numpy(), embed("green pears", dims), atol=1e-6)
    assert sorted(cache(docs)) == sorted(
        [(version_id(docs), "green pears"), (version_id(docs, "docs16"), "green pears")]
    )


def test_a_digest_collision_cannot_return_a_wrong_vector(docs: Conn) -> None:
    # An entry under the digest of 'green pears' but for another text: a
    # lookup of 'green pears' must not take it.
    docs.execute(
        "INSERT INTO autoembed.query_cache (model_version_id, query_digest, query, embedding) "
        "VALUES (%s, autoembed._query_digest('green pears'), 'fast cars', %s)",
        (version_id(docs), embed("fast cars")),
    )
    docs.execute("SET autoembed.query_timeout = '0.3s'")
    with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState, match="no worker answered"):
        docs.execute("SELECT autoembed.embed_query('docs', 'green pears')")


def test_a_worker_with_another_model_version_leaves_the_request(
    docs: Conn, service: Service
) -> None:
    # The stored vectors claim a version of hash:32 whose weights differ from
    # what any worker here loads: the service must not answer for it.
    other = docs.execute(
        "SELECT autoembed.register_model_version('hash:32', 'other-weights', 32, 'sum', true, "
        "'fp32', 128, 'hash:32@sha256:other/d32/sum/normalized/fp32/seq128')"
    ).fetchone()
    assert other is not None
    docs.execute("UPDATE autoembed.vectorizer_version SET model_version_id = %s", (other[0],))
    docs.execute("SET autoembed.query_timeout = '1s'")
    with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState) as info:
        docs.execute("SELECT autoembed.embed_query('docs', 'green pears')")
    assert "hash:32@sha256:other" in str(info.value)
    pending = docs.execute("SELECT model_version_id, query FROM autoembed.query_request")
    assert pending.fetchall() == [(other[0], "green pears")]
    assert cache(docs) == []


def test_a_stale_cache_entry_is_touched_through_the_loopback(docs: Conn, service: Service) -> None:
    docs.execute("SELECT autoembed.embed_query('docs', 'apples')")
    docs.execute("UPDATE autoembed.query_cache SET last_used_at = now() - interval '1 day'")
    docs.execute("SELECT autoembed.embed_query('docs', 'apples')")
    row = docs.execute(
        "SELECT last_used_at > now() - interval '1 minute' FROM autoembed.query_cache"
    ).fetchone()
    assert row == (True,)


def test_repeatable_read_callers_still_see_the_answer(docs: Conn, service: Service) -> None:
    with docs.transaction():
        docs.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        docs.execute("SELECT count(*) FROM autoembed.query_cache").fetchone()  # snapshot taken
        rows = docs.execute("SELECT pk FROM autoembed.search('docs', 'roman history', 1)")
        assert rows.fetchall() == [({"id": 4},)]


def test_concurrent_sessions_asking_the_same_query(docs: Conn, service: Service) -> None:
    results: list[Any] = []

    def ask() -> None:
        with connect(docs.info.dsn) as c:
            c.execute("SET autoembed.query_timeout = '10s'")
            results.append(c.execute("SELECT autoembed.embed_query('docs', 'apples')").fetchone())

    threads = [threading.Thread(target=ask) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert len(results) == 4
    assert len({str(r) for r in results}) == 1
    assert cache(docs) == [(version_id(docs), "apples")]
    # A session may find the answer before a worker took its own request,
    # which the worker then drops as already answered.
    deadline = time.monotonic() + 5
    while docs.execute("SELECT count(*) FROM autoembed.query_request").fetchone() != (0,):
        assert time.monotonic() < deadline, "requests left unanswered"
        time.sleep(0.05)


# --------------------------------------------------------------- errors


def test_no_worker_is_a_clear_error_within_the_timeout(docs: Conn) -> None:
    docs.execute("SET autoembed.query_timeout = '0.5s'")
    start = time.monotonic()
    with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState) as info:
        docs.execute("SELECT * FROM autoembed.search('docs', 'green pears', 3)")
    elapsed = time.monotonic() - start
    assert 0.5 <= elapsed < 1.5
    assert "no worker answered within 0.5 s" in str(info.value)
    hint = info.value.diag.message_hint or ""
    assert "autoembed worker --db" in hint
    assert "celery -A autoembed.worker.app worker" in hint


def test_a_worker_error_reaches_the_caller(
    docs: Conn, service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AUTOEMBED_HASH_FAIL_ON", "poison")
    with pytest.raises(psycopg.errors.ExternalRoutineException, match="could not embed"):
        docs.execute("SELECT autoembed.embed_query('docs', 'a poison query')")
    # Its neighbours in the same batch are unaffected.
    assert docs.execute("SELECT autoembed.embed_query('docs', 'apples')").fetchone()


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (
            "SELECT * FROM autoembed.search('nope', 'apples')",
            psycopg.errors.UndefinedObject,
            'no vectorizer named "nope"',
        ),
        (
            "SELECT * FROM autoembed.hybrid_search('nope', 'apples')",
            psycopg.errors.UndefinedObject,
            'no vectorizer named "nope"',
        ),
        (
            "SELECT autoembed.embed_query('nope', 'apples')",
            psycopg.errors.UndefinedObject,
            'no vectorizer named "nope"',
        ),
        (
            "SELECT * FROM autoembed.search('docs', NULL::text)",
            psycopg.errors.NullValueNotAllowed,
            "query must not be NULL",
        ),
        (
            "SELECT * FROM autoembed.search('docs', NULL)",
            psycopg.errors.NullValueNotAllowed,
            "query must not be NULL",
        ),
        (
            "SELECT * FROM autoembed.hybrid_search('docs', NULL)",
            psycopg.errors.NullValueNotAllowed,
            "query must not be NULL",
        ),
        (
            "SELECT autoembed.embed_query('docs', NULL)",
            psycopg.errors.NullValueNotAllowed,
            "query must not be NULL",
        ),
        (
            "SELECT * FROM autoembed.search('docs', '  ')",
            psycopg.errors.InvalidParameterValue,
            "query must not be empty",
        ),
        (
            "SELECT * FROM autoembed.search('docs', repeat('a', 100001))",
            psycopg.errors.InvalidParameterValue,
            "at most 100000",
        ),
        (
            "SELECT * FROM autoembed.search('docs', 'apples', -1)",
            psycopg.errors.InvalidParameterValue,
            "k must not be negative",
        ),
        (
            "SELECT * FROM autoembed.hybrid_search('docs', 'apples', 3, fusion => 'max')",
            psycopg.errors.InvalidParameterValue,
            "fusion must be rrf or convex, got max",
        ),
        (
            "SELECT * FROM autoembed.hybrid_search('docs', 'apples', 3, candidates => 0)",
            psycopg.errors.InvalidParameterValue,
            "candidates must be between 1 and 10000",
        ),
    ],
)
def test_bad_arguments_are_clear_errors_without_asking_a_worker(
    docs: Conn, call: str, error: type[Exception], message: str
) -> None:
    start = time.monotonic()
    with pytest.raises(error, match=message):
        docs.execute(call)
    assert time.monotonic() - start < 1.0
    assert docs.execute("SELECT count(*) FROM autoembed.query_request").fetchone() == (0,)


def test_a_bad_timeout_setting_is_named(docs: Conn) -> None:
    docs.execute("SET autoembed.query_timeout = 'soon'")
    with pytest.raises(psycopg.errors.InvalidParameterValue, match=r"query_timeout .* 'soon'"):
        docs.execute("SELECT autoembed.embed_query('docs', 'apples')")


def test_without_dblink_the_error_names_create_extension(docs: Conn) -> None:
    docs.execute("DROP EXTENSION dblink")
    with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState) as info:
        docs.execute("SELECT * FROM autoembed.search('docs', 'apples', 3)")
    assert "need the dblink extension" in str(info.value)
    assert "CREATE EXTENSION dblink" in (info.value.diag.message_hint or "")
    # Cached queries and vector searches still work without it.
    docs.execute(
        "INSERT INTO autoembed.query_cache (model_version_id, query_digest, query, embedding) "
        "VALUES (%s, autoembed._query_digest('apples'), 'apples', %s)",
        (version_id(docs), embed("apples")),
    )
    assert docs.execute("SELECT pk FROM autoembed.search('docs', 'apples', 1)").fetchall() == [
        ({"id": 1},)
    ]


def test_nothing_embedded_yet(conn: Conn) -> None:
    make_texts(conn, TEXTS, model=f"hash:{DIMS}")
    # The searches find nothing, as the vector variants do; embed_query says why.
    assert conn.execute("SELECT * FROM autoembed.search('docs', 'apples')").fetchall() == []
    assert conn.execute("SELECT * FROM autoembed.hybrid_search('docs', 'apples')").fetchall() == []
    with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState, match="embedded nothing yet"):
        conn.execute("SELECT autoembed.embed_query('docs', 'apples')")


def test_dblink_lives_in_any_schema(docs: Conn, service: Service) -> None:
    docs.execute("CREATE SCHEMA ext")
    docs.execute("ALTER EXTENSION dblink SET SCHEMA ext")
    rows = docs.execute("SELECT pk FROM autoembed.search('docs', 'roman empire', 1)").fetchall()
    assert rows == [({"id": 4},)]


def test_a_broken_loopback_connection_is_reopened(docs: Conn, service: Service) -> None:
    docs.execute("SELECT autoembed.embed_query('docs', 'apples')")
    docs.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE application_name = 'autoembed loopback' AND datname = current_database()"
    )
    time.sleep(0.2)
    assert docs.execute("SELECT autoembed.embed_query('docs', 'pears')").fetchone()


# ------------------------------------------------ loopback for non-superusers


@pytest.fixture
def loopback_role(conn: Conn) -> Iterator[str]:
    role = f"aeq_{uuid.uuid4().hex[:10]}"
    yield role
    conn.execute("RESET ROLE")
    conn.execute("DROP SERVER IF EXISTS autoembed_loopback CASCADE")
    conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
    conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


@pytest.fixture
def password_for(conn: Conn) -> Iterator[Any]:
    """password_for(role): make pg_hba.conf ask that role (only) for a password
    on the unix socket; undone after the test."""
    with passwords_asked(conn) as ask:
        yield ask


def test_non_superusers_need_the_loopback_server(
    docs: Conn, service: Service, searcher: str, loopback_role: str, password_for: Any
) -> None:
    docs.execute(sql.SQL("GRANT SELECT ON docs TO {}").format(sql.Identifier(searcher)))
    docs.execute(sql.SQL("SELECT autoembed.grant_search('docs', {})").format(sql.Literal(searcher)))
    as_searcher = sql.SQL("SET ROLE {}").format(sql.Identifier(searcher))

    # Without a server: a clear error naming the set-up.
    docs.execute(as_searcher)
    with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState) as info:
        docs.execute("SELECT * FROM autoembed.search('docs', 'apples', 1)")
    assert "setup_query_loopback" in (info.value.diag.message_hint or "")
    docs.execute("RESET ROLE")

    # With it, but the server trusts the socket: the check warns naming
    # pg_hba.conf, and the search fails saying a password is needed.
    row = docs.execute("SELECT autoembed.setup_query_loopback(%s)", (loopback_role,)).fetchone()
    assert row is not None
    assert "check_query_loopback()" in row[0]
    notices: list[str] = []
    docs.add_notice_handler(lambda d: notices.append(f"{d.message_primary} {d.message_hint}"))
    row = docs.execute("SELECT autoembed.check_query_loopback()").fetchone()
    assert row is not None
    assert row[0].startswith(f"NOT usable by role {loopback_role}")
    assert any(
        "pg_hba.conf" in n and f"local all {loopback_role} scram-sha-256" in n for n in notices
    ), notices
    assert docs.execute("SELECT current_user = session_user").fetchone() == (True,)
    docs.execute(as_searcher)
    with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState, match="password"):
        docs.execute("SELECT * FROM autoembed.search('docs', 'apples', 1)")
    docs.execute("RESET ROLE")

    # Once the server asks the loopback role for its password, it works.
    password_for(loopback_role)
    row = docs.execute("SELECT autoembed.check_query_loopback()").fetchone()
    assert row is not None
    assert row[0].startswith(f"ok: role {loopback_role} reaches"), row
    docs.execute(as_searcher)
    rows = docs.execute("SELECT pk FROM autoembed.search('docs', 'roman empire', 1)").fetchall()
    assert rows == [({"id": 4},)]
    # ... and the searcher cannot read the cache or the requests themselves.
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        docs.execute("SELECT * FROM autoembed.query_cache")
    docs.execute("RESET ROLE")
    # The password lives only in the user mapping, which ordinary roles cannot read.
    docs.execute(as_searcher)
    options = docs.execute(
        "SELECT umoptions FROM pg_user_mappings WHERE srvname = 'autoembed_loopback'"
    ).fetchall()
    assert options == [(None,)]
    docs.execute("RESET ROLE")
    role = docs.execute(
        "SELECT rolsuper, rolcreaterole, rolcreatedb, rolcanlogin FROM pg_roles WHERE rolname = %s",
        (loopback_role,),
    ).fetchone()
    assert role == (False, False, False, True)


def test_setup_refuses_a_powerful_role(conn: Conn) -> None:
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="dedicated role"):
        conn.execute("SELECT autoembed.setup_query_loopback(current_user)")


# -------------------------------------------------------------- pruning


def test_prune_keeps_the_most_recently_used_per_version(docs: Conn, db_url: str) -> None:
    vid = version_id(docs)
    for i in range(5):
        docs.execute(
            "INSERT INTO autoembed.query_cache "
            "(model_version_id, query_digest, query, embedding, last_used_at) "
            "VALUES (%s, autoembed._query_digest(%s), %s, %s, now() - make_interval(mins => %s))",
            (vid, f"q{i}", f"q{i}", embed(f"q{i}"), i),
        )
    stale = docs.execute(
        "SELECT autoembed.register_model_version('hash:32', 'gone', 32, 'sum', true, 'fp32', 128, "
        "'hash:32@gone')"
    ).fetchone()
    assert stale is not None
    docs.execute(
        "INSERT INTO autoembed.query_cache (model_version_id, query_digest, query, embedding) "
        "VALUES (%s, autoembed._query_digest('x'), 'x', %s)",
        (stale[0], embed("x")),
    )
    docs.execute(
        "INSERT INTO autoembed.query_request (model_version_id, query, requested_at) "
        "VALUES (%s, 'old', now() - interval '1 hour'), (%s, 'new', now())",
        (vid, vid),
    )
    row = docs.execute("SELECT * FROM autoembed.prune_query_cache(2, '10 minutes')").fetchone()
    assert row == (4, 1)
    assert cache(docs) == [(vid, "q0"), (vid, "q1")]
    assert docs.execute("SELECT query FROM autoembed.query_request").fetchall() == [("new",)]
