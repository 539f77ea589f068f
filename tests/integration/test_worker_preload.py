"""What a worker process loads as it starts (worker/preload.py): the models
of every vectorizer's active version and of a campaign's building version,
not those of versions only kept current (ready, retired)."""

from __future__ import annotations

from autoembed.settings import Settings
from autoembed.worker.embedders import _load, load_embedder
from autoembed.worker.preload import models_in_use, preload_models
from tests.conftest import drain
from tests.integration.helpers import Conn, make_texts


def test_the_models_of_active_and_building_versions(conn: Conn, db_url: str) -> None:
    make_texts(conn, ["apples and pears", "fast cars"], model="hash:16")
    make_texts(conn, ["the roman empire"], name="notes", model="hash:8")
    conn.execute("SELECT autoembed.set_model('notes', 'hash:12')")
    drain(db_url)  # notes: hash:12 active, hash:8 retired
    conn.execute("SELECT autoembed.set_model('docs', 'hash:24', activate => 'manual')")
    assert conn.execute(
        "SELECT model, state FROM autoembed.vectorizer_versions ORDER BY vectorizer, version"
    ).fetchall() == [
        ("hash:16", "active"),
        ("hash:24", "building"),
        ("hash:8", "retired"),
        ("hash:12", "active"),
    ]
    assert models_in_use(db_url) == ["hash:12", "hash:16", "hash:24"]

    _load.cache_clear()
    assert preload_models(Settings(database_url=db_url)) == ["hash:12", "hash:16", "hash:24"]
    # Loaded as a task loads them: its calls find them.
    loaded = _load.cache_info()
    for model in ("hash:12", "hash:16", "hash:24"):
        load_embedder(model, Settings().device)
    assert _load.cache_info().hits == loaded.hits + 3
    assert _load.cache_info().misses == loaded.misses == 3
