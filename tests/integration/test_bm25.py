"""autoembed.bm25_search: the documented formula on hand-made rows, the
statistics a DELETE, UPDATE or compaction leaves, k1 and b, the text search
configuration, filters, bad arguments, and the caller's privileges.

Expected scores come from ``lucene_bm25`` below: the formula in the header of
extension_sql/idempotent/065_bm25.sql, written from its definition, fed
lexemes written out by hand (and checked against what Postgres stored)."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any

import psycopg
import pytest
from psycopg import sql

from autoembed.db import connect
from autoembed.embedded import PostgresServer
from tests.conftest import drain
from tests.integration.helpers import (
    Hit,
    active_version,
    call_search,
    count,
    create_vectorizer,
    ids,
    make_texts,
    scratch_database,
    vectorizer,
)

Conn = psycopg.Connection[Any]
Lexemes = Mapping[int, list[str]]

# Three rows and their english lexemes: 'and', 'an', 'a', 'in', 'the' are stop
# words; apples/apple -> appl, pears -> pear, plums -> plum.
TEXTS = ["apples and pears, apples and plums", "an apple a day", "pears in the rain"]
LEXEMES: dict[int, list[str]] = {
    1: ["appl", "pear", "appl", "plum"],
    2: ["appl", "day"],
    3: ["pear", "rain"],
}


def lucene_bm25(
    docs: Lexemes, query: list[str], k1: float = 1.2, b: float = 0.5
) -> dict[int, float]:
    """Score of every matching document: the sum over query lexemes t (a
    repeated one once per occurrence) of idf(t) * tf / (tf + k1 * (1 - b + b *
    dl / avgdl)), idf(t) = ln(1 + (N - df + 0.5) / (df + 0.5))."""
    n = len(docs)
    avgdl = sum(map(len, docs.values())) / n
    scores: dict[int, float] = {}
    for key, tokens in docs.items():
        score = 0.0
        for term in query:
            tf = tokens.count(term)
            if tf:
                df = sum(term in t for t in docs.values())
                idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
                score += idf * tf / (tf + k1 * (1 - b + b * len(tokens) / avgdl))
        if score:
            scores[key] = score
    return scores


def bm25(conn: Conn, query: Any, k: Any = 10, name: Any = "docs", **options: Any) -> list[Hit]:
    return call_search(conn, "bm25_search", name, query, k, **options)


def scores(conn: Conn, query: str, name: str = "docs", **options: Any) -> dict[int, float]:
    return {h.id: h.score for h in bm25(conn, query, 100, name, **options)}


def assert_scores(got: dict[int, float], expected: dict[int, float]) -> None:
    assert got == pytest.approx(expected, rel=1e-12)


def stored_lexemes(conn: Conn, name: str = "docs") -> dict[int, list[str]]:
    """Each row's lexemes as stored, one per position, sorted."""
    rows = conn.execute(
        sql.SQL(
            "SELECT e.id, array_agg(l.lexeme ORDER BY l.lexeme) FROM {} AS e"
            " CROSS JOIN LATERAL unnest(e.lexemes) AS l CROSS JOIN LATERAL unnest(l.positions) "
            "GROUP BY e.id"
        ).format(vectorizer(conn, name).embeddings)
    ).fetchall()
    return {i: list(lexemes) for i, lexemes in rows}


def make_three(conn: Conn, url: str, **options: Any) -> None:
    """Table and vectorizer ``docs`` holding TEXTS, embedded."""
    make_texts(conn, TEXTS, **options)
    drain(url)


@pytest.fixture(scope="module")
def shared_url(pg_server: PostgresServer, template_url: str) -> Iterator[str]:
    """'docs' (TEXTS), 'simple' (TEXTS under the simple configuration) and
    'cats' (categorized rows), embedded; 'later' not yet."""
    with scratch_database(pg_server, "bm25") as url:
        with connect(url) as c:
            make_texts(c, TEXTS)
            make_texts(c, TEXTS, "simple", ts_config="simple")
            make_texts(c, [f"apple number {i}" for i in range(1, 21)], "cats", categories=CATS)
            drain(url)
            make_texts(c, TEXTS, "later")
        yield url


@pytest.fixture
def shared(shared_url: str) -> Iterator[Conn]:
    with connect(shared_url) as c:
        yield c


# ------------------------------------------------------- the formula


def test_postgres_stored_the_lexemes_written_here(shared: Conn) -> None:
    assert stored_lexemes(shared) == {i: sorted(t) for i, t in LEXEMES.items()}
    table = vectorizer(shared, "docs").embeddings
    doc_len = shared.execute(sql.SQL("SELECT id, doc_len FROM {} ORDER BY id").format(table))
    assert doc_len.fetchall() == [(i, len(t)) for i, t in LEXEMES.items()]  # no stop words


def test_scores_are_lucene_bm25_computed_by_hand(shared: Conn) -> None:
    hits = bm25(shared, "pears and apples")

    assert_scores({h.id: h.score for h in hits}, lucene_bm25(LEXEMES, ["pear", "appl"]))
    assert ids(hits) == [1, 2, 3]  # 2 and 3 tie (one lexeme of equal df, equal dl)
    assert hits[1].score == hits[2].score
    assert [h.rank for h in hits] == [1, 2, 3]
    assert [h.chunk for h in hits] == TEXTS
    # By hand: N = 3, avgdl = 8/3; 'rain' is in row 3 only (df 1, tf 1, dl 2).
    idf = math.log(1 + (3 - 1 + 0.5) / (1 + 0.5))
    assert scores(shared, "rain") == pytest.approx(
        {3: idf * 1 / (1 + 1.2 * (1 - 0.5 + 0.5 * 2 / (8 / 3)))}, rel=1e-12
    )


def test_a_repeated_query_term_counts_once_per_occurrence(shared: Conn) -> None:
    once, thrice = scores(shared, "pear"), scores(shared, "pears pear PEARS")

    assert_scores(thrice, {k: 3 * v for k, v in once.items()})
    assert_scores(thrice, lucene_bm25(LEXEMES, ["pear"] * 3))


def test_term_frequency_counts_every_occurrence_in_the_row(shared: Conn) -> None:
    """Row 1 holds appl twice, row 2 once; dl counts occurrences too."""
    expected = lucene_bm25(LEXEMES, ["appl"])
    assert expected[1] != pytest.approx(
        lucene_bm25({k: sorted(set(v)) for k, v in LEXEMES.items()}, ["appl"])[1]
    )
    assert_scores(scores(shared, "apple"), expected)


def test_stop_words_are_ignored(shared: Conn) -> None:
    assert bm25(shared, "the rain in a day") == bm25(shared, "rain day")
    assert_scores(scores(shared, "the rain in a day"), lucene_bm25(LEXEMES, ["rain", "day"]))


@pytest.mark.parametrize(
    "query", ["", "   ", "the and of a", "!!! ...", "& | ! ( ) :* <-> '", "zebra"]
)
def test_a_query_without_a_known_lexeme_finds_nothing(shared: Conn, query: str) -> None:
    assert bm25(shared, query) == []


def test_nothing_embedded_yet_gives_no_results(shared: Conn) -> None:
    assert bm25(shared, "apples", name="later") == []


def test_equal_scores_are_ranked_by_key(conn: Conn, db_url: str) -> None:
    make_texts(conn, ["a pear"] * 4 + ["a pear tree"])
    conn.execute("UPDATE docs SET id = 10 - id")  # ids 9, 8, 7, 6 hold the same text
    drain(db_url)

    hits = bm25(conn, "pear")

    assert ids(hits) == [6, 7, 8, 9, 5]
    assert len({h.score for h in hits[:4]}) == 1


# ----------------------------------------- statistics follow the data


def test_a_delete_changes_the_next_querys_statistics(conn: Conn, db_url: str) -> None:
    make_three(conn, db_url)
    query = "pears and apples"
    assert_scores(scores(conn, query), lucene_bm25(LEXEMES, ["pear", "appl"]))

    conn.execute("DELETE FROM docs WHERE id = 2")

    rest = {1: LEXEMES[1], 3: LEXEMES[3]}
    assert_scores(scores(conn, query), lucene_bm25(rest, ["pear", "appl"]))


def test_a_delete_counts_inside_its_own_transaction_only(conn: Conn, db_url: str) -> None:
    make_three(conn, db_url)
    before = scores(conn, "pears")

    with conn.transaction(force_rollback=True):
        conn.execute("DELETE FROM docs WHERE id = 1")
        assert_scores(scores(conn, "pears"), lucene_bm25({2: LEXEMES[2], 3: LEXEMES[3]}, ["pear"]))

    assert scores(conn, "pears") == before


def test_a_snapshot_taken_before_a_delete_keeps_the_old_statistics(conn: Conn, db_url: str) -> None:
    make_three(conn, db_url)
    with connect(db_url, autocommit=False) as reader:
        reader.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        before = scores(reader, "pears")

        conn.execute("DELETE FROM docs WHERE id = 1")

        assert scores(reader, "pears") == before
        reader.rollback()
        after = scores(reader, "pears")
    assert_scores(before, lucene_bm25(LEXEMES, ["pear"]))
    assert_scores(after, lucene_bm25({2: LEXEMES[2], 3: LEXEMES[3]}, ["pear"]))


def test_an_update_changes_the_statistics_once_embedded(conn: Conn, db_url: str) -> None:
    make_three(conn, db_url)

    conn.execute("UPDATE docs SET body = 'pears, pears and ripe pears' WHERE id = 2")
    drain(db_url)

    changed = {**LEXEMES, 2: ["pear", "pear", "pear", "ripe"]}
    assert stored_lexemes(conn) == {i: sorted(t) for i, t in changed.items()}
    assert_scores(scores(conn, "pears day"), lucene_bm25(changed, ["pear", "day"]))


def test_a_key_change_moves_the_rows_statistics(conn: Conn, db_url: str) -> None:
    make_three(conn, db_url)

    conn.execute("UPDATE docs SET id = 10 WHERE id = 2")

    without = {1: LEXEMES[1], 3: LEXEMES[3]}
    assert_scores(scores(conn, "apples"), lucene_bm25(without, ["appl"]))
    drain(db_url)
    assert_scores(scores(conn, "apples"), lucene_bm25({**without, 10: LEXEMES[2]}, ["appl"]))


def test_truncate_starts_the_statistics_afresh(conn: Conn, db_url: str) -> None:
    make_three(conn, db_url)

    conn.execute("TRUNCATE docs")
    assert bm25(conn, "apples") == []
    conn.execute("INSERT INTO docs (id, body) VALUES (7, 'apples'), (8, 'pears')")
    drain(db_url)

    fresh = {7: ["appl"], 8: ["pear"]}
    assert_scores(scores(conn, "apples pears"), lucene_bm25(fresh, ["appl", "pear"]))


def test_concurrent_writers_and_compaction_do_not_wait_for_each_other(
    conn: Conn, db_url: str
) -> None:
    """Statistics are deltas, not a counter row every writer must update."""
    make_three(conn, db_url)
    with connect(db_url, autocommit=False) as a, connect(db_url, autocommit=False) as b:
        for c in (a, b, conn):
            c.execute("SET lock_timeout = '2s'")
        a.execute("DELETE FROM docs WHERE id = 1")
        b.execute("DELETE FROM docs WHERE id = 3")
        b.execute("INSERT INTO docs (id, body) VALUES (4, 'plums')")
        assert conn.execute("SELECT autoembed.compact_stats('docs')").fetchone() is not None
        assert_scores(scores(conn, "pears plums"), lucene_bm25(LEXEMES, ["pear", "plum"]))
        a.commit()
        b.commit()
    drain(db_url)

    rest = {2: LEXEMES[2], 4: ["plum"]}
    assert_scores(scores(conn, "pears plums apple"), lucene_bm25(rest, ["pear", "plum", "appl"]))


def _stats_rows(conn: Conn) -> int:
    return count(conn, sql.Identifier("autoembed", active_version(conn, "docs")["stats_table"]))


def test_compact_stats_folds_the_deltas_and_changes_no_score(conn: Conn, db_url: str) -> None:
    make_texts(conn, [f"{w} pears and apples {w}" for w in ("red", "green", "ripe", "old")])
    drain(db_url)
    conn.execute("INSERT INTO docs (id, body) VALUES (5, 'rotten apples'), (6, 'a green day')")
    drain(db_url)
    conn.execute("DELETE FROM docs WHERE id IN (1, 6)")  # 'red' and 'day' now occur nowhere
    queries = ["pears", "green apples", "ripe old rotten pears", "red day"]
    before = {(q, c): bm25(conn, q, chunks=c) for q in queries for c in (False, True)}
    rows_before = _stats_rows(conn)

    removed = conn.execute("SELECT autoembed.compact_stats('docs')").fetchone()

    # One row per lexeme still in use ('appl', 'green', 'old', 'pear', 'ripe',
    # 'rotten'), and the '' row of chunk count and total length.
    assert _stats_rows(conn) == 7
    assert removed == (rows_before - 7,)
    assert {(q, c): bm25(conn, q, chunks=c) for q in queries for c in (False, True)} == before
    assert conn.execute("SELECT autoembed.compact_stats('docs')").fetchone() == (0,)


# --------------------------------------------------------- k1 and b


BAD_K1_B = [
    (-0.1, 0.4, "k1 must be a finite number >= 0, got -0.1"),
    (math.nan, 0.4, "k1 must be a finite number >= 0, got NaN"),
    (math.inf, 0.4, "k1 must be a finite number >= 0, got Infinity"),
    (None, 0.4, "k1 must be a finite number >= 0, got NULL"),
    (0.9, -0.5, "b must be between 0 and 1, got -0.5"),
    (0.9, 1.01, "b must be between 0 and 1, got 1.01"),
    (0.9, math.nan, "b must be between 0 and 1, got NaN"),
    (0.9, None, "b must be between 0 and 1, got NULL"),
]


@pytest.mark.parametrize(("k1", "b", "message"), BAD_K1_B)
def test_set_bm25_refuses_a_bad_k1_or_b(
    shared: Conn, k1: float | None, b: float | None, message: str
) -> None:
    with pytest.raises(psycopg.errors.InvalidParameterValue, match=message):
        shared.execute("SELECT autoembed.set_bm25('docs', %s, %s)", (k1, b))
    row = shared.execute("SELECT bm25_k1, bm25_b FROM autoembed.vectorizer WHERE name = 'docs'")
    assert row.fetchone() == (1.2, 0.5)  # the defaults, unchanged


@pytest.mark.parametrize(("k1", "b", "message"), BAD_K1_B)
def test_create_vectorizer_refuses_a_bad_k1_or_b(
    conn: Conn, k1: float | None, b: float | None, message: str
) -> None:
    conn.execute("CREATE TABLE docs (id int PRIMARY KEY, body text)")
    with pytest.raises(psycopg.errors.InvalidParameterValue, match=message):
        create_vectorizer(conn, "docs", ["body"], bm25_k1=k1, bm25_b=b)
    assert conn.execute("SELECT count(*) FROM autoembed.vectorizer").fetchone() == (0,)


def test_set_bm25_changes_the_scores_at_once(conn: Conn, db_url: str) -> None:
    make_three(conn, db_url)
    query = ["pear", "appl"]

    conn.execute("SELECT autoembed.set_bm25('docs', 1.5, 1.0)")

    assert_scores(scores(conn, "pears apples"), lucene_bm25(LEXEMES, query, 1.5, 1.0))
    assert lucene_bm25(LEXEMES, query, 1.5, 1.0) != pytest.approx(lucene_bm25(LEXEMES, query))
    with pytest.raises(psycopg.errors.UndefinedObject, match='no vectorizer named "nope"'):
        conn.execute("SELECT autoembed.set_bm25('nope', 1.5, 1.0)")


def test_k1_and_b_given_at_creation_are_used(conn: Conn, db_url: str) -> None:
    make_three(conn, db_url, bm25_k1=2.0, bm25_b=0.0)

    assert_scores(scores(conn, "pears apples"), lucene_bm25(LEXEMES, ["pear", "appl"], 2.0, 0.0))


# ------------------------------------ the text search configuration


def test_the_vectorizers_text_search_configuration_is_used(shared: Conn) -> None:
    """'simple' neither stems nor drops stop words, in rows and in queries."""
    simple = {i: t.replace(",", "").split() for i, t in enumerate(TEXTS, 1)}

    assert_scores(scores(shared, "the apples", "simple"), lucene_bm25(simple, ["the", "apples"]))
    assert scores(shared, "apple", "simple").keys() == {2}
    assert scores(shared, "apple", "docs").keys() == {1, 2}
    assert scores(shared, "the", "docs") == {}


# ------------------------------------------------------------ filters


CATS = ["fruit" if i % 3 == 0 else "veg" if i % 3 == 1 else None for i in range(1, 21)]


def test_a_filter_keeps_the_matching_rows_of_the_unfiltered_ranking(shared: Conn) -> None:
    everything = bm25(shared, "apple number 7", 20, "cats")
    fruit = [h for h in everything if CATS[h.id - 1] == "fruit"]
    assert len(everything) == 20
    assert 1 < len(fruit) < 20

    hits = bm25(shared, "apple number 7", 3, "cats", filter='{"category": "fruit"}')

    assert [(h.pk, h.chunk_no, h.score) for h in hits] == [
        (h.pk, h.chunk_no, h.score) for h in fruit[:3]
    ]
    assert [h.rank for h in hits] == [1, 2, 3]


@pytest.mark.parametrize(
    ("filter", "expected"),
    [
        ('{"category": "none of these"}', set()),
        ('{"no_such_column": 1}', set()),
        ('{"id": 7}', {7}),
        ('{"id": 7, "category": "veg"}', {7}),
        ("{}", set(range(1, 21))),
        (None, set(range(1, 21))),
    ],
)
def test_a_filter_is_matched_against_the_source_row(
    shared: Conn, filter: str | None, expected: set[int]
) -> None:
    assert set(ids(bm25(shared, "apple", 100, "cats", filter=filter))) == expected


@pytest.mark.parametrize(
    ("filter", "kind"), [("[1]", "array"), ('"x"', "string"), ("3", "number"), ("null", "null")]
)
def test_a_filter_that_is_not_an_object_is_an_error(shared: Conn, filter: str, kind: str) -> None:
    with pytest.raises(
        psycopg.errors.InvalidParameterValue, match=f"filter must be a JSON object.*got {kind}"
    ):
        bm25(shared, "apple", filter=filter)


# ------------------------------------------------------ bad arguments


def test_k_limits_the_results(shared: Conn) -> None:
    everything = bm25(shared, "apple", 10_000, "cats")
    assert len(everything) == 20
    assert bm25(shared, "apple", 5, "cats") == everything[:5]
    assert bm25(shared, "apple", 0, "cats") == []


@pytest.mark.parametrize(
    ("k", "error", "message"),
    [
        (-1, psycopg.errors.InvalidParameterValue, r"k must not be negative, got -1"),
        (10_001, psycopg.errors.InvalidParameterValue, r"k must be at most 10000, got 10001"),
        (2**31 - 1, psycopg.errors.InvalidParameterValue, r"k must be at most 10000"),
        (None, psycopg.errors.NullValueNotAllowed, r"k must not be NULL"),
    ],
)
def test_a_bad_k_is_an_error_naming_k(
    shared: Conn, k: int | None, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        bm25(shared, "apple", k)


@pytest.mark.parametrize(
    ("name", "query", "options", "error", "message"),
    [
        ("nope", "apple", {}, psycopg.errors.UndefinedObject, 'no vectorizer named "nope"'),
        (None, "apple", {}, psycopg.errors.NullValueNotAllowed, "vectorizer name must not be NULL"),
        ("docs", None, {}, psycopg.errors.NullValueNotAllowed, "query must not be NULL"),
        (
            "docs",
            "apple",
            {"chunks": None},
            psycopg.errors.NullValueNotAllowed,
            "chunks must not be NULL",
        ),
    ],
)
def test_a_missing_or_unknown_argument_is_a_clear_error(
    shared: Conn,
    name: str | None,
    query: str | None,
    options: dict[str, Any],
    error: type[Exception],
    message: str,
) -> None:
    with pytest.raises(error, match=message):
        bm25(shared, query, name=name, **options)


# ------------------------------------------------------ who sees what


def _as(conn: Conn, role: str) -> None:
    conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))


def test_bm25_search_without_select_on_the_source_table_is_refused(
    conn: Conn, db_url: str, searcher: str
) -> None:
    make_three(conn, db_url)
    conn.execute("SELECT autoembed.grant_search('docs', %s)", (searcher,))
    _as(conn, searcher)

    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="table docs"):
        bm25(conn, "apples")


def test_grant_search_and_select_on_the_source_let_a_role_search(
    conn: Conn, db_url: str, searcher: str
) -> None:
    """A role that may read the source table needs autoembed.grant_search()
    (the embeddings, postings and statistics) to search it, no more."""
    make_three(conn, db_url)
    conn.execute(sql.SQL("GRANT SELECT ON docs TO {}").format(sql.Identifier(searcher)))
    conn.execute("SELECT autoembed.grant_search('docs', %s)", (searcher,))
    _as(conn, searcher)
    assert ids(bm25(conn, "apples")) == [1, 2]
    conn.execute("RESET ROLE")
    conn.execute("SELECT autoembed.revoke_search('docs', %s)", (searcher,))
    _as(conn, searcher)
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        bm25(conn, "apples")


def test_bm25_search_never_returns_rows_hidden_by_row_level_security(
    conn: Conn, db_url: str, searcher: str
) -> None:
    # The hidden rows match the query best, so the search has to look past them.
    texts = [f"secret pears pears pears {i}" for i in range(30)] + [
        f"public pears and plums {i}" for i in range(4)
    ]
    make_texts(conn, texts)
    drain(db_url)
    conn.execute("SELECT autoembed.grant_search('docs', %s)", (searcher,))
    conn.execute(sql.SQL("GRANT SELECT ON docs TO {}").format(sql.Identifier(searcher)))
    conn.execute("ALTER TABLE docs ENABLE ROW LEVEL SECURITY")
    conn.execute("CREATE POLICY only_public ON docs FOR SELECT USING (body LIKE 'public%')")
    assert ids(bm25(conn, "pears", 3)) == [1, 2, 3]  # the owner sees all

    _as(conn, searcher)
    hits = bm25(conn, "pears", 3)

    assert set(ids(hits)) <= {31, 32, 33, 34}
    assert [h.rank for h in hits] == [1, 2, 3]
    assert set(ids(bm25(conn, "pears", 100))) == {31, 32, 33, 34}
    assert bm25(conn, "secret", 100) == []


def test_bm25_search_is_never_jit_compiled(db_url: str, superuser_url: str) -> None:
    """bm25_search sets jit = off: its top-k query's estimated cost is far
    above its real one (milliseconds), and where the server has JIT (Debian's
    PostgreSQL 15: scripts/test's second pass) compiling it took ~2 s a call.
    A session that would JIT-compile every query shows, through auto_explain,
    a JIT section for a plain query but none for any statement of the search."""
    with connect(db_url) as owner:
        make_texts(owner, [f"apples and pears number {i}" for i in range(50)])
    drain(db_url)
    with connect(superuser_url) as su:  # (LOAD 'auto_explain' needs one)
        if su.execute("SELECT pg_jit_available()").fetchone() != (True,):
            pytest.skip("this server has no JIT (PostgreSQL 18 embedded: no LLVM)")
        plans: list[str] = []
        su.add_notice_handler(lambda d: plans.append(d.message_primary or ""))
        su.execute("LOAD 'auto_explain'")
        su.execute("SET jit = on")
        su.execute("SET jit_above_cost = 0")
        su.execute("SET auto_explain.log_min_duration = 0")
        su.execute("SET auto_explain.log_nested_statements = on")
        su.execute("SET auto_explain.log_level = notice")
        su.execute("SELECT count(*) FROM docs WHERE body LIKE '%pears%'").fetchone()
        assert any("JIT:" in p for p in plans), plans  # JIT would compile a plain query
        plans.clear()
        call = "SELECT * FROM autoembed.bm25_search('docs', 'apples pears', 5)"
        assert len(su.execute(call).fetchall()) == 5
        # the statements inside the search (the call itself follows the session's jit)
        inside = [p for p in plans if f"Query Text: {call}" not in p]
        assert inside, "auto_explain logged no statement of the search"
        compiled = [p for p in inside if "JIT:" in p]
        assert not compiled, compiled[0]
