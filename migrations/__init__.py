"""Alembic environment and revisions that install and upgrade autoembed's SQL."""
