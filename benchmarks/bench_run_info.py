"""What a benchmark's JSON says about its run: which benchmark, when, the
command, ``git describe`` of the checkout, and the machine (CPU, memory, GPU,
load average; with ``libraries``, the versions of torch, sentence-transformers
and psycopg)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


def machine(load_start: tuple[float, float, float], *, libraries: bool = False) -> dict[str, Any]:
    cpu = "unknown"
    with open("/proc/cpuinfo", encoding="utf-8") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo", encoding="utf-8") as f:
        mem_kb = int(next(line.split()[1] for line in f if line.startswith("MemTotal")))
    try:
        import torch

        gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:
        gpu = None
    out = {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "memory_gb": round(mem_kb / 1024 / 1024),
        "gpu": gpu,
        "platform": platform.platform(),
        "python": platform.python_version(),
    }
    if libraries:
        import psycopg
        import sentence_transformers
        import torch

        out |= {
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "sentence_transformers": sentence_transformers.__version__,
            "psycopg": psycopg.__version__,
        }
    return out | {"loadavg_start": load_start, "loadavg_end": os.getloadavg()}


def git_revision() -> str:
    out = subprocess.run(
        ["git", "describe", "--always", "--dirty"], cwd=REPO, capture_output=True, text=True
    )
    return out.stdout.strip() or "unknown"


def run_info(benchmark: str) -> dict[str, Any]:
    """The first keys of a benchmark's JSON: its name, the date, the command, the revision."""
    return {
        "benchmark": benchmark,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": [Path(sys.executable).name, *sys.argv],
        "autoembed_revision": git_revision(),
    }
