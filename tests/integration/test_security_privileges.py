"""Security: row-level security, privileges, and a least-privilege worker.

Search runs as the caller and goes through the source table, so its grants
and row-level security decide what comes back; autoembed's own tables are
not readable by PUBLIC; a worker role made with autoembed.grant_worker()
runs the whole pipeline without being a superuser and without any privilege
on the source tables.
"""

from __future__ import annotations

import random

import psycopg
import pytest
from psycopg import sql

from autoembed.settings import Settings
from autoembed.worker.connection import discard, worker_connection
from autoembed.worker.once import run_once
from tests.conftest import as_superuser, drain
from tests.integration.helpers import QueryServiceThread
from tests.integration.security_helpers import Conn, connect_as, query_vectors, roles, url_as

VOCAB = [
    "invoice",
    "refund",
    "shipping",
    "parcel",
    "delay",
    "password",
    "reset",
    "account",
    "login",
    "billing",
    "subscription",
    "cancel",
    "upgrade",
    "warranty",
    "repair",
    "battery",
    "screen",
    "charger",
    "cable",
    "delivery",
    "address",
    "payment",
    "card",
    "bank",
    "transfer",
    "receipt",
    "discount",
    "coupon",
    "order",
]
ROWS_PER_TENANT = 1000
QUERIES = 100


def _tenant_table(conn: Conn, db_url: str) -> dict[int, str]:
    """2 tenants x 1,000 rows drawn from one vocabulary (so every query
    matches rows of both), embedded; returns id -> tenant."""
    rng = random.Random(5)
    conn.execute("CREATE TABLE tickets (id int PRIMARY KEY, tenant text NOT NULL, body text)")
    rows = []
    for i in range(1, 2 * ROWS_PER_TENANT + 1):
        tenant = "acme" if i % 2 else "globex"
        rows.append((i, tenant, " ".join(rng.choices(VOCAB, k=12))))
    with conn.cursor().copy("COPY tickets (id, tenant, body) FROM STDIN") as copy:
        for r in rows:
            copy.write_row(r)
    conn.execute("SELECT autoembed.create_vectorizer('tickets', ARRAY['body'], model => 'hash:64')")
    drain(db_url, batch_size=500)
    conn.execute("ALTER TABLE tickets ENABLE ROW LEVEL SECURITY")
    conn.execute(
        "CREATE POLICY tenant_rows ON tickets FOR SELECT "
        "USING (tenant = current_setting('app.tenant', true))"
    )
    return {r[0]: r[1] for r in rows}


def _all_hits(conn: Conn, queries: list[str]) -> dict[str, list[int]]:
    """Every query through semantic, BM25 and hybrid search (k = 10), in one
    statement per method; the ids each method returned."""
    vectors = query_vectors(queries)
    params = {"q": queries, "e": vectors}
    calls = {
        "semantic": "autoembed.search('tickets', u.e, 10)",
        "bm25": "autoembed.bm25_search('tickets', u.q, 10)",
        "hybrid": "autoembed.hybrid_search('tickets', u.q, u.e, 10)",
    }
    out = {}
    for method, call in calls.items():
        rows = conn.execute(
            f"SELECT (s.pk ->> 'id')::int FROM unnest(%(q)s::text[], %(e)s::vector[]) AS u(q, e) "
            f"CROSS JOIN LATERAL {call} AS s",
            params,
        ).fetchall()
        out[method] = [r[0] for r in rows]
    return out


def test_rls_tenants_never_see_each_others_rows(conn: Conn, db_url: str) -> None:
    tenant_of = _tenant_table(conn, db_url)
    rng = random.Random(7)
    queries = [" ".join(rng.sample(VOCAB, 3)) for _ in range(QUERIES)]

    # The owner is not subject to the policy: every method finds both tenants,
    # so the checks below could fail.
    owner_hits = _all_hits(conn, queries[:10])
    for method, ids in owner_hits.items():
        assert {tenant_of[i] for i in ids} == {"acme", "globex"}, method

    with roles(conn, "app") as (app,):
        conn.execute(sql.SQL("GRANT SELECT ON tickets TO {}").format(sql.Identifier(app)))
        conn.execute("SELECT autoembed.grant_search('tickets', %s)", (app,))
        with connect_as(db_url, app) as c:
            for tenant in ("acme", "globex"):
                c.execute("SELECT set_config('app.tenant', %s, false)", (tenant,))
                hits = _all_hits(c, queries)
                for method, ids in hits.items():
                    assert len(ids) == QUERIES * 10, (tenant, method)
                    leaked = [i for i in ids if tenant_of[i] != tenant]
                    assert leaked == [], (tenant, method, leaked[:5])
            # No tenant set: the policy hides everything.
            c.execute("RESET app.tenant")
            assert all(ids == [] for ids in _all_hits(c, queries[:3]).values())


@pytest.mark.parametrize(
    "call",
    [
        "SELECT * FROM autoembed.search('tickets', %(e)s::vector, 5)",
        "SELECT * FROM autoembed.bm25_search('tickets', 'refund', 5)",
        "SELECT * FROM autoembed.hybrid_search('tickets', 'refund', %(e)s::vector, 5)",
    ],
)
def test_no_select_on_the_source_table_is_a_permission_error(
    conn: Conn, db_url: str, call: str
) -> None:
    conn.execute("CREATE TABLE tickets (id int PRIMARY KEY, body text)")
    conn.execute("INSERT INTO tickets VALUES (1, 'refund please'), (2, 'refund my order')")
    conn.execute("SELECT autoembed.create_vectorizer('tickets', ARRAY['body'], model => 'hash:64')")
    drain(db_url)
    (e,) = query_vectors(["refund"])
    with roles(conn, "nosource") as (r,):
        # It may read the embeddings (grant_search), but not the source table.
        conn.execute("SELECT autoembed.grant_search('tickets', %s)", (r,))
        with (
            connect_as(db_url, r) as c,
            pytest.raises(psycopg.errors.InsufficientPrivilege, match="table tickets"),
        ):
            c.execute(call, {"e": e}).fetchall()
        # SELECT on the key column alone is not enough to read the chunks of
        # the other columns.
        conn.execute(sql.SQL("GRANT SELECT (id) ON tickets TO {}").format(sql.Identifier(r)))
        with (
            connect_as(db_url, r) as c,
            pytest.raises(psycopg.errors.InsufficientPrivilege, match="table tickets"),
        ):
            c.execute(call, {"e": e}).fetchall()


SEARCHES = {
    "search": "SELECT * FROM autoembed.search('tickets', %(e)s::vector, 5)",
    "search (text)": "SELECT * FROM autoembed.search('tickets', %(q)s, 5)",
    "bm25_search": "SELECT * FROM autoembed.bm25_search('tickets', %(q)s, 5)",
    "hybrid_search": "SELECT * FROM autoembed.hybrid_search('tickets', %(q)s, %(e)s::vector, 5)",
    "hybrid_search (text)": "SELECT * FROM autoembed.hybrid_search('tickets', %(q)s, 5)",
    "bm25_max_score": "SELECT autoembed.bm25_max_score('tickets', %(q)s)",
}


@pytest.mark.parametrize("call", SEARCHES.values(), ids=SEARCHES.keys())
def test_a_search_without_grant_search_names_what_to_grant(
    conn: Conn, db_url: str, call: str
) -> None:
    """Not a bare "permission denied for table tickets_embeddings_v1": the
    error names the role and the vectorizer, its hint the statement the owner
    runs (and, when the role may not read the source table either, that
    grant too); with them the search runs. A text query is refused before a
    worker is asked to embed it."""
    conn.execute("CREATE TABLE tickets (id int PRIMARY KEY, body text)")
    conn.execute("INSERT INTO tickets VALUES (1, 'refund please'), (2, 'refund my order')")
    conn.execute("SELECT autoembed.create_vectorizer('tickets', ARRAY['body'], model => 'hash:64')")
    drain(db_url)
    (e,) = query_vectors(["refund"])
    args = {"e": e, "q": "refund"}
    service = QueryServiceThread(db_url)  # the owner's text queries put "refund" in the cache
    try:
        # (as a superuser: an ordinary owner's text queries need the loopback
        # a superuser sets up once, tests/e2e/test_least_privilege_install.py)
        with as_superuser(conn) as su:
            su.execute("SET autoembed.query_timeout = '30s'")
            assert su.execute(call, args).fetchall()
    finally:
        service.stop()
    with roles(conn, "reader") as (r,):
        grant = f"SELECT autoembed.grant_search('tickets', '{r}');"
        with connect_as(db_url, r) as c:
            c.execute("SET autoembed.query_timeout = '1s'")  # no worker runs now
            with pytest.raises(psycopg.errors.InsufficientPrivilege) as info:
                c.execute(call, {**args, "q": "a query nobody asked before"})
            assert info.value.diag.message_primary == (
                f'autoembed: role "{r}" may not search vectorizer "tickets"'
            )
            hint = info.value.diag.message_hint or ""
            assert hint.startswith(f"The owner of the vectorizer runs: {grant}"), hint
            assert f"GRANT SELECT ON public.tickets TO {r};" in hint

        conn.execute(sql.SQL("GRANT SELECT ON tickets TO {}").format(sql.Identifier(r)))
        with (
            connect_as(db_url, r) as c,
            pytest.raises(psycopg.errors.InsufficientPrivilege) as info,
        ):
            c.execute(call, args)
        assert info.value.diag.message_hint == f"The owner of the vectorizer runs: {grant}"

        conn.execute(grant)
        with connect_as(db_url, r) as c:
            assert c.execute(call, args).fetchall()


def test_autoembed_tables_are_not_readable_by_public(conn: Conn, db_url: str) -> None:
    conn.execute("CREATE TABLE tickets (id int PRIMARY KEY, body text)")
    conn.execute("INSERT INTO tickets VALUES (1, 'a secret')")
    conn.execute("SELECT autoembed.create_vectorizer('tickets', ARRAY['body'], model => 'hash:64')")
    drain(db_url)
    # Even when the installing role grants everything it makes from now on.
    conn.execute("ALTER DEFAULT PRIVILEGES IN SCHEMA autoembed GRANT SELECT ON TABLES TO PUBLIC")
    conn.execute(
        "SELECT autoembed.create_vectorizer('tickets', ARRAY['body'], name => 'second', "
        "model => 'hash:64')"
    )
    drain(db_url)
    tables = [
        r[0]
        for r in conn.execute(
            "SELECT c.oid::regclass::text FROM pg_class AS c "
            "WHERE c.relnamespace = 'autoembed'::regnamespace AND c.relkind IN ('r', 'p', 'v') "
            "ORDER BY 1"
        )
    ]
    public_catalog = {
        "autoembed.model",
        "autoembed.model_version",
        "autoembed.vectorizer",
        "autoembed.vectorizer_version",
    }
    private = [t for t in tables if t not in public_catalog]
    # inbox, the view of the active version, and the version's queue,
    # embeddings, postings, stats of both; query cache and requests; the
    # status views
    assert len(private) >= 17, tables
    assert {"autoembed.query_cache", "autoembed.query_request"} <= set(private)
    with roles(conn, "anyone") as (r,), connect_as(db_url, r) as c:
        for t in private:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                c.execute(sql.SQL("SELECT * FROM {}").format(sql.SQL(t))).fetchall()
        for t in public_catalog:
            c.execute(sql.SQL("SELECT * FROM {}").format(sql.SQL(t))).fetchall()
        # ... nor callable: the trigger functions and the workers' source readers
        definers = c.execute(
            "SELECT p.oid::regprocedure::text FROM pg_proc AS p "
            "WHERE p.pronamespace = 'autoembed'::regnamespace AND p.prosecdef "
            "AND (p.prorettype = 'trigger'::regtype OR p.proname LIKE '%\\_read')"
        ).fetchall()
        assert len(definers) == 6, definers
        for (f,) in definers:
            assert c.execute("SELECT has_function_privilege(%s, 'EXECUTE')", (f,)).fetchone() == (
                False,
            ), f
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            c.execute("SELECT * FROM autoembed.tickets_sync_read('[{\"id\": 1}]', false)")


def _worker_settings(url: str) -> Settings:
    return Settings(database_url=url, batch_size=64, lease_seconds=30, statement_timeout=20)


def test_a_worker_role_without_superuser_or_source_privileges_runs_the_pipeline(
    conn: Conn, db_url: str
) -> None:
    """The documented roles: the owner creates the vectorizers, grant_worker()
    makes a worker role (before and after a vectorizer exists), the worker
    embeds everything although row-level security would hide every row from
    it, and a reader searches."""
    conn.execute("CREATE TABLE notes (id int PRIMARY KEY, owner_name text, body text)")
    conn.execute(
        "INSERT INTO notes SELECT i, 'user' || (i % 3), 'note ' || i || ' about the moon' "
        "FROM generate_series(1, 300) AS i"
    )
    conn.execute("ALTER TABLE notes ENABLE ROW LEVEL SECURITY")
    conn.execute("CREATE POLICY mine ON notes USING (owner_name = current_user)")
    conn.execute("SELECT autoembed.create_vectorizer('notes', ARRAY['body'], model => 'hash:64')")
    with roles(conn, "worker", "reader") as (worker, reader):
        conn.execute("SELECT autoembed.grant_worker(%s)", (worker,))
        # a vectorizer made after grant_worker() is the worker's too
        conn.execute(
            "CREATE TABLE titles (code uuid PRIMARY KEY DEFAULT gen_random_uuid(), t text)"
        )
        conn.execute("INSERT INTO titles (t) SELECT 'title ' || i FROM generate_series(1, 50) AS i")
        conn.execute("SELECT autoembed.create_vectorizer('titles', ARRAY['t'], model => 'hash:64')")

        with connect_as(db_url, worker) as w:
            assert w.execute(
                "SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user"
            ).fetchone() == (False, False)
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                w.execute("SELECT * FROM notes").fetchall()

        stats = run_once(_worker_settings(url_as(db_url, worker)), show_progress=False)
        assert stats.written == 350
        assert stats.failed == 0

        status = conn.execute(
            "SELECT name, embedded_rows, pending, failed, error FROM autoembed.vectorizer_status "
            "ORDER BY name"
        ).fetchall()
        assert status == [("notes", 300, 0, 0, None), ("titles", 50, 0, 0, None)]

        # Changes, deletes and primary-key moves flow through the worker too.
        conn.execute("UPDATE notes SET body = 'rewritten about the sun' WHERE id <= 10")
        conn.execute("DELETE FROM notes WHERE id > 290")
        conn.execute("UPDATE notes SET id = id + 1000 WHERE id = 200")
        stats = run_once(_worker_settings(url_as(db_url, worker)), show_progress=False)
        assert stats.failed == 0
        rows = conn.execute(
            "SELECT count(DISTINCT id), count(*) FILTER (WHERE chunk LIKE '%sun%'), "
            "count(*) FILTER (WHERE id = 1200) FROM autoembed.notes_embeddings"
        ).fetchone()
        assert rows == (290, 10, 1)

        # The reader: SELECT on the table (its policy applies) and grant_search.
        conn.execute(sql.SQL("GRANT SELECT ON notes TO {}").format(sql.Identifier(reader)))
        conn.execute("SELECT autoembed.grant_search('notes', %s)", (reader,))
        conn.execute("UPDATE notes SET owner_name = %s WHERE id IN (5, 6)", (reader,))
        drain(db_url)
        (e,) = query_vectors(["note about the moon"])
        with connect_as(db_url, reader) as r:
            ids = {
                row[0]["id"]
                for row in r.execute("SELECT pk FROM autoembed.search('notes', %s, 50)", (e,))
            }
            assert ids == {5, 6}
        # A worker may not search what it embeds, nor change the catalog.
        with connect_as(db_url, worker) as w:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                w.execute("UPDATE autoembed.vectorizer SET columns = ARRAY['owner_name']")
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                w.execute("SELECT * FROM autoembed.search('notes', %s, 5)", (e,)).fetchall()

        conn.execute("SELECT autoembed.revoke_worker(%s)", (worker,))
        conn.execute("UPDATE notes SET body = 'again' WHERE id = 1")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            run_once(_worker_settings(url_as(db_url, worker)), show_progress=False)


def test_worker_sessions_have_a_statement_timeout_and_a_safe_search_path(
    conn: Conn, db_url: str
) -> None:
    with roles(conn, "worker") as (worker,):
        conn.execute("SELECT autoembed.grant_worker(%s)", (worker,))
        discard()
        try:
            w = worker_connection(url_as(db_url, worker), statement_timeout=0.2)
            assert w.execute("SHOW statement_timeout").fetchone() == ("200ms",)
            assert w.execute("SHOW search_path").fetchone() == ("pg_catalog, pg_temp",)
            with pytest.raises(psycopg.errors.QueryCanceled):
                w.execute("SELECT pg_sleep(2)")
        finally:
            discard()


def test_grant_worker_needs_a_role(conn: Conn) -> None:
    with pytest.raises(psycopg.errors.NullValueNotAllowed):
        conn.execute("SELECT autoembed.grant_worker(NULL)")
    with pytest.raises(psycopg.errors.UndefinedObject):
        conn.execute("SELECT autoembed.grant_worker('no_such_role_x')")
