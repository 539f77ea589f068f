"""What a vectorizer declared in Python is, and the SQL that makes, changes
and drops it. Shared by the ORM declaration, ``metadata.create_all()`` and
the Alembic operations.

Every value reaches SQL as a bound parameter (or, in offline migrations, as a
literal quoted by SQLAlchemy); the source table as text cast to ``regclass``,
its name quoted by the dialect's identifier preparer.
"""

from __future__ import annotations

import hashlib
import weakref
from dataclasses import dataclass, field, replace
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

from autoembed.worker.onnx_backend import split_backend

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"

# Options of autoembed.create_vectorizer() besides source, columns and name,
# with their SQL types. Only these names are ever written into SQL text.
CREATE_OPTIONS: dict[str, Any] = {
    "model": sa.Text,
    "dimensions": sa.Integer,
    "chunk_tokens": sa.Integer,
    "chunk_overlap": sa.Integer,
    "ts_config": sa.Text,  # cast to regconfig below
    "distance": sa.Text,
    "index": sa.Text,
    "backfill": sa.Boolean,
    "storage": sa.Text,
}
# What alter_vectorizer() can change, and what autogenerate compares.
ALTERABLE = ("columns", "model", "dimensions", "chunk_tokens", "chunk_overlap", "storage")


@dataclass(frozen=True)
class VectorizerSpec:
    """A vectorizer on table ``source`` (``"table"`` or ``"schema.table"``)."""

    name: str
    source: str
    columns: tuple[str, ...]
    model: str = DEFAULT_MODEL
    dimensions: int | None = None
    chunk_tokens: int | None = None
    chunk_overlap: int = 32
    # ts_config, distance, index, backfill, storage
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.columns:
            raise ValueError(f"vectorizer {self.name!r}: columns must name at least one column")
        unknown = set(self.options) - {"ts_config", "distance", "index", "backfill", "storage"}
        if unknown:
            raise TypeError(f"vectorizer {self.name!r}: unknown options {sorted(unknown)}")

    def with_changes(self, **changes: Any) -> VectorizerSpec:
        return replace(self, **changes)

    @property
    def known_dimensions(self) -> int | None:
        """The model's dimensions when they can be told without a database."""
        return self.dimensions or model_dimensions(self.model)

    @property
    def embeddings_table(self) -> str:
        return derived_name(self.name, "_embeddings")

    def create_args(self) -> dict[str, Any]:
        values: dict[str, Any] = {
            "model": self.model,
            "dimensions": self.dimensions,
            "chunk_tokens": self.chunk_tokens,
            "chunk_overlap": self.chunk_overlap,
        }
        values.update(self.options)
        return values


def model_dimensions(model: str) -> int | None:
    if model.startswith("hash:") and model[5:].isdigit():
        return int(model[5:])
    if split_backend(model)[1] in (DEFAULT_MODEL, DEFAULT_MODEL.split("/", 1)[1]):
        return 384
    return None


def same_model(declared: str, stored: str) -> bool:
    """Whether a declared model name is the one the catalog stores (which
    resolves a short name such as ``all-MiniLM-L6-v2``, also after a backend
    prefix such as ``onnx-int8:``)."""
    backend, model = split_backend(declared)
    prefix = f"{backend}:" if backend else ""
    return declared == stored or f"{prefix}sentence-transformers/{model}" == stored


def derived_name(base: str, suffix: str) -> str:
    """The name autoembed._derived_name() gives a per-vectorizer object."""
    if len((base + suffix).encode()) <= 63:
        return base + suffix
    tag = "_" + hashlib.md5(base.encode(), usedforsecurity=False).hexdigest()[:8]
    stem = base
    while len((stem + tag + suffix).encode()) > 63:
        stem = stem[:-1]
    return stem + tag + suffix


def split_source(source: str) -> tuple[str | None, str]:
    schema, _, table = source.rpartition(".")
    return (schema or None), table


def quoted_source(source: str, dialect: sa.Dialect | None = None) -> str:
    """``schema.table`` quoted as the regclass input needs it."""
    prep = (dialect or pg.dialect()).identifier_preparer  # type: ignore[no-untyped-call]
    schema, table = split_source(source)
    name = prep.quote_identifier(table)
    return name if schema is None else f"{prep.quote_identifier(schema)}.{name}"


def table_source(table: sa.Table) -> str:
    return table.name if table.schema is None else f"{table.schema}.{table.name}"


# ------------------------------------------------------------------ SQL


def create_statement(spec: VectorizerSpec, dialect: sa.Dialect | None = None) -> sa.TextClause:
    args = {k: v for k, v in spec.create_args().items() if v is not None or k == "chunk_tokens"}
    named = ", ".join(
        f"{k} => CAST(:{k} AS regconfig)" if k == "ts_config" else f"{k} => :{k}" for k in args
    )
    return sa.text(
        "SELECT autoembed.create_vectorizer(CAST(:source AS regclass), "
        f"CAST(:columns AS text[]), name => :name, {named})"
    ).bindparams(
        sa.bindparam("source", quoted_source(spec.source, dialect), type_=sa.Text),
        sa.bindparam("columns", list(spec.columns), type_=pg.ARRAY(sa.Text)),
        sa.bindparam("name", spec.name, type_=sa.Text),
        *(sa.bindparam(k, v, type_=CREATE_OPTIONS[k]) for k, v in args.items()),
    )


def drop_statement(name: str, if_exists: bool = False) -> sa.TextClause:
    if if_exists:
        return sa.text(
            "SELECT autoembed.drop_vectorizer(v.name) FROM autoembed.vectorizer AS v "
            "WHERE v.name = :name"
        ).bindparams(sa.bindparam("name", name, type_=sa.Text))
    return sa.text("SELECT autoembed.drop_vectorizer(:name)").bindparams(
        sa.bindparam("name", name, type_=sa.Text)
    )


def set_columns_statement(name: str, columns: tuple[str, ...]) -> sa.TextClause:
    return sa.text("SELECT autoembed.set_columns(:name, CAST(:columns AS text[]))").bindparams(
        sa.bindparam("name", name, type_=sa.Text),
        sa.bindparam("columns", list(columns), type_=pg.ARRAY(sa.Text)),
    )


KEEP: Any = object()  # an alter option not given: keep the current value


def set_chunking_statement(name: str, chunk_tokens: Any, overlap: int | None) -> sa.TextClause:
    """autoembed.set_chunking(); chunk_tokens KEEP keeps the current value
    (None means the model's maximum), overlap None keeps the current one."""
    tokens = (
        "(SELECT v.chunk_tokens FROM autoembed.vectorizer AS v WHERE v.name = :name)"
        if chunk_tokens is KEEP
        else "CAST(:chunk_tokens AS int)"
    )
    params: list[sa.BindParameter[Any]] = [
        sa.bindparam("name", name, type_=sa.Text),
        sa.bindparam("chunk_overlap", overlap, type_=sa.Integer),
    ]
    if chunk_tokens is not KEEP:
        params.append(sa.bindparam("chunk_tokens", chunk_tokens, type_=sa.Integer))
    return sa.text(
        f"SELECT autoembed.set_chunking(:name, {tokens}, CAST(:chunk_overlap AS int))"
    ).bindparams(*params)


def set_model_statement(
    name: str, model: str | None, dimensions: int | None, storage: str | None = None
) -> sa.TextClause:
    """autoembed.set_model(); model None keeps the active version's (a change
    of storage alone), storage None the active version's storage."""
    model_sql = (
        ":model"
        if model is not None
        else "(SELECT x.model FROM autoembed.vectorizer_version AS x "
        "JOIN autoembed.vectorizer AS v ON v.id = x.vectorizer_id "
        "WHERE v.name = :name AND x.state = 'active')"
    )
    storage_sql = "" if storage is None else ", storage => :storage"
    params: list[sa.BindParameter[Any]] = [
        sa.bindparam("name", name, type_=sa.Text),
        sa.bindparam("dimensions", dimensions, type_=sa.Integer),
    ]
    if model is not None:
        params.append(sa.bindparam("model", model, type_=sa.Text))
    if storage is not None:
        params.append(sa.bindparam("storage", storage, type_=sa.Text))
    return sa.text(
        f"SELECT autoembed.set_model(:name, {model_sql}, CAST(:dimensions AS int){storage_sql})"
    ).bindparams(*params)


def set_index_statement(name: str, index: str) -> sa.TextClause:
    return sa.text("SELECT autoembed.set_index(:name, :index)").bindparams(
        sa.bindparam("name", name, type_=sa.Text), sa.bindparam("index", index, type_=sa.Text)
    )


def pause_statement(name: str, paused: bool) -> sa.TextClause:
    function = "pause" if paused else "resume"
    return sa.text(f"SELECT autoembed.{function}(:name)").bindparams(
        sa.bindparam("name", name, type_=sa.Text)
    )


def stored_specs(conn: sa.Connection) -> dict[str, tuple[VectorizerSpec, bool]]:
    """The vectorizers in the database, by name, with whether each is paused;
    empty when autoembed is not installed."""
    if not conn.execute(sa.text("SELECT to_regclass('autoembed.vectorizer')")).scalar():
        return {}
    # The model: a running campaign's (the change is under way), else the
    # active version's.
    rows = conn.execute(
        sa.text(
            "SELECT v.name, n.nspname, c.relname, v.columns, ver.model, ver.dimensions, "
            "v.chunk_tokens, v.chunk_overlap, v.ts_config, v.distance, v.index_method, v.paused, "
            "ver.storage "
            "FROM autoembed.vectorizer AS v "
            "CROSS JOIN LATERAL (SELECT x.model, x.dimensions, x.storage "
            "  FROM autoembed.vectorizer_version AS x "
            "  WHERE x.vectorizer_id = v.id AND x.state IN ('building', 'active') "
            "  ORDER BY x.state = 'building' DESC LIMIT 1) AS ver "
            "JOIN pg_catalog.pg_class AS c ON c.oid = v.source "
            "JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace ORDER BY v.id"
        )
    ).all()
    out: dict[str, tuple[VectorizerSpec, bool]] = {}
    for r in rows:
        source = r.relname if r.nspname == "public" else f"{r.nspname}.{r.relname}"
        spec = VectorizerSpec(
            name=r.name,
            source=source,
            columns=tuple(r.columns),
            model=r.model,
            dimensions=r.dimensions,
            chunk_tokens=r.chunk_tokens,
            chunk_overlap=r.chunk_overlap,
            options={
                "ts_config": r.ts_config,
                "distance": r.distance,
                "index": r.index_method,
                "storage": r.storage,
            },
        )
        out[r.name] = (spec, bool(r.paused))
    return out


# Vectorizers declared per table. Not in table.info, which autogenerate
# would render into create_table().
_declared: weakref.WeakKeyDictionary[sa.Table, list[VectorizerSpec]] = weakref.WeakKeyDictionary()


def declare(table: sa.Table, spec: VectorizerSpec) -> None:
    """Record that ``table`` has the vectorizer ``spec`` (for autogenerate)."""
    _declared.setdefault(table, []).append(spec)


def declared_specs(metadata: sa.MetaData) -> list[VectorizerSpec]:
    """The vectorizers declared on the tables of ``metadata``."""
    return [spec for table in metadata.tables.values() for spec in _declared.get(table, [])]
