"""autoembed 0.1.0: the catalog.

Revision ID: 0001
Revises:
"""

from autoembed import extension_sql
from autoembed.migrations._runner import run_sql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade(vector_schema: str = "public") -> None:
    run_sql(extension_sql.incremental("0001_catalog.sql"), vector_schema)


def downgrade(vector_schema: str = "public") -> None:
    raise NotImplementedError(
        "autoembed cannot be downgraded below its first release; DROP SCHEMA autoembed CASCADE"
    )
