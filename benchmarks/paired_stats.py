"""Comparing timings taken side by side, in interleaved rounds, on a noisy machine.

A round runs the same work once on every contender, in a random order, close
together in time, so whatever slows the machine at that moment (another
process's fsyncs, a busy CPU) slows them alike. The figure is the median over
rounds of the per-round ratio, so that slow drifts in the load cancel out.
Outside load only ever adds time, and on a shared machine it comes in
stretches many times slower than the quiet baseline, during which a ratio
measures the load rather than the code: such busy rounds are set aside, for
every contender alike. The interval is a bootstrap over rounds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# A round is busy when its median over all contenders exceeds this multiple of
# the quietest decile of rounds.
QUIET_FACTOR = 2.0
BOOTSTRAP = 1000


@dataclass
class Series:
    """One contender's measurements in seconds, by round: wall-clock time as
    the client sees it, and the server process's CPU time."""

    wall: list[list[float]] = field(default_factory=list)
    cpu: list[list[float]] = field(default_factory=list)

    def add_round(self, measured: Sequence[tuple[float, float]]) -> None:
        self.wall.append([w for w, _ in measured])
        self.cpu.append([c for _, c in measured])

    def drop_first_round(self) -> Series:
        return Series(self.wall[1:], self.cpu[1:])


def quiet_rounds(series: Sequence[Series]) -> np.ndarray:
    """A mask of the rounds in which the machine was not visibly busy."""
    pooled = np.median(np.concatenate([np.asarray(s.wall) for s in series], axis=1), axis=1)
    return np.asarray(pooled <= QUIET_FACTOR * np.percentile(pooled, 10))


def compare(
    base: list[list[float]],
    other: list[list[float]],
    rounds: np.ndarray,
    rng: np.random.Generator,
) -> dict[str, float]:
    """other / base over the chosen rounds: the median of the per-round ratios
    (of the round's medians), a 90% bootstrap interval resampling rounds, and
    for reference the plain ratio of medians."""
    b, o = np.asarray(base)[rounds], np.asarray(other)[rounds]
    per_round = np.median(o, axis=1) / np.median(b, axis=1)
    idx = rng.integers(0, len(per_round), size=(BOOTSTRAP, len(per_round)))
    low, high = np.percentile(np.median(per_round[idx], axis=1), [5, 95])
    return {
        "ratio": float(np.median(per_round)),
        "low": float(low),
        "high": float(high),
        "ratio_of_medians": float(np.median(o) / np.median(b)),
    }


def summarize(
    samples: Mapping[str, Series], baselines: Sequence[str], rng: np.random.Generator
) -> dict[str, Any]:
    """Every contender against each baseline present: wall time over quiet
    rounds (the figure), wall time over all rounds, and server CPU time."""
    quiet = quiet_rounds(list(samples.values()))
    every = np.ones_like(quiet)
    out: dict[str, Any] = {"rounds": len(quiet), "quiet_rounds": int(quiet.sum()), "tables": {}}
    for name, s in samples.items():
        entry: dict[str, Any] = {
            "median_wall_s": float(np.median(np.asarray(s.wall)[quiet])),
            "median_cpu_s": float(np.median(s.cpu)),
        }
        for base in (b for b in baselines if b in samples and b != name):
            ref = samples[base]
            entry[f"vs_{base}"] = {
                "wall": compare(ref.wall, s.wall, quiet, rng),
                "wall_all_rounds": compare(ref.wall, s.wall, every, rng),
                "cpu": compare(ref.cpu, s.cpu, every, rng),
            }
        entry["samples"] = {"wall_s": s.wall, "cpu_s": s.cpu}
        out["tables"][name] = entry
    out["quiet_mask"] = quiet.astype(int).tolist()
    return out
