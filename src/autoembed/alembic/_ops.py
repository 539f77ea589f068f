"""Alembic operations: ``op.create_vectorizer``, ``op.drop_vectorizer``,
``op.alter_vectorizer`` (each reversible, each rendered as SQL by
``alembic upgrade --sql``), and ``op.install_autoembed`` /
``op.uninstall_autoembed``."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic.operations import MigrateOperation, Operations

from autoembed.sqlalchemy._spec import (
    DEFAULT_MODEL,
    KEEP,
    VectorizerSpec,
    create_statement,
    drop_statement,
    pause_statement,
    set_chunking_statement,
    set_columns_statement,
    set_index_statement,
    set_model_statement,
)


@Operations.register_operation("create_vectorizer")
class CreateVectorizerOp(MigrateOperation):
    """``op.create_vectorizer(source, columns, name=..., model=..., ...)``:
    options as ``autoembed.create_vectorizer``."""

    def __init__(self, spec: VectorizerSpec) -> None:
        self.spec = spec

    @classmethod
    def create_vectorizer(
        cls,
        operations: Operations,
        source: str,
        columns: list[str] | tuple[str, ...],
        *,
        name: str | None = None,
        model: str = DEFAULT_MODEL,
        dimensions: int | None = None,
        chunk_tokens: int | None = None,
        chunk_overlap: int = 32,
        **options: Any,
    ) -> Any:
        spec = VectorizerSpec(
            name=name or source.rpartition(".")[2],
            source=source,
            columns=tuple(columns),
            model=model,
            dimensions=dimensions,
            chunk_tokens=chunk_tokens,
            chunk_overlap=chunk_overlap,
            options=options,
        )
        return operations.invoke(cls(spec))

    def reverse(self) -> DropVectorizerOp:
        return DropVectorizerOp(self.spec.name, spec=self.spec)

    def to_diff_tuple(self) -> tuple[Any, ...]:
        return ("create_vectorizer", self.spec.name)


@Operations.register_operation("drop_vectorizer")
class DropVectorizerOp(MigrateOperation):
    """``op.drop_vectorizer(name)``. Reversible when it knows what it drops:
    autogenerate records that; by hand, pass the same arguments as
    create_vectorizer (``source=..., columns=..., ...``)."""

    def __init__(self, name: str, spec: VectorizerSpec | None = None) -> None:
        self.name = name
        self.spec = spec

    @classmethod
    def drop_vectorizer(
        cls,
        operations: Operations,
        name: str,
        *,
        source: str | None = None,
        columns: list[str] | tuple[str, ...] | None = None,
        **create_options: Any,
    ) -> Any:
        spec = None
        if source is not None and columns is not None:
            spec = VectorizerSpec(
                name=name, source=source, columns=tuple(columns), **create_options
            )
        return operations.invoke(cls(name, spec))

    def reverse(self) -> CreateVectorizerOp:
        if self.spec is None:
            raise ValueError(
                f"op.drop_vectorizer({self.name!r}) cannot be reversed without knowing the "
                "vectorizer: pass source=..., columns=... (and its other options)"
            )
        return CreateVectorizerOp(self.spec)

    def to_diff_tuple(self) -> tuple[Any, ...]:
        return ("drop_vectorizer", self.name)


@Operations.register_operation("alter_vectorizer")
class AlterVectorizerOp(MigrateOperation):
    """``op.alter_vectorizer(name, columns=..., chunk_tokens=..., chunk_overlap=...,
    model=..., dimensions=..., storage=..., index=..., paused=...)``: change what is
    given (every row is re-embedded for columns, chunking, model and storage; a
    storage alone keeps the active model; an index is built or dropped in
    place). ``existing_<option>``
    gives the value before, which makes the operation reversible."""

    OPTIONS = (
        "columns", "model", "dimensions", "storage", "chunk_tokens", "chunk_overlap", "index",
        "paused",
    )  # fmt: skip

    def __init__(self, name: str, changes: dict[str, Any], existing: dict[str, Any]) -> None:
        unknown = (set(changes) | set(existing)) - set(self.OPTIONS)
        if unknown:
            raise TypeError(f"alter_vectorizer: unknown options {sorted(unknown)}")
        self.name = name
        self.changes = changes
        self.existing = existing

    @classmethod
    def alter_vectorizer(cls, operations: Operations, name: str, **kw: Any) -> Any:
        existing = {k[9:]: v for k, v in kw.items() if k.startswith("existing_")}
        changes = {k: v for k, v in kw.items() if not k.startswith("existing_")}
        return operations.invoke(cls(name, changes, existing))

    def reverse(self) -> AlterVectorizerOp:
        missing = set(self.changes) - set(self.existing)
        if missing:
            raise ValueError(
                f"op.alter_vectorizer({self.name!r}) cannot be reversed without "
                + ", ".join(f"existing_{m}" for m in sorted(missing))
            )
        return AlterVectorizerOp(
            self.name, {k: self.existing[k] for k in self.changes}, dict(self.changes)
        )

    def to_diff_tuple(self) -> tuple[Any, ...]:
        return ("alter_vectorizer", self.name, tuple(sorted(self.changes)))

    def statements(self) -> list[sa.TextClause]:
        c, out = self.changes, []
        if "model" in c or "dimensions" in c or "storage" in c:
            model = c.get("model", self.existing.get("model"))
            if model is None and "dimensions" in c:
                raise ValueError("alter_vectorizer: dimensions alone need model= too")
            out.append(set_model_statement(self.name, model, c.get("dimensions"), c.get("storage")))
        if "chunk_tokens" in c or "chunk_overlap" in c:
            out.append(
                set_chunking_statement(
                    self.name, c.get("chunk_tokens", KEEP), c.get("chunk_overlap")
                )
            )
        if "columns" in c:
            out.append(set_columns_statement(self.name, tuple(c["columns"])))
        if "index" in c:
            out.append(set_index_statement(self.name, c["index"]))
        if "paused" in c:
            out.append(pause_statement(self.name, bool(c["paused"])))
        return out


@Operations.implementation_for(CreateVectorizerOp)
def _create(operations: Operations, operation: CreateVectorizerOp) -> None:
    operations.execute(create_statement(operation.spec, operations.get_context().dialect))


@Operations.implementation_for(DropVectorizerOp)
def _drop(operations: Operations, operation: DropVectorizerOp) -> None:
    operations.execute(drop_statement(operation.name))


@Operations.implementation_for(AlterVectorizerOp)
def _alter(operations: Operations, operation: AlterVectorizerOp) -> None:
    for statement in operation.statements():
        operations.execute(statement)
