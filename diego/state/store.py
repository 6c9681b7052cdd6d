"""The BBS store: Tasks in SQL (SQLite by default, PostgreSQL alike).

Every change is a lifecycle verb done as a compare-and-swap: read the row, let
the pure rules in ``diego.models.lifecycle`` decide the new Task, then
``UPDATE ... WHERE guid = ? AND version = ?``. The row count says who won; a
loser reads again and the rules decide whether its verb still applies. Verbs
return ``(before, after)``; publishing events is the caller's job, after commit.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import attrs
import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from diego.models import lifecycle
from diego.models.cells import CellPresence
from diego.models.codec import decode, encode
from diego.models.errors import TaskGuidAlreadyExists, TaskNotFound
from diego.models.task import Task, TaskCreateRequest, TaskState
from diego.state.schema import cells, tasks

log = logging.getLogger("diego.state")

MIGRATIONS = Path(__file__).parent / "migrations"

TaskChange = tuple[Task, Task]
"""What a verb returns: the Task before and after it."""

MAX_CAS_ATTEMPTS = 16
"""Rounds of read-decide-swap before a verb gives up on a row others keep changing."""


class StoreConflict(Exception):
    """A verb lost its compare-and-swap more than MAX_CAS_ATTEMPTS times in a row."""


@attrs.frozen
class Page:
    """One page of a listing, and the cursor of the next (None at the end)."""

    items: tuple[Task, ...]
    next_cursor: str | None


def sqlite_url(data_dir: Path) -> str:
    """The URL of the SQLite store kept in ``data_dir``."""
    return f"sqlite+aiosqlite:///{data_dir / 'bbs.sqlite3'}"


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL: readers do not block the writer. synchronous=NORMAL in WAL mode
    # survives a killed process; only a power cut may lose the last commits.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


def _upgrade(connection: Connection) -> None:
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


class Store:
    """Tasks in SQL, changed only through lifecycle verbs."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        # SQLite takes one writer at a time. Writers queued here, in order, beat
        # writers colliding on the file lock, where SQLite's busy handler backs off
        # in growing sleeps while each holds a pooled connection (a presence
        # renewal stuck behind them could miss its TTL). PostgreSQL needs no queue.
        self._one_writer = engine.dialect.name == "sqlite"
        self._writers = asyncio.Lock()

    @contextlib.asynccontextmanager
    async def _write(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction (queued behind other writers on SQLite)."""
        if self._one_writer:
            async with self._writers, self.engine.begin() as conn:
                yield conn
        else:
            async with self.engine.begin() as conn:
                yield conn

    @classmethod
    async def open(cls, url: str) -> Store:
        """Connect to the store at ``url`` and bring its schema up to date."""
        engine = create_async_engine(url)
        if engine.dialect.name == "sqlite":
            sa.event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        async with engine.begin() as conn:
            await conn.run_sync(_upgrade)
        log.info("store-opened dialect=%s", engine.dialect.name)
        return cls(engine)

    async def close(self) -> None:
        """Close every connection."""
        await self.engine.dispose()

    # ------------------------------------------------------------ reading

    async def get_task(self, guid: str) -> Task:
        """The Task ``guid``; TaskNotFound when there is none."""
        task, _ = await self._read(guid)
        return task

    async def tasks(
        self,
        *,
        domain: str | None = None,
        cell_id: str | None = None,
        states: Sequence[TaskState] | None = None,
    ) -> list[Task]:
        """Every Task, oldest first, optionally of one domain, cell or set of states."""
        query = self._select(domain, cell_id, states)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [_task(row) for row in rows]

    async def page_of_tasks(
        self, *, limit: int, cursor: str | None = None, domain: str | None = None
    ) -> Page:
        """Up to ``limit`` Tasks after ``cursor``, oldest first; the cursor of the next page.

        A cursor names the last Task seen, so pages do not shift when Tasks are
        created or removed meanwhile.
        """
        query = self._select(domain, None, None).limit(limit + 1)
        if cursor is not None:
            created_at, guid = decode_cursor(cursor)
            query = query.where(
                sa.tuple_(tasks.c.created_at, tasks.c.guid) > sa.tuple_(created_at, guid)
            )
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        items = tuple(_task(row) for row in rows[:limit])
        more = len(rows) > limit
        return Page(items, encode_cursor(items[-1]) if more and items else None)

    @staticmethod
    def _select(
        domain: str | None, cell_id: str | None, states: Sequence[TaskState] | None
    ) -> sa.Select[Any]:
        query = sa.select(tasks).order_by(tasks.c.created_at, tasks.c.guid)
        if domain is not None:
            query = query.where(tasks.c.domain == domain)
        if cell_id is not None:
            query = query.where(tasks.c.cell_id == cell_id)
        if states is not None:
            query = query.where(tasks.c.state.in_([s.value for s in states]))
        return query

    async def _read(self, guid: str) -> tuple[Task, int]:
        async with self.engine.connect() as conn:
            row = (await conn.execute(sa.select(tasks).where(tasks.c.guid == guid))).first()
        if row is None:
            raise TaskNotFound(guid)
        return _task(row), row.version

    # ------------------------------------------------------------ verbs

    async def desire_task(self, request: TaskCreateRequest, now: int) -> Task:
        """Store a new PENDING Task; TaskGuidAlreadyExists if the guid is taken."""
        task = Task.new(request, now)
        try:
            async with self._write() as conn:
                await conn.execute(tasks.insert().values(**_columns(task), version=1))
        except IntegrityError:
            raise TaskGuidAlreadyExists(request.task_guid) from None
        return task

    async def claim_task(self, guid: str, cell_id: str, now: int) -> TaskChange:
        """PENDING → CLAIMED by ``cell_id``."""
        return await self._swap(guid, lambda t: lifecycle.claim(t, cell_id, now))

    async def start_task(self, guid: str, cell_id: str, now: int) -> TaskChange:
        """PENDING (or CLAIMED by this cell) → RUNNING on ``cell_id``."""
        return await self._swap(guid, lambda t: lifecycle.start(t, cell_id, now))

    async def complete_task(
        self, guid: str, cell_id: str, failed: bool, failure_reason: str, result: str, now: int
    ) -> TaskChange:
        """The cell ``cell_id`` finished the Task → COMPLETED."""
        return await self._swap(
            guid, lambda t: lifecycle.complete(t, cell_id, failed, failure_reason, result, now)
        )

    async def fail_task(self, guid: str, failure_reason: str, now: int) -> TaskChange:
        """PENDING, CLAIMED or RUNNING → COMPLETED and failed, wherever it runs."""
        return await self._swap(guid, lambda t: lifecycle.fail(t, failure_reason, now))

    async def cancel_task(self, guid: str, now: int) -> TaskChange:
        """PENDING, CLAIMED or RUNNING → COMPLETED, failed, "cancelled"."""
        return await self._swap(guid, lambda t: lifecycle.cancel(t, now))

    async def resolving_task(self, guid: str, now: int) -> TaskChange:
        """COMPLETED → RESOLVING."""
        return await self._swap(guid, lambda t: lifecycle.resolving(t, now))

    async def demote_task(self, guid: str, now: int) -> TaskChange:
        """RESOLVING → COMPLETED (a resolver that never finished)."""
        return await self._swap(guid, lambda t: lifecycle.demote(t, now))

    async def delete_task(
        self, guid: str, allowed: frozenset[TaskState] = lifecycle.DELETABLE
    ) -> Task:
        """Remove a Task in one of the ``allowed`` states (compare-and-delete); the Task."""
        for _ in range(MAX_CAS_ATTEMPTS):
            task, version = await self._read(guid)
            lifecycle.check_deletable(task, allowed)
            async with self._write() as conn:
                result = await conn.execute(
                    tasks.delete().where(tasks.c.guid == guid, tasks.c.version == version)
                )
            if result.rowcount == 1:
                return task
        raise StoreConflict(guid)

    # ------------------------------------------------------------ cells

    async def renew_cell_presence(self, presence: CellPresence, expires_at: int) -> None:
        """Record that a cell is alive until ``expires_at``."""
        values = {
            "zone": presence.zone,
            "presence": json.dumps(encode(presence), separators=(",", ":")),
            "expires_at": expires_at,
        }
        where = cells.c.cell_id == presence.cell_id
        for _ in range(MAX_CAS_ATTEMPTS):
            try:
                async with self._write() as conn:
                    updated = await conn.execute(cells.update().where(where).values(**values))
                    if updated.rowcount == 0:
                        await conn.execute(
                            cells.insert().values(cell_id=presence.cell_id, **values)
                        )
                return
            except IntegrityError:
                continue  # another writer inserted it first: update it instead
        raise StoreConflict(presence.cell_id)

    async def cell_presences(self, now: int) -> list[CellPresence]:
        """The cells whose presence has not expired at ``now``."""
        query = sa.select(cells.c.presence).where(cells.c.expires_at > now)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query.order_by(cells.c.cell_id))).all()
        return [decode(CellPresence, json.loads(row.presence)) for row in rows]

    async def remove_cell_presence(self, cell_id: str) -> None:
        """Forget a cell (it stopped)."""
        async with self._write() as conn:
            await conn.execute(cells.delete().where(cells.c.cell_id == cell_id))

    async def _swap(self, guid: str, rule: Callable[[Task], Task]) -> TaskChange:
        for _ in range(MAX_CAS_ATTEMPTS):
            before, version = await self._read(guid)
            after = rule(before)  # raises when the verb does not apply
            changes = {k: v for k, v in _columns(after).items() if k != "definition"}
            async with self._write() as conn:
                result = await conn.execute(
                    tasks.update()
                    .where(tasks.c.guid == guid, tasks.c.version == version)
                    .values(**changes, version=version + 1)
                )
            if result.rowcount == 1:
                return before, after
            log.debug("task-cas-lost guid=%s version=%d", guid, version)
        raise StoreConflict(guid)


def _columns(task: Task) -> dict[str, Any]:
    return {
        "guid": task.task_guid,
        "domain": task.domain,
        "state": task.state.value,
        "cell_id": task.cell_id,
        "created_at": task.created_at,
        "updated_at": task.updated_at,
        "first_completed_at": task.first_completed_at,
        "failed": task.failed,
        "failure_reason": task.failure_reason,
        "result": task.result,
        "definition": json.dumps(encode(task.request()), separators=(",", ":")),
    }


def _task(row: Any) -> Task:
    return Task.from_request(
        decode(TaskCreateRequest, json.loads(row.definition)),
        state=TaskState(row.state),
        cell_id=row.cell_id,
        failed=bool(row.failed),
        failure_reason=row.failure_reason,
        result=row.result,
        created_at=row.created_at,
        updated_at=row.updated_at,
        first_completed_at=row.first_completed_at,
    )


def encode_cursor(task: Task) -> str:
    """An opaque cursor naming ``task``'s place in the listing order."""
    raw = f"{task.created_at}:{task.task_guid}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[int, str]:
    """The (created_at, guid) a cursor names; ValueError when it is not one of ours."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        created_at, guid = raw.split(":", 1)
        return int(created_at), guid
    except (ValueError, UnicodeDecodeError, binascii.Error) as e:
        raise ValueError("not a page cursor") from e
