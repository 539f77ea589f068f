"""Autogenerate: compare the vectorizers declared on the models (with
``autoembed.sqlalchemy``) with ``autoembed.vectorizer``,
and keep autoembed's own tables out of the comparison. The first revision
that creates a vectorizer in a database without autoembed also installs it
(``op.install_autoembed()``, reversed by ``op.uninstall_autoembed()``).

A vectorizer in the database is dropped only when its source table is in the
metadata and declares no vectorizer of that name: vectorizers made in SQL on
tables the models do not know are left alone. Only what alter_vectorizer can
change is compared (columns, model, chunking); ``ts_config``, ``distance``,
``index`` apply when a vectorizer is created.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic.autogenerate import comparators
from alembic.autogenerate.api import AutogenContext
from alembic.operations.ops import UpgradeOps

from autoembed.alembic._install import InstallAutoembedOp
from autoembed.alembic._ops import AlterVectorizerOp, CreateVectorizerOp, DropVectorizerOp
from autoembed.sqlalchemy._spec import VectorizerSpec, declared_specs, same_model, stored_specs

SCHEMA = "autoembed"


def include_object(
    obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
) -> bool:
    """For ``context.configure(include_object=...)``: skip everything in
    schema ``autoembed`` (the catalog, queues, embeddings, postings, ...)."""
    return getattr(obj, "schema", None) != SCHEMA


def include_name(name: str | None, type_: str, parent_names: dict[str, Any]) -> bool:
    """For ``context.configure(include_name=...)`` with ``include_schemas=True``:
    do not reflect schema ``autoembed`` at all."""
    return not (type_ == "schema" and name == SCHEMA)


def _norm(source: str) -> str:
    return source[len("public.") :] if source.startswith("public.") else source


def _metadatas(context: AutogenContext) -> list[sa.MetaData]:
    md = context.metadata
    if md is None:
        return []
    return [md] if isinstance(md, sa.MetaData) else list(md)


def compare_vectorizers(context: AutogenContext, upgrade_ops: UpgradeOps, schemas: Any) -> Any:
    if context.connection is None:
        return _continue()
    metadatas = _metadatas(context)
    declared = {s.name: s for md in metadatas for s in declared_specs(md)}
    known_sources = {
        _norm(t.fullname) for md in metadatas for t in md.tables.values() if t.schema != SCHEMA
    }
    stored = stored_specs(context.connection)
    for name, (old, _paused) in stored.items():
        new = declared.get(name)
        if new is None:
            if _norm(old.source) in known_sources:
                upgrade_ops.ops.append(DropVectorizerOp(name, spec=old))
        elif _norm(new.source) != _norm(old.source):
            upgrade_ops.ops.append(DropVectorizerOp(name, spec=old))
            upgrade_ops.ops.append(CreateVectorizerOp(new))
        else:
            alter = _alter(new, old)
            if alter is not None:
                upgrade_ops.ops.append(alter)
    creates = [CreateVectorizerOp(spec) for name, spec in declared.items() if name not in stored]
    if creates and not _installed(context.connection):
        # The database is at head and lacks autoembed: no earlier revision
        # installs it, so this one does, first (its downgrade uninstalls last).
        upgrade_ops.ops.insert(0, InstallAutoembedOp())
    upgrade_ops.ops.extend(creates)
    return _continue()


def _installed(connection: sa.Connection) -> bool:
    return bool(connection.execute(sa.text("SELECT to_regclass('autoembed.vectorizer')")).scalar())


def _alter(new: VectorizerSpec, old: VectorizerSpec) -> AlterVectorizerOp | None:
    changes: dict[str, Any] = {}
    existing: dict[str, Any] = {}
    if new.columns != old.columns:
        changes["columns"], existing["columns"] = list(new.columns), list(old.columns)
    dims_differ = new.known_dimensions is not None and new.known_dimensions != old.dimensions
    if not same_model(new.model, old.model) or dims_differ:
        changes["model"], existing["model"] = new.model, old.model
        if new.dimensions is not None:
            changes["dimensions"], existing["dimensions"] = new.dimensions, old.dimensions
    storage = new.options.get("storage")
    if storage is not None and storage != old.options.get("storage"):
        changes["storage"], existing["storage"] = storage, old.options.get("storage")
    index = new.options.get("index")
    if index is not None and index != old.options.get("index"):
        changes["index"], existing["index"] = index, old.options.get("index")
    if new.chunk_tokens != old.chunk_tokens:
        changes["chunk_tokens"], existing["chunk_tokens"] = new.chunk_tokens, old.chunk_tokens
    if new.chunk_overlap != old.chunk_overlap:
        changes["chunk_overlap"], existing["chunk_overlap"] = new.chunk_overlap, old.chunk_overlap
    return AlterVectorizerOp(new.name, changes, existing) if changes else None


def _continue() -> Any:
    try:
        from alembic.util import PriorityDispatchResult
    except ImportError:  # alembic < 1.18
        return None
    return PriorityDispatchResult.CONTINUE


def _register() -> None:
    try:
        from alembic.util import DispatchPriority
    except ImportError:  # alembic < 1.18
        comparators.dispatch_for("schema")(compare_vectorizers)
        return
    # After the table comparisons: a new table is created before its vectorizer.
    comparators.dispatch_for("schema", priority=DispatchPriority.LAST)(compare_vectorizers)


_register()
