"""Bad input: each case gets a clear error or a defined behaviour (README,
"Bad input"), and no row is lost.

Covered elsewhere, not repeated here:
  * NULL, '' and ASCII-blank text → no chunks, counted as done:
    test_create_vectorizer.py::test_null_empty_and_blank_text_gives_no_chunks_and_counts_as_done
  * a table without a primary key, an unknown model, hostile names:
    test_create_vectorizer.py, test_security_identifiers.py
  * composite (int, text) and text keys through insert/update/re-key/delete:
    test_triggers.py::test_non_integer_primary_key_end_to_end
  * k = 0, negative, > 10000 and NULL for the vector variants:
    test_search.py / test_bm25.py / test_hybrid.py ::test_a_bad_k_is_an_error_naming_k,
    test_a_bad_argument_is_a_clear_error, test_k_limits_the_results
"""

from __future__ import annotations

import os
import random
import time
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest
from psycopg import errors, sql

from autoembed.worker.embedders import DEFAULT_MODEL, load_embedder, resolve_model_path
from tests.conftest import drain
from tests.integration.helpers import (
    Conn,
    call_search,
    chunks,
    create_vectorizer,
    queued_keys,
    status,
)

HASH = "hash:16"


def make_table(conn: Conn, texts: dict[int, str | None], model: str = HASH, **options: Any) -> None:
    """Table ``t`` (id int PRIMARY KEY, body text) and a vectorizer ``t`` on body."""
    conn.execute("CREATE TABLE t (id int PRIMARY KEY, body text)")
    with conn.cursor() as cur:
        cur.executemany("INSERT INTO t VALUES (%s, %s)", list(texts.items()))
    create_vectorizer(conn, "t", ["body"], model=model, **options)


def assert_all_done(conn: Conn, embedded_rows: int) -> None:
    s = status(conn, "t")
    assert (s["pending"], s["in_flight"], s["failed"]) == (0, 0, 0), s
    assert s["embedded_rows"] == embedded_rows
    assert queued_keys(conn, "t") == []


def assert_chunked_losslessly(text: str, pieces: list[str], limit: int, count: Any) -> None:
    """Each piece is a piece of the text after the previous one, within the
    token limit (special tokens included), and together they leave out
    nothing but whitespace."""
    tokens = [count(p) for p in pieces]
    assert max(tokens) <= limit, f"over the limit: {max(tokens)} > {limit}"
    covered, start = 0, -1
    for n, piece in enumerate(pieces):
        start = text.find(piece, start + 1)
        assert start >= 0, f"chunk {n} is not a piece of the text after chunk {n - 1}"
        assert text[covered:start].strip() == "", f"text skipped before chunk {n}"
        covered = max(covered, start + len(piece))
    assert text[covered:].strip() == "", "the end of the text is missing"


# ------------------------------------------------------------ empty text


def test_unicode_blank_text_gives_no_chunks_and_counts_as_done(conn: Conn, db_url: str) -> None:
    blank = {
        1: "\u00a0\u00a0",  # no-break spaces
        2: "\u3000\u2028\u2029\u2003",  # ideographic, line/paragraph separators, em space
        3: "\r\n\t\v\f \x1c\x1d\x1e\x1f",  # ASCII whitespace and the separator controls
        4: None,
        5: "",
        6: "a real row",
    }
    make_table(conn, blank)
    stats = drain(db_url)
    assert stats.failed == 0
    assert sorted(chunks(conn, "t")) == [(6,)]
    assert_all_done(conn, 1)


# ------------------------------------------------------------- huge text


def test_a_megabyte_of_text_is_chunked_within_the_token_limit_and_nothing_is_dropped(
    conn: Conn, db_url: str
) -> None:
    rng = random.Random(5)
    vocab = [f"{w}{i}" for i, w in enumerate(["river", "engine", "poem", "star"] * 500)]
    text = " ".join(rng.choice(vocab) for _ in range(150_000))[:1_000_000].strip()
    assert len(text.encode()) >= 999_000
    make_table(conn, {1: text, 2: "a short neighbour"})

    started = time.monotonic()
    stats = drain(db_url)
    elapsed = time.monotonic() - started

    assert stats.failed == 0
    got = chunks(conn, "t")
    pieces = [c.chunk for c in got[(1,)]]
    assert [c.chunk_no for c in got[(1,)]] == list(range(len(pieces)))
    embedder = load_embedder(HASH)
    assert len(pieces) > 500
    assert_chunked_losslessly(text, pieces, embedder.max_seq_length, embedder.count_tokens)
    assert [c.chunk for c in got[(2,)]] == ["a short neighbour"]
    assert_all_done(conn, 2)
    assert elapsed < 20, f"1 MB took {elapsed:.1f}s"
    # The last words are searchable too: nothing was cut off.
    last = text.split()[-1]
    hits = call_search(conn, "bm25_search", "t", last, 100, chunks=True)
    assert any(h.chunk_no == len(pieces) - 1 for h in hits)


@pytest.mark.parametrize(
    "token",
    [
        "y" * 100_000,  # one word to every tokenizer
        "_".join(f"w{i:05d}" for i in range(16_667))[:100_000],  # many words to PostgreSQL
        "Ж" * 100_000,  # two bytes a character
    ],
    ids=["letters", "underscored", "cyrillic"],
)
def test_a_100000_character_token_is_stored_whole_and_quickly(
    conn: Conn, db_url: str, token: str
) -> None:
    make_table(conn, {1: token, 2: f"walrus {token} narwhal", 3: "neighbour"})
    started = time.monotonic()
    stats = drain(db_url)
    assert time.monotonic() - started < 10
    assert stats.failed == 0
    got = chunks(conn, "t")
    embedder = load_embedder(HASH)
    for key, text in ((1, token), (2, f"walrus {token} narwhal")):
        pieces = [c.chunk for c in got[(key,)]]
        assert_chunked_losslessly(text, pieces, embedder.max_seq_length, embedder.count_tokens)
    assert_all_done(conn, 3)
    assert ids_of(call_search(conn, "bm25_search", "t", "narwhal", 10)) == [2]


def ids_of(hits: list[Any]) -> list[Any]:
    return [h.pk["id"] for h in hits]


# --------------------------------------------------- unusual characters

UNICODE = {
    1: "Family 👨‍👩‍👧‍👦 trip, flags 🇫🇷🇯🇵, skin tones 👍🏽 and a rocket 🚀.",
    2: "שלום עולם — مرحبا بالعالم — mixed עברית and English (RTL).",
    3: "Combining: e\u0301cole, n\u0303, Z\u0335\u0311a\u0336\u0344l\u0337go, \u1100\u1161\u11a8.",
    4: "Astral: "  # mathematical Fraktur and double-struck letters, CJK extension B
    + "".join(map(chr, range(0x1D504, 0x1D50A)))
    + " "
    + "".join(map(chr, range(0x1D552, 0x1D558)))
    + " and 𠜎𠜱𠝹 ideographs.",
}


def test_emoji_rtl_and_combining_characters_round_trip_and_are_searchable(
    conn: Conn, db_url: str
) -> None:
    make_table(conn, dict(UNICODE))
    assert drain(db_url).failed == 0
    got = chunks(conn, "t")
    for key, text in UNICODE.items():
        assert [c.chunk for c in got[(key,)]] == [text]  # byte for byte
    assert_all_done(conn, len(UNICODE))
    assert ids_of(call_search(conn, "bm25_search", "t", "שלום", 10)) == [2]
    assert ids_of(call_search(conn, "bm25_search", "t", "بالعالم", 10)) == [2]
    emb = np.asarray(load_embedder(HASH).embed([UNICODE[3]])[0])
    assert ids_of(call_search(conn, "search", "t", emb, 1)) == [3]


def test_the_real_tokenizer_chunks_unicode_and_a_huge_token_within_its_limit(
    conn: Conn, db_url: str
) -> None:
    """all-MiniLM-L6-v2's own tokenizer: offsets of astral characters,
    combining marks and a 100,000-character word (one [UNK] token) still
    give exact pieces of the text within 256 tokens."""
    rng = random.Random(7)
    mixed = " ".join(rng.choice(list(UNICODE.values())) for _ in range(120))
    texts = {1: mixed, 2: "x" * 100_000, 3: f"{'ab' * 50_000} then words 👍🏽"}
    make_table(conn, texts, model=DEFAULT_MODEL)
    assert drain(db_url).failed == 0
    model = load_embedder(DEFAULT_MODEL)
    got = chunks(conn, "t")
    for key, text in texts.items():
        pieces = [c.chunk for c in got[(key,)]]
        assert_chunked_losslessly(text, pieces, model.max_seq_length, model.count_tokens)
    assert len(got[(1,)]) > 2
    assert [c.chunk for c in got[(2,)]] == [texts[2]]
    assert_all_done(conn, 3)


CONTROL = "".join(chr(c) for c in range(1, 32))


def test_control_characters_are_kept_verbatim(conn: Conn, db_url: str) -> None:
    texts = {
        1: f"bell\x07 and{CONTROL}escape\x1b[31m red",
        2: "\x01\x02\x03",  # nothing but control characters (not whitespace)
        3: "tab\tseparated\x0bvertical\x0cfeed",
    }
    make_table(conn, texts)
    assert drain(db_url).failed == 0
    got = chunks(conn, "t")
    for key, text in texts.items():
        assert [c.chunk for c in got[(key,)]] == [text.strip()]
    assert_all_done(conn, 3)
    assert ids_of(call_search(conn, "bm25_search", "t", "escape", 10)) == [1]


def test_a_nul_character_is_refused_by_postgresql_and_nothing_is_queued(conn: Conn) -> None:
    make_table(conn, {1: "fine"})
    before = queued_keys(conn, "t")
    with pytest.raises(psycopg.DataError, match=r"NUL|0x00"):
        conn.execute("INSERT INTO t VALUES (2, %s)", ("a\x00b",))
    assert queued_keys(conn, "t") == before
    row = conn.execute("SELECT count(*) FROM t").fetchone()
    assert row == (1,)


# ----------------------------------------------------------------- keys


KEYS: dict[str, tuple[str, list[str], list[tuple[Any, ...]]]] = {
    "uuid": (
        "CREATE TABLE k (id uuid PRIMARY KEY, body text)",
        ["id"],
        [(uuid.UUID(int=i * 7919),) for i in range(1, 5)],
    ),
    "text, numeric and timestamptz": (
        "CREATE TABLE k (name text, price numeric(8, 2), at timestamptz, body text, "
        "PRIMARY KEY (name, price, at))",
        ["name", "price", "at"],
        [
            ("emoji 😀 key", Decimal("1.50"), "2024-01-01T00:00:00+00"),
            ("quo\"te's\x01\\", Decimal("1.50"), "2024-01-01T00:00:00+00"),
            ("emoji 😀 key", Decimal("-0.01"), "1999-12-31T23:59:59.999999+05"),
            ("שלום", Decimal("100000.00"), "9999-12-31T23:59:59+00"),
        ],
    ),
}


@pytest.mark.parametrize("kind", sorted(KEYS))
def test_non_integer_and_composite_keys_embed_search_and_follow_changes(
    conn: Conn, db_url: str, kind: str
) -> None:
    ddl, pk, rows = KEYS[kind]
    conn.execute(ddl)
    cols = sql.SQL(", ").join(map(sql.Identifier, pk))
    marks = sql.SQL(", ").join(sql.Placeholder() * (len(pk) + 1))
    with conn.cursor() as cur:
        cur.executemany(
            sql.SQL("INSERT INTO k ({}, body) VALUES ({})").format(cols, marks),
            [(*key, f"text of row {i}") for i, key in enumerate(rows)],
        )
    create_vectorizer(conn, "k", ["body"])
    drain(db_url)
    # the keys as the database stores them
    stored = [tuple(r) for r in conn.execute(sql.SQL("SELECT {} FROM k").format(cols))]
    assert sorted(chunks(conn, "k"), key=repr) == sorted(stored, key=repr)

    where = sql.SQL(" AND ").join(sql.SQL("{} = %s").format(sql.Identifier(c)) for c in pk)
    first, second = stored[0], stored[1]
    conn.execute(sql.SQL("UPDATE k SET body = 'walruses' WHERE {}").format(where), first)
    conn.execute(sql.SQL("DELETE FROM k WHERE {}").format(where), second)
    assert drain(db_url).failed == 0
    got = chunks(conn, "k")
    assert sorted(got, key=repr) == sorted((r for r in stored if r != second), key=repr)
    assert got[first][0].chunk == "walruses"

    # search results join back to the source row by their pk
    query = load_embedder(HASH).embed(["walruses"])[0]
    hit = call_search(conn, "search", "k", query, 1)[0]
    join = sql.SQL(" AND ").join(
        sql.SQL("k.{0} = (%(pk)s::jsonb ->> {1})::{2}").format(
            sql.Identifier(c), sql.Literal(c), sql.SQL(t)
        )
        for c, t in zip(pk, _types(conn, pk), strict=True)
    )
    row = conn.execute(
        sql.SQL("SELECT body FROM k WHERE {}").format(join),
        {"pk": psycopg.types.json.Jsonb(hit.pk)},
    ).fetchone()
    assert row == ("walruses",)


def _types(conn: Conn, columns: list[str]) -> list[str]:
    return [
        str(r[0])
        for r in conn.execute(
            "SELECT format_type(a.atttypid, a.atttypmod) FROM unnest(%s::text[]) WITH ORDINALITY "
            "AS c(name, ord) JOIN pg_attribute AS a ON a.attrelid = 'k'::regclass "
            "AND a.attname = c.name ORDER BY c.ord",
            (columns,),
        )
    ]


# -------------------------------------------------------------------- k


@pytest.mark.parametrize("function", ["search", "hybrid_search"])
def test_the_text_variants_check_k_before_asking_a_worker(conn: Conn, function: str) -> None:
    """No worker runs here: a bad k fails at once instead of after the
    query timeout, and k = 0 needs no embedding at all."""
    make_table(conn, {1: "apples"})
    conn.execute("SET autoembed.query_timeout = '30s'")
    started = time.monotonic()
    for k, error, message in [
        (-1, errors.InvalidParameterValue, "k must not be negative, got -1"),
        (10_001, errors.InvalidParameterValue, "k must be at most 10000, got 10001"),
        (2**31 - 1, errors.InvalidParameterValue, "k must be at most 10000"),
        (None, errors.NullValueNotAllowed, "k must not be NULL"),
    ]:
        with pytest.raises(error, match=message):
            text_search(conn, function, k)
    assert text_search(conn, function, 0) == []
    assert time.monotonic() - started < 5


def text_search(conn: Conn, function: str, k: int | None) -> list[Any]:
    query = sql.SQL("SELECT * FROM autoembed.{}('t', 'apples'::text, %s::int)")
    return conn.execute(query.format(sql.Identifier(function)), (k,)).fetchall()


@pytest.mark.parametrize("function", ["search", "bm25_search", "hybrid_search"])
def test_a_k_beyond_int_range_is_postgresqls_out_of_range_error(conn: Conn, function: str) -> None:
    make_table(conn, {1: "apples"})
    with pytest.raises(errors.NumericValueOutOfRange, match="out of range"):
        conn.execute(
            sql.SQL("SELECT * FROM autoembed.{}('t', 'apples', %s::bigint::int)").format(
                sql.Identifier(function)
            ),
            (2**31,),
        )


# ----------------------------------------------------- unknown vectorizer


# A valid-looking value for each argument type, so the name is what is wrong.
VALUES = {
    "text": "'apples'",
    "text[]": "ARRAY['body']",
    "integer": "1",
    "double precision": "1.0",
    "vector": "'[1, 0, 0]'::vector",
    "regrole": "current_user::regrole",
    "jsonb": "'{}'::jsonb",
    "boolean": "false",
    "anyelement": "1",
}


def _functions_taking_a_name(conn: Conn) -> list[tuple[str, list[str]]]:
    """Every public autoembed function whose first argument is the vectorizer
    name, with the types of its arguments that have no default."""
    rows = conn.execute(
        "SELECT p.proname::text, (array(SELECT format_type(t, NULL) "
        "FROM unnest(p.proargtypes) AS t))[1:p.pronargs - p.pronargdefaults] "
        "FROM pg_proc AS p WHERE p.pronamespace = 'autoembed'::regnamespace "
        "AND p.proname !~ '^_' AND p.proargnames[1] = 'name' "
        "AND p.proargtypes[0] = 'text'::regtype "
        "AND p.proname <> 'register_model' "  # its name is a model's
        "ORDER BY 1, 2"
    ).fetchall()
    return [(str(n), list(t)) for n, t in rows]


def test_every_function_taking_a_vectorizer_name_refuses_an_unknown_one(conn: Conn) -> None:
    make_table(conn, {1: "apples"})
    functions = _functions_taking_a_name(conn)
    names = {f for f, _ in functions}
    assert {"search", "bm25_search", "hybrid_search", "drop_vectorizer", "retry_failed"} <= names
    assert {"set_model", "set_columns", "set_chunking", "embed_query", "grant_search"} <= names
    hostile = 'nope"; DROP TABLE t; --'
    for function, types in functions:
        args = [sql.Placeholder()] + [sql.SQL(VALUES[t.removeprefix("public.")]) for t in types[1:]]
        query = sql.SQL("SELECT autoembed.{}({})").format(
            sql.Identifier(function), sql.SQL(", ").join(args)
        )
        with pytest.raises(errors.UndefinedObject) as info:
            conn.execute(query, (hostile,))
        assert f'no vectorizer named "{hostile}"' in str(info.value), (function, types)
    assert conn.execute("SELECT count(*) FROM t").fetchone() == (1,)
    assert status(conn, "t")["pending"] == 1


# ------------------------------------------------- a model that won't load


def test_a_model_that_fails_to_load_is_reported_and_its_rows_wait_for_the_fix(
    conn: Conn, db_url: str, tmp_path: Path
) -> None:
    model_dir = tmp_path / "broken-model"
    model_dir.mkdir()
    (model_dir / "config.json").write_text("{ this is not json")
    conn.execute("SELECT autoembed.register_model(%s, 384, 256)", (str(model_dir),))
    make_table(conn, {1: "alpha", 2: "beta", 3: "gamma"}, model=str(model_dir))

    stats = drain(db_url)

    assert (stats.written, stats.failed) == (0, 0)
    s = status(conn, "t")
    assert (s["pending"], s["failed"], s["embedded_rows"]) == (3, 0, 0)
    assert s["error"] is not None
    assert "cannot load model" in s["error"]
    assert str(model_dir) in s["error"]
    attempts = conn.execute("SELECT sum(attempts) FROM autoembed.t_queue_v1").fetchone()
    assert attempts == (0,), "a model that cannot load spends no row's attempts"

    # Fix the model: the same path now holds a loadable model.
    (model_dir / "config.json").unlink()
    bundled = Path(resolve_model_path(DEFAULT_MODEL))
    for entry in bundled.iterdir():
        os.symlink(entry, model_dir / entry.name)
    assert conn.execute("SELECT autoembed.retry_failed('t')").fetchone() == (0,)

    stats = drain(db_url)

    assert (stats.written, stats.failed) == (3, 0)
    assert sorted(chunks(conn, "t")) == [(1,), (2,), (3,)]
    assert_all_done(conn, 3)
    assert status(conn, "t")["error"] is None


# ------------------------------------- a row the database refuses to store


def test_a_row_the_database_will_not_store_fails_alone_and_retry_failed_requeues_it(
    conn: Conn, db_url: str
) -> None:
    """Whatever makes writing one row fail (here a constraint added by hand)
    fails that row with the database's error, not its whole batch."""
    texts = {i: f"row {i} is fine" for i in range(1, 9)}
    texts[4] = "row 4 is forbidden"
    make_table(conn, texts, max_attempts=2, retry_delay="0 seconds")
    conn.execute(
        "ALTER TABLE autoembed.t_embeddings_v1 ADD CONSTRAINT no_forbidden "
        "CHECK (chunk NOT LIKE '%forbidden%')"
    )

    stats = drain(db_url, batch_size=100)

    assert stats.failed == 2  # row 4, once per attempt
    assert sorted(chunks(conn, "t")) == [(i,) for i in texts if i != 4]
    s = status(conn, "t")
    assert (s["pending"], s["failed"], s["embedded_rows"]) == (0, 1, 7)
    row = conn.execute("SELECT id, attempts, last_error FROM autoembed.t_queue_v1").fetchone()
    assert row is not None
    assert row[:2] == (4, 2)
    assert "writing failed" in row[2]
    assert "no_forbidden" in row[2]

    conn.execute("ALTER TABLE autoembed.t_embeddings_v1 DROP CONSTRAINT no_forbidden")
    assert conn.execute("SELECT autoembed.retry_failed('t')").fetchone() == (1,)
    assert drain(db_url).failed == 0
    assert sorted(chunks(conn, "t")) == [(i,) for i in texts]
    assert_all_done(conn, 8)
