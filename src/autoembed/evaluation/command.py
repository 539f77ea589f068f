"""``autoembed evaluate``: load a BEIR collection, embed it with the real
pipeline, run every query through the SQL search functions, report and save
nDCG@10, Recall@100, MRR@10 and latency per method."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from psycopg.conninfo import conninfo_to_dict

from autoembed.db import _libpq_url, connect
from autoembed.evaluation import beir, report, runner, store
from autoembed.evaluation.runner import Method

DEFAULT_DATA_DIR = Path(".autoembed/evaluate")
LATENCY_NOTE = (
    "latency: the SQL call alone (k = {k}, one connection, one untimed warm-up query per "
    "method); query embedding is excluded ({n} queries embedded beforehand in {s:.1f}s)"
)


@dataclass(frozen=True)
class Options:
    dataset: Path
    split: str = "test"
    db_url: str | None = None  # None: an embedded PostgreSQL in data_dir
    data_dir: Path = DEFAULT_DATA_DIR
    model: str = store.DEFAULT_MODEL
    methods: tuple[Method, ...] = tuple(Method(m) for m in runner.METHODS)
    limit_queries: int | None = None
    json_path: Path | None = None  # None: benchmarks/results/quality_<dataset>_<split>.json
    rebuild: bool = False
    show_progress: bool | None = None  # None: when stderr is a terminal
    k: int = runner.K
    # Versions of the collection's vectorizer to evaluate side by side (a
    # number, model or tag each); empty: the active one.
    versions: tuple[str, ...] = ()


def default_json_path(collection: beir.Collection) -> Path:
    return Path("benchmarks/results") / f"quality_{collection.name}_{collection.split}.json"


def duration(seconds: float) -> str:
    m, s = divmod(round(seconds), 60)
    return f"{m}m {s:02d}s" if m else f"{seconds:.1f}s"


def describe_db(url: str | None, data_dir: Path) -> dict[str, Any]:
    if url is None:
        return {"embedded": str(data_dir.resolve())}
    info = conninfo_to_dict(_libpq_url(url))
    return {k: v for k, v in info.items() if k in ("host", "port", "dbname", "user")}


def evaluate(opts: Options, say: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the benchmark; returns the JSON document it also writes."""
    started = time.monotonic()
    collection = beir.load(opts.dataset, opts.split)
    if opts.limit_queries is not None:
        collection = dataclasses.replace(
            collection, queries=collection.queries[: opts.limit_queries]
        )
    say(
        f"{collection.name} ({collection.split}): {len(collection.corpus)} documents, "
        f"{len(collection.queries)} queries, {collection.judgments} judgments"
        + (
            f"; skipped {len(collection.skipped_queries)} with no relevant document"
            if collection.skipped_queries
            else ""
        )
    )
    pg = None
    url = opts.db_url
    try:
        if url is None:
            from autoembed.embedded import EmbeddedPostgres

            pg = EmbeddedPostgres(opts.data_dir / "pg")
            say(f"PostgreSQL (embedded) in {pg.data_dir} ...")
            url = pg.start()
        return _evaluate(opts, collection, url, started, say)
    finally:
        if pg is not None:
            pg.stop()


def _evaluate(
    opts: Options,
    collection: beir.Collection,
    url: str,
    started: float,
    say: Callable[[str], None],
) -> dict[str, Any]:
    from autoembed.install import install

    revision = install(url)
    with connect(url, application_name="autoembed evaluate") as conn:
        missing = runner.missing_functions(conn, opts.methods)
        if missing:
            raise store.EvaluationError(
                f"{', '.join(missing)} does not exist in this database (autoembed schema "
                f"revision {revision}); leave its method out of --methods"
            )
        loaded = store.ensure(
            conn,
            url,
            collection,
            opts.model,
            rebuild=opts.rebuild,
            say=say,
            show_progress=opts.show_progress,
        )
        store.check_versions(conn, loaded.vectorizer, opts.versions)
        embed_queries_s = search_s = 0.0
        results = []
        for version in opts.versions or (None,):
            t = time.monotonic()
            vectors: dict[str, Any] = {}
            if any(m.name != "bm25" for m in opts.methods):
                vectors = runner.embed_queries(conn, loaded.vectorizer, collection, version)
            embed_queries_s += time.monotonic() - t
            t = time.monotonic()
            for method in opts.methods:
                if version is not None:
                    method = Method(method.name, {**method.options, "version": version})
                say(f"searching: {method.label} ...")
                results.append(
                    runner.run_method(conn, loaded.vectorizer, collection, vectors, method, opts.k)
                )
            search_s += time.monotonic() - t
        versions = report.versions(conn)
    total_s = time.monotonic() - started
    timings = {
        "load": loaded.load_seconds,
        "embed_corpus": loaded.embed_seconds,
        "embed_queries": embed_queries_s,
        "search": search_s,
        "total": total_s,
    }
    settings = {
        "methods": [m.label for m in opts.methods],
        "k": opts.k,
        "model": opts.model,
        "table": loaded.table,
        "vectorizer": loaded.vectorizer,
        "corpus_embeddings_reused": loaded.reused,
        "documents_embedded_this_run": loaded.rows_embedded,
        "db": describe_db(opts.db_url, opts.data_dir),
        "limit_queries": opts.limit_queries,
        "rebuild": opts.rebuild,
        "versions": list(opts.versions),
        "latency": "SQL call only (execute + fetch), one connection, "
        "one untimed warm-up query per method; query embedding excluded",
    }
    doc = report.document(
        collection,
        results,
        settings=settings,
        versions=versions,
        model_version=loaded.model_version,
        timings=timings,
    )
    json_path = opts.json_path or default_json_path(collection)
    report.write(json_path, doc)

    say("")
    say(
        f"{collection.name} {collection.split}: {len(collection.queries)} queries over "
        f"{len(collection.corpus)} documents; model {loaded.model_version}"
    )
    say(report.table(collection, results))
    say("")
    say(LATENCY_NOTE.format(k=opts.k, n=len(vectors), s=embed_queries_s))
    corpus = (
        f"reused the embeddings of {loaded.documents} documents"
        if loaded.reused
        else f"embedded {loaded.rows_embedded} documents in {duration(loaded.embed_seconds)}"
    )
    say(f"corpus: {corpus}")
    say(f"total run time: {duration(total_s)}")
    say(f"results: {json_path}")
    return doc
