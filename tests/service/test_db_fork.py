"""A forked process (a replaced Celery pool child) must not talk over its parent's pooled connections."""

from __future__ import annotations

import os

import sqlalchemy as sa
from sqlalchemy.orm import sessionmaker

from service.db import make_engine


def _backend_pid(factory) -> int:
    with factory() as session:
        return session.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()


def test_a_forked_child_opens_its_own_connection_while_the_parent_keeps_using_its_own(database_url: str) -> None:
    # The service's own factory, with a pool of one so "the parent's connection" is one connection.
    factory = sessionmaker(make_engine(database_url, pool_size=1, max_overflow=0))
    parent_pid = _backend_pid(factory)  # the connection now waits in the pool, inherited by the child
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # the child: query as a new pool process would, and report which server session it got
        code = 1
        try:
            os.close(read)
            os.write(write, str(_backend_pid(factory)).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write)
    with os.fdopen(read) as pipe:
        child_pid = int(pipe.read() or 0)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert child_pid and child_pid != parent_pid  # its own PostgreSQL session, not the parent's socket
    assert _backend_pid(factory) == parent_pid  # and the parent's pooled connection still works
    factory.kw["bind"].dispose()


def test_every_engine_is_made_fork_safe(database_url: str) -> None:
    engine = make_engine(database_url, pool_size=1, max_overflow=0)
    with engine.connect() as connection:
        before = connection.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()
    child = os.fork()
    if child == 0:
        code = 1
        try:
            with engine.connect() as connection:
                code = 0 if connection.execute(sa.text("SELECT pg_backend_pid()")).scalar_one() != before else 3
        finally:
            os._exit(code)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    engine.dispose()
