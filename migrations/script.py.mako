"""${message}

Revision ID: ${up_revision}
Revises: ${down_revision | comma,n}
Create Date: ${create_date}
"""

from autoembed.migrations._runner import run_sql
from autoembed import extension_sql

revision = ${repr(up_revision)}
down_revision = ${repr(down_revision)}
branch_labels = ${repr(branch_labels)}
depends_on = ${repr(depends_on)}


def upgrade(vector_schema: str = "public") -> None:
    ${upgrades if upgrades else "pass"}


def downgrade(vector_schema: str = "public") -> None:
    ${downgrades if downgrades else "pass"}
