"""Run a collection's queries through the SQL search functions and score them.

Query vectors are computed once (``embed_queries``) and passed in, so a
tuning script can try many settings without embedding the queries again
(after ``autoembed evaluate`` has loaded the collection; its embedded
PostgreSQL: ``EmbeddedPostgres(Path(".autoembed/evaluate/pg")).start()``)::

    collection = load("../shared/datasets/scifact", "train")
    with connect(url) as conn:
        vectors = embed_queries(conn, "beir_scifact", collection)
        for w in (0.3, 0.5, 0.7):
            method = Method("hybrid", {"fusion": "convex", "semantic_weight": w})
            result = run_method(conn, "beir_scifact", collection, vectors, method)
            print(w, result.mean.ndcg10, result.latency_ms(50))

Latency is measured around the SQL call alone (execute and fetch, one
connection), after one untimed warm-up query per method.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg
from psycopg import sql

from autoembed.evaluation import metrics
from autoembed.evaluation.beir import Collection, Query

Conn = psycopg.Connection[Any]
Vectors = Mapping[str, npt.NDArray[np.float32]]
OptionValue = str | int | float | bool

K = 100  # results fetched per query: enough for Recall@100
METHODS = ("bm25", "semantic", "hybrid")
FUNCTIONS = {"bm25": "bm25_search", "semantic": "search", "hybrid": "hybrid_search"}
_OPTION = re.compile(r"^[a-z_][a-z0-9_]*$")


@dataclass(frozen=True)
class Method:
    """A search method and extra named arguments for its SQL function."""

    name: str
    options: Mapping[str, OptionValue] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.name not in METHODS:
            raise ValueError(f"unknown method {self.name!r} (methods: {', '.join(METHODS)})")
        for key in self.options:
            if not _OPTION.match(key):
                raise ValueError(f"{self.name} option {key!r} is not a parameter name")

    @property
    def label(self) -> str:
        return " ".join([self.name, *(f"{k}={v}" for k, v in self.options.items())])


@dataclass(frozen=True)
class Hit:
    doc_id: str
    chunk_no: int
    score: float


@dataclass(frozen=True)
class QueryResult:
    query_id: str
    hits: list[Hit]
    scores: metrics.Scores
    latency_ms: float


@dataclass(frozen=True)
class MethodResult:
    method: Method
    queries: list[QueryResult]

    @property
    def mean(self) -> metrics.Scores:
        return metrics.mean([q.scores for q in self.queries])

    def latency_ms(self, p: float) -> float:
        return metrics.percentile([q.latency_ms for q in self.queries], p)


def embed_queries(
    conn: Conn, vectorizer: str, collection: Collection, version: str | None = None
) -> dict[str, npt.NDArray[np.float32]]:
    """Every query's vector, by query id, from the model version of the
    vectorizer's active version (or of ``version``)."""
    from autoembed.search import embed_queries as embed

    vectors = embed(conn, vectorizer, [q.text for q in collection.queries], version=version)
    return {q.id: v for q, v in zip(collection.queries, vectors, strict=True)}


def missing_functions(conn: Conn, methods: Sequence[Method]) -> list[str]:
    """The SQL functions the methods need that this database lacks."""
    needed = sorted({FUNCTIONS[m.name] for m in methods})
    have = {
        r[0]
        for r in conn.execute(
            "SELECT proname::text FROM pg_proc "
            "WHERE pronamespace = to_regnamespace('autoembed') AND proname = ANY (%s)",
            (needed,),
        )
    }
    return [f"autoembed.{f}" for f in needed if f not in have]


def _literal(value: OptionValue) -> sql.Composable:
    # An untyped literal: Postgres casts it to the parameter's type.
    text = str(value).lower() if isinstance(value, bool) else str(value)
    return sql.Literal(text)


def search_sql(method: Method) -> sql.Composed:
    """The statement for one query; parameters: name, [query text,] [vector,] k."""
    n = 4 if method.name == "hybrid" else 3
    args: list[sql.Composable] = [sql.Placeholder()] * n
    args += [
        sql.SQL("{} => ").format(sql.Identifier(k)) + _literal(v) for k, v in method.options.items()
    ]
    return sql.SQL(
        "SELECT s.pk ->> 'id', s.chunk_no, s.score FROM autoembed.{}({}) "
        "WITH ORDINALITY AS s(pk, chunk_no, chunk, score, rank, ord) ORDER BY s.rank, s.ord"
    ).format(sql.Identifier(FUNCTIONS[method.name]), sql.SQL(", ").join(args))


def _params(
    method: Method, vectorizer: str, query: Query, vectors: Vectors, k: int
) -> tuple[Any, ...]:
    if method.name == "bm25":
        return (vectorizer, query.text, k)
    if method.name == "semantic":
        return (vectorizer, vectors[query.id], k)
    return (vectorizer, query.text, vectors[query.id], k)


def run_method(
    conn: Conn,
    vectorizer: str,
    collection: Collection,
    vectors: Vectors,
    method: Method,
    k: int = K,
) -> MethodResult:
    """Every query of the collection through one method, scored against its
    judgments."""
    queries = collection.queries
    statement = search_sql(method)
    if queries:  # warm-up: plans, caches, the function's first call
        conn.execute(statement, _params(method, vectorizer, queries[0], vectors, k)).fetchall()
    results = []
    for q in queries:
        params = _params(method, vectorizer, q, vectors, k)
        t = time.perf_counter()
        rows = conn.execute(statement, params).fetchall()
        latency = (time.perf_counter() - t) * 1000
        hits = [Hit(str(r[0]), int(r[1]), float(r[2])) for r in rows]
        ranking = [h.doc_id for h in hits]
        results.append(
            QueryResult(q.id, hits, metrics.score(ranking, collection.qrels[q.id]), latency)
        )
    return MethodResult(method, results)


def run(
    conn: Conn,
    vectorizer: str,
    collection: Collection,
    vectors: Vectors,
    methods: Sequence[Method],
    k: int = K,
) -> list[MethodResult]:
    return [run_method(conn, vectorizer, collection, vectors, m, k) for m in methods]
