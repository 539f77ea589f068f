"""Search as SQLAlchemy expressions: each search is a subquery of
(pk, chunk_no, chunk, score, rank) over one of autoembed's search functions,
joined to the source table by its primary key, to compose with the caller's
own WHERE, JOIN, ORDER BY and LIMIT."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from pgvector.sqlalchemy import Vector
from sqlalchemy.dialects import postgresql as pg
from sqlalchemy.sql.util import ClauseAdapter

from autoembed.sqlalchemy._query import QueryEmbedding

if TYPE_CHECKING:
    from autoembed.sqlalchemy._declarative import Vectorizer

RESULT_COLUMNS = {
    "pk": pg.JSONB,
    "chunk_no": sa.Integer,
    "chunk": sa.Text,
    "score": sa.Float,
    "rank": sa.BigInteger,
}
HYBRID_OPTIONS = {
    "fusion": sa.Text,
    "rrf_k": sa.Integer,
    "semantic_weight": sa.Float,
    "candidates": sa.Integer,
    "normalization": sa.Text,
}

Query = QueryEmbedding | Sequence[float] | str
# A condition on the source table's columns: a SQLAlchemy clause
# (Ticket.status == "open") or SQL text ("status = 'open'").
Where = sa.ColumnElement[bool] | str


class SearchHits:
    """The hits of one search, as a subquery ``hits`` with columns pk,
    chunk_no, chunk, score and rank (1 is best), and the join to the model."""

    def __init__(self, vectorizer: Vectorizer, subquery: sa.Subquery) -> None:
        self.vectorizer = vectorizer
        self.subquery = subquery
        self.c = subquery.c
        self.score = subquery.c.score
        self.rank = subquery.c.rank
        self.chunk = subquery.c.chunk
        self.chunk_no = subquery.c.chunk_no

    @property
    def onclause(self) -> sa.ColumnElement[bool]:
        """The source row of each hit: its primary key columns equal the hit's pk."""
        table = self.vectorizer.table
        return sa.and_(
            *(
                col == sa.cast(self.c.pk[col.name].astext, col.type)
                for col in table.primary_key.columns
            )
        )

    def select(self, *extra: Any) -> sa.Select[Any]:
        """``SELECT model, score, rank, *extra`` for the hits in rank order:
        each row a ``(instance of the model, score: float, rank: int)`` tuple
        (then the extra columns), as ``row.Model``, ``row.score``, ``row.rank``."""
        assert self.vectorizer.owner is not None
        return (
            sa.select(self.vectorizer.owner, self.score, self.rank, *extra)
            .join(self.subquery, self.onclause)
            .order_by(self.rank)
        )


Arg = tuple[str, Any, Any]  # SQL fragment, value, SQLAlchemy type


def _call(
    vectorizer: Vectorizer, function: str, positional: list[Arg], named: dict[str, Any]
) -> SearchHits:
    """``SELECT * FROM autoembed.<function>(positional..., option => value...)``.
    positional: (SQL fragment with a {} for the parameter, value, type).
    The parameters are unique (SQLAlchemy numbers them when the statement is
    compiled), so several searches combine in one statement, and the text is
    the same for every call with the same options, so SQLAlchemy compiles a
    search's statement once and reuses it (a web process's event loop does
    not compile the ORM select anew on every request)."""
    params: list[sa.BindParameter[Any]] = []
    args = []
    for i, (fragment, value, type_) in enumerate(positional):
        key = f"ae_{i}"
        params.append(sa.bindparam(key, value, type_=type_, unique=True))
        args.append(fragment.format(":" + key))
    for option, (value, type_) in named.items():
        key = f"ae_{option}"
        params.append(sa.bindparam(key, value, type_=type_, unique=True))
        args.append(f"{option} => :{key}")
    text = sa.text(f"SELECT * FROM autoembed.{function}({', '.join(args)})").bindparams(*params)
    return SearchHits(vectorizer, text.columns(**RESULT_COLUMNS).subquery())


def _common(vectorizer: Vectorizer, k: int) -> list[Arg]:
    return [("CAST({} AS text)", vectorizer.name, sa.Text), ("CAST({} AS int)", k, sa.Integer)]


def predicate_sql(vectorizer: Vectorizer, where: Where) -> str:
    """The SQL of a condition on the source table, as the search functions
    take it (predicate =>): SQL text as given; a SQLAlchemy clause compiled
    for PostgreSQL with its values inlined (quoted by SQLAlchemy) and the
    model's columns as those of the source row, alias s."""
    if isinstance(where, str):
        return where
    adapted = ClauseAdapter(vectorizer.table.alias("s")).traverse(where)
    dialect = pg.dialect()  # type: ignore[no-untyped-call]
    return str(adapted.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))


def _options(
    vectorizer: Vectorizer,
    query: Any,
    *,
    filter: dict[str, Any] | None = None,
    chunks: bool = False,
    version: str | None = None,
    where: Where | None = None,
    offset: int = 0,
    min_score: float | None = None,
    **unknown: Any,
) -> dict[str, Any]:
    """The named arguments every search function takes. ``where`` is SQL's
    predicate, ``offset`` its skip."""
    if unknown:
        raise TypeError(
            f"unknown search options {sorted(unknown)}; every search takes filter, chunks, "
            f"version, where, offset and min_score, hybrid also {', '.join(HYBRID_OPTIONS)}"
        )
    named: dict[str, Any] = {}
    if filter is not None:
        named["filter"] = (filter, pg.JSONB)
    if chunks:
        named["chunks"] = (True, sa.Boolean)
    if where is not None:
        named["predicate"] = (predicate_sql(vectorizer, where), sa.Text)
    if offset:
        named["skip"] = (offset, sa.Integer)
    if min_score is not None:
        named["min_score"] = (min_score, sa.Float)
    # A query embedded by one version is searched in that version: never
    # another model's vectors, even if the active version changed meanwhile.
    if version is None and isinstance(query, QueryEmbedding) and query.version is not None:
        version = query.version
    if version is not None:
        named["version"] = (version, sa.Text)
    return named


def _vector_arg(vector: Any) -> Arg:
    # untyped: the dimension is the searched version's
    return ("CAST({} AS vector)", [float(x) for x in vector], Vector())


def semantic(vectorizer: Vectorizer, query: Query, k: int = 10, **options: Any) -> SearchHits:
    """Options: those of _options."""
    name, kk = _common(vectorizer, k)
    if isinstance(query, str):  # embedded in the database (a worker answers)
        first: Arg = ("CAST({} AS text)", query, sa.Text)
    else:
        vector = query.vector if isinstance(query, QueryEmbedding) else query
        first = _vector_arg(vector)
    named = _options(vectorizer, query, **options)
    return _call(vectorizer, "search", [name, first, kk], named)


def bm25(
    vectorizer: Vectorizer, query: QueryEmbedding | str, k: int = 10, **options: Any
) -> SearchHits:
    name, kk = _common(vectorizer, k)
    q: Arg = ("CAST({} AS text)", _text(query), sa.Text)
    named = _options(vectorizer, query, **options)
    return _call(vectorizer, "bm25_search", [name, q, kk], named)


def hybrid(
    vectorizer: Vectorizer, query: QueryEmbedding | str, k: int = 10, **options: Any
) -> SearchHits:
    """Options: those of _options, and HYBRID_OPTIONS."""
    fusion = {o: options.pop(o) for o in list(options) if o in HYBRID_OPTIONS}
    name, kk = _common(vectorizer, k)
    positional: list[Arg] = [name, ("CAST({} AS text)", _text(query), sa.Text)]
    if isinstance(query, QueryEmbedding):
        positional.append(_vector_arg(query.vector))
    positional.append(kk)
    named = _options(vectorizer, query, **options)
    named.update({o: (v, HYBRID_OPTIONS[o]) for o, v in fusion.items()})
    return _call(vectorizer, "hybrid_search", positional, named)


def similar(vectorizer: Vectorizer, row: Any, k: int = 10, **options: Any) -> SearchHits:
    name, kk = _common(vectorizer, k)
    key: Arg = ("CAST({} AS jsonb)", row_key(vectorizer, row), pg.JSONB)
    named = _options(vectorizer, None, **options)
    return _call(vectorizer, "similar", [name, key, kk], named)


def row_key(vectorizer: Vectorizer, row: Any) -> dict[str, Any]:
    """A row's key as a JSON object: from an instance of the mapped class, a
    dict of key columns, a tuple in key column order, or a one-column key's
    value. Values JSON has no type for go as text (the database casts them)."""
    columns = [c.name for c in vectorizer.table.primary_key.columns]
    if vectorizer.owner is not None and isinstance(row, vectorizer.owner):
        identity = sa.inspect(row).identity
        if identity is None:
            raise ValueError(f"{row!r} has no primary key yet (add and flush it first)")
        values: Sequence[Any] = identity
    elif isinstance(row, dict):
        return {c: _json_value(v) for c, v in row.items()}
    elif isinstance(row, tuple):
        values = row
    else:
        values = (row,)
    if len(values) != len(columns):
        raise ValueError(
            f"the key of {vectorizer.table.name} is ({', '.join(columns)}); got {row!r}"
        )
    return {c: _json_value(v) for c, v in zip(columns, values, strict=True)}


def _json_value(value: Any) -> Any:
    return value if value is None or isinstance(value, bool | int | float | str) else str(value)


def _text(query: QueryEmbedding | str) -> str:
    return query.text if isinstance(query, QueryEmbedding) else query
