"""Alembic environment for autoembed's own schema.

The version table is ``autoembed.alembic_version``, apart from any version
table of the application's own migrations. After the revisions run, every
idempotent SQL file is applied, so functions and views always match the
installed code. Online, everything happens in one transaction holding an
advisory lock, so concurrent installs queue instead of colliding.
"""

from __future__ import annotations

from alembic import context

from autoembed import extension_sql
from autoembed.migrations import _runner

config = context.config


def run_offline() -> None:
    schema = context.get_x_argument(as_dictionary=True).get("vector_schema", "public")
    vector_schema = extension_sql.quote_ident(schema)
    context.configure(
        url=config.get_main_option("sqlalchemy.url") or "postgresql://",
        literal_binds=True,
        version_table_schema="autoembed",
        transactional_ddl=True,
    )
    with context.begin_transaction():
        _runner.prepare_offline()
        context.run_migrations(vector_schema=vector_schema)
        _runner.apply_idempotent_offline(vector_schema)


def run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is None:
        raise RuntimeError(
            "autoembed's migrations run through autoembed.install.install(url) "
            "or `autoembed install --db URL`"
        )
    vector_schema = _runner.prepare_online(connection)
    context.configure(
        connection=connection,
        version_table_schema="autoembed",
        transactional_ddl=True,
    )
    with context.begin_transaction():
        context.run_migrations(vector_schema=vector_schema)
        _runner.apply_idempotent_online(connection, vector_schema)


if context.is_offline_mode():
    run_offline()
else:
    run_online()
