"""What the ``autoembed`` commands share: the database option, and user
errors shown as one line and a hint, with a non-zero exit status, instead of
a traceback (``autoembed --debug`` or AUTOEMBED_DEBUG=1 shows it).

Every command runs inside ``Group.invoke`` of :class:`AutoembedGroup`, which
maps what it raises with :func:`user_error`: the one place that knows how a
database, connection or usage error reads to a user."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from typing import IO, Any

import click

from autoembed.settings import Settings

DB_HELP = "PostgreSQL URL (default: $AUTOEMBED_DATABASE_URL)"
DEBUG_HELP = "Show the traceback of an error (also AUTOEMBED_DEBUG=1)."
DB_OPTION = "--db (or $AUTOEMBED_DATABASE_URL)"
URL_FORM = "postgresql://USER:PASSWORD@HOST:PORT/DATABASE"


def database_url(url: str | None) -> str:
    """The --db value, else $AUTOEMBED_DATABASE_URL; a usage error when neither."""
    try:
        found = Settings(
            database_url=url or os.environ.get("AUTOEMBED_DATABASE_URL")
        ).require_database_url()
    except ValueError as e:
        raise UsageMistake(str(e), f"e.g. --db {URL_FORM}") from e
    ctx = click.get_current_context(silent=True)
    if ctx is not None:
        ctx.find_root().meta[_URL_KEY] = found  # errors name its role
    return found


_URL_KEY = "autoembed.database_url"


class UserError(click.ClickException):
    """A problem the user can fix: ``Error: <one line>`` and ``hint: <one
    line>`` on stderr; exit status 1 (2 for a usage error)."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(_one_line(message))
        self.hint = _one_line(hint) if hint else None

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"Error: {self.message}", file=file, err=file is None)
        if self.hint:
            click.echo(f"hint: {self.hint}", file=file, err=file is None)


class UsageMistake(UserError):
    """A command line that does not parse, or lacks what it needs: exit status 2."""

    exit_code = 2


def _one_line(text: str) -> str:
    return " ".join(text.split())


class AutoembedGroup(click.Group):
    """The ``autoembed`` group: what any command raises reaches the user as a
    :class:`UserError`, or with its traceback under ``--debug``."""

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        try:
            return super().make_context(info_name, args, parent, **extra)
        except click.UsageError as e:  # the group's own options
            raise _usage_error(e) from e

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.Abort, UserError):
            raise
        except Exception as e:
            if debugging():
                raise
            raise user_error(e) from e


def debugging() -> bool:
    """Whether ``autoembed --debug`` (or AUTOEMBED_DEBUG=1) asked for tracebacks."""
    ctx = click.get_current_context(silent=True)
    if ctx is not None and ctx.find_root().params.get("debug"):
        return True
    return os.environ.get("AUTOEMBED_DEBUG", "").strip().lower() in ("1", "true", "yes", "on")


def user_error(e: BaseException) -> click.ClickException:
    """``e`` as the user should see it: one line and a hint."""
    import psycopg

    if isinstance(e, click.UsageError):
        return _usage_error(e)
    if isinstance(e, click.ClickException):
        return e
    driver_error = getattr(e, "orig", None)  # SQLAlchemy wraps psycopg's errors
    if isinstance(driver_error, psycopg.Error):
        e = driver_error
    if isinstance(e, psycopg.Error):
        return _database_error(e)
    from autoembed.db import NotAPostgresURL
    from autoembed.install import InstallPrerequisiteError
    from autoembed.search import ModelVersionMismatch
    from autoembed.worker.embedders import ModelLoadError

    if isinstance(e, InstallPrerequisiteError):
        return UserError(e.problem, e.one_line_hint())
    if isinstance(e, NotAPostgresURL):
        return UserError(str(e), f"a database URL reads {URL_FORM}")
    if isinstance(e, ModelVersionMismatch):
        return UserError(
            str(e),
            "a running worker embeds queries with exactly the stored model version "
            "(autoembed worker --db URL); or install the model files the workers use",
        )
    if isinstance(e, ModelLoadError):
        return UserError(str(e), "check the model name, or that its files are installed here")
    if isinstance(e, LookupError):
        return UserError(str(e.args[0]) if e.args else repr(e), _VECTORIZERS_HINT)
    if isinstance(e, OSError) and e.filename is not None:
        return UserError(f"{e.strerror or e}: {e.filename}", "check the path and its permissions")
    return UserError(f"unexpected {type(e).__name__}: {e}", _DEBUG_HINT)


_VECTORIZERS_HINT = "autoembed status lists the vectorizers"
_DEBUG_HINT = "run it again with autoembed --debug to see the traceback, and report it"


def _usage_error(e: click.UsageError) -> click.ClickException:
    if isinstance(e, click.exceptions.NoArgsIsHelpError):
        return e  # shows the help
    command = e.ctx.command_path if e.ctx is not None else "autoembed"
    if isinstance(e, click.NoSuchOption) and e.option_name == "--debug":
        return UsageMistake(
            e.format_message(), "--debug goes before the command: autoembed --debug COMMAND ..."
        )
    return UsageMistake(e.format_message(), f"{command} --help shows its options")


# ------------------------------------------------------------ database errors


def _database_error(e: Any) -> UserError:
    """A psycopg error: the server's message and hint, or, for what the
    server gives no hint for (connections, missing schema, privileges), ours."""
    diag = e.diag
    sqlstate = e.sqlstate or ""
    message = (diag.message_primary or str(e)).strip()
    if not sqlstate:  # raised by the client
        import psycopg

        if isinstance(e, psycopg.OperationalError) or re.search(_BAD_URL, message):
            return _connection_error(message)
        return UserError(message, _DEBUG_HINT)
    hint = diag.message_hint
    if sqlstate in ("3F000", "42P01", "42883") and "autoembed" in message:
        return UserError(
            f"{message} (autoembed is not installed in this database, or is older than this "
            "client)",
            "autoembed install --db URL installs or upgrades it (as the role that owns the "
            "vectorizers' tables)",
        )
    extension = re.search(r'extension "([^"]+)"', message)
    if extension and sqlstate in ("0A000", "58P01", "42501"):  # not available, not allowed
        return _extension_error(message, sqlstate, extension.group(1))
    if sqlstate == "42501" and not hint:
        hint = _privilege_hint(_role_of(e))
    if sqlstate.startswith("28") or sqlstate == "3D000":  # authentication, database
        return _connection_error(message)
    return UserError(message, hint)


def _role_of(e: Any) -> str:
    """The role the command connected as (to name it in a hint)."""
    import getpass

    from psycopg.conninfo import conninfo_to_dict

    from autoembed.db import _libpq_url

    ctx = click.get_current_context(silent=True)
    url = ctx.find_root().meta.get(_URL_KEY) if ctx is not None else None
    try:
        user = conninfo_to_dict(_libpq_url(url)).get("user") if url else None
        return str(user or os.environ.get("PGUSER") or getpass.getuser())
    except Exception:
        return "ROLE"


def _privilege_hint(role: str) -> str:
    ctx = click.get_current_context(silent=True)
    command = ctx.invoked_subcommand if ctx is not None else None
    if command in ("status", "versions"):
        return (
            f"autoembed {command} reads every vectorizer's queues: run it as the owner of the "
            f"vectorizers, or as a worker role (the owner runs SELECT "
            f"autoembed.grant_worker('{role}'))"
        )
    return (
        f"connect as a role that may, or have the owner grant it to {role}: searches need "
        f"SELECT autoembed.grant_search('VECTORIZER', '{role}'), workers "
        f"SELECT autoembed.grant_worker('{role}')"
    )


def _extension_error(message: str, sqlstate: str, extension: str) -> UserError:
    if sqlstate == "42501":
        return UserError(
            message,
            f"a superuser runs this once in the database: CREATE EXTENSION {extension}; "
            "then autoembed install works as this role",
        )
    where = (
        " (e.g. the postgresql-NN-pgvector package; managed services: allow the vector extension)"
        if extension == "vector"
        else ""
    )
    return UserError(
        message, f"{extension} must be installed on the PostgreSQL server first{where}"
    )


_BAD_URL = r'missing "="|invalid (connection option|URI|integer|port)|invalid percent-encoded'

# (pattern in libpq's message, hint); the first that matches wins.
_CONNECTION_HINTS: Sequence[tuple[str, str]] = (
    (
        r"password authentication failed|fe_sendauth: no password",
        f"check the user and password in {DB_OPTION}, or $PGPASSWORD / ~/.pgpass",
    ),
    (
        r'database "[^"]*" does not exist',
        f"create it (createdb NAME) or name an existing database in {DB_OPTION}",
    ),
    (r'role "[^"]*" does not exist', f"name an existing role (user) in {DB_OPTION}"),
    (
        r"no pg_hba\.conf entry",
        "the server's pg_hba.conf does not let this user connect from here",
    ),
    (
        r"refused|No such file or directory|resolve host|timeout|Name or service|"
        r"could not translate|Network is unreachable|No route to host",
        f"is PostgreSQL running there? check the host and port in {DB_OPTION}",
    ),
    (_BAD_URL, f"a database URL reads {URL_FORM}"),
)


def _connection_error(message: str) -> UserError:
    lines = message.strip().splitlines() or [""]
    first = re.sub(r"^connection (failed|is bad): ", "", lines[0])
    for pattern, hint in _CONNECTION_HINTS:
        if re.search(pattern, message):
            return UserError(f"cannot connect to PostgreSQL: {first}", hint)
    return UserError(f"cannot connect to PostgreSQL: {first}", f"check {DB_OPTION}: {URL_FORM}")
