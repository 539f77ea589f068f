"""An Alembic project in a directory, as ``alembic init`` makes it, whose
env.py compares the database with the models in ``models.py`` (autoembed's
own tables left out): for the tests of autoembed.alembic."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config

from autoembed.db import sqlalchemy_url

ENV_PY = """
import importlib.util, uuid
import sqlalchemy as sa
from alembic import context
import autoembed.alembic

config = context.config
spec = importlib.util.spec_from_file_location(
    f"models_{uuid.uuid4().hex}", config.get_main_option("models_path"))
models = importlib.util.module_from_spec(spec)
spec.loader.exec_module(models)
target_metadata = models.Base.metadata
options = dict(target_metadata=target_metadata, include_object=autoembed.alembic.include_object)

if context.is_offline_mode():
    context.configure(url=config.get_main_option("sqlalchemy.url"), literal_binds=True,
                      dialect_opts={"paramstyle": "named"}, **options)
    with context.begin_transaction():
        context.run_migrations()
else:
    engine = sa.create_engine(config.get_main_option("sqlalchemy.url"), poolclass=sa.pool.NullPool)
    with engine.connect() as connection:
        context.configure(connection=connection, **options)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()
"""

MODELS = """
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from autoembed.sqlalchemy import Vectorizer

class Base(DeclarativeBase):
    pass

class Product(Base):
    __tablename__ = "products"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str]
    description: Mapped[str]
    embeddings = Vectorizer(columns={columns!r}, model={model!r}, chunk_tokens=64, chunk_overlap=8)
"""


def write_models(path: Path, columns: list[str], model: str = "hash:64") -> None:
    path.write_text(textwrap.dedent(MODELS).format(columns=columns, model=model))


def load_models(path: Path) -> Any:
    import importlib.util
    import uuid

    spec = importlib.util.spec_from_file_location(f"models_{uuid.uuid4().hex}", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def autogenerate(cfg: Config, message: str) -> str:
    """Run `alembic revision --autogenerate`; the new script's upgrade() body."""
    script = command.revision(cfg, message=message, autogenerate=True)
    assert script is not None
    text = Path(script.path).read_text()  # type: ignore[union-attr]
    return text.split("def upgrade()")[1].split("def downgrade()")[0]


def ops(body: str) -> list[str]:
    return re.findall(r"op\.(\w+)\(", body)


def alembic_project(directory: Path, db_url: str) -> Config:
    """``alembic init`` in directory, with ENV_PY, against db_url; the models
    are read from directory/models.py."""
    cfg = Config(str(directory / "alembic.ini"))
    cfg.set_main_option("script_location", str(directory / "migrations"))
    command.init(cfg, str(directory / "migrations"))
    (directory / "migrations" / "env.py").write_text(ENV_PY)
    cfg.set_main_option("sqlalchemy.url", sqlalchemy_url(db_url))
    cfg.set_main_option("models_path", str(directory / "models.py"))
    return cfg
