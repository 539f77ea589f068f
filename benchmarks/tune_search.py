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

Also stress tests of robustness, where one branch is much weaker than the
other (as BM25 is on argument retrieval, where equal-weight RRF falls below
semantic search):
  long_queries  every query followed by three other queries of the split, so
                it is long and mostly noise, matching each document weakly;
  weak_lexical  BM25 given only half of each query's lexemes, so that it
                falls well below semantic search;
  weak_semantic the semantic branch given every other word of the query, so
                that it falls below BM25.
A robust fusion stays close to the better branch instead of being dragged
down by the worse one.

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

from autoembed.db import connect
from autoembed.embedded import EmbeddedPostgres
from autoembed.evaluation import metrics
from autoembed.evaluation.beir import Collection, load
from autoembed.evaluation.runner import Method, embed_queries, run_method
from autoembed.evaluation.store import table_name, vectorizer_name
from autoembed.search import embed_queries as embed_texts

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


def convex(w: float) -> Fuser:
    """Convex combination of scores min-max normalized per branch."""

    def norm(hits: dict[str, tuple[int, float]]) -> dict[str, float]:
        values = [s for _, s in hits.values()]
        lo, hi = (min(values), max(values)) if values else (0.0, 0.0)
        return {d: ((s - lo) / (hi - lo) if hi > lo else 1.0) for d, (_, s) in hits.items()}

    def fuse(b: Branches) -> list[str]:
        s_norm, l_norm = norm(b.semantic.hits), norm(b.lexical.hits)
        score = {
            d: w * s_norm.get(d, 0.0) + (1 - w) * l_norm.get(d, 0.0)
            for d in set(s_norm) | set(l_norm)
        }
        return _ranked(score)

    return fuse


def spread(w: float) -> Fuser:
    """Convex combination of each branch's score above its weakest candidate,
    over the range the query could span: cosine up to 1, BM25 up to
    bm25_max_score. A branch whose candidates score alike (it cannot tell
    them apart) adds little; a branch with a clear winner adds a lot."""

    def part(hits: dict[str, tuple[int, float]], top: float) -> dict[str, float]:
        if not hits:
            return {}
        low = min(s for _, s in hits.values())
        span = top - low
        return {d: (s - low) / span if span > 0 else 0.0 for d, (_, s) in hits.items()}

    def fuse(b: Branches) -> list[str]:
        s_part = part(b.semantic.hits, 1.0)
        l_part = part(b.lexical.hits, b.bm25_max)
        score = {
            d: w * s_part.get(d, 0.0) + (1 - w) * l_part.get(d, 0.0)
            for d in set(s_part) | set(l_part)
        }
        return _ranked(score)

    return fuse


def _ranked(score: dict[str, float]) -> list[str]:
    return [d for d, _ in sorted(score.items(), key=lambda kv: (-kv[1], kv[0]))][:K]


def long_queries(collection: Collection) -> dict[str, str]:
    """Each query followed by the next three of the split (deterministic)."""
    qs = collection.queries
    return {
        q.id: " ".join([q.text, *(qs[(i + j) % len(qs)].text for j in (1, 2, 3))])
        for i, q in enumerate(qs)
    }


def fetch_branches(
    conn: Any,
    name: str,
    collection: Collection,
    vectors: dict[str, Any],
    texts: dict[str, str],
    weak: bool = False,
) -> dict[str, Branches]:
    out = {}
    for q in collection.queries:
        text = weakened(conn, name, texts[q.id]) if weak else texts[q.id]
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
    """Half of the query's lexemes (every other one, alphabetically): BM25
    then matches on partial evidence and falls well below semantic search,
    roughly as it does on argument retrieval (BEIR ArguAna: BM25 0.41 against
    0.50 for all-MiniLM-L6-v2)."""
    row = conn.execute(
        "SELECT string_agg(lexeme, ' ') FROM (SELECT lexeme, "
        "row_number() OVER (ORDER BY lexeme) AS n FROM unnest(to_tsvector('english', %s))) AS l "
        "WHERE n %% 2 = 1",
        (text,),
    ).fetchone()
    return str(row[0] or "")


def half_words(text: str) -> str:
    """Every other word of the query: the semantic branch's counterpart of
    weak_lexical (it then falls below BM25)."""
    return " ".join(text.split()[::2])


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
        yield f"convex minmax w={w:.2f}", convex(w)
        yield f"convex spread w={w:.2f}", spread(w)


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

        plain = {q.id: q.text for q in collection.queries}
        long = long_queries(collection)
        long_vectors = dict(zip(long, embed_texts(conn, name, list(long.values())), strict=True))
        halves = {q.id: half_words(q.text) for q in collection.queries}
        half_vectors = dict(
            zip(halves, embed_texts(conn, name, list(halves.values())), strict=True)
        )
        cases = {
            "fusion": (vectors, plain, False),
            "long_queries": (long_vectors, long, False),
            "weak_lexical": (vectors, plain, True),
            "weak_semantic": (half_vectors, plain, False),
        }
        for label, (vecs, texts, weak) in cases.items():
            branches = fetch_branches(conn, name, collection, vecs, texts, weak)
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
