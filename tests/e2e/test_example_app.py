"""The example FastAPI app (examples/fastapi_app) as its docstring runs it:
a dev-mode worker (``autoembed dev``, its own broker) embeds the rows and the
queries; the app creates articles (waiting until they are searchable),
searches with a category filter and pages, and finds similar articles. Then
SIGTERM stops the worker and its broker."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.e2e.conftest import DevWorker

ARTICLES = [
    (1, "Trail running", "Shoes and socks for muddy trails", "outdoor"),
    (2, "Rain gear", "A waterproof jacket with a hood", "outdoor"),
    (3, "Cooking outdoors", "Gas stoves and pans for camp", "kitchen"),
    (4, "Waterproof boots", "Boots that keep rain and mud out", "outdoor"),
    (5, "Waterproof aprons", "Aprons for a wet kitchen", "kitchen"),
]


def test_create_search_filter_page_and_similar_with_a_dev_worker(
    db_url: str,
    monkeypatch: pytest.MonkeyPatch,
    repo_root: str,
    start_dev_worker: Callable[..., DevWorker],
) -> None:
    monkeypatch.setenv("AUTOEMBED_EXAMPLE_MODEL", "hash:64")
    monkeypatch.delenv("AUTOEMBED_QUERY_EMBEDDING", raising=False)  # the default: the worker
    monkeypatch.syspath_prepend(str(repo_root))
    sys.modules.pop("examples.fastapi_app.app", None)
    app_module = importlib.import_module("examples.fastapi_app.app")
    worker = start_dev_worker(db_url)

    with TestClient(app_module.create_app(db_url)) as client:  # creates the table
        for i, title, body, category in ARTICLES:
            created = client.post(
                "/articles",
                params={"wait": "true"},
                json={"id": i, "title": title, "body": body, "category": category},
            )
            assert created.status_code == 201, created.text
            assert created.json() == {"id": i, "searchable": True}

        def search(**params: Any) -> list[dict[str, Any]]:
            response = client.get("/search", params=params)
            assert response.status_code == 200, response.text
            return list(response.json())

        hits = search(q="waterproof jacket", k=3)
        assert hits[0]["id"] == 2
        assert [h["rank"] for h in hits] == [1, 2, 3]
        kitchen = search(q="waterproof jacket", k=3, category="kitchen")
        assert {h["id"] for h in kitchen} == {3, 5}  # both kitchen rows, no fewer
        pages = search(q="waterproof", k=2, page=1) + search(q="waterproof", k=2, page=2)
        assert [h["id"] for h in pages] == [h["id"] for h in search(q="waterproof", k=4)]
        assert [h["rank"] for h in pages] == [1, 2, 3, 4]

        similar = client.get("/articles/4/similar", params={"k": 2})
        assert similar.status_code == 200, similar.text
        assert 4 not in [h["id"] for h in similar.json()]
        assert client.get("/articles/99/similar").status_code == 404
        assert client.get("/search", params={"q": ""}).status_code == 422

    broker = worker.broker_socket()
    assert broker.exists()
    worker.proc.terminate()
    assert worker.proc.wait(30) == 0, worker.describe()
    assert not broker.exists(), "the dev worker's broker outlived it"
    worker.assert_clean_log()
