"""How autogenerate writes autoembed's operations into a migration script."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import renderers
from alembic.autogenerate.api import AutogenContext

from autoembed.alembic._install import InstallAutoembedOp, UninstallAutoembedOp
from autoembed.alembic._ops import AlterVectorizerOp, CreateVectorizerOp, DropVectorizerOp
from autoembed.sqlalchemy._spec import DEFAULT_MODEL, VectorizerSpec


def _args(spec: VectorizerSpec) -> list[str]:
    args = [f"name={spec.name!r}"]
    if spec.model != DEFAULT_MODEL:
        args.append(f"model={spec.model!r}")
    for key, default in (("dimensions", None), ("chunk_tokens", None), ("chunk_overlap", 32)):
        value = getattr(spec, key)
        if value != default:
            args.append(f"{key}={value!r}")
    args += [f"{k}={v!r}" for k, v in spec.options.items()]
    return args


def _uses_autoembed(context: AutogenContext) -> None:
    context.imports.add("import autoembed.alembic  # noqa: F401 - registers op.*_vectorizer")


@renderers.dispatch_for(CreateVectorizerOp)
def _create(context: AutogenContext, op: CreateVectorizerOp) -> str:
    _uses_autoembed(context)
    spec = op.spec
    args = [repr(spec.source), repr(list(spec.columns)), *_args(spec)]
    return f"op.create_vectorizer({', '.join(args)})"


@renderers.dispatch_for(DropVectorizerOp)
def _drop(context: AutogenContext, op: DropVectorizerOp) -> str:
    _uses_autoembed(context)
    args = [repr(op.name)]
    if op.spec is not None:  # so that the migration can be reversed by hand
        spec = op.spec
        args += [f"source={spec.source!r}", f"columns={list(spec.columns)!r}"]
        args += [a for a in _args(spec) if not a.startswith("name=")]
    return f"op.drop_vectorizer({', '.join(args)})"


@renderers.dispatch_for(AlterVectorizerOp)
def _alter(context: AutogenContext, op: AlterVectorizerOp) -> str:
    _uses_autoembed(context)
    args = [repr(op.name)]
    args += [f"{k}={_plain(v)!r}" for k, v in op.changes.items()]
    args += [f"existing_{k}={_plain(v)!r}" for k, v in op.existing.items()]
    return f"op.alter_vectorizer({', '.join(args)})"


@renderers.dispatch_for(InstallAutoembedOp)
def _install(context: AutogenContext, op: InstallAutoembedOp) -> str:
    _uses_autoembed(context)
    return "op.install_autoembed()"


@renderers.dispatch_for(UninstallAutoembedOp)
def _uninstall(context: AutogenContext, op: UninstallAutoembedOp) -> str:
    _uses_autoembed(context)
    return "op.uninstall_autoembed()"


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value
