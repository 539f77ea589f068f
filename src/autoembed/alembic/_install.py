"""``op.install_autoembed()``: install or upgrade autoembed's own schema from
an application's migration, in that migration's transaction. Runs
autoembed's revisions (version table ``autoembed.alembic_version``, apart
from the application's) and its idempotent SQL, as ``autoembed install``
does, dblink included where the role may create it (else a warning: text
queries from SQL need it). Offline (``--sql``) it renders a fresh install. Reversed by
``op.uninstall_autoembed()``, which refuses while any vectorizer exists."""

from __future__ import annotations

import logging
from typing import Any

import sqlalchemy as sa
from alembic import op as op_proxy
from alembic.operations import MigrateOperation, Operations
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from autoembed import extension_sql
from autoembed.install import alembic_config, dblink_note, try_dblink
from autoembed.migrations import _runner

log = logging.getLogger("alembic.runtime.migration")  # printed where Alembic prints


@Operations.register_operation("install_autoembed")
class InstallAutoembedOp(MigrateOperation):
    @classmethod
    def install_autoembed(cls, operations: Operations) -> Any:
        return operations.invoke(cls())

    def reverse(self) -> UninstallAutoembedOp:
        return UninstallAutoembedOp()


@Operations.register_operation("uninstall_autoembed")
class UninstallAutoembedOp(MigrateOperation):
    @classmethod
    def uninstall_autoembed(cls, operations: Operations) -> Any:
        return operations.invoke(cls())

    def reverse(self) -> InstallAutoembedOp:
        return InstallAutoembedOp()


@Operations.implementation_for(InstallAutoembedOp)
def _install(operations: Operations, operation: InstallAutoembedOp) -> None:
    outer = operations.get_context()
    script = ScriptDirectory.from_config(alembic_config())

    def upgrade(rev: Any, context: Any) -> Any:
        return script._upgrade_revs("head", rev)

    opts: dict[str, Any] = {"version_table_schema": "autoembed", "script": script, "fn": upgrade}
    if outer.as_sql:
        vector_schema = extension_sql.quote_ident("public")
        outer.impl.static_output(_runner.LOCK_SQL + ";\n" + _runner.PREPARE_SQL)
        opts.update(as_sql=True, output_buffer=outer.output_buffer, literal_binds=True)
        inner = MigrationContext.configure(dialect_name="postgresql", opts=opts)
    else:
        connection = operations.get_bind()
        vector_schema = _runner.prepare_online(connection)
        inner = MigrationContext.configure(connection=connection, opts=opts)
    # Alembic's `op` is one process-wide proxy: autoembed's revisions use it,
    # then it must point at the application's migration again.
    previous = getattr(op_proxy, "_proxy", None)
    try:
        with Operations.context(inner):
            inner.run_migrations(vector_schema=vector_schema)
    finally:
        if previous is not None:
            previous._install_proxy()
    if outer.as_sql:
        for name, sql in extension_sql.idempotent_files():
            outer.impl.static_output(f"-- {name}\n" + extension_sql.render(sql, vector_schema))
    else:
        _runner.apply_idempotent_online(operations.get_bind(), vector_schema)
        if not try_dblink(operations.get_bind()):
            log.warning(dblink_note())


@Operations.implementation_for(UninstallAutoembedOp)
def _uninstall(operations: Operations, operation: UninstallAutoembedOp) -> None:
    operations.execute(
        sa.text(
            "DO $$ BEGIN "
            "IF to_regclass('autoembed.vectorizer') IS NOT NULL "
            "AND EXISTS (SELECT 1 FROM autoembed.vectorizer) THEN "
            "RAISE EXCEPTION 'autoembed: drop every vectorizer before uninstalling autoembed'; "
            "END IF; END $$"
        )
    )
    operations.execute(sa.text("DROP SCHEMA IF EXISTS autoembed CASCADE"))
