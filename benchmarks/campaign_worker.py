"""The campaign benchmark's worker and its CPU clock: ``autoembed worker --db URL
--broker URL`` run as a process group of its own (its log under the data
directory), waited for until its query service answers a text query; and the CPU
seconds the worker, PostgreSQL, this process and everything else on the machine
use (from /proc), per phase."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
from campaign_base import Conn

from autoembed.embedded import EmbeddedPostgres

TICK = os.sysconf("SC_CLK_TCK")


def _proc_stats() -> list[tuple[int, int, int, float]]:
    """(pid, ppid, process group, CPU seconds incl. reaped children) of every process."""
    out = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        ticks = sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
        out.append((int(entry.name), int(fields[1]), int(fields[2]), ticks / TICK))
    return out


class CpuMeter:
    """CPU seconds used, cumulative: the whole machine (busy, from
    /proc/stat), the worker's process group (main process, pool, query
    service), the PostgreSQL server (postmaster and its children), this
    process, and everything else (other users of the machine)."""

    def __init__(self, pg: EmbeddedPostgres) -> None:
        self.pg_data = pg.data_dir
        self.worker_group: int | None = None

    def _postmaster(self) -> int | None:
        try:
            return int((self.pg_data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def snapshot(self) -> dict[str, float]:
        with open("/proc/stat", encoding="ascii") as f:
            ticks = [int(x) for x in f.readline().split()[1:]]
        total = sum(ticks[:8]) / TICK  # user nice system idle iowait irq softirq steal
        idle = (ticks[3] + ticks[4]) / TICK
        procs = _proc_stats()
        postmaster = self._postmaster()
        me = os.getpid()
        return {
            "wall": time.monotonic(),
            "machine_total": total,
            "machine_busy": total - idle,
            "worker": sum(c for _p, _pp, g, c in procs if g == self.worker_group),
            "postgres": sum(c for p, pp, _g, c in procs if postmaster in (p, pp)),
            "this_process": sum(c for p, _pp, _g, c in procs if p == me),
        }

    def since(self, before: dict[str, float]) -> dict[str, float]:
        """Seconds of CPU each used since ``before``, and the wall seconds;
        "cores": each as the average number of cores it kept busy."""
        now = self.snapshot()
        d = {k: now[k] - before[k] for k in now}
        d["others"] = d["machine_busy"] - d["worker"] - d["postgres"] - d["this_process"]
        wall = d.pop("wall")
        out = {k: round(v, 2) for k, v in d.items()}
        out["wall"] = round(wall, 2)
        cores = {k: round(d[k] / wall, 2) for k in ("worker", "postgres", "this_process", "others")}
        return out | {f"{k}_cores": v for k, v in cores.items()}


class Worker:
    """``autoembed worker --db URL --broker URL`` in a process group of its own."""

    def __init__(self, url: str, broker: str, log_path: Path, extra_env: dict[str, str]) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AUTOEMBED_")}
        env.update(HF_HUB_OFFLINE="1", **extra_env)
        self.log_path = log_path
        self.env = {k: v for k, v in env.items() if k.startswith("AUTOEMBED_")}
        with log_path.open("wb") as log:  # the child keeps its own copy
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "autoembed.cli",
                    "worker",
                    "--db",
                    url,
                    "--broker",
                    broker,
                    "--loglevel",
                    "INFO",
                ],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def problems(self) -> list[str]:
        return [
            line
            for line in self.log().splitlines()
            if "Traceback" in line or " ERROR " in line or "ERROR/" in line
        ]

    def stop(self) -> None:
        """SIGTERM (warm shutdown), then SIGKILL to its process group (the
        pool and the query service)."""
        if self.proc.poll() is None:
            self.proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(20)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        if self.proc.poll() is None:
            self.proc.wait(10)


def wait_for_queries(conn: Conn, name: str, worker: Worker, timeout_s: float = 300) -> float:
    """Until the worker's query service answers a text query (it loads the
    model first); seconds waited."""
    t = time.monotonic()
    conn.execute("SET autoembed.query_timeout = '30s'")
    while True:
        try:
            conn.execute("SELECT count(*) FROM autoembed.search(%s, %s, 1)", (name, "warm-up"))
            return time.monotonic() - t
        except psycopg.Error as e:
            error = str(e).strip()
        if not worker.alive():
            raise RuntimeError(f"the worker exited; see {worker.log_path}")
        if time.monotonic() - t > timeout_s:
            raise RuntimeError(f"no worker answered a text query in {timeout_s:.0f}s: {error}")
        time.sleep(1)
