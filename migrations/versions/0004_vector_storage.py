"""autoembed 0.3.0: a storage per version (vector, halfvec, binary).

Revision ID: 0004
Revises: 0002
"""

from autoembed import extension_sql
from autoembed.migrations._runner import run_sql

revision = "0004"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade(vector_schema: str = "public") -> None:
    run_sql(extension_sql.incremental("0004_vector_storage.sql"), vector_schema)


def downgrade(vector_schema: str = "public") -> None:
    raise NotImplementedError(
        "autoembed 0.3.0 cannot be downgraded: versions stored as halfvec or binary would be lost"
    )
