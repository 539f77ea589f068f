"""The database half as a PostgreSQL extension: ``CREATE EXTENSION autoembed``.

``autoembed install`` (Alembic) stays the main way in. Where the server allows
extension files to be installed, ``autoembed extension-files --out DIR``
writes ``autoembed.control`` and the script ``autoembed--<version>.sql``, made
from the very same SQL files, so both paths give the same catalog:

* the incremental files, in order, then the idempotent files, in order;
* ``@extschema:vector@`` left for PostgreSQL (16+) to substitute, as it does
  for an extension named in ``requires``;
* no ``CREATE SCHEMA`` / ``CREATE EXTENSION vector``: the control file's
  ``schema`` and ``requires`` do that, so a file doing either is refused here;
* the catalog tables and their identity sequences registered with
  ``pg_extension_config_dump``: pg_dump skips an extension's own objects, and
  without this a dump would lose every vectorizer.
"""

from __future__ import annotations

import re
from importlib import metadata, resources
from pathlib import Path

EXTENSION = "autoembed"
CONTROL_FILE = f"{EXTENSION}.control"


class ExtensionScriptError(ValueError):
    """An SQL file holds a statement that cannot run inside CREATE EXTENSION."""


# Top-level statements an extension script must not contain: the control file
# creates the schema and the required extension, and CREATE EXTENSION runs the
# script in its own transaction.
_FORBIDDEN = re.compile(
    r"^\s*((?:CREATE\s+SCHEMA|CREATE\s+EXTENSION|DROP\s+SCHEMA|DROP\s+EXTENSION"
    r"|BEGIN(?!\s+ATOMIC)|START\s+TRANSACTION|COMMIT|ROLLBACK|SAVEPOINT|VACUUM|ALTER\s+SYSTEM"
    r"|CREATE\s+(?:UNIQUE\s+)?INDEX\s+CONCURRENTLY)\b|\\[a-z]+)",
    re.IGNORECASE | re.MULTILINE,
)
_DOLLAR_QUOTED = re.compile(r"\$([A-Za-z_]\w*|)\$.*?\$\1\$", re.DOTALL)
_COMMENT = re.compile(r"--[^\n]*")

# After the files: tell pg_dump which member tables hold user data. The rows
# the script itself inserted (the built-in models) are left out, since
# CREATE EXTENSION makes them again when a dump is restored.
_CONFIG_DUMP = """
-- pg_dump skips an extension's own objects; these tables hold user data.
SELECT pg_catalog.pg_extension_config_dump('autoembed.vectorizer', '');
SELECT pg_catalog.pg_extension_config_dump('autoembed.vectorizer_version', '');
SELECT pg_catalog.pg_extension_config_dump('autoembed.model_version', '');
SELECT pg_catalog.pg_extension_config_dump('autoembed.model', pg_catalog.format(
    'WHERE name <> ALL (%L::text[])',
    (SELECT coalesce(pg_catalog.array_agg(m.name ORDER BY m.name), '{}')
     FROM autoembed.model AS m)));
-- ... and the identity sequences behind their ids, so restored ids stay taken.
-- (One call per statement: each call updates the same pg_extension row.)
SELECT pg_catalog.pg_extension_config_dump(
    pg_catalog.pg_get_serial_sequence('autoembed.vectorizer', 'id')::regclass, '');
SELECT pg_catalog.pg_extension_config_dump(
    pg_catalog.pg_get_serial_sequence('autoembed.vectorizer_version', 'id')::regclass, '');
SELECT pg_catalog.pg_extension_config_dump(
    pg_catalog.pg_get_serial_sequence('autoembed.model_version', 'id')::regclass, '');
-- The query cache and requests hold nothing worth restoring: registered like
-- every member table, with a condition that dumps no rows.
SELECT pg_catalog.pg_extension_config_dump('autoembed.query_cache', 'WHERE false');
SELECT pg_catalog.pg_extension_config_dump('autoembed.query_request', 'WHERE false');
SELECT pg_catalog.pg_extension_config_dump(
    pg_catalog.pg_get_serial_sequence('autoembed.query_request', 'id')::regclass, '');
"""


def _sql_files(kind: str) -> list[tuple[str, str]]:
    folder = resources.files("autoembed.extension_sql").joinpath(kind)
    files = sorted((f for f in folder.iterdir() if f.name.endswith(".sql")), key=lambda f: f.name)
    return [(f"{kind}/{f.name}", f.read_text(encoding="utf-8")) for f in files]


def control() -> str:
    """The text of ``autoembed.control``."""
    return resources.files("autoembed.extension_sql").joinpath(CONTROL_FILE).read_text("utf-8")


def default_version(control_text: str | None = None) -> str:
    """The control file's ``default_version``; it must be the package's version."""
    text = control() if control_text is None else control_text
    found = re.search(r"^\s*default_version\s*=\s*'([^']+)'", text, re.MULTILINE)
    if found is None:
        raise ExtensionScriptError(f"{CONTROL_FILE} has no default_version")
    version = found.group(1)
    package = metadata.version("autoembed")
    if version != package:
        raise ExtensionScriptError(
            f"{CONTROL_FILE} says default_version = '{version}' but the package is {package}; "
            "change the control file with the release"
        )
    return version


def check(name: str, sql: str) -> None:
    """Refuse a file with a top-level statement CREATE EXTENSION cannot run."""
    top_level = _DOLLAR_QUOTED.sub("", _COMMENT.sub("", sql))
    found = _FORBIDDEN.search(top_level)
    if found is not None:
        raise ExtensionScriptError(
            f"{name}: {found.group(1).strip()!r} cannot run inside CREATE EXTENSION "
            f"(the control file creates the schema and pgvector, and the script is one "
            f"transaction); move it out of extension_sql/ or teach autoembed.extension about it"
        )


def script() -> str:
    """The install script ``autoembed--<version>.sql``."""
    version = default_version()
    parts = [
        f"-- autoembed {version}: made by `autoembed extension-files` from extension_sql/;",
        "-- do not edit. Load it with CREATE EXTENSION autoembed CASCADE.",
        '\\echo Use "CREATE EXTENSION autoembed" to load this file. \\quit',
    ]
    for name, sql in _sql_files("incremental") + _sql_files("idempotent"):
        check(name, sql)
        parts.append(f"\n-- ---- {name} ----\n{sql.rstrip()}\n")
    parts.append(_CONFIG_DUMP)
    return "\n".join(parts)


def script_name(version: str) -> str:
    return f"{EXTENSION}--{version}.sql"


def write_files(out_dir: Path) -> list[Path]:
    """Write the control file and the install script into ``out_dir``, which
    is the server's ``$(pg_config --sharedir)/extension``, or ``<dir>/extension``
    for a ``<dir>`` on ``extension_control_path`` (PostgreSQL 18+)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    text = script()
    written = []
    for name, content in ((CONTROL_FILE, control()), (script_name(default_version()), text)):
        path = out_dir / name
        path.write_text(content, encoding="utf-8")
        written.append(path)
    return written
