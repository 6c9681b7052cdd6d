"""The store's SQLite threads: results, errors, order and cancellation reach the loop."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from diego.state.sqlite_threads import SQLiteThreads
from diego.state.store import _sqlite_pragmas, sqlite_url


@pytest.fixture
def threads(tmp_path: Path) -> Iterator[SQLiteThreads]:
    """Threads over a fresh SQLite file with one table."""
    made = SQLiteThreads(sa.make_url(sqlite_url(tmp_path)), _sqlite_pragmas)
    with made.engine.begin() as conn:
        conn.execute(sa.text("create table t (n integer)"))
    try:
        yield made
    finally:
        made.close()


async def test_reads_and_writes_give_their_results_and_errors(threads: SQLiteThreads) -> None:
    """A write's result and a read's come back; an error in either is raised to the caller."""
    inserted = await threads.write(
        lambda c: c.execute(sa.text("insert into t values (1), (2)")).rowcount
    )
    assert inserted == 2
    rows = await threads.read(lambda c: c.execute(sa.text("select n from t order by n")).all())
    assert [r.n for r in rows] == [1, 2]
    with pytest.raises(sa.exc.OperationalError):
        await threads.read(lambda c: c.execute(sa.text("select * from missing")).all())
    with pytest.raises(ZeroDivisionError):
        await threads.write(lambda c: 1 // 0)


async def test_writes_run_in_order_and_a_cancelled_one_not_at_all(threads: SQLiteThreads) -> None:
    """Writes queue on one thread in order; one cancelled before it starts never runs."""
    started, release = threading.Event(), threading.Event()

    def blocking(_conn: sa.Connection) -> None:
        started.set()
        release.wait()

    first = asyncio.ensure_future(threads.write(blocking))
    await asyncio.to_thread(started.wait)
    ran: list[int] = []
    second = asyncio.ensure_future(threads.write(lambda c: ran.append(2)))
    third = asyncio.ensure_future(threads.write(lambda c: ran.append(3)))
    await asyncio.sleep(0)
    second.cancel()
    release.set()
    await first
    await third
    assert ran == [3]
    assert second.cancelled()
