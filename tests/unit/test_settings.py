"""Settings.from_env and database URLs."""

from __future__ import annotations

import os

import pytest

from autoembed.db import sqlalchemy_url
from autoembed.settings import DEFAULT_BROKER_URL, Settings, broker_transport_options


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """An environment without any AUTOEMBED_* variable."""
    for name in list(os.environ):
        if name.startswith("AUTOEMBED_"):
            monkeypatch.delenv(name)
    return monkeypatch


def test_defaults_without_environment(env: pytest.MonkeyPatch) -> None:
    assert Settings.from_env() == Settings()
    s = Settings.from_env()
    assert s.database_url is None
    assert s.broker_url == DEFAULT_BROKER_URL
    assert s.batch_size is None
    assert s.device is None
    assert s.dispatcher


def test_every_variable_is_read(env: pytest.MonkeyPatch) -> None:
    values = {
        "AUTOEMBED_DATABASE_URL": "postgresql://u@h/db",
        "AUTOEMBED_BROKER_URL": "redis://other:6380/1",
        "AUTOEMBED_BATCH_SIZE": "64",
        "AUTOEMBED_LEASE_SECONDS": "12.5",
        "AUTOEMBED_TASK_SECONDS": "7",
        "AUTOEMBED_PARALLELISM": "3",
        "AUTOEMBED_SWEEP_SECONDS": "0.5",
        "AUTOEMBED_DEVICE": "cuda:1",
        "AUTOEMBED_DISPATCHER": "0",
        "AUTOEMBED_EMBED_CACHE": "20000",
    }
    for k, v in values.items():
        env.setenv(k, v)
    assert Settings.from_env() == Settings(
        database_url="postgresql://u@h/db",
        broker_url="redis://other:6380/1",
        batch_size=64,
        lease_seconds=12.5,
        task_seconds=7.0,
        parallelism=3,
        sweep_seconds=0.5,
        device="cuda:1",
        dispatcher=False,
        embed_cache=20000,
    )


def test_empty_variables_mean_the_default(env: pytest.MonkeyPatch) -> None:
    for k in ("AUTOEMBED_BATCH_SIZE", "AUTOEMBED_LEASE_SECONDS", "AUTOEMBED_DATABASE_URL"):
        env.setenv(k, "")
    assert Settings.from_env() == Settings()


@pytest.mark.parametrize("value", ["false", "no", "0"])
def test_the_dispatcher_can_be_turned_off(env: pytest.MonkeyPatch, value: str) -> None:
    env.setenv("AUTOEMBED_DISPATCHER", value)
    assert Settings.from_env().dispatcher is False


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("AUTOEMBED_LEASE_SECONDS", "five", "AUTOEMBED_LEASE_SECONDS must be a number, got 'five'"),
        ("AUTOEMBED_BATCH_SIZE", "1.5", "AUTOEMBED_BATCH_SIZE must be an integer, got '1.5'"),
        ("AUTOEMBED_PARALLELISM", "many", "AUTOEMBED_PARALLELISM must be an integer"),
        ("AUTOEMBED_SWEEP_SECONDS", "1s", "AUTOEMBED_SWEEP_SECONDS must be a number"),
    ],
)
def test_a_non_numeric_value_is_a_clear_error(
    env: pytest.MonkeyPatch, name: str, value: str, message: str
) -> None:
    env.setenv(name, value)
    with pytest.raises(ValueError) as info:
        Settings.from_env()
    assert message in str(info.value)


def test_require_database_url_explains_how_to_give_one(env: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="AUTOEMBED_DATABASE_URL"):
        Settings.from_env().require_database_url()
    env.setenv("AUTOEMBED_DATABASE_URL", "postgresql:///x")
    assert Settings.from_env().require_database_url() == "postgresql:///x"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://u:p@h:5432/db", "postgresql+psycopg://u:p@h:5432/db"),
        ("postgres://u@h/db", "postgresql+psycopg://u@h/db"),
        ("postgresql+psycopg://u@h/db", "postgresql+psycopg://u@h/db"),
        ("postgresql+psycopg2://u@h/db", "postgresql+psycopg://u@h/db"),
        ("postgresql:///db?host=/tmp/sock", "postgresql+psycopg:///db?host=/tmp/sock"),
    ],
)
def test_sqlalchemy_url_uses_psycopg3(url: str, expected: str) -> None:
    assert sqlalchemy_url(url) == expected


@pytest.mark.parametrize("url", ["mysql://u@h/db", "sqlite:///x.db", "dbname=x"])
def test_sqlalchemy_url_refuses_other_databases(url: str) -> None:
    with pytest.raises(ValueError, match="not a PostgreSQL URL"):
        sqlalchemy_url(url)


@pytest.mark.parametrize(
    ("var", "value", "field"),
    [
        ("AUTOEMBED_PARALLELISM", "0", "parallelism"),
        ("AUTOEMBED_LEASE_SECONDS", "-1", "lease_seconds"),
        ("AUTOEMBED_BATCH_SIZE", "0", "batch_size"),
        ("AUTOEMBED_SWEEP_SECONDS", "0", "sweep_seconds"),
    ],
)
def test_out_of_range_settings_are_refused(
    monkeypatch: pytest.MonkeyPatch, var: str, value: str, field: str
) -> None:
    monkeypatch.setenv(var, value)
    with pytest.raises(ValueError, match=field):
        Settings.from_env()


def test_broker_transport_options_default_and_override(env: pytest.MonkeyPatch) -> None:
    assert broker_transport_options() == {"visibility_timeout": 3600}
    env.setenv("AUTOEMBED_BROKER_TRANSPORT_OPTIONS", '{"visibility_timeout": 5, "x": "y"}')
    assert broker_transport_options() == {"visibility_timeout": 5, "x": "y"}


@pytest.mark.parametrize("raw", ["[1]", "visibility_timeout=5", "3"])
def test_broker_transport_options_must_be_a_json_object(env: pytest.MonkeyPatch, raw: str) -> None:
    env.setenv("AUTOEMBED_BROKER_TRANSPORT_OPTIONS", raw)
    with pytest.raises(ValueError, match="AUTOEMBED_BROKER_TRANSPORT_OPTIONS must be a JSON"):
        broker_transport_options()
