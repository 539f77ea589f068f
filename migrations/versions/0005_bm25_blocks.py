"""autoembed 0.3.0: BM25's index as posting blocks in segments.

Revision ID: 0005
Revises: 0004
"""

from autoembed import extension_sql
from autoembed.migrations._runner import run_sql

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade(vector_schema: str = "public") -> None:
    run_sql(extension_sql.incremental("0005_bm25_blocks.sql"), vector_schema)


def downgrade(vector_schema: str = "public") -> None:
    raise NotImplementedError(
        "autoembed 0.3.0 cannot be downgraded: its BM25 index has another layout"
    )
