"""Where a search function's time goes: EXPLAIN (ANALYZE, BUFFERS) of every
statement it runs inside (its dynamic SQL included), captured with
auto_explain (log_nested_statements) and sent to this session as LOG
messages, then summarized as the nodes with the most time of their own."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import psycopg

Conn = psycopg.Connection[Any]

AUTO_EXPLAIN = {
    "auto_explain.log_min_duration": "0",
    "auto_explain.log_analyze": "on",
    "auto_explain.log_buffers": "on",
    "auto_explain.log_timing": "on",
    "auto_explain.log_nested_statements": "on",
    "auto_explain.log_format": "json",
    "client_min_messages": "log",
}


def explain(conn: Conn, statement: Any, params: Any) -> list[dict[str, Any]]:
    """Run statement once with auto_explain on; every plan it logged, outermost
    last (auto_explain logs a statement when it finishes)."""
    messages: list[str] = []

    def keep(diag: psycopg.errors.Diagnostic) -> None:
        if diag.message_primary:
            messages.append(diag.message_primary)

    conn.add_notice_handler(keep)
    try:
        conn.execute("LOAD 'auto_explain'")
        for name, value in AUTO_EXPLAIN.items():
            conn.execute("SELECT set_config(%s, %s, false)", (name, value))
        conn.execute(statement, params).fetchall()
    finally:
        for name in AUTO_EXPLAIN:
            conn.execute("SELECT set_config(%s, NULL, false)", (name,))
        conn.execute("RESET auto_explain.log_min_duration")
        conn.execute("RESET client_min_messages")
        conn.remove_notice_handler(keep)
    return [p for p in (_plan(m) for m in messages) if p is not None]


def _plan(message: str) -> dict[str, Any] | None:
    start = message.find("{")
    if "plan:" not in message or start < 0:
        return None
    try:
        plan = json.loads(message[start:])
    except json.JSONDecodeError:
        return None
    return plan if isinstance(plan, dict) else None


def _nodes(node: dict[str, Any], depth: int = 0) -> Iterator[tuple[int, dict[str, Any]]]:
    yield depth, node
    for child in node.get("Plans", []):
        yield from _nodes(child, depth + 1)


def _total_ms(node: dict[str, Any]) -> float:
    return float(node.get("Actual Total Time", 0.0)) * max(int(node.get("Actual Loops", 1)), 1)


def _is_cte(node: dict[str, Any]) -> bool:
    return str(node.get("Subplan Name", "")).startswith("CTE ")


def _cte_times(root: dict[str, Any]) -> dict[str, float]:
    """Each CTE's run time, by name (its plan hangs under the node that owns it)."""
    return {str(n["Subplan Name"])[4:]: _total_ms(n) for _, n in _nodes(root) if _is_cte(n)}


def _own_ms(node: dict[str, Any], ctes: dict[str, float]) -> float:
    """Time in the node itself. A CTE's plan runs when a CTE Scan reads it, so
    its time is inside the reading CTE Scan's, not its owner's."""
    children = sum(_total_ms(c) for c in node.get("Plans", []) if not _is_cte(c))
    if node.get("Node Type") == "CTE Scan":
        children += ctes.get(str(node.get("CTE Name")), 0.0)
    return max(_total_ms(node) - children, 0.0)


def _describe(node: dict[str, Any], own: float) -> str:
    what = str(node.get("Node Type", "?"))
    for key in ("Index Name", "Relation Name", "Function Name", "CTE Name"):
        if key in node:
            what += f" {node[key]}"
            break
    rows = int(node.get("Actual Rows", 0)) * max(int(node.get("Actual Loops", 1)), 1)
    hit, read = node.get("Shared Hit Blocks", 0), node.get("Shared Read Blocks", 0)
    extra = ""
    if node.get("Sort Space Type") == "Disk" or node.get("Disk Usage", 0):
        extra = ", spilled to disk"
    return f"{what}: {own:.1f} ms own, {rows:,} rows, buffers hit {hit:,} read {read:,}{extra}"


def summarize(plans: list[dict[str, Any]], top: int = 3) -> list[str]:
    """One line per statement that took ≥ 1 ms (its text, time, buffers), then
    its nodes with the most time of their own."""
    lines = []
    for plan in plans:
        root = plan.get("Plan", {})
        ms = float(plan.get("Execution Time", _total_ms(root)))
        if ms < 1.0:
            continue
        text = " ".join(str(plan.get("Query Text", "")).split())
        text = text if len(text) <= 90 else text[:87] + "..."
        planning = float(plan.get("Planning Time", 0.0))
        hit, read = root.get("Shared Hit Blocks", 0), root.get("Shared Read Blocks", 0)
        lines.append(
            f"{ms:.1f} ms (planning {planning:.1f} ms; buffers hit {hit:,} read {read:,}): {text}"
        )
        ctes = _cte_times(root)
        own = sorted(
            ((_own_ms(n, ctes), i, n) for i, (_, n) in enumerate(_nodes(root))), reverse=True
        )
        lines += [f"    {_describe(n, ms)}" for ms, _, n in own[:top] if ms >= 0.5]
    return lines
