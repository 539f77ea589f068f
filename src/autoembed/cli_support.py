"""What the ``autoembed`` commands share: the database option, and SQL
errors shown as one line and a hint instead of a traceback."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import click

from autoembed.settings import Settings

DB_HELP = "PostgreSQL URL (default: $AUTOEMBED_DATABASE_URL)"


def database_url(url: str | None) -> str:
    """The --db value, else $AUTOEMBED_DATABASE_URL; a usage error when neither."""
    try:
        return Settings(
            database_url=url or os.environ.get("AUTOEMBED_DATABASE_URL")
        ).require_database_url()
    except ValueError as e:
        raise click.UsageError(str(e)) from e


@contextmanager
def sql_errors() -> Iterator[None]:
    """Turn a database error (or a LookupError) into ``Error: <message>``
    and its hint, exit status 1."""
    import psycopg

    try:
        yield
    except psycopg.Error as e:
        diag = e.diag
        message = (diag.message_primary or str(e)).strip()
        if diag.message_hint:
            message += f"\nhint: {diag.message_hint}"
        raise click.ClickException(message) from e
    except LookupError as e:
        raise click.ClickException(str(e)) from e
