"""SQLite on threads of its own: one writer, whose queue is the store's writer queue,
and readers.

Through aiosqlite and SQLAlchemy's async adaptation, one statement costs the event
loop four or five wake-ups (cursor, execute, fetch, close, and a commit or reset
per transaction), and a writer waits for each of them while it holds SQLite's only
write lock: on a busy loop the lock is held for milliseconds per write, and the
writer queue becomes the node's ceiling. Here a statement, or a whole single
statement transaction, runs start to end on a thread with the standard driver and
costs the loop one wake-up; writes queue on the writer thread itself, so one
starts the moment the one before it commits, whatever the loop is doing.

A transaction made of several statements with Python between them (``hold()``)
parks the writer thread for its duration: every write queued before it commits
first, none queued after it starts until it ends. That block then runs on the
async engine, as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection

T = TypeVar("T")

READERS = 2
"""Reader threads: SQLite releases the GIL while it steps, so two overlap a little."""


class SQLiteThreads:
    """Runs statements on a writer thread and reader threads, each with its own connection."""

    def __init__(self, url: sa.URL, on_connect: Callable[[Any, Any], None]) -> None:
        # Each connection is used by one thread only; closing them at the end happens
        # on the caller's thread, once the threads are done.
        self.engine = sa.create_engine(
            url.set(drivername="sqlite"),
            poolclass=sa.pool.NullPool,
            connect_args={"check_same_thread": False},
        )
        sa.event.listen(self.engine, "connect", on_connect)
        self._writer = _Workers(1, "sqlite-writer")
        self._readers = _Workers(READERS, "sqlite-reader")
        self._local = threading.local()
        self._opened: list[Connection] = []
        self._opened_lock = threading.Lock()

    def _connection(self) -> Connection:
        """This thread's connection, opened on first use."""
        conn: Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self.engine.connect()
            with self._opened_lock:
                self._opened.append(conn)
        return conn

    async def write(self, work: Callable[[Connection], T]) -> T:
        """``work(conn)`` in a transaction of its own on the writer thread; its result."""

        def transaction() -> T:
            conn = self._connection()
            with conn.begin():
                return work(conn)

        return await self._writer.submit(transaction)

    async def read(self, work: Callable[[Connection], T]) -> T:
        """``work(conn)`` on a reader thread; its result (rows fetched there, not later)."""

        def reading() -> T:
            conn = self._connection()
            try:
                return work(conn)
            finally:
                conn.rollback()  # ends SQLAlchemy's autobegun transaction; no SQL for a read

        return await self._readers.submit(reading)

    @contextlib.asynccontextmanager
    async def hold(self) -> AsyncIterator[None]:
        """Park the writer thread until the block ends: the block is the only writer."""
        loop = asyncio.get_running_loop()
        parked = loop.create_future()
        release = threading.Event()

        def park() -> None:
            loop.call_soon_threadsafe(_resolve, parked)
            release.wait()

        self._writer.submit(park)
        try:
            await parked
            yield
        finally:
            release.set()  # also when cancelled before parking: it then returns at once

    def close(self) -> None:
        """Finish what is queued, then close every connection."""
        self._writer.shutdown()
        self._readers.shutdown()
        with self._opened_lock:
            for conn in self._opened:
                conn.close()
            self._opened.clear()
        self.engine.dispose()


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class _Workers:
    """Threads taking work from one queue, each result handed to the event loop that
    asked for it.

    What ThreadPoolExecutor and run_in_executor do, at a fraction of the event loop's
    cost, which is what a store read costs most (bench api): no concurrent Future,
    with its Condition, chained to an asyncio one; one asyncio future, set by one
    call_soon_threadsafe. Work whose future was cancelled before it started is
    skipped, as the executor skips it.
    """

    def __init__(self, count: int, name: str) -> None:
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._work, name=f"{name}_{i}", daemon=True)
            for i in range(count)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, fn: Callable[[], T]) -> asyncio.Future[T]:
        """Run ``fn`` on one of the threads; a future of its result, on this loop."""
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.put((future, fn))
        return future

    def shutdown(self) -> None:
        """Run what is queued, then stop the threads."""
        for _ in self._threads:
            self._queue.put(None)
        for thread in self._threads:
            thread.join()

    def _work(self) -> None:
        while (job := self._queue.get()) is not None:
            future, fn = job
            if future.cancelled():
                continue
            try:
                result = fn()
            except BaseException as e:  # handed to the coroutine waiting for it
                _hand(future, _fail, e)
            else:
                _hand(future, _succeed, result)


def _hand(future: asyncio.Future[Any], deliver: Callable[[Any, Any], None], value: Any) -> None:
    with contextlib.suppress(RuntimeError):  # the loop has closed: nobody waits any more
        future.get_loop().call_soon_threadsafe(deliver, future, value)


_Job = tuple["asyncio.Future[Any]", Callable[[], Any]]


def _succeed(future: asyncio.Future[Any], result: Any) -> None:
    if not future.done():
        future.set_result(result)


def _fail(future: asyncio.Future[Any], error: BaseException) -> None:
    if not future.done():
        future.set_exception(error)
