"""The database half of autoembed, as plain SQL files shipped in the wheel.

``incremental/`` files run once each, in order, from the Alembic revisions in
``autoembed.migrations``. ``idempotent/`` files (``CREATE OR REPLACE``) run after
every install or upgrade, in name order, so functions always match the code.
``@extschema:vector@`` stands for the schema pgvector is installed in.
"""

from __future__ import annotations

from importlib import resources

VECTOR_SCHEMA_PLACEHOLDER = "@extschema:vector@"


def _dir(kind: str) -> resources.abc.Traversable:
    return resources.files(__name__).joinpath(kind)


def incremental(name: str) -> str:
    """The text of one run-once file, e.g. ``incremental("0001_catalog.sql")``."""
    return _dir("incremental").joinpath(name).read_text(encoding="utf-8")


def idempotent_files() -> list[tuple[str, str]]:
    """(name, text) of every re-runnable file, in the order they must run."""
    files = [f for f in _dir("idempotent").iterdir() if f.name.endswith(".sql")]
    return [(f.name, f.read_text(encoding="utf-8")) for f in sorted(files, key=lambda f: f.name)]


def render(sql: str, quoted_vector_schema: str) -> str:
    """Substitute the pgvector schema, given already quoted as PostgreSQL's
    quote_ident() does (as CREATE EXTENSION substitutes it)."""
    return sql.replace(VECTOR_SCHEMA_PLACEHOLDER, quoted_vector_schema)


def quote_ident(name: str) -> str:
    """Always-quoted identifier, for when the server cannot be asked."""
    return '"' + name.replace('"', '""') + '"'
