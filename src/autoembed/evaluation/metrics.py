"""Retrieval metrics, as trec_eval and BEIR compute them.

A ranking is a sequence of document ids, best first, in the order the search
function ranked them (ties in score keep that order); a document listed twice
counts once, at its first position. Judgments map document id to graded
relevance; only a grade above 0 is relevant.

- nDCG@k: gain = grade, discount log2(rank + 1); the ideal ranking is every
  relevant judged document, highest grade first (trec_eval's ``ndcg_cut``).
- Recall@k: relevant documents in the top k / relevant documents judged.
- MRR@k: 1 / the rank of the first relevant document in the top k, else 0.

A query with no relevant judgment scores 0 on all three.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

NDCG_K = 10
RECALL_K = 100
MRR_K = 10


def unique(ranking: Iterable[str]) -> list[str]:
    """The ranking with repeats removed (first position kept)."""
    return list(dict.fromkeys(ranking))


def ndcg(ranking: Sequence[str], judged: Mapping[str, int], k: int = NDCG_K) -> float:
    dcg = sum(
        max(judged.get(doc, 0), 0) / math.log2(i + 2) for i, doc in enumerate(unique(ranking)[:k])
    )
    ideal = sorted((g for g in judged.values() if g > 0), reverse=True)[:k]
    idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
    return dcg / idcg if idcg > 0 else 0.0


def recall(ranking: Sequence[str], judged: Mapping[str, int], k: int = RECALL_K) -> float:
    relevant = {doc for doc, g in judged.items() if g > 0}
    if not relevant:
        return 0.0
    return len(relevant.intersection(unique(ranking)[:k])) / len(relevant)


def reciprocal_rank(ranking: Sequence[str], judged: Mapping[str, int], k: int = MRR_K) -> float:
    for i, doc in enumerate(unique(ranking)[:k]):
        if judged.get(doc, 0) > 0:
            return 1.0 / (i + 1)
    return 0.0


@dataclass(frozen=True)
class Scores:
    ndcg10: float
    recall100: float
    mrr10: float

    def as_json(self) -> dict[str, float]:
        return {"ndcg@10": self.ndcg10, "recall@100": self.recall100, "mrr@10": self.mrr10}


def score(ranking: Sequence[str], judged: Mapping[str, int]) -> Scores:
    return Scores(ndcg(ranking, judged), recall(ranking, judged), reciprocal_rank(ranking, judged))


def mean(scores: Sequence[Scores]) -> Scores:
    """The mean over queries (0 for none)."""
    n = len(scores) or 1
    return Scores(
        sum(s.ndcg10 for s in scores) / n,
        sum(s.recall100 for s in scores) / n,
        sum(s.mrr10 for s in scores) / n,
    )


def percentile(values: Sequence[float], p: float) -> float:
    """The p-th percentile (0..100), interpolating linearly between the two
    nearest values (numpy's default); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    pos = (len(ordered) - 1) * p / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)
