"""The same text embedded twice with the same model version on the same
device gives the identical vector, whatever else it is embedded with (real
all-MiniLM-L6-v2: a text padded to a longer neighbour's length gets other
last bits, so the worker never pads)."""

from __future__ import annotations

import numpy as np
import pytest

from autoembed.worker.embedders import DEFAULT_MODEL, load_embedder

pytestmark = pytest.mark.model

TEXT = "Hypoglycemic episodes and risk of dementia in older patients with type 2 diabetes."
NEIGHBOURS = [
    "short",
    "a much longer text about proteins, cells and the immune response " * 6,
    "Another sentence of a similar length, about something else entirely.",
]


def test_a_text_gets_the_identical_vector_in_any_company() -> None:
    embedder = load_embedder(DEFAULT_MODEL)
    alone = embedder.embed([TEXT])[0]
    again = embedder.embed([TEXT])[0]
    among = embedder.embed([NEIGHBOURS[0], TEXT, *NEIGHBOURS[1:]])[1]
    repeated = embedder.embed([TEXT, TEXT, NEIGHBOURS[1]])
    assert alone.tobytes() == again.tobytes()
    assert alone.tobytes() == among.tobytes()
    assert repeated[0].tobytes() == repeated[1].tobytes() == alone.tobytes()
    # ... and the same as the model gives it alone (no padding)
    model_alone = np.asarray(embedder.model.encode([TEXT]), dtype=np.float32)[0]  # type: ignore[attr-defined]
    assert alone.tobytes() == model_alone.tobytes()


def test_padding_is_what_changes_the_last_bits() -> None:
    """Why the worker groups texts by length: the model's own batching pads
    a text to its longest neighbour, which changes its vector slightly."""
    embedder = load_embedder(DEFAULT_MODEL)
    model = embedder.model  # type: ignore[attr-defined]
    alone = np.asarray(model.encode([TEXT]), dtype=np.float32)[0]
    padded = np.asarray(model.encode([TEXT, NEIGHBOURS[1]], batch_size=2), dtype=np.float32)[0]
    assert np.allclose(alone, padded, atol=1e-5)
    assert alone.tobytes() != padded.tobytes()
