"""The contenders ``trigger_overhead.py`` compares: no trigger, autoembed's
own triggers, and hand-written alternatives and ablations of them.

Every table has the same columns and data; a variant differs only in its
triggers. A variant other than ``plain`` starts from a real vectorizer
(``autoembed.create_vectorizer``) and may then swap one of autoembed's
triggers for a hand-written one that writes to the same inbox, so that it
differs from autoembed in exactly one respect.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import psycopg
from psycopg import sql

EMBEDDED = ("title", "body")
COPY, UPDATE_PLAIN, UPDATE_EMBEDDED = "copy", "update_plain", "update_embedded"
ALL_SCENARIOS = frozenset({COPY, UPDATE_PLAIN, UPDATE_EMBEDDED})

_TABLE = """
CREATE TABLE {table} (id int PRIMARY KEY, title text NOT NULL, body text NOT NULL,
                      views int NOT NULL DEFAULT 0)
WITH (autovacuum_enabled = false)
"""

# The security clause autoembed's generated trigger function carries.
_DEFINER = "SECURITY DEFINER SET search_path = pg_catalog, pg_temp"
_INVOKER = "SECURITY INVOKER"

_FUNCTION = """
CREATE FUNCTION {{fn}}() RETURNS trigger LANGUAGE plpgsql VOLATILE {security} AS $f$
{declare}BEGIN
{body}
    RETURN {result};
END
$f$
"""

# One inbox row per changed row, as autoembed's UPDATE path writes it.
_INBOX_ROW = "    INSERT INTO autoembed.{inbox} (seq, id) VALUES (x, ARRAY[NEW.id]);\n"
_ROW_UPDATE_BODY = (
    """
    IF OLD.id IS DISTINCT FROM NEW.id THEN
        DELETE FROM autoembed.{embeddings} AS e WHERE e.id = OLD.id;
    END IF;
"""
    + _INBOX_ROW
)
# One inbox row per statement, keyed on the rows whose embedded text changed.
_STATEMENT_UPDATE_BODY = """
    INSERT INTO autoembed.{inbox} (seq, id)
    SELECT x, pg_catalog.array_agg(n.id)
    FROM new_rows AS n JOIN old_rows AS o ON o.id = n.id
    WHERE (o.title, o.body) IS DISTINCT FROM (n.title, n.body)
    HAVING pg_catalog.count(*) > 0;
"""
_NOTIFY = "    PERFORM pg_catalog.pg_notify('autoembed', {vid});\n"
_NOTIFY_IF_FOUND = "    IF FOUND THEN PERFORM pg_catalog.pg_notify('autoembed', {vid}); END IF;\n"

# At most one NOTIFY per session per 250 ms: a proposal (see upd_throttled).
_NOTIFY_THROTTLED = """
    IF pg_catalog.date_part('epoch', pg_catalog.clock_timestamp()) * 1000 >=
       coalesce(nullif(pg_catalog.current_setting({guc}, true), ''), '0')::float8 + 250 THEN
        PERFORM pg_catalog.set_config({guc},
            (pg_catalog.date_part('epoch', pg_catalog.clock_timestamp()) * 1000)::text, false);
        PERFORM pg_catalog.pg_notify('autoembed', {vid});
    END IF;
"""

_ROW_UPDATE_TRIGGER = """
CREATE {kind} {{trigger}} {timing} UPDATE OF title, body, id ON {{table}} {deferral} FOR EACH ROW
WHEN ((OLD.title, OLD.body, OLD.id) IS DISTINCT FROM (NEW.title, NEW.body, NEW.id))
EXECUTE FUNCTION {{fn}}()
"""
Timing = Literal["AFTER", "BEFORE", "DEFERRED"]
_TIMINGS: dict[Timing, dict[str, str]] = {
    "AFTER": {"kind": "TRIGGER", "timing": "AFTER", "deferral": ""},
    "BEFORE": {"kind": "TRIGGER", "timing": "BEFORE", "deferral": ""},
    "DEFERRED": {"kind": "CONSTRAINT TRIGGER", "timing": "AFTER", "deferral": "INITIALLY DEFERRED"},
}
_ROW_INSERT_TRIGGER = """
CREATE TRIGGER {trigger} AFTER INSERT ON {table} FOR EACH ROW EXECUTE FUNCTION {fn}()
"""
_STATEMENT_INSERT_TRIGGER = """
CREATE TRIGGER {trigger} AFTER INSERT ON {table} REFERENCING NEW TABLE AS new_rows
FOR EACH STATEMENT EXECUTE FUNCTION {fn}()
"""
_STATEMENT_UPDATE_TRIGGER = """
CREATE TRIGGER {trigger} AFTER UPDATE ON {table}
REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
FOR EACH STATEMENT EXECUTE FUNCTION {fn}()
"""


@dataclass(frozen=True)
class Variant:
    """A set of triggers, and how to put them on a fresh benchmark table."""

    name: str
    label: str
    vectorizer: bool = False
    # autoembed trigger replaced ("insert" or "update") and the SQL replacing it
    replaces: str | None = None
    function: str = ""
    trigger: str = ""
    scenarios: frozenset[str] = ALL_SCENARIOS

    def create(self, conn: psycopg.Connection[Any], table: str) -> None:
        """Create the table, empty, with this variant's triggers."""
        conn.execute(sql.SQL(_TABLE).format(table=sql.Identifier(table)))
        if not self.vectorizer:
            return
        vid, inbox, embeddings = _create_vectorizer(conn, table)
        if self.replaces is None:
            return
        names = {
            "table": sql.Identifier(table),
            "fn": sql.Identifier(f"{table}_fn"),
            "trigger": sql.Identifier(f"{table}_trigger"),
            "inbox": sql.Identifier(inbox),
            "embeddings": sql.Identifier(embeddings),
            "vid": sql.Literal(str(vid)),
            "guc": sql.Literal(f"autoembed.notified_{vid}"),
        }
        autoembed_trigger = sql.Identifier(f"autoembed_{vid}_{self.replaces}")
        conn.execute(sql.SQL("DROP TRIGGER {} ON {}").format(autoembed_trigger, names["table"]))
        conn.execute(sql.SQL(self.function).format(**names))
        conn.execute(sql.SQL(self.trigger).format(**names))


def _create_vectorizer(conn: psycopg.Connection[Any], table: str) -> tuple[int, str, str]:
    conn.execute(
        "SELECT autoembed.create_vectorizer("
        "  %s::regclass, %s, name => %s, model => 'hash:64', backfill => false)",
        (table, list(EMBEDDED), table),
    )
    row = conn.execute(
        "SELECT id, inbox_table, embeddings_table FROM autoembed.vectorizer WHERE name = %s",
        (table,),
    ).fetchone()
    assert row is not None
    return int(row[0]), str(row[1]), str(row[2])


_DECLARE = "DECLARE\n    x pg_catalog.xid8 := pg_catalog.pg_current_xact_id();\n"


def _function(
    body: str, *, security: str = _DEFINER, notify: str = _NOTIFY, result: str = "NULL"
) -> str:
    return _FUNCTION.format(
        declare=_DECLARE if body else "", security=security, body=body + notify, result=result
    )


def row_update_variant(
    name: str,
    label: str,
    *,
    security: str = _DEFINER,
    notify: str = _NOTIFY,
    timing: Timing = "AFTER",
    body: str = _ROW_UPDATE_BODY,
) -> Variant:
    """autoembed's row-level UPDATE trigger, hand-written, with one thing changed."""
    return Variant(
        name,
        label,
        vectorizer=True,
        replaces="update",
        function=_function(
            body,
            security=security,
            notify=notify,
            result="NEW" if timing == "BEFORE" else "NULL",
        ),
        trigger=_ROW_UPDATE_TRIGGER.format(**_TIMINGS[timing]),
        scenarios=frozenset({UPDATE_EMBEDDED}),
    )


PLAIN = Variant("plain", "no trigger")
AUTOEMBED = Variant("autoembed", "autoembed", vectorizer=True)

# Design alternatives: what autoembed would cost had it chosen differently.
ALTERNATIVES = (
    Variant(
        "row_insert",
        "row-level AFTER INSERT trigger, one inbox row per row",
        vectorizer=True,
        replaces="insert",
        function=_function(_INBOX_ROW),
        trigger=_ROW_INSERT_TRIGGER,
        scenarios=frozenset({COPY}),
    ),
    Variant(
        "stmt_update",
        "statement-level AFTER UPDATE trigger with transition tables",
        vectorizer=True,
        replaces="update",
        function=_function(_STATEMENT_UPDATE_BODY, notify=_NOTIFY_IF_FOUND),
        trigger=_STATEMENT_UPDATE_TRIGGER,
        scenarios=frozenset({UPDATE_PLAIN, UPDATE_EMBEDDED}),
    ),
)

# Ablations: where the time goes, and proposals.
ABLATIONS = (
    Variant(
        "ins_capture_only",
        "statement-level INSERT trigger: transition table, empty body",
        vectorizer=True,
        replaces="insert",
        function=_function("", notify=""),
        trigger=_STATEMENT_INSERT_TRIGGER,
        scenarios=frozenset({COPY}),
    ),
    row_update_variant("upd_mirror", "hand-written copy of autoembed's UPDATE trigger"),
    row_update_variant(
        "upd_empty", "empty plpgsql row trigger", security=_INVOKER, notify="", body=""
    ),
    row_update_variant("upd_notify_only", "pg_notify only, no inbox row", body=""),
    row_update_variant("upd_no_notify", "without pg_notify", notify=""),
    row_update_variant(
        "upd_invoker", "without SECURITY DEFINER / SET search_path", security=_INVOKER
    ),
    row_update_variant("upd_before", "BEFORE instead of AFTER", timing="BEFORE"),
    row_update_variant(
        "upd_throttled", "pg_notify at most every 250 ms per session", notify=_NOTIFY_THROTTLED
    ),
    row_update_variant(
        "upd_throttled_invoker",
        "throttled pg_notify, without DEFINER / SET search_path",
        notify=_NOTIFY_THROTTLED,
        security=_INVOKER,
    ),
    row_update_variant(
        "upd_throttled_before",
        "throttled pg_notify, BEFORE instead of AFTER",
        notify=_NOTIFY_THROTTLED,
        timing="BEFORE",
    ),
    row_update_variant(
        "upd_deferred",
        "deferred constraint trigger, NOTIFY throttled at commit",
        notify=_NOTIFY_THROTTLED,
        timing="DEFERRED",
    ),
)

VARIANTS = {v.name: v for v in (PLAIN, AUTOEMBED, *ALTERNATIVES, *ABLATIONS)}
