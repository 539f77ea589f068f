"""autoembed.alembic in a real Alembic environment (``alembic init`` in a
temporary directory) against a real database: autogenerate emits the
vectorizer, upgrade applies it, the ORM's rows are embedded and found, a
second autogenerate finds no drift, a changed declaration autogenerates an
alter, ``--sql`` renders the operations, downgrade to base removes them."""

from __future__ import annotations

import io
import textwrap
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config

from autoembed.db import connect, sqlalchemy_url
from tests.alembic_project import alembic_project, autogenerate, load_models, ops, write_models
from tests.conftest import drain, url_as_role


@pytest.fixture
def alembic_env(tmp_path: Path, db_url: str) -> Config:
    cfg = alembic_project(tmp_path, db_url)
    write_models(tmp_path / "models.py", ["name", "description"])
    return cfg


def test_autogenerate_upgrade_search_alter_and_downgrade(
    alembic_env: Config, db_url: str, tmp_path: Path
) -> None:
    cfg = alembic_env
    first = autogenerate(cfg, "products")
    assert ops(first) == ["create_table", "create_vectorizer"]
    assert "op.create_vectorizer('products', ['name', 'description'], name='products'" in first

    command.upgrade(cfg, "head")
    with connect(db_url) as c:
        assert c.execute(
            "SELECT v.columns, ver.model FROM autoembed.vectorizer AS v "
            "JOIN autoembed.vectorizer_version AS ver ON ver.vectorizer_id = v.id "
            "WHERE v.name = 'products'"
        ).fetchone() == (["name", "description"], "hash:64")

    # No drift right after the upgrade: autoembed's tables are not reported,
    # and the declared vectorizer matches the stored one.
    assert ops(autogenerate(cfg, "nothing")) == []
    command.upgrade(cfg, "head")

    # The ORM writes, the worker embeds, the ORM searches.
    models = load_models(tmp_path / "models.py")
    Product = models.Product
    engine = sa.create_engine(sqlalchemy_url(db_url), poolclass=sa.pool.NullPool)
    with sa.orm.Session(engine) as session:
        session.add_all(
            [
                Product(id=1, name="Trail shoes", description="Running shoes for muddy trails"),
                Product(id=2, name="Rain jacket", description="Waterproof jacket with a hood"),
                Product(id=3, name="Camp stove", description="Gas stove for cooking outdoors"),
            ]
        )
        session.commit()
    assert drain(db_url) is not None
    with sa.orm.Session(engine) as session:
        query = Product.embeddings.embed_query(session, "waterproof hood", embed_in="process")
        for hits in (
            Product.embeddings.semantic(query, k=3),
            Product.embeddings.bm25(query, k=3),
            Product.embeddings.hybrid(query, k=3),
        ):
            assert session.execute(hits.select()).first().Product.name == "Rain jacket"
    engine.dispose()

    # A changed declaration autogenerates an alter, which applies and reverses.
    write_models(tmp_path / "models.py", ["name"])
    altered = autogenerate(cfg, "name only")
    assert ops(altered) == ["alter_vectorizer"]
    assert "columns=['name'], existing_columns=['name', 'description']" in altered
    command.upgrade(cfg, "head")
    with connect(db_url) as c:
        assert c.execute(
            "SELECT columns FROM autoembed.vectorizer WHERE name = 'products'"
        ).fetchone() == (["name"],)
    command.downgrade(cfg, "-1")
    with connect(db_url) as c:
        assert c.execute(
            "SELECT columns FROM autoembed.vectorizer WHERE name = 'products'"
        ).fetchone() == (["name", "description"],)
    command.upgrade(cfg, "head")

    # A new model declared: autogenerate emits the campaign; once it runs,
    # the declaration matches (the building version is the declared model).
    write_models(tmp_path / "models.py", ["name"], model="hash:32")
    changed = autogenerate(cfg, "new model")
    assert ops(changed) == ["alter_vectorizer"]
    assert "model='hash:32', existing_model='hash:64'" in changed
    command.upgrade(cfg, "head")
    with connect(db_url) as c:
        states = c.execute(
            "SELECT model, state FROM autoembed.vectorizer_versions ORDER BY version"
        ).fetchall()
        assert states == [("hash:64", "active"), ("hash:32", "building")]
    assert ops(autogenerate(cfg, "nothing again")) == []
    command.upgrade(cfg, "head")

    # Downgrade to base leaves no vectorizer, no per-vectorizer object, no trigger.
    command.downgrade(cfg, "base")
    with connect(db_url) as c:
        assert c.execute("SELECT count(*) FROM autoembed.vectorizer").fetchone() == (0,)
        left = c.execute(
            "SELECT relname FROM pg_class WHERE relnamespace = 'autoembed'::regnamespace "
            "AND relname LIKE 'products%' UNION ALL "
            "SELECT proname FROM pg_proc WHERE pronamespace = 'autoembed'::regnamespace "
            "AND proname LIKE 'products%' UNION ALL "
            "SELECT tgname FROM pg_trigger WHERE tgname LIKE 'autoembed%'"
        ).fetchall()
        assert left == []
        assert c.execute("SELECT to_regclass('products')").fetchone() == (None,)


def test_offline_sql_renders_every_operation(alembic_env: Config, tmp_path: Path) -> None:
    cfg = alembic_env
    versions = tmp_path / "migrations" / "versions"
    (versions / "0001_ops.py").write_text(
        textwrap.dedent(
            """
            from alembic import op
            import autoembed.alembic  # noqa: F401

            revision = "0001"
            down_revision = None

            def upgrade():
                op.create_vectorizer("shop.items", ["title"], name="it's", model="hash:8",
                                     chunk_tokens=None, ts_config="simple")
                op.alter_vectorizer("it's", columns=["title", "body"], chunk_tokens=16,
                                    model="hash:16", paused=True, existing_columns=["title"])
                op.drop_vectorizer("it's")

            def downgrade():
                op.alter_vectorizer("it's", paused=False)
            """
        )
    )
    buffer = io.StringIO()
    cfg.output_buffer = buffer
    command.upgrade(cfg, "head", sql=True)
    sql = buffer.getvalue()
    assert (
        """SELECT autoembed.create_vectorizer(CAST('"shop"."items"' AS regclass), """
        "CAST(ARRAY['title'] AS text[]), name => 'it''s', model => 'hash:8', "
        "chunk_tokens => NULL, chunk_overlap => 32, ts_config => CAST('simple' AS regconfig))"
    ) in sql
    assert "SELECT autoembed.set_model('it''s', 'hash:16', CAST(NULL AS int))" in sql
    assert "autoembed.set_chunking('it''s', CAST(16 AS int), CAST(NULL AS int))" in sql
    assert "SELECT autoembed.set_columns('it''s', CAST(ARRAY['title', 'body'] AS text[]))" in sql
    assert "SELECT autoembed.pause('it''s')" in sql
    assert "SELECT autoembed.drop_vectorizer('it''s')" in sql


@pytest.mark.parametrize("installer", ["superuser", "owner"])
def test_install_autoembed_from_an_application_migration(
    alembic_env: Config, pg_server: Any, tmp_path: Path, installer: str
) -> None:
    """op.install_autoembed() puts autoembed into a database that lacks it,
    in the application's migration, next to its own version table; run by a
    superuser, or by an owner role that is not one, after a superuser's
    one-time steps (docs/least-privilege.md)."""
    import uuid

    name = f"bare_{uuid.uuid4().hex[:8]}"
    owner = f"owner_{uuid.uuid4().hex[:8]}"
    with connect(pg_server.url) as c:
        c.execute(f"CREATE DATABASE {name}")
    try:
        url = pg_server.url_for(name)
        if installer == "owner":
            with connect(url) as c:
                c.execute(f"CREATE ROLE {owner} LOGIN NOSUPERUSER")
                c.execute("CREATE EXTENSION vector")
                c.execute(f"GRANT CREATE ON DATABASE {name} TO {owner}")
                c.execute(f"GRANT CREATE ON SCHEMA public TO {owner}")
            url = url_as_role(url, owner)
        cfg = alembic_env
        cfg.set_main_option("sqlalchemy.url", sqlalchemy_url(url))
        (tmp_path / "migrations" / "versions" / "0001_install.py").write_text(
            textwrap.dedent(
                """
                from alembic import op
                import autoembed.alembic  # noqa: F401

                revision = "0001"
                down_revision = None

                def upgrade():
                    op.install_autoembed()
                    op.execute("CREATE TABLE pets (id int PRIMARY KEY, name text)")
                    op.create_vectorizer("pets", ["name"], model="hash:8")

                def downgrade():
                    op.drop_vectorizer("pets")
                    op.execute("DROP TABLE pets")
                    op.uninstall_autoembed()
                """
            )
        )
        command.upgrade(cfg, "head")
        with connect(url) as c:
            assert c.execute("SELECT version_num FROM autoembed.alembic_version").fetchone()
            assert c.execute("SELECT version_num FROM public.alembic_version").fetchone() == (
                "0001",
            )
            assert c.execute("SELECT name FROM autoembed.vectorizer").fetchall() == [("pets",)]
        command.downgrade(cfg, "base")
        with connect(url) as c:
            assert c.execute("SELECT to_regnamespace('autoembed')").fetchone() == (None,)
    finally:
        with connect(pg_server.url) as c:
            c.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            c.execute(f"DROP ROLE IF EXISTS {owner}")


def test_a_new_project_autogenerates_the_install_and_downgrades_to_nothing(
    alembic_env: Config, pg_server: Any, tmp_path: Path
) -> None:
    """An empty database (no autoembed): the first autogenerate installs it
    before the first vectorizer, once; downgrade to base removes all of it."""
    import uuid

    name = f"new_{uuid.uuid4().hex[:8]}"
    with connect(pg_server.url) as c:
        c.execute(f"CREATE DATABASE {name}")
    try:
        url = pg_server.url_for(name)
        cfg = alembic_env
        cfg.set_main_option("sqlalchemy.url", sqlalchemy_url(url))
        first = autogenerate(cfg, "products")
        assert ops(first) == ["install_autoembed", "create_table", "create_vectorizer"]
        command.upgrade(cfg, "head")
        with connect(url) as c:
            assert c.execute("SELECT name FROM autoembed.vectorizer").fetchall() == [("products",)]
            # what autoembed install does, op.install_autoembed() does: dblink too
            assert c.execute(
                "SELECT count(*) FROM pg_extension WHERE extname IN ('vector', 'dblink')"
            ).fetchone() == (2,)
            c.execute("INSERT INTO products VALUES (1, 'Rain jacket', 'Waterproof, a hood')")
        assert drain(url).written == 1
        with connect(url) as c:
            assert c.execute(
                "SELECT pk FROM autoembed.bm25_search('products', 'waterproof', 1)"
            ).fetchall() == [({"id": 1},)]
        assert ops(autogenerate(cfg, "nothing")) == []  # installed once
        command.downgrade(cfg, "base")
        with connect(url) as c:
            assert c.execute("SELECT to_regnamespace('autoembed')").fetchone() == (None,)
            left = c.execute(
                "SELECT tgname FROM pg_trigger WHERE tgname LIKE 'autoembed%' UNION ALL "
                "SELECT proname FROM pg_proc WHERE proname LIKE 'products%'"
            ).fetchall()
            assert left == []
    finally:
        with connect(pg_server.url) as c:
            c.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


MODEL_CHANGE = {
    "0001_products.py": """
        from alembic import op
        import autoembed.alembic  # noqa: F401

        revision = "0001"
        down_revision = None

        def upgrade():
            op.execute("CREATE TABLE products (id int PRIMARY KEY, name text, description text)")
            op.create_vectorizer("products", ["name", "description"], model="hash:64")

        def downgrade():
            op.drop_vectorizer("products")
            op.execute("DROP TABLE products")
        """,
    "0002_model.py": """
        from alembic import op
        import autoembed.alembic  # noqa: F401

        revision = "0002"
        down_revision = "0001"

        def upgrade():
            op.alter_vectorizer("products", model="hash:32", existing_model="hash:64")

        def downgrade():
            op.alter_vectorizer("products", model="hash:64", existing_model="hash:32")
        """,
}


def test_a_model_change_migration_starts_a_campaign_and_its_downgrade_switches_back(
    alembic_env: Config, db_url: str, tmp_path: Path
) -> None:
    """``op.alter_vectorizer(model=...)`` returns at once: the migration embeds
    nothing, the old version keeps serving until a worker completes the
    campaign, and the downgrade makes the retired version active again."""
    from autoembed.worker.embedders import HashingEmbedder

    cfg = alembic_env
    for name, body in MODEL_CHANGE.items():
        (tmp_path / "migrations" / "versions" / name).write_text(textwrap.dedent(body))
    command.upgrade(cfg, "0001")
    rows = [(i, f"Product {i}", f"catalogue item number {i} in stock") for i in range(1, 31)]
    rows[6] = (7, "Rain jacket", "Waterproof jacket with a hood")

    def versions(c: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
        return c.execute(
            "SELECT version, model, state, embedded_rows, pending, in_flight, failed "
            "FROM autoembed.vectorizer_versions WHERE vectorizer = 'products' ORDER BY version"
        ).fetchall()

    def top(c: psycopg.Connection[Any], dims: int, version: str | None = None) -> tuple[Any, Any]:
        """The first hit of a semantic and of a BM25 search for the jacket."""
        q = "waterproof jacket hood"
        vector = HashingEmbedder(dims).embed([q])[0]
        semantic = c.execute(
            "SELECT pk FROM autoembed.search('products', %s, 3, version => %s)", (vector, version)
        ).fetchone()
        bm25 = c.execute(
            "SELECT pk FROM autoembed.bm25_search('products', %s, 3, version => %s)", (q, version)
        ).fetchone()
        return semantic and semantic[0], bm25 and bm25[0]

    jacket = ({"id": 7}, {"id": 7})
    with connect(db_url) as c:
        with c.cursor() as cur:
            cur.executemany("INSERT INTO products VALUES (%s, %s, %s)", rows)
        drain(db_url)
        assert versions(c) == [(1, "hash:64", "active", 30, 0, 0, 0)]
        assert top(c, 64) == jacket
        v1_chunks = c.execute(
            "SELECT chunk_id, embedded_at FROM autoembed.products_embeddings_v1 ORDER BY 1"
        ).fetchall()

    command.upgrade(cfg, "head")
    with connect(db_url) as c:
        # The migration only queued the campaign: version 2 holds no chunk, its
        # queue every row; version 1 is untouched and still what searches use.
        assert versions(c) == [
            (1, "hash:64", "active", 30, 0, 0, 0),
            (2, "hash:32", "building", 0, 30, 0, 0),
        ]
        assert c.execute("SELECT count(*) FROM autoembed.products_embeddings_v2").fetchone() == (0,)
        assert c.execute("SELECT count(*) FROM autoembed.products_queue_v2").fetchone() == (30,)
        assert (
            c.execute(
                "SELECT chunk_id, embedded_at FROM autoembed.products_embeddings_v1 ORDER BY 1"
            ).fetchall()
            == v1_chunks
        )
        assert top(c, 64) == jacket
        assert c.execute("SELECT version_num FROM alembic_version").fetchone() == ("0002",)

    drain(db_url)  # a worker completes the campaign, which switches by itself
    with connect(db_url) as c:
        assert versions(c) == [
            (1, "hash:64", "retired", 30, 0, 0, 0),
            (2, "hash:32", "active", 30, 0, 0, 0),
        ]
        assert top(c, 32) == jacket
        assert top(c, 64, version="1") == jacket

    command.downgrade(cfg, "-1")
    with connect(db_url) as c:
        # Back to the retired model: kept current, so active again at once,
        # with nothing queued for either version.
        assert versions(c) == [
            (1, "hash:64", "active", 30, 0, 0, 0),
            (2, "hash:32", "retired", 30, 0, 0, 0),
        ]
        for table in ("products_queue_v1", "products_queue_v2"):
            assert c.execute(f"SELECT count(*) FROM autoembed.{table}").fetchone() == (0,)
        assert (
            c.execute(
                "SELECT chunk_id, embedded_at FROM autoembed.products_embeddings_v1 ORDER BY 1"
            ).fetchall()
            == v1_chunks
        ), "version 1's vectors were kept, not made again"
        assert top(c, 64) == jacket
        assert c.execute("SELECT version_num FROM alembic_version").fetchone() == ("0001",)
