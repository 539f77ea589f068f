"""Tune BM25's k1/b and hybrid fusion on a collection's train split.

    .venv/bin/python benchmarks/tune_search.py /work/shared/datasets/scifact --split train

Needs the collection loaded and embedded by ``autoembed evaluate`` first (its
embedded PostgreSQL in .autoembed/evaluate is reused). BM25 runs through
``autoembed.bm25_search`` for every (k1, b). For fusion, each query's two
branches (top 100 of ``search`` and of ``bm25_search``, and the query's
``bm25_max_score``) are fetched once and fused here with the formulas of
extension_sql/idempotent/066_hybrid.sql, so a grid costs seconds; the chosen
settings are then checked through ``hybrid_search`` itself by
``autoembed evaluate``.

Also a stress test of robustness ("weak lexical branch"): BM25 given only the
query's two most common lexemes, a lexical branch that matches weakly, as on
data where BM25 is poor (e.g. argument retrieval). A robust fusion should
stay close to semantic search alone there instead of being dragged down.

Prints tables and writes JSON to benchmarks/results/tune_<collection>_<split>.json.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from psycopg import sql

from autoembed.db import connect
from autoembed.embedded import EmbeddedPostgres
from autoembed.evaluation import metrics
from autoembed.evaluation.beir import Collection, load
from autoembed.evaluation.runner import Method, embed_queries, run_method
from autoembed.evaluation.store import table_name, vectorizer_name

K = 100


@dataclass(frozen=True)
class Branch:
    """One query's hits from one branch: doc id -> (rank, score)."""

    hits: dict[str, tuple[int, float]]


@dataclass(frozen=True)
class Branches:
    semantic: Branch
    lexical: Branch
    bm25_max: float


Fuser = Callable[[Branches], list[str]]


def rrf(k: int, w: float) -> Fuser:
    def fuse(b: Branches) -> list[str]:
        score: dict[str, float] = {}
        for doc, (rank, _) in b.semantic.hits.items():
            score[doc] = score.get(doc, 0.0) + w / (k + rank)
        for doc, (rank, _) in b.lexical.hits.items():
            score[doc] = score.get(doc, 0.0) + (1 - w) / (k + rank)
        return _ranked(score)

    return fuse


def convex(w: float, theoretical: bool) -> Fuser:
    def norm(hits: dict[str, tuple[int, float]], lo: float | None, hi: float | None) -> Any:
        values = [s for _, s in hits.values()]
        lo = min(values) if lo is None else lo
        hi = max(values) if hi is None else hi
        return {d: ((s - lo) / (hi - lo) if hi > lo else 1.0) for d, (_, s) in hits.items()}

    def fuse(b: Branches) -> list[str]:
        if not b.semantic.hits or not b.lexical.hits:
            s_norm = norm(b.semantic.hits, None, None) if b.semantic.hits else {}
            l_norm = norm(b.lexical.hits, None, None) if b.lexical.hits else {}
        elif theoretical:
            s_norm = norm(b.semantic.hits, 0.0, 1.0)
            l_norm = norm(b.lexical.hits, 0.0, b.bm25_max) if b.bm25_max > 0 else {}
        else:
            s_norm = norm(b.semantic.hits, None, None)
            l_norm = norm(b.lexical.hits, None, None)
        score = {
            d: w * s_norm.get(d, 0.0) + (1 - w) * l_norm.get(d, 0.0)
            for d in set(s_norm) | set(l_norm)
        }
        return _ranked(score)

    return fuse


def _ranked(score: dict[str, float]) -> list[str]:
    return [d for d, _ in sorted(score.items(), key=lambda kv: (-kv[1], kv[0]))][:K]


def fetch_branches(
    conn: Any, name: str, collection: Collection, vectors: dict[str, Any], weak: bool
) -> dict[str, Branches]:
    out = {}
    for q in collection.queries:
        text = weakened(conn, name, q.text) if weak else q.text
        sem = conn.execute(
            "SELECT pk ->> 'id', rank, score FROM autoembed.search(%s, %s, %s)",
            (name, vectors[q.id], K),
        ).fetchall()
        lex = conn.execute(
            "SELECT pk ->> 'id', rank, score FROM autoembed.bm25_search(%s, %s, %s)",
            (name, text, K),
        ).fetchall()
        top = conn.execute("SELECT autoembed.bm25_max_score(%s, %s)", (name, text)).fetchone()
        out[q.id] = Branches(
            Branch({d: (int(r), float(s)) for d, r, s in sem}),
            Branch({d: (int(r), float(s)) for d, r, s in lex}),
            float(top[0] or 0.0),
        )
    return out


def weakened(conn: Any, name: str, text: str) -> str:
    """The query's two lexemes with the highest document frequency: a lexical
    match that says little, as BM25 gives on data it suits poorly."""
    stats = conn.execute(
        "SELECT stats_table FROM autoembed.vectorizer WHERE name = %s", (name,)
    ).fetchone()[0]
    row = conn.execute(
        sql.SQL(
            "SELECT string_agg(term, ' ') FROM (SELECT s.term FROM autoembed.{} AS s "
            "WHERE s.term IN (SELECT lexeme FROM unnest(to_tsvector('english', %s))) "
            "GROUP BY s.term ORDER BY sum(s.docs) DESC, s.term LIMIT 2) AS t"
        ).format(sql.Identifier(stats)),
        (text,),
    ).fetchone()
    return str(row[0] or "")


def evaluate(collection: Collection, branches: dict[str, Branches], fuser: Fuser) -> metrics.Scores:
    return metrics.mean(
        [metrics.score(fuser(branches[q.id]), collection.qrels[q.id]) for q in collection.queries]
    )


def single(collection: Collection, branches: dict[str, Branches], which: str) -> metrics.Scores:
    def ranking(b: Branches) -> list[str]:
        hits = b.semantic.hits if which == "semantic" else b.lexical.hits
        return [d for d, _ in sorted(hits.items(), key=lambda kv: kv[1][0])]

    return evaluate(collection, branches, ranking)


def fusers() -> Iterable[tuple[str, Fuser]]:
    for k in (10, 30, 60, 100):
        for w in (0.3, 0.4, 0.5, 0.6, 0.7):
            yield f"rrf k={k} w={w}", rrf(k, w)
    for w in [x / 20 for x in range(4, 19)]:
        yield f"convex minmax w={w:.2f}", convex(w, False)
        yield f"convex theoretical w={w:.2f}", convex(w, True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("dataset")
    ap.add_argument("--split", default="train")
    ap.add_argument("--data-dir", default=".autoembed/evaluate")
    ap.add_argument("--model", default="sentence-transformers/all-MiniLM-L6-v2")
    ap.add_argument("--no-bm25-grid", action="store_true")
    args = ap.parse_args()

    started = time.monotonic()
    collection = load(args.dataset, args.split)
    pg = EmbeddedPostgres(Path(args.data_dir) / "pg")
    url = pg.start()
    name = vectorizer_name(table_name(collection), args.model)
    report: dict[str, Any] = {"dataset": collection.name, "split": args.split, "vectorizer": name}
    with connect(url) as conn:
        k1, b = conn.execute(
            "SELECT bm25_k1, bm25_b FROM autoembed.vectorizer WHERE name = %s", (name,)
        ).fetchone() or (None, None)
        if k1 is None:
            raise SystemExit(f"no vectorizer {name!r}: run autoembed evaluate {args.dataset} first")
        vectors = embed_queries(conn, name, collection)

        if not args.no_bm25_grid:
            grid = {}
            for gk1 in (0.6, 0.9, 1.2, 1.5):
                for gb in (0.3, 0.4, 0.5, 0.75):
                    conn.execute("SELECT autoembed.set_bm25(%s, %s, %s)", (name, gk1, gb))
                    r = run_method(conn, name, collection, vectors, Method("bm25"))
                    grid[f"k1={gk1} b={gb}"] = r.mean.ndcg10
                    print(f"bm25 k1={gk1} b={gb}: nDCG@10 {r.mean.ndcg10:.4f}", flush=True)
            conn.execute("SELECT autoembed.set_bm25(%s, %s, %s)", (name, k1, b))
            report["bm25_grid"] = grid

        for label, weak in (("fusion", False), ("weak_lexical", True)):
            branches = fetch_branches(conn, name, collection, vectors, weak)
            rows = {
                "semantic": single(collection, branches, "semantic").ndcg10,
                "bm25": single(collection, branches, "bm25").ndcg10,
            }
            rows.update({n: evaluate(collection, branches, f).ndcg10 for n, f in fusers()})
            report[label] = rows
            print(f"\n{label}: nDCG@10 on {collection.name} {args.split} (k1={k1}, b={b})")
            for n, v in sorted(rows.items(), key=lambda kv: -kv[1]):
                print(f"  {v:.4f}  {n}")
    report["seconds"] = round(time.monotonic() - started, 1)
    out = Path("benchmarks/results") / f"tune_{collection.name}_{args.split}.json"
    out.write_text(json.dumps(report, indent=2))
    print(f"\n{report['seconds']} s; written {out}")


if __name__ == "__main__":
    main()
