"""The campaign benchmark's report: a phase's samples summarized (percentiles
of the searches per method and of the inserts), the table printed at the end,
and the number formatting it and the progress lines use."""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from campaign_load import METHODS, K, Phase, Probe, SearchSample

from autoembed.evaluation.metrics import percentile


def search_stats(samples: list[SearchSample], method: str) -> dict[str, Any]:
    ok = [s.ms for s in samples if s.method == method and s.error is None]
    errors = [s.error for s in samples if s.method == method and s.error is not None]
    return {
        "n": len(ok),
        "p50": percentile(ok, 50),
        "p95": percentile(ok, 95),
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
    }


def probe_stats(probes: list[Probe]) -> dict[str, Any]:
    ok = [p.ms for p in probes if p.ms is not None and p.error is None]
    return {
        "n": len(ok),
        "p50": percentile(ok, 50),
        "p95": percentile(ok, 95),
        "max": max(ok) if ok else float("nan"),
        "timeouts": sum(1 for p in probes if p.ms is None and p.error is None),
        "errors": sum(1 for p in probes if p.error is not None),
        "not_found_by_bm25": sum(1 for p in probes if p.ms is not None and not p.found_by_bm25),
    }


def ratio(a: float, b: float) -> float:
    return b / a if a and a == a and b == b else float("nan")


def fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if value != value:
            return "-"
        if abs(value) >= 100:
            return f"{value:,.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.{digits}f}"
    return str(value)


def table_lines(r: dict[str, Any]) -> list[str]:
    idle, during = r["phases"]["idle"]["summary"], r["phases"]["campaign"]["summary"]
    c, raw, q = r["campaign"], r["raw_encode"], r["quality"]
    w = 60
    lines = [f"{'metric':<{w}}{'idle':>10}{'campaign':>12}{'ratio':>9}"]
    labels = {"semantic": "search(vector)", "bm25": "bm25_search", "hybrid": "hybrid_search"}
    for m in METHODS:
        for p in ("p50", "p95"):
            a, b = idle["search"][m][p], during["search"][m][p]
            n = f"n {idle['search'][m]['n']}/{during['search'][m]['n']}"
            title = f"{m} {p} ms ({labels[m]}, k={K}; {n})"
            lines.append(f"{title:<{w}}{fmt(a):>10}{fmt(b):>12}{fmt(ratio(a, b)):>8}x")
    for p in ("p50", "p95"):
        a, b = idle["insert"][p], during["insert"][p]
        n = f"n {idle['insert']['n']}/{during['insert']['n']}"
        title = f"INSERT -> searchable {p} ms ({n})"
        lines.append(f"{title:<{w}}{fmt(a):>10}{fmt(b):>12}{fmt(ratio(a, b)):>8}x")
    cpu_idle, cpu_during = r["phases"]["idle"]["cpu"], r["phases"]["campaign"]["cpu"]
    for key, label in (
        ("worker", "the worker's processes"),
        ("postgres", "PostgreSQL"),
        ("this_process", "this process (searches, inserts, polls)"),
        ("others", "everything else on the machine"),
    ):
        title = f"CPU cores busy: {label}"
        a, b = cpu_idle[f"{key}_cores"], cpu_during[f"{key}_cores"]
        lines.append(f"{title:<{w}}{fmt(a):>10}{fmt(b):>12}")
    lines.append("")
    lines.append(f"{'campaign ' + c['from'] + ' -> ' + c['to']:<{w}}{'value':>10}")
    sample = (
        f"all {raw['documents']} documents"
        if raw["sample_of_all"]
        else f"random sample of {raw['documents']} of {c['rows_total']:,} documents"
    )
    rows = [
        ("rows (the table when set_model ran)", fmt(c["rows_total"])),
        ("chunks written to the new version", fmt(c["chunks"])),
        ("seconds, set_model -> active", fmt(c["seconds"], 1)),
        ("campaign rows/s (rows / seconds)", fmt(c["rows_per_second"])),
        ("raw SentenceTransformer.encode rows/s (batch 32)", fmt(raw["rows_per_second"])),
        (f"  over {sample}, {raw['chunks']} chunks", ""),
        ("campaign / raw encode", fmt(c["efficiency"])),
        (
            "autoembed's embedder in-process, a document a call: rows/s",
            fmt(raw["embed_path"]["rows_per_second"]),
        ),
        ("campaign / that", fmt(c["efficiency_embed_path"])),
        (
            "rows per CPU second: worker | raw encode",
            f"{fmt(c['rows_per_worker_cpu_s'])} | {fmt(raw['rows_per_cpu_s'])}",
        ),
        ("campaign / raw encode, per CPU second", fmt(c["efficiency_per_cpu_s"])),
        (
            "campaign chunks/s | raw encode chunks/s",
            f"{fmt(c['chunks_per_second'])} | {fmt(raw['chunks_per_second'])}",
        ),
    ]
    lines += [f"{label:<{w}}{value:>10}" for label, value in rows]
    lines.append("")
    v1, v2 = q["versions"]
    title = f"quality: semantic, {q['queries']} {q['split']} queries"
    lines.append(f"{title:<{w}}{'v1 MiniLM':>10}{'v2 mpnet':>12}{'v2-v1':>9}")
    for key, label in (("ndcg@10", "nDCG@10"), ("recall@100", "Recall@100"), ("mrr@10", "MRR@10")):
        lines.append(
            f"{label:<{w}}{fmt(v1[key], 3):>10}{fmt(v2[key], 3):>12}{v2[key] - v1[key]:>+9.3f}"
        )
    h1, h2 = r["version_health"]
    for key in ("mean_pair_cosine", "mean_norm"):
        lines.append(f"{'version_health ' + key:<{w}}{fmt(h1[key], 3):>10}{fmt(h2[key], 3):>12}")
    cmp_ = r["compare_versions"]
    overlap = cmp_.get("mean_overlap")
    title = f"compare_versions mean overlap@{K} ({cmp_.get('queries', 0)} queries)"
    error = f"   error: {cmp_['error']}" if "error" in cmp_ else ""
    lines.append(f"{title:<{w}}{fmt(overlap, 3):>10}{error}")
    return lines


def phase_json(p: Phase) -> dict[str, Any]:
    """The phase's samples, summarized up to its cutoff."""
    end = p.seconds if p.cutoff is None else p.cutoff
    searches = [s for s in p.searches if s.t <= end]
    probes = [x for x in p.probes if x.t <= end]
    return {
        "seconds": round(p.seconds, 1),
        "started_at": datetime.fromtimestamp(p.wall_start, UTC).isoformat(timespec="milliseconds"),
        "cpu": p.cpu,
        "summarized_until_s": round(end, 1),
        "after_cutoff": {
            "searches": len(p.searches) - len(searches),
            "inserts": len(p.probes) - len(probes),
        },
        "summary": {
            "search": {m: search_stats(searches, m) for m in METHODS},
            "insert": probe_stats(probes),
        },
        "progress": p.progress,
        "searches": [asdict(s) for s in p.searches],
        "probes": [asdict(x) for x in p.probes],
    }
