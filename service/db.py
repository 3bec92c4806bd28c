"""Engine and session plumbing; nothing here connects until a session is first used."""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import lru_cache

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from service.settings import get_settings

AFTER_COMMIT = "after_commit_callbacks"


# Every engine this process built. A forked child (a Celery pool process replaced after a crash,
# an OOM kill or a hard time limit) inherits their pooled connections, whose sockets the parent
# (its reconciler thread) goes on using: two processes talking over one PostgreSQL session corrupt
# each other's transactions. The child therefore drops the inherited pools, without closing the
# parent's connections, and opens its own.
_ENGINES: weakref.WeakSet[sa.Engine] = weakref.WeakSet()


def forget_inherited_connections() -> None:
    """Drop, in a new child process, the pooled connections inherited from its parent (never closing them)."""
    for engine in list(_ENGINES):
        engine.dispose(close=False)


os.register_at_fork(after_in_child=forget_inherited_connections)


def make_engine(url: str, *, pool_size: int = 10, max_overflow: int = 20) -> sa.Engine:
    """Build an engine for ``url`` with pool settings that suit its backend (safe across ``fork``)."""
    if url.startswith("sqlite"):
        engine = sa.create_engine(url, connect_args={"check_same_thread": False})
    else:
        engine = sa.create_engine(url, pool_size=pool_size, max_overflow=max_overflow, pool_pre_ping=True)
    _ENGINES.add(engine)
    return engine


@lru_cache
def get_sessionmaker(url: str | None = None) -> sessionmaker[Session]:
    """Return the process-wide session factory for ``url`` (default: the settings' database)."""
    settings = get_settings()
    engine = make_engine(
        url or settings.database_url, pool_size=settings.db_pool_size, max_overflow=settings.db_max_overflow
    )
    return sessionmaker(engine, expire_on_commit=False)


@lru_cache
def _autocommit(engine: sa.Engine) -> sa.Engine:
    return engine.execution_options(isolation_level="AUTOCOMMIT")


@contextmanager
def reading(factory: sessionmaker[Session]) -> Iterator[sa.Connection | Session]:
    """Something to run one read-only statement on, in autocommit mode.

    A transaction would cost two extra round trips (BEGIN, then ROLLBACK on close): a third of
    the time of a poll. A factory bound to a Connection (the tests' outer transaction) reads
    through a Session on that transaction instead.
    """
    bind = factory.kw.get("bind")
    if isinstance(bind, sa.Engine):
        with _autocommit(bind).connect() as connection:
            yield connection
    else:
        with factory() as session:
            yield session


def after_commit(session: Session, callback: Callable[[], None]) -> None:
    """Run ``callback`` once ``session`` has committed (used to enqueue only committed jobs)."""
    session.info.setdefault(AFTER_COMMIT, []).append(callback)


def commit(session: Session) -> None:
    """Commit ``session`` and then run the callbacks registered with ``after_commit``."""
    session.commit()
    callbacks = session.info.pop(AFTER_COMMIT, [])
    for callback in callbacks:
        callback()


def session_scope(factory: Callable[[], Session]) -> Iterator[Session]:
    """Yield a session that commits on success and rolls back on error."""
    session = factory()
    try:
        yield session
        commit(session)
    except BaseException:
        session.info.pop(AFTER_COMMIT, None)
        session.rollback()
        raise
    finally:
        session.close()
