"""``Vectorizer``: a vectorizer declared on a mapped class.

    class Article(Base):
        __tablename__ = "articles"
        id: Mapped[int] = mapped_column(primary_key=True)
        title: Mapped[str]
        body: Mapped[str]
        embeddings = Vectorizer(columns=["title", "body"], model="hash:64")

``Article.embeddings`` is then the Vectorizer: its mapped embeddings class
(``Article.embeddings.Embedding``, a row per chunk, with ``.parent``), its
searches, and its query embedding. ``article.embeddings`` is that article's
chunks. ``metadata.create_all()`` creates the vectorizer after the table, and
``metadata.drop_all()`` drops it first; Alembic autogenerate compares it
with the database (``autoembed.alembic``).
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from pgvector.sqlalchemy import Vector
from sqlalchemy import event, orm
from sqlalchemy.ext.asyncio import AsyncSession

from autoembed.sqlalchemy import _search
from autoembed.sqlalchemy import _wait as _wait
from autoembed.sqlalchemy._query import (
    Bind,
    EmbedIn,
    QueryEmbedding,
    aembed_query,
    embed_query,
)
from autoembed.sqlalchemy._spec import (
    DEFAULT_MODEL,
    VectorizerSpec,
    create_statement,
    declare,
    drop_statement,
    table_source,
)


class Vectorizer:
    """Declare a vectorizer on the mapped class this is assigned to. Options
    as ``autoembed.create_vectorizer``: ``name`` (default: the table's name),
    ``model``, ``dimensions``, ``chunk_tokens``, ``chunk_overlap``, and
    ``ts_config``, ``distance``, ``index``, ``backfill``, ``storage``
    (vector, halfvec or binary; a change is a campaign, as for ``model``)."""

    def __init__(
        self,
        columns: list[str] | tuple[str, ...],
        *,
        name: str | None = None,
        model: str = DEFAULT_MODEL,
        dimensions: int | None = None,
        chunk_tokens: int | None = None,
        chunk_overlap: int = 32,
        **options: Any,
    ) -> None:
        self._args: dict[str, Any] = dict(
            columns=tuple(columns),
            model=model,
            dimensions=dimensions,
            chunk_tokens=chunk_tokens,
            chunk_overlap=chunk_overlap,
            options=options,
        )
        self._name = name
        self._spec: VectorizerSpec | None = None
        self._embedding: type[Any] | None = None
        self.owner: type[Any] | None = None
        self.attr = ""

    def __set_name__(self, owner: type[Any], attr: str) -> None:
        self.owner = owner
        self.attr = attr

    def __get__(self, instance: Any, owner: type[Any]) -> Any:
        if instance is None:
            return self
        return getattr(instance, self._chunks_attr)

    # ------------------------------------------------------------ declaration

    @property
    def _chunks_attr(self) -> str:
        return f"_{self.attr}_chunks"

    @property
    def table(self) -> sa.Table:
        if self.owner is None:
            raise RuntimeError("a Vectorizer must be assigned to an attribute of a mapped class")
        table = orm.class_mapper(self.owner).local_table
        assert isinstance(table, sa.Table)
        return table

    @property
    def spec(self) -> VectorizerSpec:
        if self._spec is None:
            table = self.table
            self._spec = VectorizerSpec(
                name=self._name or table.name, source=table_source(table), **self._args
            )
        return self._spec

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def dimensions(self) -> int | None:
        return self.spec.known_dimensions

    def _bind(self, mapper: orm.Mapper[Any]) -> None:
        """Wire the declaration to its mapped class (once it is mapped)."""
        table = self.table
        declare(table, self.spec)
        event.listen(table, "after_create", self._after_create)
        event.listen(table, "before_drop", self._before_drop)
        embedding = self.Embedding
        mapper.add_property(
            self._chunks_attr,
            orm.relationship(
                embedding,
                primaryjoin=self._join(embedding),
                viewonly=True,
                order_by=[embedding.model_version_id, embedding.chunk_no],
            ),
        )

    def _join(self, embedding: Any) -> sa.ColumnElement[bool]:
        etable = embedding.__table__
        return sa.and_(
            *(orm.foreign(etable.c[c.name]) == c for c in self.table.primary_key.columns)
        )

    def _after_create(self, table: sa.Table, connection: sa.Connection, **kw: Any) -> None:
        if not connection.execute(sa.text("SELECT to_regnamespace('autoembed')")).scalar():
            raise RuntimeError(
                f"autoembed is not installed in this database, so vectorizer {self.name!r} "
                f"on table {table.name!r} cannot be created: run autoembed.install(url) "
                "(or op.install_autoembed() in a migration) first"
            )
        connection.execute(create_statement(self.spec, connection.dialect))

    def _before_drop(self, table: sa.Table, connection: sa.Connection, **kw: Any) -> None:
        if connection.execute(sa.text("SELECT to_regclass('autoembed.vectorizer')")).scalar():
            connection.execute(drop_statement(self.name, if_exists=True))

    @property
    def Embedding(self) -> type[Any]:
        """The mapped class of this vectorizer's embeddings table (one row per
        chunk and model version): the source's key columns, model_version_id,
        chunk_no, chunk, embedding (pgvector ``Vector``), embedded_at,
        chunk_id, and ``parent``, the source row. Kept in a MetaData of its
        own: autoembed creates and drops the table, never create_all()."""
        if self._embedding is None:
            self._embedding = self._map_embeddings()
        return self._embedding

    def _map_embeddings(self) -> type[Any]:
        spec, parent = self.spec, self.table
        registry = orm.registry()
        key = [sa.Column(c.name, c.type, primary_key=True) for c in parent.primary_key.columns]
        table = sa.Table(
            spec.embeddings_table,
            registry.metadata,
            *key,
            sa.Column("model_version_id", sa.Integer, primary_key=True),
            sa.Column("chunk_no", sa.Integer, primary_key=True),
            sa.Column("chunk", sa.Text, nullable=False),
            # the view of the active version: its dimension changes with the model
            sa.Column("embedding", Vector(), nullable=False),
            sa.Column("embedded_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("chunk_id", sa.BigInteger, nullable=False),
            schema="autoembed",
        )
        assert self.owner is not None
        cls = type(f"{self.owner.__name__}Embedding", (), {"__doc__": type(self).Embedding.__doc__})
        registry.map_imperatively(
            cls,
            table,
            properties={
                "parent": orm.relationship(
                    self.owner,
                    primaryjoin=sa.and_(
                        *(orm.foreign(table.c[c.name]) == c for c in parent.primary_key.columns)
                    ),
                    viewonly=True,
                )
            },
        )
        return cls

    @property
    def chunks(self) -> Any:
        """The relationship attribute from the model to its chunks (for
        ``selectinload(Article.embeddings.chunks)``)."""
        assert self.owner is not None
        return getattr(self.owner, self._chunks_attr)

    # ----------------------------------------------------------------- search

    def embed_query(
        self,
        bind: Bind,
        query: str,
        version: str | None = None,
        *,
        embed_in: EmbedIn | None = None,
    ) -> QueryEmbedding:
        """The query's embedding by the stored vectors' model version (of the
        active version, or of ``version``: a number, model or tag): asked of
        the database (a worker answers; the default) or, with
        ``embed_in="process"`` / AUTOEMBED_QUERY_EMBEDDING=process, embedded
        here when this process loads that exact version."""
        return embed_query(bind, self.name, query, version, embed_in=embed_in)

    async def aembed_query(
        self,
        session: AsyncSession,
        query: str,
        version: str | None = None,
        *,
        embed_in: EmbedIn | None = None,
    ) -> QueryEmbedding:
        """``embed_query`` for an AsyncSession; the model, if it runs here,
        runs off the event loop."""
        return await aembed_query(session, self.name, query, version, embed_in=embed_in)

    def wait_embedded(
        self, bind: Bind, row: Any = None, *, timeout: float = 30.0, version: str | None = None
    ) -> bool:
        """Read-your-writes: True once ``row`` (an instance or its key; None:
        every change committed before the call) is searchable, False after
        ``timeout`` seconds. Commit the change first."""
        return bool(_wait.wait_embedded(self, bind, row, timeout=timeout, version=version))

    async def await_embedded(
        self,
        session: AsyncSession,
        row: Any = None,
        *,
        timeout: float = 30.0,
        version: str | None = None,
    ) -> bool:
        """``wait_embedded`` for an AsyncSession (the event loop stays free)."""
        return bool(
            await _wait.await_embedded(self, session, row, timeout=timeout, version=version)
        )

    def semantic(self, query: _search.Query, k: int = 10, **options: Any) -> _search.SearchHits:
        """Nearest rows to a QueryEmbedding or a vector (or a text, embedded
        in the database by a worker). Options, as for every search: filter
        (column values), where (a clause on the model's columns, or SQL text;
        kept while ranking, so k rows come back when k match), offset (a
        page: ranks offset+1..offset+k), min_score, chunks, version
        (default: a QueryEmbedding's own, else the active one)."""
        return _search.semantic(self, query, k, **options)

    def similar(self, row: Any, k: int = 10, **options: Any) -> _search.SearchHits:
        """Rows like ``row`` (an instance, or its key: a value, a tuple or a
        dict) by its stored vectors, itself excluded. Options as for
        semantic. The database raises if the row is missing, not
        visible to the caller or not embedded yet."""
        return _search.similar(self, row, k, **options)

    def bm25(self, query: QueryEmbedding | str, k: int = 10, **options: Any) -> _search.SearchHits:
        """Best rows by BM25. Options as for semantic."""
        return _search.bm25(self, query, k, **options)

    def hybrid(
        self, query: QueryEmbedding | str, k: int = 10, **options: Any
    ) -> _search.SearchHits:
        """BM25 and semantic fused. Options as for semantic, and fusion,
        rrf_k, semantic_weight, candidates (page within it: offset + k <=
        candidates keeps pages slices of one ranking), normalization."""
        return _search.hybrid(self, query, k, **options)


@event.listens_for(orm.Mapper, "after_mapper_constructed")
def _on_mapper(mapper: orm.Mapper[Any], class_: type[Any]) -> None:
    for value in list(vars(class_).values()):
        if isinstance(value, Vectorizer):
            value._bind(mapper)
