"""``autoembed versions | set-model | activate | rollback | cancel-campaign |
drop-version | gc-versions | compare | health``: the model lifecycle from the
command line (the SQL functions of extension_sql/idempotent/047_lifecycle.sql
and 075_version_quality.sql)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from autoembed.cli_support import DB_HELP, database_url

db_option = click.option("--db", "db_url", help=DB_HELP)


def _connect(db_url: str | None) -> Any:
    from autoembed.db import connect

    return connect(database_url(db_url))


@click.command()
@db_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.argument("name")
def versions(db_url: str | None, as_json: bool, name: str) -> None:
    """Show NAME's versions: model, state (active, building, ready, retired),
    progress of a campaign, rows/s, ETA."""
    from autoembed import versions as lib

    with _connect(db_url) as conn:
        found = lib.fetch(conn, name)
    if as_json:
        click.echo(json.dumps([v.as_json() for v in found], indent=2))
    else:
        click.echo(lib.format_table(found))


@click.command("set-model")
@db_option
@click.option(
    "--dimensions", type=int, default=None, help="The model's dimensions (unknown models)."
)
@click.option(
    "--storage",
    type=click.Choice(["vector", "halfvec", "binary"]),
    default=None,
    help="How the version stores its vectors (default: as the active version): vector, "
    "halfvec (half the bytes) or binary (a bit index, re-ranked by the full vectors).",
)
@click.option(
    "--activate",
    type=click.Choice(["auto", "manual"]),
    default="auto",
    show_default=True,
    help="auto: switch when the campaign is complete; manual: wait for `autoembed activate`.",
)
@click.option(
    "--wait", is_flag=True, help="Follow the campaign until it is done (Ctrl-C stops following)."
)
@click.argument("name")
@click.argument("model")
def set_model(
    db_url: str | None,
    dimensions: int | None,
    storage: str | None,
    activate: str,
    wait: bool,
    name: str,
    model: str,
) -> None:
    """Embed NAME with MODEL without an outage: a new version is embedded in
    the background (a campaign) while the active one keeps serving."""
    from autoembed import versions as lib

    with _connect(db_url) as conn:
        number = lib.set_model(conn, name, model, dimensions, activate, storage)
        conn.commit()
        current = next(v for v in lib.fetch(conn, name) if v.version == number)
        stored = "" if current.storage == "vector" else f", {current.storage}"
        click.echo(f"{name}: version {number} ({current.model}{stored}) is {current.state}")
        if current.state == "building":
            click.echo(
                f"  {current.pending} rows queued for it; follow it with: autoembed versions {name}"
            )
            if wait:
                _follow(conn, name, number)


def _follow(conn: Any, name: str, number: int) -> None:
    from tqdm import tqdm

    from autoembed import versions as lib

    bar = tqdm(unit="row", desc=f"{name} v{number}", disable=not sys.stderr.isatty())
    last_line = 0.0

    def show(v: lib.Progress) -> None:
        nonlocal last_line
        bar.total = v.rows_total or 0
        bar.n = v.rows_done or 0
        bar.refresh()
        if bar.disable:
            import time

            if time.monotonic() - last_line >= 10 or v.state != "building":
                click.echo(f"  {v.rows_done}/{v.rows_total} rows ({v.percent}%), {v.state}")
                last_line = time.monotonic()

    try:
        ended = lib.wait(conn, name, number, on_progress=show)
    except KeyboardInterrupt:
        bar.close()
        click.echo("stopped following; the campaign goes on")
        return
    bar.close()
    if ended is None:
        click.echo(f"{name}: version {number} was dropped (campaign cancelled)")
    else:
        click.echo(f"{name}: version {number} is {ended.state}")
        error = next((v.error for v in lib.fetch(conn, name) if v.version == number), None)
        if error:
            click.echo(f"  {error}")


@click.command()
@db_option
@click.argument("name")
@click.argument("version")
def activate(db_url: str | None, name: str, version: str) -> None:
    """Make VERSION (a number, model or tag) of NAME the active one."""
    _call(db_url, "SELECT autoembed.activate_version(%s, %s)", (name, version), name, "active")


@click.command()
@db_option
@click.argument("name")
def rollback(db_url: str | None, name: str) -> None:
    """Make NAME's previous version active again (its vectors were kept current)."""
    _call(db_url, "SELECT autoembed.rollback(%s)", (name,), name, "active")


@click.command("cancel-campaign")
@db_option
@click.argument("name")
def cancel_campaign(db_url: str | None, name: str) -> None:
    """Abandon NAME's running campaign (drops its version)."""
    _call(db_url, "SELECT autoembed.cancel_campaign(%s)", (name,), name, "dropped")


@click.command("drop-version")
@db_option
@click.argument("name")
@click.argument("version")
def drop_version(db_url: str | None, name: str, version: str) -> None:
    """Drop VERSION of NAME (not the active one): its vectors, BM25 tables and queue."""
    with _connect(db_url) as conn:
        conn.execute("SELECT autoembed.drop_version(%s, %s)", (name, version))
    click.echo(f"{name}: version {version} dropped")


@click.command("gc-versions")
@db_option
@click.option(
    "--keep",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Retired versions to keep (the most recently retired).",
)
@click.argument("name")
def gc_versions(db_url: str | None, keep: int, name: str) -> None:
    """Drop NAME's retired versions (but the --keep most recent)."""
    with _connect(db_url) as conn:
        row = conn.execute("SELECT autoembed.gc_versions(%s, %s)", (name, keep)).fetchone()
    click.echo(f"{name}: {row[0] if row else 0} retired versions dropped")


def _call(db_url: str | None, query: str, args: tuple[Any, ...], name: str, what: str) -> None:
    with _connect(db_url) as conn:
        row = conn.execute(query, args).fetchone()
    if row is None or row[0] is None:
        click.echo(f"{name}: nothing to do")
    else:
        click.echo(f"{name}: version {row[0]} {what}")


def read_queries(path: Path) -> list[str]:
    """One query per line, or a BEIR queries.jsonl ({"text": ...} per line)."""
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    lines = [line for line in lines if line]
    if path.suffix == ".jsonl":
        return [str(json.loads(line)["text"]) for line in lines]
    return lines


@click.command()
@db_option
@click.option(
    "--queries",
    "queries_path",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="One query per line, or a BEIR queries.jsonl.",
)
@click.option("-k", "k", type=click.IntRange(1, 1000), default=10, show_default=True)
@click.option("--a", "a", default=None, help="A version (default: the active one).")
@click.option("--b", "b", default=None, help="Another version (default: the newest other one).")
@click.option(
    "--method",
    type=click.Choice(["semantic", "hybrid", "bm25"]),
    default="semantic",
    show_default=True,
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines instead of a table.")
@click.argument("name")
def compare(
    db_url: str | None,
    queries_path: Path,
    k: int,
    a: str | None,
    b: str | None,
    method: str,
    as_json: bool,
    name: str,
) -> None:
    """How two versions of NAME rank the same queries: overlap of their top k
    and the rank correlation (Kendall's tau) of the rows both return. A
    running worker embeds the queries with each version's model."""
    queries = read_queries(queries_path)
    if not queries:
        raise click.UsageError(f"{queries_path} holds no query")
    with _connect(db_url) as conn:
        rows = conn.execute(
            "SELECT query, overlap, rank_correlation, shared, a_top, b_top "
            "FROM autoembed.compare_versions(%s, %s, %s, %s, %s, %s)",
            (name, queries, k, a, b, method),
        ).fetchall()
    if as_json:
        for q, overlap, tau, shared, a_top, b_top in rows:
            record = {"query": q, "overlap": overlap, "rank_correlation": tau, "shared": shared}
            record.update({"a": a_top, "b": b_top})
            click.echo(json.dumps(record))
        return
    *per_query, summary = rows
    for q, overlap, tau, shared, _a, _b in per_query:
        tau_text = "  n/a" if tau is None else f"{tau:5.2f}"
        click.echo(f"overlap {overlap:4.2f}  tau {tau_text}  shared {shared:>3}  {q[:70]}")
    _, overlap, tau, _, a_info, b_info = summary
    click.echo(
        f"{len(per_query)} queries, k={k}, {method}: version {a_info['version']} "
        f"({a_info['model']}) vs {b_info['version']} ({b_info['model']}): "
        f"mean overlap {overlap:.3f}, mean tau " + ("n/a" if tau is None else f"{tau:.3f}")
    )


@click.command()
@db_option
@click.option("--version", "version", default=None, help="A version (default: the active one).")
@click.option("--sample", type=click.IntRange(2, 1_000_000), default=1000, show_default=True)
@click.option(
    "--recent", default="1 day", show_default=True, help="What counts as recent (an interval)."
)
@click.argument("name")
def health(db_url: str | None, version: str | None, sample: int, recent: str, name: str) -> None:
    """The shape of a version's vectors: anisotropy (mean cosine of random
    pairs), mean norm, and drift of recently embedded chunks."""
    with _connect(db_url) as conn:
        row = conn.execute(
            "SELECT version_no, model, chunks, sampled, mean_pair_cosine, mean_norm, "
            "recent_chunks, drift FROM autoembed.version_health(%s, %s, %s, %s::interval)",
            (name, version, sample, recent),
        ).fetchone()
    assert row is not None
    number, model, chunks, sampled, cosine, norm, recent_n, drift = row

    def fmt(x: float | None) -> str:
        return "n/a" if x is None else f"{x:.4f}"

    click.echo(f"{name} version {number} ({model}): {chunks} chunks, {sampled} sampled")
    click.echo(f"  mean cosine of random pairs: {fmt(cosine)}")
    click.echo(f"  mean vector norm:            {fmt(norm)}")
    click.echo(f"  drift of the {recent_n} chunks embedded within {recent}: {fmt(drift)}")


COMMANDS = [
    versions,
    set_model,
    activate,
    rollback,
    cancel_campaign,
    drop_version,
    gc_versions,
    compare,
    health,
]
