"""autoembed for Alembic: ``op.create_vectorizer``, ``op.drop_vectorizer``,
``op.alter_vectorizer``, ``op.install_autoembed``, and autogenerate of them
from the vectorizers declared with ``autoembed.sqlalchemy``.

In ``env.py``: ``import autoembed.alembic`` and pass
``include_object=autoembed.alembic.include_object`` to
``context.configure()`` so autoembed's own tables are never drift.
"""

from autoembed.alembic import _render  # noqa: F401  (registers the renderers)
from autoembed.alembic._compare import compare_vectorizers, include_name, include_object
from autoembed.alembic._install import InstallAutoembedOp, UninstallAutoembedOp
from autoembed.alembic._ops import AlterVectorizerOp, CreateVectorizerOp, DropVectorizerOp

__all__ = [
    "AlterVectorizerOp",
    "CreateVectorizerOp",
    "DropVectorizerOp",
    "InstallAutoembedOp",
    "UninstallAutoembedOp",
    "compare_vectorizers",
    "include_name",
    "include_object",
]
