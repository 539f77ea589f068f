"""The example FastAPI app (examples/fastapi_app) on a real database: its
search endpoint returns the right article first for a known query."""

from __future__ import annotations

import importlib
import sys

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from autoembed.db import sqlalchemy_url
from tests.conftest import drain


def test_search_endpoint_returns_the_right_article_first(
    db_url: str, monkeypatch: pytest.MonkeyPatch, repo_root: str
) -> None:
    monkeypatch.setenv("AUTOEMBED_EXAMPLE_MODEL", "hash:64")
    monkeypatch.syspath_prepend(str(repo_root))
    sys.modules.pop("examples.fastapi_app.app", None)
    app_module = importlib.import_module("examples.fastapi_app.app")
    Article = app_module.Article

    engine = sa.create_engine(sqlalchemy_url(db_url), poolclass=sa.pool.NullPool)
    app_module.Base.metadata.create_all(engine)  # the table and its vectorizer
    with Session(engine) as s:
        s.add_all(
            [
                Article(id=1, title="Trail running", body="Shoes and socks for muddy trails"),
                Article(id=2, title="Rain gear", body="A waterproof jacket with a hood"),
                Article(id=3, title="Cooking outdoors", body="Gas stoves and pans for camp"),
            ]
        )
        s.commit()
    engine.dispose()
    drain(db_url)

    client = TestClient(app_module.create_app(db_url))
    response = client.get("/search", params={"q": "waterproof jacket", "k": 3})
    assert response.status_code == 200
    hits = response.json()
    assert hits[0]["id"] == 2
    assert hits[0]["rank"] == 1
    assert [h["rank"] for h in hits] == list(range(1, len(hits) + 1))
