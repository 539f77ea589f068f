"""The ``autoembed`` command."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from autoembed.cli_support import DB_HELP, DEBUG_HELP, AutoembedGroup
from autoembed.cli_support import database_url as _db
from autoembed.settings import Settings

if TYPE_CHECKING:
    from autoembed.evaluation.runner import Method

BROKER_HELP = "Celery broker URL (default: $AUTOEMBED_BROKER_URL or redis://localhost:6379/0)"


@click.group(cls=AutoembedGroup)
@click.version_option(package_name="autoembed")
@click.option("--debug", is_flag=True, help=DEBUG_HELP)
def main(debug: bool) -> None:
    """autoembed: PostgreSQL keeps its own embeddings."""


@main.command()
@click.option("--db", "db_url", help=DB_HELP)
def install(db_url: str | None) -> None:
    """Install or upgrade autoembed's schema in a database (idempotent)."""
    from autoembed.db import connect
    from autoembed.install import dblink_note, has_dblink
    from autoembed.install import install as do_install

    url = _db(db_url)
    rev = do_install(url)  # errors: one line and a hint (cli_support.user_error)
    click.echo(f"autoembed installed (schema revision {rev})")
    with connect(url) as conn:
        if not has_dblink(conn):
            row = conn.execute("SELECT current_database()").fetchone()
            click.echo(dblink_note(f"database {row[0]}" if row else "this database"))


@main.command("extension-files")
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False, writable=True),
    help="Where to write them: $(pg_config --sharedir)/extension, or DIR/extension for a "
    "DIR on extension_control_path (PostgreSQL 18+).",
)
def extension_files(out_dir: str) -> None:
    """Write autoembed.control and its script, for CREATE EXTENSION autoembed CASCADE
    (PostgreSQL 16+, pgvector installed on the server)."""
    from pathlib import Path

    from autoembed.extension import write_files

    for path in write_files(Path(out_dir)):
        click.echo(str(path))


@main.command()
@click.option("--db", "db_url", help=DB_HELP)
@click.option("--broker", "broker_url", help=BROKER_HELP)
@click.option("--once", is_flag=True, help="Drain all pending work in this process, then exit.")
@click.option(
    "--concurrency",
    "-c",
    type=int,
    default=None,
    help="Worker processes (default: one per GPU, else 1).",
)
@click.option(
    "--batch-size", type=int, default=None, help="Rows per claim (default: CPU 16, GPU 128)."
)
@click.option("--no-dispatcher", is_flag=True, help="Do not run the dispatcher in this worker.")
@click.option(
    "--embedded-broker",
    is_flag=True,
    help="Start a private Redis for this worker and stop it with the worker (development: "
    "no broker to install; the same as autoembed dev).",
)
@click.option("--loglevel", default="INFO", show_default=True)
def worker(
    db_url: str | None,
    broker_url: str | None,
    once: bool,
    concurrency: int | None,
    batch_size: int | None,
    no_dispatcher: bool,
    embedded_broker: bool,
    loglevel: str,
) -> None:
    """Run a Celery worker (with the dispatcher), or drain once with --once."""
    url = _db(db_url)
    if embedded_broker and (broker_url or once):
        raise click.UsageError("--embedded-broker goes with neither --broker nor --once")
    if embedded_broker:
        from autoembed.embedded import private_broker

        with private_broker() as broker:
            click.echo(f"broker: {broker} (embedded; it stops with this worker)", err=True)
            _worker(url, broker, False, concurrency, batch_size, no_dispatcher, loglevel)
        return
    _worker(url, broker_url, once, concurrency, batch_size, no_dispatcher, loglevel)


@main.command()
@click.option("--db", "db_url", help=DB_HELP)
@click.option("--loglevel", default="INFO", show_default=True)
def dev(db_url: str | None, loglevel: str) -> None:
    """A worker for local development and tests: a private Redis broker is
    started with it and stopped with it (Ctrl-C or SIGTERM), nothing to install."""
    from autoembed.embedded import private_broker

    url = _db(db_url)
    with private_broker() as broker:
        click.echo(f"broker: {broker} (embedded; it stops with this worker)", err=True)
        _worker(url, broker, False, None, None, False, loglevel)


def _worker(
    url: str,
    broker_url: str | None,
    once: bool,
    concurrency: int | None,
    batch_size: int | None,
    no_dispatcher: bool,
    loglevel: str,
) -> None:
    os.environ["AUTOEMBED_DATABASE_URL"] = url
    if broker_url:
        os.environ["AUTOEMBED_BROKER_URL"] = broker_url
    if batch_size:
        os.environ["AUTOEMBED_BATCH_SIZE"] = str(batch_size)
    if no_dispatcher:
        os.environ["AUTOEMBED_DISPATCHER"] = "0"
    logging.basicConfig(
        level=loglevel.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if once:
        from autoembed.worker.once import run_once

        stats = run_once(Settings.from_env())
        click.echo(
            f"done: {stats.written} rows embedded ({stats.chunks} chunks), {stats.failed} failed"
        )
        return
    from autoembed.worker.app import app

    argv = [
        "worker",
        "--loglevel",
        loglevel,
        "--concurrency",
        str(concurrency or _default_concurrency()),
    ]
    app.worker_main(argv)


def _default_concurrency() -> int:
    """One pool process per GPU, else one. Never imports torch here: this
    process becomes Celery's main process, which embeds nothing (torch would
    cost it ~250 MB, and CUDA initialized before the fork breaks the pool)."""
    if not any(os.path.exists(p) for p in ("/dev/nvidia0", "/dev/kfd", "/proc/driver/nvidia")):
        return 1  # no GPU driver on this machine
    probe = subprocess.run(
        [sys.executable, "-c", _GPU_PROBE], capture_output=True, text=True, check=False
    )
    last = probe.stdout.split()[-1:] if probe.returncode == 0 else []
    return max(1, int(last[0])) if last and last[0].isdigit() else 1


_GPU_PROBE = "import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)"


@main.command()
@click.option("--db", "db_url", help=DB_HELP)
@click.option("--broker", "broker_url", help=BROKER_HELP)
def dispatcher(db_url: str | None, broker_url: str | None) -> None:
    """Run only the dispatcher and sweep (for stacks with dedicated workers)."""
    import threading

    url = _db(db_url)
    os.environ["AUTOEMBED_DATABASE_URL"] = url
    if broker_url:
        os.environ["AUTOEMBED_BROKER_URL"] = broker_url
    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from autoembed.worker.app import settings
    from autoembed.worker.dispatcher import Dispatcher
    from autoembed.worker.tasks import queued_signals, signal

    stop = threading.Event()
    try:
        Dispatcher(url, signal, settings, queued=queued_signals).run(stop)
    except KeyboardInterrupt:
        stop.set()


@main.command("query-server")
@click.option("--db", "db_url", help=DB_HELP)
@click.option(
    "--device",
    default=None,
    help="cpu, cuda, cuda:N (default: $AUTOEMBED_DEVICE, else CUDA if any)",
)
@click.option("--loglevel", default="INFO", show_default=True)
def query_server(db_url: str | None, device: str | None, loglevel: str) -> None:
    """Embed text queries for SQL (autoembed.search(name, 'text')) without a
    Celery worker. Every Celery worker runs one too, unless AUTOEMBED_QUERY_SERVICE=0."""
    import dataclasses

    from autoembed.worker.query_service import serve_forever

    url = _db(db_url)
    logging.basicConfig(
        level=loglevel.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    env = Settings.from_env()
    settings = dataclasses.replace(env, database_url=url, device=device or env.device)
    serve_forever(url, settings)


@main.command("setup-queries")
@click.option("--db", "db_url", help=DB_HELP)
@click.option(
    "--role",
    default="autoembed_query",
    show_default=True,
    help="The loopback role to create (or give a new password).",
)
@click.option(
    "--host", default=None, help="How the server reaches itself (default: its unix socket)."
)
@click.option("--port", type=int, default=None, help="(default: the server's port)")
def setup_queries(db_url: str | None, role: str, host: str | None, port: int | None) -> None:
    """Let every role run text queries from SQL: a loopback role with a random
    password and no privileges, the dblink foreign server autoembed_loopback
    and a user mapping for PUBLIC (run as a superuser; creates dblink too)."""
    import psycopg

    from autoembed.db import connect

    notices: list[str] = []
    with connect(_db(db_url)) as conn:
        conn.add_notice_handler(
            lambda d: (
                notices.append(f"{d.severity}: {d.message_primary}\n  {d.message_hint or ''}")
                if d.severity == "WARNING"
                else None
            )
        )
        try:
            conn.execute("CREATE EXTENSION IF NOT EXISTS dblink")
            conn.execute("SELECT autoembed.setup_query_loopback(%s, %s, %s)", (role, host, port))
            # In a new transaction: the loopback sees only committed roles.
            row = conn.execute("SELECT autoembed.check_query_loopback()").fetchone()
        except psycopg.Error as e:
            raise click.ClickException(str(e).strip()) from e
    for notice in notices:
        click.echo(notice.rstrip(), err=True)
    result = row[0] if row else ""
    if not result.startswith("ok"):
        # the WARNING above says what pg_hba.conf must allow
        raise click.ClickException(result or "the loopback check returned nothing")
    click.echo(result)


@main.command()
@click.option("--db", "db_url", help=DB_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.argument("name", required=False)
def status(db_url: str | None, as_json: bool, name: str | None) -> None:
    """Show each vectorizer: embedded, pending, in flight, failed, lag."""
    from autoembed.db import connect
    from autoembed.status import fetch, format_table

    with connect(_db(db_url)) as conn:
        rows = fetch(conn, name)
    if as_json:
        click.echo(json.dumps([r.as_json() for r in rows], indent=2))
    else:
        click.echo(format_table(rows))


@main.command()
@click.option("--db", "db_url", help=DB_HELP)
@click.option("-k", "k", type=int, default=5, show_default=True, help="Number of results.")
@click.option("--version", default=None, help="Search this version (default: the active one).")
@click.argument("name")
@click.argument("query")
def search(db_url: str | None, k: int, version: str | None, name: str, query: str) -> None:
    """Semantic search: embed QUERY with the vectorizer's model and search NAME.
    A running worker embeds it (through SQL, in milliseconds); without one,
    this process loads the model (seconds)."""
    from autoembed.db import connect
    from autoembed.search import search_anywhere

    def note(why: str) -> None:
        click.echo(f"note: {why}; embedding the query in this process (loads the model)", err=True)

    with connect(_db(db_url)) as conn:
        hits = search_anywhere(conn, name, query, k, version, note)
    for h in hits:
        snippet = " ".join(h.chunk.split())[:100]
        click.echo(f"{h.rank:>3}  {h.score:.3f}  {json.dumps(h.pk)}  {snippet}")


def _methods(value: str, options: tuple[str, ...]) -> tuple[Method, ...]:
    from autoembed.evaluation.runner import METHODS, Method

    names = [m.strip() for m in value.split(",") if m.strip()]
    unknown = [m for m in names if m not in METHODS]
    if unknown or not names or len(set(names)) != len(names):
        raise click.BadParameter(
            f"give a comma-separated list of distinct methods among {', '.join(METHODS)}; "
            f"got {value!r}",
            param_hint="--methods",
        )
    hybrid: dict[str, str] = {}
    for opt in options:
        key, sep, val = opt.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(
                f"expected key=value, got {opt!r}", param_hint="--hybrid-option"
            )
        hybrid[key.strip()] = val
    if hybrid and "hybrid" not in names:
        raise click.BadParameter("hybrid is not among --methods", param_hint="--hybrid-option")
    try:
        return tuple(Method(m, hybrid if m == "hybrid" else {}) for m in names)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--hybrid-option") from e


@main.command()
@click.argument("dataset_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--split", default="test", show_default=True, help="Judgments: qrels/SPLIT.tsv.")
@click.option("--db", "db_url", help="PostgreSQL URL (default: an embedded PostgreSQL).")
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(".autoembed/evaluate"),
    show_default=True,
    help="Where the embedded PostgreSQL keeps its data between runs (without --db).",
)
@click.option(
    "--model",
    default="sentence-transformers/all-MiniLM-L6-v2",
    show_default=True,
    help="The vectorizer's model (hash:<dims> for a quick check without a model).",
)
@click.option("--methods", default="bm25,semantic,hybrid", show_default=True)
@click.option(
    "--hybrid-option",
    "hybrid_options",
    multiple=True,
    metavar="KEY=VALUE",
    help="A named argument for autoembed.hybrid_search, e.g. fusion=convex (repeatable).",
)
@click.option("--limit-queries", type=click.IntRange(min=1), default=None, help="Only the first N.")
@click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Where to save the results (default: benchmarks/results/quality_<dataset>_<split>.json).",
)
@click.option("--rebuild", is_flag=True, help="Reload and re-embed the corpus even if unchanged.")
@click.option(
    "--version",
    "versions",
    multiple=True,
    metavar="VERSION",
    help="Evaluate this version of the collection's vectorizer (a number, model or tag; "
    "repeatable: versions side by side). Default: the active one.",
)
def evaluate(
    dataset_dir: Path,
    split: str,
    db_url: str | None,
    data_dir: Path,
    model: str,
    methods: str,
    hybrid_options: tuple[str, ...],
    limit_queries: int | None,
    json_path: Path | None,
    rebuild: bool,
    versions: tuple[str, ...],
) -> None:
    """Search quality on a BEIR-format collection in DATASET_DIR: nDCG@10,
    Recall@100, MRR@10 and query latency for bm25, semantic and hybrid search.

    Loads corpus.jsonl into table beir_<name>, lets the worker's pipeline embed
    it (kept and reused by later runs while the corpus is unchanged), embeds
    the queries once, runs each through the SQL search functions with k = 100,
    prints a table and saves every ranking as JSON. Installs or upgrades
    autoembed's schema first (idempotent).
    """
    from autoembed.evaluation import BeirFormatError, EvaluationError, Options
    from autoembed.evaluation import evaluate as run_evaluation

    logging.basicConfig(level="WARNING", format="%(levelname)s %(name)s: %(message)s")
    options = Options(
        dataset=dataset_dir,
        split=split,
        db_url=db_url,
        data_dir=data_dir,
        model=model,
        methods=_methods(methods, hybrid_options),
        limit_queries=limit_queries,
        json_path=json_path,
        rebuild=rebuild,
        versions=versions,
    )
    try:
        run_evaluation(options, say=lambda msg: click.echo(msg))
    except (BeirFormatError, EvaluationError) as e:
        raise click.ClickException(str(e).strip()) from e


@main.command()
@click.option(
    "--data-dir",
    type=click.Path(),
    default=None,
    help="Where the embedded database and broker live (default: ./.autoembed).",
)
@click.option("--rows", type=int, default=300, show_default=True, help="Demo rows to embed.")
@click.option("--keep", is_flag=True, help="Keep everything running afterwards, until Ctrl-C.")
def quickstart(data_dir: str | None, rows: int, keep: bool) -> None:
    """Run everything on the embedded default: PostgreSQL + pgvector, a Redis
    broker, a Celery worker and the bundled model; embed a demo table; search it."""
    from autoembed.quickstart import run

    sys.exit(run(data_dir, rows, keep))


def _add_lifecycle_commands() -> None:
    from autoembed.cli_versions import COMMANDS

    for command in COMMANDS:
        main.add_command(command)


_add_lifecycle_commands()


if __name__ == "__main__":  # pragma: no cover
    main()
