"""What the latency benchmark times, and the references it checks against.

Timed, one call per query each (k results):
  autoembed's bm25_search(text), search(vector), hybrid_search(text, vector),
  the same with the query embedded in this process first (embedding included),
  search(text) / hybrid_search(text) when autoembed can embed in SQL;
  PostgreSQL's ts_rank_cd over the chunks' stored tsvector with a GIN index, for
  plainto_tsquery (every lexeme must match: AND) and for the OR of the lexemes.

References (not timed):
  exact kNN: the k best rows by cosine over every chunk (GROUP BY the key, so no
  index can serve it), for the recall of the HNSW search;
  naive BM25: the definition, computed from the chunks' stored tsvectors alone
  (a GIN lookup for the chunks that hold any query lexeme, then unnest, join,
  group by chunk, sum), independent of autoembed's postings and statistics.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg
from psycopg import sql

from autoembed.evaluation.beir import Query

Conn = psycopg.Connection[Any]
Vector = npt.NDArray[np.float32]
Embed = Callable[[str], Vector]


@dataclass(frozen=True)
class Vectorizer:
    name: str
    embeddings: str  # table in schema autoembed
    version_id: int
    ts_config: str
    k1: float
    b: float
    relations: list[str]  # its tables and their indexes, for pg_prewarm

    @classmethod
    def load(cls, conn: Conn, name: str) -> Vectorizer:
        # the vectorizer with its active version's tables and model version
        row = conn.execute(
            "SELECT to_jsonb(v) - 'embeddings_table' || to_jsonb(ver) "
            "FROM autoembed.vectorizer AS v JOIN autoembed.vectorizer_version AS ver "
            "ON ver.vectorizer_id = v.id AND ver.state = 'active' WHERE v.name = %s",
            (name,),
        ).fetchone()
        assert row is not None, name
        v = row[0]
        tables = [f"autoembed.{t}" for k, t in sorted(v.items()) if k.endswith("_table") and t]
        indexes = conn.execute(
            "SELECT indexrelid::regclass::text FROM pg_index WHERE indrelid = ANY (%s::regclass[])",
            (tables,),
        ).fetchall()
        return cls(
            name=name,
            embeddings=str(v["embeddings_table"]),
            version_id=int(v["model_version_id"]),
            ts_config=str(v["ts_config"]),
            k1=float(v["bm25_k1"]),
            b=float(v["bm25_b"]),
            relations=tables + [str(i[0]) for i in indexes],
        )

    def sql(self, template: str) -> sql.Composed:
        """template with {emb} (the embeddings table), {cfg} (its text search
        configuration) and {gin} (the benchmark's GIN index) filled in."""
        return sql.SQL(template).format(
            emb=sql.Identifier("autoembed", self.embeddings),
            cfg=sql.Literal(self.ts_config),
            gin=sql.Identifier(gin_index(self)),
        )


def gin_index(v: Vectorizer) -> str:
    return f"{v.embeddings[:50]}_lexemes_gin"


def create_gin_index(conn: Conn, v: Vectorizer) -> float:
    """The GIN index on the stored tsvectors that ts_rank_cd's @@ needs
    (autoembed itself does not make one); seconds taken (0 if it existed)."""
    t = time.perf_counter()
    exists = conn.execute(
        "SELECT to_regclass(%s) IS NOT NULL",
        (sql.Identifier("autoembed", gin_index(v)).as_string(conn),),
    ).fetchone()
    if exists and exists[0]:
        return 0.0
    conn.execute(v.sql("CREATE INDEX {gin} ON {emb} USING gin (lexemes)"))
    conn.execute(v.sql("ANALYZE {emb}"))
    return time.perf_counter() - t


# -- timed methods -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Method:
    key: str
    group: str  # "excluded" / "included": is embedding the query part of the time
    label: str
    statement: sql.Composed
    params: Callable[[Vectorizer, Query, Vector | None, int], tuple[Any, ...]]
    embeds: bool = False  # embed the query in this process inside the timed span
    returns: str = "rows"  # "rows": (pk jsonb text, chunk_no, score); "ids": (id, chunk_no, score)


@dataclass
class Timing:
    ms: float
    embed_ms: float = 0.0
    hits: list[tuple[str, int, float]] = field(default_factory=list)  # (source id, chunk, score)
    error: str | None = None


PRODUCT_COLUMNS = "SELECT s.pk::text, s.chunk_no, s.score FROM "
TS_RANK_AND = """
    SELECT e.id, e.chunk_no, ts_rank_cd(e.lexemes, q.q)::float8 AS score
    FROM {emb} AS e, plainto_tsquery({cfg}::regconfig, %s) AS q(q)
    WHERE e.model_version_id = %s AND e.lexemes @@ q.q
    ORDER BY score DESC LIMIT %s
"""
# plainto_tsquery's lexemes joined by | instead of & (its text form quotes each one)
TS_RANK_OR = """
    SELECT e.id, e.chunk_no, ts_rank_cd(e.lexemes, q.q)::float8 AS score
    FROM {emb} AS e, (SELECT replace(
             plainto_tsquery({cfg}::regconfig, %s)::text, ' & ', ' | ')::tsquery) AS q(q)
    WHERE e.model_version_id = %s AND e.lexemes @@ q.q
    ORDER BY score DESC LIMIT %s
"""


def _text(v: Vectorizer, q: Query, vec: Vector | None, k: int) -> tuple[Any, ...]:
    return (v.name, q.text, k)


def _vector(v: Vectorizer, q: Query, vec: Vector | None, k: int) -> tuple[Any, ...]:
    return (v.name, vec, k)


def _both(v: Vectorizer, q: Query, vec: Vector | None, k: int) -> tuple[Any, ...]:
    return (v.name, q.text, vec, k)


def _lexical(v: Vectorizer, q: Query, vec: Vector | None, k: int) -> tuple[Any, ...]:
    return (q.text, v.version_id, k)


def _product(function: str, args: str) -> sql.Composed:
    return sql.SQL(PRODUCT_COLUMNS + "autoembed.{}(" + args + ") AS s").format(
        sql.Identifier(function)
    )


def methods(v: Vectorizer, *, sql_text_queries: bool) -> list[Method]:
    """The timed methods, in table order."""
    bm25 = _product("bm25_search", "%s, %s::text, %s")
    semantic = _product("search", "%s, %s, %s")
    hybrid = _product("hybrid_search", "%s, %s::text, %s, %s")
    out = [
        Method("bm25", "excluded", "BM25        bm25_search(text)", bm25, _text),
        Method("semantic", "excluded", "semantic    search(vector)", semantic, _vector),
        Method("hybrid", "excluded", "hybrid      hybrid_search(text, vector)", hybrid, _both),
        Method(
            "ts_rank_cd_and", "excluded", "ts_rank_cd  plainto_tsquery (AND), GIN",
            v.sql(TS_RANK_AND), _lexical, returns="ids",
        ),
        Method(
            "semantic_embed", "included", "semantic    embed in-process + search(vector)",
            semantic, _vector, embeds=True,
        ),
        Method(
            "hybrid_embed", "included", "hybrid      embed in-process + hybrid_search",
            hybrid, _both, embeds=True,
        ),
    ]  # fmt: skip
    if sql_text_queries:
        out += text_methods()
    return out


def text_methods() -> list[Method]:
    """search(text) and hybrid_search(text): the query embedded by a worker,
    then the same query again (answered from the query-embedding cache); the
    runner forgets the cached embedding before hybrid_search's first call."""
    semantic = _product("search", "%s, %s::text, %s")
    hybrid = _product("hybrid_search", "%s, %s::text, %s")
    text = "sql_text"
    return [
        Method("semantic_text", text, "semantic    search(text)", semantic, _text),
        Method("semantic_text_again", text, "semantic    search(text) again", semantic, _text),
        Method("hybrid_text", text, "hybrid      hybrid_search(text)", hybrid, _text),
        Method("hybrid_text_again", text, "hybrid      hybrid_search(text) again", hybrid, _text),
    ]  # fmt: skip


def ts_rank_or(v: Vectorizer) -> Method:
    return Method(
        "ts_rank_cd_or", "excluded", "ts_rank_cd  OR of the query's lexemes, GIN",
        v.sql(TS_RANK_OR), _lexical, returns="ids",
    )  # fmt: skip


def source_id(value: Any, returns: str) -> str:
    if returns == "ids":
        return str(value)
    return str(json.loads(value)["id"])


def run(
    conn: Conn,
    method: Method,
    v: Vectorizer,
    query: Query,
    vector: Vector | None,
    k: int,
    embed: Embed,
) -> Timing:
    """One timed call (execute and fetch; the query embedded first when the
    method includes it)."""
    t = time.perf_counter()
    embed_ms = 0.0
    if method.embeds:
        vector = embed(query.text)
        embed_ms = (time.perf_counter() - t) * 1000
    try:
        rows = conn.execute(method.statement, method.params(v, query, vector, k), prepare=True)
        fetched = rows.fetchall()
    except psycopg.errors.QueryCanceled as e:
        return Timing((time.perf_counter() - t) * 1000, embed_ms, error=str(e).strip())
    ms = (time.perf_counter() - t) * 1000
    hits = [(source_id(r[0], method.returns), int(r[1]), float(r[2])) for r in fetched]
    return Timing(ms, embed_ms, hits)


# -- references --------------------------------------------------------------------------------

EXACT_KNN = """
    SELECT 1 - min(e.embedding <=> %s) AS score FROM {emb} AS e
    WHERE e.model_version_id = %s GROUP BY e.id ORDER BY score DESC LIMIT %s
"""


def exact_scores(conn: Conn, v: Vectorizer, vector: Vector, k: int) -> list[float]:
    """The k best rows' cosine similarities (best chunk per row), by an exact
    scan of every chunk."""
    with conn.transaction():
        conn.execute("SET LOCAL enable_indexscan = off")
        rows = conn.execute(v.sql(EXACT_KNN), (vector, v.version_id, k)).fetchall()
    return [float(r[0]) for r in rows]


def recall(hnsw: Sequence[float], exact: Sequence[float], eps: float = 1e-9) -> float:
    """Recall@k by similarity: the share of the k exact neighbours' places that
    the search filled with a row at least as similar as the k-th exact one.
    (Replicas tie exactly, so which copy is returned does not matter.)"""
    if not exact:
        return 1.0
    kth = exact[-1]
    return min(sum(1 for s in hnsw if s >= kth - eps), len(exact)) / len(exact)


COLLECTION_STATS = """
    SELECT count(*)::float8, avg((SELECT coalesce(sum(cardinality(l.positions)), 0)
                                 FROM unnest(e.lexemes) AS l))::float8
    FROM {emb} AS e WHERE e.model_version_id = %s
"""

# BM25 as its definition reads (the same formula and conventions as
# autoembed's 065_bm25.sql header documents), from the stored tsvectors only.
NAIVE_BM25 = """
    WITH q AS (
        SELECT l.lexeme AS term, cardinality(l.positions)::float8 AS qtf
        FROM unnest(to_tsvector({cfg}::regconfig, %(query)s)) AS l
    ), hit AS (
        SELECT e.id, e.chunk_no, e.lexemes FROM {emb} AS e
        WHERE e.model_version_id = %(version)s AND e.lexemes @@
            replace(plainto_tsquery({cfg}::regconfig, %(query)s)::text, ' & ', ' | ')::tsquery
    ), tf AS (
        SELECT h.id, h.chunk_no, l.lexeme AS term, cardinality(l.positions)::float8 AS tf,
               (SELECT sum(cardinality(x.positions)) FROM unnest(h.lexemes) AS x)::float8 AS dl
        FROM hit AS h CROSS JOIN LATERAL unnest(h.lexemes) AS l
        WHERE l.lexeme IN (SELECT term FROM q)
    ), df AS (
        SELECT tf.term, count(*)::float8 AS df FROM tf GROUP BY tf.term
    ), scored AS (
        SELECT tf.id, tf.chunk_no,
               sum(q.qtf * ln(1 + (%(n)s - df.df + 0.5) / (df.df + 0.5))
                   * tf.tf / (tf.tf + %(k1)s * (1 - %(b)s + %(b)s * tf.dl / %(avgdl)s))) AS score
        FROM tf JOIN q USING (term) JOIN df USING (term)
        GROUP BY tf.id, tf.chunk_no
    ), best AS (
        SELECT DISTINCT ON (s.id) s.id, s.chunk_no, s.score FROM scored AS s
        ORDER BY s.id, s.score DESC, s.chunk_no
    )
    SELECT b.id, b.chunk_no, b.score FROM best AS b ORDER BY b.score DESC, b.id LIMIT %(k)s
"""


@dataclass(frozen=True)
class Collection:
    n: float  # chunks
    avgdl: float  # mean chunk length in lexeme occurrences


def collection_stats(conn: Conn, v: Vectorizer) -> Collection:
    row = conn.execute(v.sql(COLLECTION_STATS), (v.version_id,)).fetchone()
    assert row is not None
    return Collection(float(row[0]), float(row[1]))


def naive_bm25(
    conn: Conn, v: Vectorizer, stats: Collection, text: str, k: int
) -> list[tuple[str, int, float]]:
    params = {
        "query": text, "version": v.version_id, "n": stats.n, "avgdl": stats.avgdl,
        "k1": v.k1, "b": v.b, "k": k,
    }  # fmt: skip
    rows = conn.execute(v.sql(NAIVE_BM25), params).fetchall()
    return [(str(r[0]), int(r[1]), float(r[2])) for r in rows]


def same_ranking(
    got: Sequence[tuple[str, int, float]], want: Sequence[tuple[str, int, float]], rel: float = 1e-9
) -> str | None:
    """None when got has want's scores rank by rank (to rel) and the same rows
    above the last tied score; else what differs."""
    if len(got) != len(want):
        return f"{len(got)} results, naive BM25 has {len(want)}"
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        if abs(g[2] - w[2]) > rel * max(1.0, abs(w[2])):
            return f"rank {i + 1}: score {g[2]!r}, naive BM25 {w[2]!r}"
    if want:
        bound = want[-1][2] + rel * max(1.0, abs(want[-1][2]))
        ours, naive = ({h[0] for h in hits if h[2] > bound} for hits in (got, want))
        if ours != naive:
            return f"rows above the last tie differ: {sorted(ours ^ naive)[:4]}"
    return None
