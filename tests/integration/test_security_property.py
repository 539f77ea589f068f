"""The security property (docs/security.md): no role reads, through anything
autoembed creates, the text, chunks, lexemes or keys of source rows it could
not SELECT itself, row-level security included.

One world: a source table under row-level security holding two tenants' rows,
a column no vectorizer embeds, a second vectorizer on a table the reader may
not read, a table no vectorizer touches, two versions of the first vectorizer
(a campaign to another model) and a row that failed. Every value carries a
marker word naming where it came from. Then, as a reader (grant_search, the
policy shows it one tenant), a reader that may SELECT only the key and tenant
columns, a worker role (grant_worker) and a role with nothing but PUBLIC's
privileges, under a superuser owner and under an ordinary one:

* every relation in autoembed's schemas is read whole (permission denied is
  fine);
* every function there the role may execute is called, with arguments built
  from its signature (BOUND, FREE, OVERRIDES), once per vectorizer version
  where it takes one; a function added later with a parameter no recipe
  knows fails the test, naming it;

and no value returned, nor any error message, may hold a marker of a row the
role could not SELECT. A value that only repeats the call's own arguments (a
query echoed back) is not a leak.
"""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import sql

from autoembed.db import connect
from autoembed.embedded import EmbeddedPostgres
from autoembed.install import install
from tests.conftest import drain
from tests.integration.security_helpers import Conn, connect_as, query_vectors, roles, url_as

# Marker words: letters only, ending so that no stemmer shortens them.
A_BODY, A_KEY, A_SECRET = "tntabodyqzx", "tntakeyqzx", "tntsecretaqzx"
B_BODY, B_KEY, B_SECRET = "tntbbodyqzx", "tntbkeyqzx", "tntsecretbqzx"
B_POISON = "tntbpoisonqzx"  # in tenant B's text: the embedder fails on it
C_BODY, C_KEY = "tntcbodyqzx", "tntckeyqzx"  # the second vectorizer's table
VAULT = "tntvaultqzx"  # a table no vectorizer touches
EVERY_MARKER = (A_BODY, A_KEY, A_SECRET, B_BODY, B_KEY, B_SECRET, B_POISON, C_BODY, C_KEY, VAULT)

# What each role may not see: the reader sees tenant A's rows of docs (all
# their columns) and nothing else; the worker embeds, so it reads the
# embedded text and keys of every vectorizer's rows, but no other column and
# no other table; PUBLIC reads nothing.
FORBIDDEN = {
    "reader": (B_BODY, B_KEY, B_SECRET, B_POISON, C_BODY, C_KEY, VAULT),
    # SELECT on docs' key and tenant columns only (and grant_search)
    "keyonly": (A_BODY, A_SECRET, B_BODY, B_KEY, B_SECRET, B_POISON, C_BODY, C_KEY, VAULT),
    "worker": (A_SECRET, B_SECRET, VAULT),
    "nobody": EVERY_MARKER,
}

# The search query every call gets: the embedded words of every row.
PROBE = f"{A_BODY} {B_BODY} {B_POISON} {C_BODY} common words"


@dataclass(frozen=True)
class Version:
    """One version of one vectorizer: what the recipes fill arguments from."""

    name: str
    vectorizer_id: int
    version_id: int
    ordinal: int
    dimensions: int
    model_version_id: int
    keys: str  # a JSON array of every source row's key


@dataclass
class World:
    versions: list[Version]
    roles: dict[str, str]  # kind -> role name
    echo: dict[str, list[str]] = field(default_factory=dict)


def _build(
    conn: Conn, db_url: str, monkeypatch: pytest.MonkeyPatch, grant: Callable[[], None]
) -> list[Version]:
    """The world; grant() runs once the vectorizers exist, before the
    campaign, so version 2 gets its grants and policies as a version made
    later does."""
    conn.execute(
        "CREATE TABLE docs (id text PRIMARY KEY, tenant text NOT NULL, body text, secret text)"
    )
    rows = []
    for i in range(1, 4):
        rows.append((f"{A_KEY}{i}", "acme", f"{A_BODY} common words {i}", f"{A_SECRET} {i}"))
        rows.append((f"{B_KEY}{i}", "globex", f"{B_BODY} common words {i}", f"{B_SECRET} {i}"))
    rows.append((f"{B_KEY}9", "globex", f"{B_BODY} {B_POISON} common words", B_SECRET))
    with conn.cursor().copy("COPY docs FROM STDIN") as copy:
        for r in rows:
            copy.write_row(r)
    conn.execute("ALTER TABLE docs ENABLE ROW LEVEL SECURITY")
    conn.execute(
        "CREATE POLICY tenant_rows ON docs FOR SELECT "
        "USING (tenant = current_setting('app.tenant', true))"
    )
    conn.execute("CREATE TABLE memos (id text PRIMARY KEY, body text)")
    conn.execute(
        "INSERT INTO memos SELECT %s || i, %s || ' common words ' || i "
        "FROM generate_series(1, 3) AS i",
        (C_KEY, C_BODY),
    )
    conn.execute("CREATE TABLE vault (id int PRIMARY KEY, v text)")
    conn.execute("INSERT INTO vault VALUES (1, %s)", (VAULT,))
    conn.execute(
        "SELECT autoembed.create_vectorizer('docs', ARRAY['body'], model => 'hash:16', "
        "max_attempts => 1)"
    )
    conn.execute("SELECT autoembed.create_vectorizer('memos', ARRAY['body'], model => 'hash:16')")
    grant()
    monkeypatch.setenv("AUTOEMBED_HASH_FAIL_ON", B_POISON)
    drain(db_url)
    # A campaign: version 2 of docs, embedded too (its poison row fails again,
    # so it stays building).
    conn.execute("SELECT autoembed.set_model('docs', 'hash:24')")
    drain(db_url)
    failed = conn.execute("SELECT count(*) FROM autoembed.failed_rows('docs')").fetchone()
    assert failed == (2,)  # the poison row, in each version
    monkeypatch.delenv("AUTOEMBED_HASH_FAIL_ON")
    conn.execute("ANALYZE")  # planner statistics (pg_stats) for every table

    versions = []
    for name, vid, ver_id, ordinal, dims, mv in conn.execute(
        "SELECT x.name, x.id, y.id, y.ordinal, y.dimensions, y.model_version_id "
        "FROM autoembed.vectorizer AS x JOIN autoembed.vectorizer_version AS y "
        "ON y.vectorizer_id = x.id ORDER BY x.id, y.ordinal"
    ).fetchall():
        assert mv is not None, (name, ordinal)
        keys = conn.execute(
            sql.SQL(
                "SELECT jsonb_agg(jsonb_build_object('id', id) ORDER BY id)::text FROM {}"
            ).format(sql.Identifier(name))
        ).fetchone()
        assert keys is not None
        versions.append(Version(name, vid, ver_id, ordinal, dims, mv, keys[0]))
    assert [(v.name, v.ordinal) for v in versions] == [("docs", 1), ("docs", 2), ("memos", 1)]
    # Text queries need a worker to embed them; the probe is cached instead,
    # for every model version, as a worker would have answered it.
    for v in versions:
        (e,) = query_vectors([PROBE], v.dimensions)
        conn.execute(
            "INSERT INTO autoembed.query_cache (model_version_id, query_digest, query, embedding) "
            "VALUES (%s, autoembed._query_digest(%s), %s, %s) ON CONFLICT DO NOTHING",
            (v.model_version_id, PROBE, PROBE, e),
        )
    return versions


# ------------------------------------------------------------------ recipes
#
# An argument for a parameter, as SQL, from its name and type (and, where a
# name means different things in different functions, the function's name).
# Version-bound recipes take the version under test.

Recipe = Callable[[Version], sql.Composable]


def _lit(value: Any, cast: str | None = None) -> Recipe:
    expr = sql.Literal(value)
    return lambda _: expr if cast is None else sql.SQL("{}::{}").format(expr, sql.SQL(cast))


def _vector(v: Version) -> sql.Composable:
    (e,) = query_vectors([PROBE], v.dimensions)
    return sql.SQL("{}::vector").format(sql.Literal("[" + ",".join(map(str, e.tolist())) + "]"))


def _vectorizer_row(v: Version) -> sql.Composable:
    return sql.SQL("(SELECT x FROM autoembed.vectorizer AS x WHERE x.id = {})").format(
        sql.Literal(v.vectorizer_id)
    )


def _version_row(v: Version) -> sql.Composable:
    return sql.SQL("(SELECT y FROM autoembed.vectorizer_version AS y WHERE y.id = {})").format(
        sql.Literal(v.version_id)
    )


# Recipes that depend on the version: a function with one of these is called
# once per version.
BOUND: dict[tuple[str, str], Recipe] = {
    ("name", "text"): lambda v: sql.Literal(v.name),
    ("vectorizer_name", "text"): lambda v: sql.Literal(v.name),
    ("v", "autoembed.vectorizer"): _vectorizer_row,
    ("ver", "autoembed.vectorizer_version"): _version_row,
    ("vectorizer_id", "integer"): lambda v: sql.Literal(v.vectorizer_id),
    ("version_id", "integer"): lambda v: sql.Literal(v.version_id),
    ("model_version_id", "integer"): lambda v: sql.Literal(v.model_version_id),
    ("version", "text"): lambda v: sql.Literal(str(v.ordinal)),
    ("a", "text"): lambda v: sql.Literal("1"),
    ("b", "text"): lambda v: sql.Literal("2"),
    ("query_embedding", "vector"): _vector,
    ("keys", "jsonb"): lambda v: sql.SQL("{}::jsonb").format(sql.Literal(v.keys)),
    ("items", "jsonb"): lambda v: sql.SQL("{}::jsonb").format(sql.Literal(v.keys)),
    ("source", "regclass"): lambda v: sql.SQL("{}::regclass").format(sql.Literal(v.name)),
    ("source", "oid"): lambda v: sql.SQL("{}::regclass::oid").format(sql.Literal(v.name)),
    # every merged BM25 segment of the version
    ("segments", "integer[]"): lambda v: sql.SQL(
        "(SELECT autoembed._level_segments(y, 1) || autoembed._level_segments(y, 2)"
        " FROM autoembed.vectorizer_version AS y WHERE y.id = {})"
    ).format(sql.Literal(v.version_id)),
    ("only_ids", "integer[]"): lambda v: sql.SQL("ARRAY[{}]").format(sql.Literal(v.vectorizer_id)),
    ("version_ids", "integer[]"): lambda v: sql.SQL("ARRAY[{}]").format(
        sql.Literal(v.model_version_id)
    ),
    ("ordinal", "integer"): lambda v: sql.Literal(v.ordinal),
    # one row's key, as each overload of similar() and wait_embedded() takes it
    ("key", "jsonb"): lambda v: sql.SQL("{}::jsonb").format(
        sql.Literal(json.dumps(json.loads(v.keys)[0]))
    ),
    ("key", "text"): lambda v: sql.Literal(json.dumps(json.loads(v.keys)[0])),
    ("key", "anyelement"): lambda v: sql.Literal(json.loads(v.keys)[0]["id"]),
    # a version table (here: to give PUBLIC a policy that shows every chunk)
    ("tbl", "name"): lambda v: sql.SQL(
        "(SELECT y.embeddings_table FROM autoembed.vectorizer_version AS y WHERE y.id = {})"
    ).format(sql.Literal(v.version_id)),
}

# The strings a recipe puts into a call: the call may give them back.
ECHOES: dict[tuple[str, str], Callable[[Version], list[str]]] = {
    ("query", "text"): lambda _: [PROBE],
    ("queries", "text[]"): lambda _: [PROBE],
    ("terms", "text[]"): lambda _: PROBE.split(),
    ("keys", "jsonb"): lambda v: [k["id"] for k in json.loads(v.keys)],
    ("items", "jsonb"): lambda v: [k["id"] for k in json.loads(v.keys)],
    ("key", "jsonb"): lambda v: [json.loads(v.keys)[0]["id"]],
    ("key", "text"): lambda v: [json.loads(v.keys)[0]["id"]],
    ("key", "anyelement"): lambda v: [json.loads(v.keys)[0]["id"]],
}

FREE: dict[tuple[str, str], Recipe] = {
    ("query", "text"): _lit(PROBE),
    ("queries", "text[]"): _lit([PROBE], "text[]"),
    ("terms", "text[]"): _lit(PROBE.split(), "text[]"),
    ("k", "integer"): _lit(10),
    ("n", "integer"): _lit(100),
    ("batch_size", "integer"): _lit(100),
    ("lease", "interval"): _lit("1 minute", "interval"),
    ("fresh_within", "interval"): _lit("1 day", "interval"),
    ("lease_until", "timestamp with time zone"): _lit("2100-01-01", "timestamptz"),
    ("up_to", "xid8"): lambda _: sql.SQL("pg_snapshot_xmax(pg_current_snapshot())"),
    ("timeout", "interval"): _lit("0", "interval"),
    ("claim_token", "uuid"): _lit(str(uuid.UUID(int=7)), "uuid"),
    ("errors", "text[]"): _lit(["failed"], "text[]"),
    ("error", "text"): _lit("failed"),
    ("chunk_item", "integer[]"): _lit("{}", "int[]"),
    ("chunk_no", "integer[]"): _lit("{}", "int[]"),
    ("chunk", "text[]"): _lit("{}", "text[]"),
    ("embedding", "vector[]"): _lit("{}", "vector[]"),
    ("embeddings", "vector[]"): _lit("{}", "vector[]"),
    ("ids", "bigint[]"): _lit("{}", "bigint[]"),
    ("role", "regrole"): lambda _: sql.SQL("current_user::regrole"),
    ("role", "oid"): lambda _: sql.SQL("current_user::regrole::oid"),
    ("filter", "jsonb"): _lit(None, "jsonb"),
    ("chunks", "boolean"): _lit(False),
    ("results", "jsonb"): _lit("[]", "jsonb"),
    ("hits", "text"): _lit("SELECT 1"),
    ("k_param", "integer"): _lit(1),
    ("min_param", "integer"): _lit(2),
    ("skip", "integer"): _lit(0),
    ("predicate", "text"): _lit("true"),
    ("filter_param", "integer"): _lit(1),
    ("alias", "text"): _lit("e"),
    ("chunks", "text"): _lit("autoembed.vectorizer AS e"),
    ("fmt", "text"): _lit("%1$I"),
    ("sep", "text"): _lit(", "),
    ("base", "text"): _lit("docs"),
    ("suffix", "text"): _lit("_x"),
    ("kind", "text"): _lit("queue"),
    ("columns", "text[]"): _lit(["body"], "text[]"),
    ("model", "text"): _lit("hash:16"),
    ("dimensions", "integer"): _lit(16),
    ("storage", "text"): _lit("binary"),
    ("index_method", "text"): _lit("hnsw"),
    ("index", "text"): _lit("hnsw"),
    ("visible", "text"): _lit("true"),
    ("limit_param", "integer"): _lit(3),
    ("fetch_n", "integer"): _lit(56),
    ("max_seq_length", "integer"): _lit(512),
    ("weights_digest", "text"): _lit("digest"),
    ("pooling", "text"): _lit("mean"),
    ("normalized", "boolean"): _lit(True),
    ("dtype", "text"): _lit("float32"),
    ("tag", "text"): _lit("a-tag"),
    ("state", "text"): _lit("building"),
    ("activate", "text"): _lit("manual"),
    ("max_len", "integer"): _lit(512),
    ("chunk_tokens", "integer"): _lit(100),
    ("chunk_overlap", "integer"): _lit(0),
    ("k1", "double precision"): _lit(1.2),
    ("b", "double precision"): _lit(0.5),
    ("k1_param", "integer"): _lit(1),
    ("b_param", "integer"): _lit(2),
    ("ref_param", "integer"): _lit(3),
    ("method", "text"): _lit("hybrid"),
    ("sample", "integer"): _lit(100),
    ("recent", "interval"): _lit("1 day", "interval"),
    ("keep", "integer"): _lit(0),
    ("failed", "bigint"): _lit(1),
    ("lock_rows", "boolean"): _lit(False),
    ("request_id", "bigint"): _lit(1),
    ("wait_ms", "integer"): _lit(10),
    ("value", "text"): _lit("x"),
    ("dblink_schema", "name"): _lit("public", "name"),
    ("reopen", "boolean"): _lit(False),
    ("policy", "name"): _lit("everything", "name"),
    ("definition", "text"): _lit("FOR SELECT TO PUBLIC USING (true)"),
    ("cands", "text"): _lit("SELECT 1::bigint AS chunk_id"),
    ("tf", "text"): _lit("1"),
    ("dl", "text"): _lit("10"),
    ("level", "integer"): _lit(1),
    ("min_chunks", "integer"): _lit(1),
    ("n", "bigint"): _lit(100),
}

# Where a parameter's name means something else in one function.
OVERRIDES: dict[tuple[str, str], Recipe] = {
    ("_pk_join", "a"): _lit("e"),
    ("_pk_join", "b"): _lit("s"),
}

# Functions that cannot be called meaningfully, and why.
NOT_CALLED: dict[str, str] = {}


@dataclass(frozen=True)
class Function:
    signature: str  # regprocedure text
    schema: str
    name: str
    kind: str  # f, p
    args: list[tuple[str, str]]  # the input parameters: name, type
    required: int  # how many of them have no default
    returns_trigger: bool


def _schemas(c: Conn) -> list[str]:
    """autoembed's schema and any other schema holding an object of its
    extension (when installed as one)."""
    rows = c.execute(
        "SELECT 'autoembed' UNION "
        "SELECT n.nspname::text FROM pg_depend AS d "
        "JOIN pg_extension AS x ON d.refclassid = 'pg_extension'::regclass AND d.refobjid = x.oid "
        "JOIN pg_proc AS p ON d.classid = 'pg_proc'::regclass AND d.objid = p.oid "
        "JOIN pg_namespace AS n ON n.oid = p.pronamespace "
        "WHERE x.extname = 'autoembed' AND d.deptype = 'e' ORDER BY 1"
    ).fetchall()
    return [r[0] for r in rows]


def _relations(c: Conn, schemas: list[str]) -> list[str]:
    rows = c.execute(
        "SELECT c.oid::regclass::text FROM pg_class AS c "
        "WHERE c.relnamespace::regnamespace::text = ANY (%s) "
        "AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S') ORDER BY 1",
        (schemas,),
    ).fetchall()
    return [r[0] for r in rows]


def _functions(c: Conn, schemas: list[str]) -> list[Function]:
    rows = c.execute(
        "SELECT p.oid::regprocedure::text, n.nspname::text, p.proname::text, p.prokind::text, "
        "  coalesce(p.proargnames, '{}'), coalesce(p.proargmodes::text[], '{}'), "
        "  ARRAY(SELECT format_type(t, NULL) FROM unnest(coalesce(p.proallargtypes, "
        "        p.proargtypes::oid[])) AS t), p.pronargs, p.pronargdefaults, "
        "  p.prorettype = 'trigger'::regtype "
        "FROM pg_proc AS p JOIN pg_namespace AS n ON n.oid = p.pronamespace "
        "WHERE n.nspname = ANY (%s) ORDER BY 1",
        (schemas,),
    ).fetchall()
    out = []
    for sig, schema, name, kind, names, modes, types, nargs, ndefaults, trig in rows:
        args = [
            (names[i] if i < len(names) else "", t)
            for i, t in enumerate(types)
            if not modes or modes[i] in ("i", "b", "v")
        ]
        assert len(args) == nargs, sig
        out.append(Function(sig, schema, name, kind, args, nargs - ndefaults, trig))
    return out


def _recipe(f: Function, arg: str, typ: str) -> tuple[Recipe, bool] | None:
    """The recipe for one parameter, and whether it depends on the version."""
    if (f.name, arg) in OVERRIDES:
        return OVERRIDES[(f.name, arg)], False
    typ = typ.removeprefix("public.")
    if (arg, typ) in BOUND:
        return BOUND[(arg, typ)], True
    if (arg, typ) in FREE:
        return FREE[(arg, typ)], False
    return None


def _calls(f: Function, versions: list[Version]) -> Iterator[tuple[sql.Composable, list[str]]]:
    """The statements that call f, and the strings their arguments hold: once,
    or once per version if an argument depends on it. Parameters with a
    default and no recipe keep the default; one without a default and without
    a recipe is an error naming both."""
    chosen: list[tuple[str, str, Recipe, bool]] = []
    for i, (arg, typ) in enumerate(f.args):
        found = _recipe(f, arg, typ)
        if found is None:
            if i < f.required:
                raise LookupError(f"{f.signature}: no recipe for parameter {arg or i} {typ}")
            continue
        chosen.append((arg, typ.removeprefix("public."), *found))
    bound = any(b for _, _, _, b in chosen)
    for v in versions if bound else versions[:1]:
        args = sql.SQL(", ").join(
            sql.SQL("{} => {}").format(sql.Identifier(a), r(v)) for a, _, r, _ in chosen
        )
        echo = [e for a, t, _, _ in chosen if (a, t) in ECHOES for e in ECHOES[(a, t)](v)]
        target = sql.SQL("{}.{}({})").format(sql.Identifier(f.schema), sql.Identifier(f.name), args)
        if f.kind == "p":
            yield sql.SQL("CALL {}").format(target), echo
        else:
            yield sql.SQL("SELECT * FROM {}").format(target), echo


# ------------------------------------------------------------------ checks


def _flat(value: Any) -> str:
    if isinstance(value, dict | list):
        return json.dumps(value)
    return str(value)


def _without(text: str, echo: list[str]) -> str:
    """text less every repeat of the call's own arguments."""
    for e in sorted(echo, key=len, reverse=True):
        text = text.replace(e, "")
    return text


@dataclass
class Report:
    leaks: list[str] = field(default_factory=list)
    read: list[str] = field(default_factory=list)  # relations read
    called: list[str] = field(default_factory=list)  # calls that returned
    seen: set[str] = field(default_factory=set)  # every marker seen


def _run(
    c: Conn,
    stmt: sql.Composable,
    what: str,
    forbidden: tuple[str, ...],
    echo: list[str],
    report: Report,
) -> bool:
    """Run stmt in a transaction rolled back after; check what it returns or
    the error it raises. True if it returned."""
    text = ""
    ok = False
    try:
        with c.transaction(force_rollback=True):
            c.execute("SET LOCAL statement_timeout = '10s'")
            cur = c.execute(stmt)
            rows = cur.fetchall() if cur.description else []
            text = "\n".join(_flat(x) for row in rows for x in row)
            ok = True
    except psycopg.Error as e:
        d = e.diag
        text = "\n".join(
            s or "" for s in (d.message_primary, d.message_detail, d.message_hint, d.context)
        )
    text = _without(text, echo)
    report.seen |= {m for m in EVERY_MARKER if m in text}
    report.leaks += [f"{what} shows {m}" for m in forbidden if m in text]
    return ok


def _sweep(c: Conn, kind: str, versions: list[Version], functions: bool = True) -> Report:
    forbidden = FORBIDDEN[kind]
    report = Report()
    schemas = _schemas(c)
    for rel in _relations(c, schemas):
        if _run(
            c,
            sql.SQL("SELECT * FROM {}").format(sql.SQL(rel)),
            f"{kind}: {rel}",
            forbidden,
            [],
            report,
        ):
            report.read.append(rel)
    # the planner's statistics of those tables (most common values...)
    stats = sql.SQL("SELECT s::text FROM pg_stats AS s WHERE s.schemaname = ANY ({})").format(
        sql.Literal(schemas)
    )
    _run(c, stats, f"{kind}: pg_stats", forbidden, [], report)
    missing = []
    for f in _functions(c, schemas) if functions else []:
        if not c.execute("SELECT has_function_privilege(%s, 'EXECUTE')", (f.signature,)).fetchone()[
            0
        ]:
            continue
        if f.returns_trigger:
            report.leaks.append(f"{kind}: may execute trigger function {f.signature}")
            continue
        if f.name in NOT_CALLED:
            continue
        try:
            stmts = list(_calls(f, versions))
        except LookupError as e:
            missing.append(str(e))
            continue
        for stmt, echo in stmts:
            if _run(c, stmt, f"{kind}: {stmt.as_string(c)[:160]}", forbidden, echo, report):
                report.called.append(f.signature)
    assert not missing, (
        "functions the test cannot call (add a recipe or list them in NOT_CALLED):\n"
        + "\n".join(missing)
    )
    return report


def _grant(conn: Conn, reader: str, worker: str | None, keyonly: str | None = None) -> None:
    """The reader: SELECT on docs (its sessions set app.tenant, so the policy
    shows it tenant acme) and grant_search on docs, not on memos. The worker:
    grant_worker. keyonly: as the reader, but SELECT on docs' id and tenant
    columns only."""
    conn.execute(sql.SQL("GRANT SELECT ON docs TO {}").format(sql.Identifier(reader)))
    conn.execute("SELECT autoembed.grant_search('docs', %s)", (reader,))
    if keyonly is not None:
        conn.execute(
            sql.SQL("GRANT SELECT (id, tenant) ON docs TO {}").format(sql.Identifier(keyonly))
        )
        conn.execute("SELECT autoembed.grant_search('docs', %s)", (keyonly,))
    if worker is not None:
        conn.execute("SELECT autoembed.grant_worker(%s)", (worker,))


@contextmanager
def _session(url: str, kind: str, role: str) -> Iterator[Conn]:
    with connect_as(url, role) as c:
        if kind in ("reader", "keyonly"):
            c.execute("SET app.tenant = 'acme'")
        yield c


@pytest.fixture
def ordinary_owner(pg_server: EmbeddedPostgres) -> Iterator[tuple[str, str]]:
    """A database owned by a role that is not a superuser, autoembed installed
    by that role (as on managed Postgres: a superuser created pgvector once).
    Yields the database's URL (as the superuser) and the owner's name."""
    owner = f"owner_{uuid.uuid4().hex[:10]}"
    db = f"sec_{uuid.uuid4().hex[:10]}"
    with connect(pg_server.url) as c:
        c.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(owner)))
        c.execute(
            sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(db), sql.Identifier(owner))
        )
    url = pg_server.url_for(db)
    try:
        with connect(url) as c:
            c.execute("CREATE EXTENSION vector")
        parts = urlsplit(url)
        install(urlunsplit(parts._replace(netloc=f"{owner}@{parts.hostname or ''}")))
        yield url, owner
    finally:
        with connect(pg_server.url) as c:
            c.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db)))
            c.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(owner)))


def _property_holds(
    owner_conn: Conn, admin: Conn, url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    conn = owner_conn
    with roles(admin, "reader", "worker", "nobody", "keyonly") as (reader, worker, nobody, keyonly):
        versions = _build(conn, url, monkeypatch, lambda: _grant(conn, reader, worker, keyonly))

        # The test can see a leak: the owner reads every marker through
        # autoembed's relations.
        owner = _sweep(conn, "reader", versions, functions=False)
        assert {B_BODY, B_KEY, C_BODY, C_KEY} <= owner.seen, owner.seen

        reports = {}
        sessions = (
            ("reader", reader),
            ("worker", worker),
            ("nobody", nobody),
            ("keyonly", keyonly),
        )
        for kind, role in sessions:
            with _session(url, kind, role) as c:
                reports[kind] = _sweep(c, kind, versions)
        leaks = [x for r in reports.values() for x in r.leaks]
        assert leaks == [], "\n".join(leaks)

        # What each role may see, it does see: the sweeps reached real data.
        assert {A_BODY, A_KEY} <= reports["reader"].seen, reports["reader"].seen
        assert (
            "autoembed.bm25_search(text,text,integer,jsonb,boolean,text,"
            "text,integer,double precision)" in reports["reader"].called
        )
        assert {A_BODY, B_BODY, B_KEY, C_BODY, C_KEY} <= reports["worker"].seen
        assert reports["nobody"].seen == set()


def test_no_role_reads_rows_it_could_not_select(
    conn: Conn, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _property_holds(conn, conn, db_url, monkeypatch)


def test_no_role_reads_rows_it_could_not_select_under_an_ordinary_owner(
    ordinary_owner: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same, where the owner of everything is not a superuser: it owns
    the source tables and autoembed's, so no policy hides anything from it,
    and nothing else changes."""
    url, owner = ordinary_owner
    with connect(url) as admin, connect_as(url, owner) as owner_conn:
        assert owner_conn.execute(
            "SELECT rolsuper FROM pg_roles WHERE rolname = current_user"
        ).fetchone() == (False,)
        _property_holds(owner_conn, admin, url, monkeypatch)


def test_an_install_closes_the_version_tables_of_earlier_releases(
    conn: Conn, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Vectorizers made by a release without row-level security on the
    version tables (their searchers could read every chunk, posting and
    statistic) are brought up to it by the next install."""
    with roles(conn, "reader") as (reader,):
        versions = _build(conn, db_url, monkeypatch, lambda: _grant(conn, reader, None))
        # What the earlier release left: no row-level security, no term
        # statistics function, SELECT on the statistics.
        for ver in conn.execute(
            "SELECT embeddings_table, postings_table, stats_table, "
            "autoembed._term_stats_function(y) FROM autoembed.vectorizer_version AS y "
            "WHERE y.vectorizer_id = (SELECT id FROM autoembed.vectorizer WHERE name = 'docs')"
        ).fetchall():
            for table in ver[:2]:
                conn.execute(
                    sql.SQL("ALTER TABLE {} DISABLE ROW LEVEL SECURITY").format(
                        sql.Identifier("autoembed", table)
                    )
                )
            conn.execute(
                sql.SQL("GRANT SELECT ON {} TO {}").format(
                    sql.Identifier("autoembed", ver[2]), sql.Identifier(reader)
                )
            )
            conn.execute(
                sql.SQL("DROP FUNCTION {}(int, text[])").format(sql.Identifier("autoembed", ver[3]))
            )
        with _session(db_url, "reader", reader) as c:
            before = _sweep(c, "reader", versions, functions=False)
        assert {B_BODY, B_KEY} <= before.seen  # the leak, as it was

        install(db_url)

        with _session(db_url, "reader", reader) as c:
            after = _sweep(c, "reader", versions, functions=False)
            hits = c.execute(
                "SELECT pk ->> 'id' FROM autoembed.bm25_search('docs', %s, 10)", (PROBE,)
            ).fetchall()
        assert after.leaks == [], "\n".join(after.leaks)
        assert sorted(h[0] for h in hits) == [f"{A_KEY}{i}" for i in range(1, 4)]


def test_a_searched_source_table_is_dropped_with_cascade_only(conn: Conn, db_url: str) -> None:
    """Searchers' policies name the source table: dropping it needs CASCADE
    (which drops the policies, so nobody but the owner sees the chunks),
    and the vectorizer can then be dropped as ever."""
    conn.execute("CREATE TABLE docs (id int PRIMARY KEY, body text)")
    conn.execute("INSERT INTO docs VALUES (1, 'a note')")
    conn.execute("SELECT autoembed.create_vectorizer('docs', ARRAY['body'], model => 'hash:16')")
    drain(db_url)
    with roles(conn, "reader") as (reader,):
        conn.execute("SELECT autoembed.grant_search('docs', %s)", (reader,))
        with pytest.raises(psycopg.errors.DependentObjectsStillExist):
            conn.execute("DROP TABLE docs")
        conn.execute("DROP TABLE docs CASCADE")
        with connect_as(db_url, reader) as c:
            assert c.execute("SELECT count(*) FROM autoembed.docs_embeddings_v1").fetchone() == (0,)
        conn.execute("SELECT autoembed.drop_vectorizer('docs')")
        assert conn.execute("SELECT to_regclass('autoembed.docs_embeddings_v1')").fetchone() == (
            None,
        )


def test_a_reader_gets_the_owners_results_less_the_rows_it_cannot_see(
    conn: Conn, db_url: str
) -> None:
    """The policies change what a reader sees, not how it is ranked: its
    BM25 and semantic results are the owner's (same order, same scores), less
    the other tenant's rows, BM25's statistics counted over every row. (BM25
    is exact at any k; semantic search is compared over every row, where the
    HNSW walk misses nothing.)"""
    rng = random.Random(3)
    vocab = [f"w{i}" for i in range(60)]
    conn.execute("CREATE TABLE notes (id int PRIMARY KEY, tenant text NOT NULL, body text)")
    with conn.cursor().copy("COPY notes FROM STDIN") as copy:
        for i in range(1, 401):
            copy.write_row((i, "acme" if i % 3 else "globex", " ".join(rng.choices(vocab, k=15))))
    conn.execute("SELECT autoembed.create_vectorizer('notes', ARRAY['body'], model => 'hash:32')")
    drain(db_url)
    conn.execute("ALTER TABLE notes ENABLE ROW LEVEL SECURITY")
    conn.execute(
        "CREATE POLICY tenant_rows ON notes FOR SELECT "
        "USING (tenant = current_setting('app.tenant', true))"
    )
    acme = {i for i in range(1, 401) if i % 3}
    queries = [" ".join(rng.sample(vocab, 3)) for _ in range(10)]
    vectors = query_vectors(queries, 32)
    bm25 = "SELECT (pk ->> 'id')::int, score FROM autoembed.bm25_search('notes', %s, %s)"
    semantic = "SELECT (pk ->> 'id')::int, score FROM autoembed.search('notes', %s, %s)"

    def results(c: Conn, call: str, args: list[Any], k: int) -> list[list[tuple[int, float]]]:
        return [[(r[0], r[1]) for r in c.execute(call, (a, k))] for a in args]

    with roles(conn, "reader") as (reader,):
        conn.execute(sql.SQL("GRANT SELECT ON notes TO {}").format(sql.Identifier(reader)))
        conn.execute("SELECT autoembed.grant_search('notes', %s)", (reader,))
        owner = results(conn, bm25, queries, 400) + results(conn, semantic, vectors, 400)
        with _session(db_url, "reader", reader) as c:
            mine = results(c, bm25, queries, 400) + results(c, semantic, vectors, 400)
            top = results(c, bm25, queries, 5)
    expected = [[(i, s) for i, s in o if i in acme] for o in owner]
    assert all({i for i, _ in o} - acme for o in owner)  # the owner sees the other tenant
    assert all(len(e) >= 5 for e in expected)
    assert mine == expected
    assert top == [e[:5] for e in expected[: len(queries)]]


def test_search_granted_to_public_works_like_a_grant_to_a_role(conn: Conn, db_url: str) -> None:
    """The view granted to PUBLIC by hand: a new version's policy for PUBLIC
    shows every role the chunks of the rows it may SELECT (none without
    SELECT on the source: a permission error), and the worker role, a member
    of PUBLIC that may not read the source, still embeds it."""
    conn.execute("CREATE TABLE docs (id int PRIMARY KEY, body text)")
    conn.execute("INSERT INTO docs SELECT i, 'note ' || i FROM generate_series(1, 20) AS i")
    conn.execute("SELECT autoembed.create_vectorizer('docs', ARRAY['body'], model => 'hash:16')")
    conn.execute("GRANT SELECT ON autoembed.docs_embeddings TO PUBLIC")
    with roles(conn, "worker", "reader", "anyone") as (worker, reader, anyone):
        conn.execute("SELECT autoembed.grant_worker(%s)", (worker,))
        conn.execute("SELECT autoembed.set_model('docs', 'hash:24')")
        stats = drain(url_as(db_url, worker))
        assert (stats.written, stats.failed) == (40, 0)
        conn.execute(sql.SQL("GRANT SELECT ON docs TO {}").format(sql.Identifier(reader)))
        with connect_as(db_url, reader) as c:
            n = c.execute("SELECT count(*) FROM autoembed.docs_embeddings_v2").fetchone()
        assert n == (20,)
        with (
            connect_as(db_url, anyone) as c,
            pytest.raises(psycopg.errors.InsufficientPrivilege, match="table docs"),
        ):
            c.execute("SELECT count(*) FROM autoembed.docs_embeddings_v2")
