"""predicate, skip and min_score on every search (search, bm25_search,
hybrid_search, similar): a SQL condition kept while ranking, so k rows come
back when k match; pages that are slices of one ranking; a score floor.
Each is checked against the same search without it, filtered or cut in
Python, on a table with tied rows (identical texts)."""

from __future__ import annotations

import itertools
import random
from typing import Any

import psycopg
import pytest
from psycopg import sql

from tests.conftest import as_superuser, drain
from tests.integration.helpers import Hit, QueryServiceThread, call_search, create_vectorizer
from tests.integration.security_helpers import query_vectors

Conn = psycopg.Connection[Any]

VOCAB = [
    "refund",
    "invoice",
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
]
ROWS = 400
QUERY = "refund delay parcel"


@pytest.fixture
def items(conn: Conn, db_url: str) -> dict[int, dict[str, Any]]:
    """items(id, body, status, price, region): 400 rows, every 10th a copy of
    the row before it (ties), embedded with hash:32; returns the rows by id."""
    rng = random.Random(3)
    conn.execute(
        "CREATE TABLE items (id int PRIMARY KEY, body text, status text, price int, region text)"
    )
    rows: dict[int, dict[str, Any]] = {}
    for i in range(1, ROWS + 1):
        body = rows[i - 1]["body"] if i % 10 == 0 else " ".join(rng.choices(VOCAB, k=8))
        rows[i] = {
            "body": body,
            "status": rng.choice(["open", "closed", "pending"]),
            "price": i % 100,
            "region": "eu" if i % 2 else "us",
        }
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO items VALUES (%s, %s, %s, %s, %s)",
            [(i, r["body"], r["status"], r["price"], r["region"]) for i, r in rows.items()],
        )
    create_vectorizer(conn, "items", ["body"], model="hash:32")
    drain(db_url)
    return rows


def searches(conn: Conn, k: int, **options: Any) -> dict[str, list[Hit]]:
    """The same query through each search function."""
    vector = query_vectors([QUERY], dims=32)[0]
    return {
        "semantic": call_search(conn, "search", "items", vector, k, **options),
        "bm25": call_search(conn, "bm25_search", "items", QUERY, k, **options),
        "hybrid": call_search(conn, "hybrid_search", "items", QUERY, vector, k, **options),
        "similar": call_search(conn, "similar", "items", 7, k, **options),
    }


def keyed(hits: list[Hit]) -> list[tuple[int, float, int]]:
    return [(h.id, round(h.score, 9), h.rank) for h in hits]


def test_a_predicate_keeps_k_rows_when_k_match(
    conn: Conn, items: dict[int, dict[str, Any]]
) -> None:
    # 2% of rows; a post-filter of the top 10 would keep almost none
    predicate = "price < 2 AND status IN ('open', 'pending')"
    matching = {i for i, r in items.items() if r["price"] < 2 and r["status"] != "closed"}
    assert 4 <= len(matching) < 20
    everything = searches(conn, ROWS)
    for method, hits in searches(conn, 3, predicate=predicate).items():
        assert len(hits) == 3, method
        assert {h.id for h in hits} <= matching, method
        if method in ("semantic", "bm25", "similar"):
            # the full ranking, filtered: the same rows, scores and order
            want = [h for h in everything[method] if h.id in matching][:3]
            assert [(h.id, h.score) for h in hits] == [(h.id, h.score) for h in want], method
        assert [h.rank for h in hits] == [1, 2, 3], method


def test_an_equality_predicate_is_the_filter_it_spells(conn: Conn, items: Any) -> None:
    by_filter = searches(conn, 10, filter='{"region": "eu"}')
    by_predicate = searches(conn, 10, predicate="region = 'eu'")
    for method in by_filter:
        assert keyed(by_predicate[method]) == keyed(by_filter[method]), method
        assert len(by_filter[method]) == 10, method
    # both together: each narrows
    both = searches(conn, 10, filter='{"region": "eu"}', predicate="s.price >= 50")
    for method, hits in both.items():
        assert hits, method
        assert all(items[h.id]["region"] == "eu" and items[h.id]["price"] >= 50 for h in hits), (
            method
        )


def test_a_predicate_may_join_other_tables(conn: Conn, items: Any) -> None:
    conn.execute("CREATE TABLE flagged (item_id int PRIMARY KEY)")
    conn.execute("INSERT INTO flagged SELECT generate_series(1, 400, 7)")
    # unqualified, a table is not found: search_path is pg_catalog, pg_temp
    with pytest.raises(psycopg.errors.UndefinedTable, match="flagged") as e:
        call_search(
            conn, "bm25_search", "items", QUERY, 5, predicate="id IN (SELECT 1 FROM flagged)"
        )
    assert "need their schema" in (e.value.diag.message_hint or "")
    predicate = "EXISTS (SELECT 1 FROM public.flagged AS f WHERE f.item_id = s.id)"
    for method, hits in searches(conn, 5, predicate=predicate).items():
        assert len(hits) == 5, method
        assert all((h.id - 1) % 7 == 0 for h in hits), method


def test_pages_are_slices_of_one_ranking(conn: Conn, items: Any) -> None:
    vector = query_vectors([QUERY], dims=32)[0]
    calls: dict[str, tuple[str, tuple[Any, ...], dict[str, Any]]] = {
        "semantic": ("search", ("items", vector), {}),
        "bm25": ("bm25_search", ("items", QUERY), {}),
        "hybrid": ("hybrid_search", ("items", QUERY, vector), {"candidates": 40}),
        "similar": ("similar", ("items", 7), {}),
    }
    for method, (function, args, options) in calls.items():
        whole = call_search(conn, function, *args, 40, **options)
        assert len(whole) == 40, method
        pages: list[Hit] = []
        for skip in range(0, 40, 10):
            pages += call_search(conn, function, *args, 10, skip=skip, **options)
        assert keyed(pages) == keyed(whole), method
        assert [h.rank for h in pages] == list(range(1, 41)), method
        assert call_search(conn, function, *args, 0, skip=5, **options) == [], method


def test_min_score_is_a_floor(conn: Conn, items: Any) -> None:
    # (hybrid scores depend on the candidate pool, max(candidates, k): the
    # same k on both sides)
    for method, hits in searches(conn, 100).items():
        floor = hits[14].score  # 15 rows (or more, tied) reach it
        kept = searches(conn, 100, min_score=floor)[method]
        want = [h for h in hits if h.score >= floor]
        assert 15 <= len(want) < 100, method
        assert keyed(kept) == keyed(want), method
        if method != "hybrid":
            assert searches(conn, 5, min_score=floor)[method] == kept[:5], method
    # a floor above every score: nothing, at once
    assert all(h == [] for h in searches(conn, 10, min_score=1e9).values())


def test_ties_are_ordered_by_key_across_pages(conn: Conn, items: Any) -> None:
    hits = call_search(conn, "bm25_search", "items", QUERY, ROWS)
    tied = [(a, b) for a, b in itertools.pairwise(hits) if a.score == b.score]
    assert tied, "the table holds copies, so some scores tie"
    assert all(a.id < b.id for a, b in tied)


def test_bad_arguments_name_the_problem(conn: Conn, items: Any) -> None:
    vector = query_vectors([QUERY], dims=32)[0]
    bad = [
        ("nope > 1", psycopg.errors.UndefinedColumn, 'column "nope" does not exist'),
        ("price", psycopg.errors.DatatypeMismatch, "must be type boolean"),
        ("price >", psycopg.errors.SyntaxError, "syntax error"),
        ("  ", psycopg.errors.InvalidParameterValue, "must not be empty"),
    ]
    for predicate, error, words in bad:
        for function, args in [
            ("search", ("items", vector, 5)),
            ("bm25_search", ("items", QUERY, 5)),
            ("hybrid_search", ("items", QUERY, vector, 5)),
            ("similar", ("items", 7, 5)),
        ]:
            with pytest.raises(error, match=words) as e:
                call_search(conn, function, *args, predicate=predicate)
            assert "predicate" in str(e.value), (function, predicate)
            assert e.value.diag.message_hint, (function, predicate)
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="skip must be 0 or more"):
        call_search(conn, "bm25_search", "items", QUERY, 5, skip=-1)
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="k \\+ skip must be at most"):
        call_search(conn, "search", "items", vector, 100, skip=9950)


def test_a_predicate_cannot_reach_rows_the_caller_may_not_read(
    conn: Conn, items: Any, searcher: str
) -> None:
    role = sql.Identifier(searcher)
    conn.execute("ALTER TABLE items ENABLE ROW LEVEL SECURITY")
    conn.execute(
        sql.SQL("CREATE POLICY eu_only ON items FOR SELECT TO {} USING (region = 'eu')").format(
            role
        )
    )
    conn.execute(sql.SQL("GRANT SELECT ON items TO {}").format(role))
    conn.execute("SELECT autoembed.grant_search('items', %s)", (searcher,))
    conn.execute("CREATE TABLE secrets (id int)")
    conn.execute(sql.SQL("SET ROLE {}").format(role))
    try:
        # a predicate that is always true still sees only what RLS lets through
        for method, hits in searches(conn, 20, predicate="true OR region = 'us'").items():
            assert len(hits) == 20, method
            assert all(items[h.id]["region"] == "eu" for h in hits), method
        # a table the role may not read stays unread
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="secrets"):
            call_search(
                conn,
                "bm25_search",
                "items",
                QUERY,
                5,
                predicate="id IN (SELECT id FROM public.secrets)",
            )
    finally:
        conn.execute("RESET ROLE")


def test_text_queries_take_the_same_options(conn: Conn, db_url: str, items: Any) -> None:
    vector = query_vectors([QUERY], dims=32)[0]
    service = QueryServiceThread(db_url)
    try:
        for function, by_vector in [
            ("search", ("items", vector)),
            ("hybrid_search", ("items", QUERY, vector)),
        ]:
            options = {"predicate": "price < 50", "skip": 5, "min_score": -1.0}
            # (as a superuser: an ordinary owner's text queries need the
            # loopback a superuser sets up once)
            with as_superuser(conn) as su:
                by_text = call_search(su, function, "items", QUERY, 5, **options)
            want = call_search(conn, function, *by_vector, 5, **options)
            assert len(by_text) == 5
            assert keyed(by_text) == keyed(want), function
    finally:
        service.stop()
