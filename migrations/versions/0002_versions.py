"""autoembed 0.2.0: versions side by side (model lifecycle).

Revision ID: 0002
Revises: 0001
"""

from autoembed import extension_sql
from autoembed.migrations._runner import run_sql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade(vector_schema: str = "public") -> None:
    run_sql(extension_sql.incremental("0002_versions.sql"), vector_schema)


def downgrade(vector_schema: str = "public") -> None:
    raise NotImplementedError(
        "autoembed 0.2.0 cannot be downgraded to 0.1.0: a vectorizer's versions would be lost"
    )
