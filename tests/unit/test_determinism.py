"""What a model version's vectors depend on (real all-MiniLM-L6-v2): the
same text embedded the same way twice gets the identical vector; in other
company it differs by float rounding only; and the worker never pads a text
to a longer neighbour's length (it embeds texts of equal token count
together, which on a CPU is also faster than padded batches)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from autoembed.worker.embedders import DEFAULT_MODEL, load_embedder

pytestmark = pytest.mark.model

TITLES = Path(__file__).resolve().parent.parent / "data" / "scifact_titles.jsonl"


def titles(n: int) -> list[str]:
    with TITLES.open(encoding="utf-8") as f:
        return [json.loads(line)["title"] for line, _ in zip(f, range(n), strict=False)]


def test_the_same_text_embedded_the_same_way_gets_the_identical_vector() -> None:
    embedder = load_embedder(DEFAULT_MODEL)
    texts = titles(64)
    first, again = embedder.embed(texts), embedder.embed(texts)
    assert first.tobytes() == again.tobytes()
    for text in texts[:8]:
        assert embedder.embed([text]).tobytes() == embedder.embed([text]).tobytes()


def test_in_other_company_a_vector_differs_by_float_rounding_only() -> None:
    embedder = load_embedder(DEFAULT_MODEL)
    texts = titles(64)
    together = embedder.embed(texts)
    alone = np.stack([embedder.embed([t])[0] for t in texts])
    assert np.abs(together - alone).max() < 1e-6
    cosines = (together * alone).sum(axis=1)
    assert cosines.min() > 1 - 1e-6


def test_texts_are_never_padded(monkeypatch: pytest.MonkeyPatch) -> None:
    embedder = load_embedder(DEFAULT_MODEL)
    model: Any = embedder.model  # type: ignore[attr-defined]
    calls: list[list[str]] = []
    encode = model.encode

    def recording(texts: list[str], **options: Any) -> Any:
        calls.append(list(texts))
        return encode(texts, **options)

    monkeypatch.setattr(model, "encode", recording)
    texts = [*titles(40), "short", "a much longer text about proteins and cells " * 30]
    embedder.embed(texts)
    assert sum(len(c) for c in calls) == len(texts)
    for call in calls:
        lengths = {min(embedder.count_tokens(t), embedder.max_seq_length) for t in call}
        assert len(lengths) == 1, call  # one length per model call: nobody padded
