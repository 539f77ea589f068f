"""Read-your-writes from SQLAlchemy: wait until committed changes are
searchable (``autoembed.wait_embedded``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from autoembed.sqlalchemy._search import row_key

if TYPE_CHECKING:
    from autoembed.sqlalchemy._declarative import Vectorizer
    from autoembed.sqlalchemy._query import Bind

WAIT = sa.text(
    "SELECT autoembed.wait_embedded(CAST(:name AS text), CAST(:key AS jsonb), "
    "make_interval(secs => CAST(:timeout AS float8)), CAST(:version AS text))"
)


def wait_embedded(
    vectorizer: Vectorizer,
    bind: Bind,
    row: Any = None,
    *,
    timeout: float = 30.0,
    version: str | None = None,
) -> bool:
    """True once ``row`` (an instance or its key; None: every change
    committed before the call) is searchable, False after ``timeout``
    seconds. Commit the change first: a worker sees only committed rows."""
    conn = bind.connection() if isinstance(bind, Session) else bind
    statement = WAIT.bindparams(
        sa.bindparam("name", vectorizer.name, type_=sa.Text),
        sa.bindparam(
            "key",
            None if row is None else row_key(vectorizer, row),
            type_=pg.JSONB(none_as_null=True),
        ),
        sa.bindparam("timeout", timeout, type_=sa.Float),
        sa.bindparam("version", version, type_=sa.Text),
    )
    return bool(conn.execute(statement).scalar_one())


async def await_embedded(
    vectorizer: Vectorizer,
    session: AsyncSession,
    row: Any = None,
    *,
    timeout: float = 30.0,
    version: str | None = None,
) -> bool:
    """``wait_embedded`` for an AsyncSession: the waiting happens in the
    database, the event loop stays free."""

    def run(sync: Session) -> bool:
        return wait_embedded(vectorizer, sync, row, timeout=timeout, version=version)

    return bool(await session.run_sync(run))
