"""The BBS store: Tasks, DesiredLRPs, ActualLRPs and domains in SQL (SQLite by
default, PostgreSQL alike).

Every change is a lifecycle verb done as a compare-and-swap: read the row, let
the pure rules (``diego.models.lifecycle`` for Tasks, ``diego.models.lrp_lifecycle``
for LRPs) decide the new value, then ``UPDATE ... WHERE <key> AND version = ?``.
The row count says who won; a loser reads again and the rules decide whether its
verb still applies. Verbs return ``(before, after)``; publishing events is the
caller's job, after commit.

GA4GH TES tasks live beside them, in their own tables and verbs: ``Store.tes``
(``diego.state.tes_store``).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import functools
import hashlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import attrs
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from diego.models import lifecycle, lrp_lifecycle
from diego.models.cells import CellPresence
from diego.models.codec import decode_trusted, dumps, encode, json_schema
from diego.models.crash_policy import CrashPolicy
from diego.models.errors import (
    ActualLRPAlreadyExists,
    ActualLRPNotFound,
    DesiredLRPAlreadyExists,
    DesiredLRPNotFound,
    DiegoError,
    TaskGuidAlreadyExists,
    TaskNotFound,
)
from diego.models.lrp import ActualLRP, ActualLRPState, DesiredLRP, DesiredLRPUpdate, Domain
from diego.models.task import Task, TaskCreateRequest, TaskState
from diego.state.queries import Prepared, driver
from diego.state.schema import actual_lrps, cells, desired_lrps, domains, tasks
from diego.state.sqlite_threads import SQLiteThreads

if TYPE_CHECKING:
    from diego.state.tes_store import TesStore

log = logging.getLogger("diego.state")

MIGRATIONS = Path(__file__).parent / "migrations"

TaskChange = tuple[Task, Task]
"""What a verb returns: the Task before and after it."""

DesiredLRPChange = tuple[DesiredLRP, DesiredLRP]
"""What an update returns: the DesiredLRP before and after it."""

ActualLRPChange = tuple[ActualLRP, ActualLRP]
"""What an ActualLRP verb returns: the ActualLRP before and after it (equal: a no-op)."""

NANOS_PER_SECOND = 1_000_000_000

MAX_CAS_ATTEMPTS = 16
"""Rounds of read-decide-swap before a verb gives up on a row others keep changing."""

NO_PARAMS: Mapping[str, Any] = {}

T = TypeVar("T")
K = TypeVar("K")
R = TypeVar("R")

Known = Mapping[tuple[str, int], tuple[ActualLRP, int]]
"""ActualLRPs (not evacuating copies) as just read, by (process guid, index), with the
versions of their rows."""

_Decided = tuple[R, K, Mapping[str, Any] | None]
"""What a verb on many rows decided for one: its result, its key, and the parameters of
its write (None: nothing to write, the result stands)."""


class StoreConflict(Exception):
    """A verb lost its compare-and-swap more than MAX_CAS_ATTEMPTS times in a row."""


class _LostRace(Exception):
    """A compare-and-swap inside a larger transaction lost: roll it all back, retry."""


TaskSummary = tuple[str, str, str, int, int, int, str]
"""The columns of a Task that decide what the converger does with it, in this order:
guid, state, cell_id, created_at, updated_at, first_completed_at, completion_callback_url."""

TASK_SUMMARY = (
    "guid",
    "state",
    "cell_id",
    "created_at",
    "updated_at",
    "first_completed_at",
    "completion_callback_url",
)

DesiredLRPSummary = tuple[str, str, int]
"""The columns of a DesiredLRP that decide what the converger does with its instances,
in this order: process_guid, domain, instances."""

DESIRED_LRP_SUMMARY = ("process_guid", "domain", "instances")


BATCH = 500
"""Rows read, decided and written together by the verbs on many rows at once."""


@attrs.frozen
class Page:
    """One page of a listing, and the cursor of the next (None at the end)."""

    items: tuple[Task, ...]
    next_cursor: str | None


@attrs.frozen
class JsonPage:
    """One page of a listing, each Task as its wire JSON, and the cursor of the next."""

    items: tuple[str, ...]
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
    # Copy the WAL back into the database every 10,000 pages (40 MB), not SQLite's
    # 1,000: each checkpoint writes every page changed since the last and syncs the
    # file, so rarer ones write a page changed many times (an index page, say) once.
    # Updates spread over a big store, as a converger pass makes, cost a third less.
    cursor.execute(f"PRAGMA wal_autocheckpoint={WAL_CHECKPOINT_PAGES}")
    cursor.close()


WAL_CHECKPOINT_PAGES = 10_000
"""Pages (4 KiB) the WAL holds before a commit copies them into the database."""


def _alembic_config() -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def upgrade(connection: Connection, revision: str = "head") -> None:
    """Migrate the store on ``connection`` up to ``revision`` (the newest by default)."""
    from alembic import command

    config = _alembic_config()
    config.attributes["connection"] = connection
    command.upgrade(config, revision)


def head_revision() -> str:
    """The newest migration's revision: what a store's ``alembic_version`` says once open."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    assert head is not None
    return head


class Store:
    """Tasks and LRPs in SQL, changed only through lifecycle verbs."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        # SQLite takes one writer at a time. Writers queued on one thread, in order,
        # beat writers colliding on the file lock, where SQLite's busy handler backs
        # off in growing sleeps while each holds a connection (a presence renewal
        # stuck behind them could miss its TTL). Statements run whole on threads of
        # their own (see sqlite_threads). PostgreSQL needs neither.
        self._threads: SQLiteThreads | None = None
        database = engine.url.database
        if engine.dialect.name == "sqlite" and database and database != ":memory:":
            self._threads = SQLiteThreads(engine.url, _sqlite_pragmas)

    @contextlib.asynccontextmanager
    async def _write(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction of several statements (the only writer meanwhile, on SQLite)."""
        if self._threads is not None:
            async with self._threads.hold(), self.engine.begin() as conn:
                yield conn
        else:
            async with self.engine.begin() as conn:
                yield conn

    async def _execute(self, statement: sa.Executable) -> int:
        """One write statement in a transaction of its own; the number of rows it matched."""
        if self._threads is not None:
            return await self._threads.write(lambda conn: conn.execute(statement).rowcount)
        async with self.engine.begin() as conn:
            return (await conn.execute(statement)).rowcount

    async def _rows(self, query: Prepared, params: Mapping[str, Any] = NO_PARAMS) -> Sequence[Any]:
        """The rows of a prepared ``query`` run with ``params`` (on SQLite's driver itself)."""
        if self._threads is not None:
            compiled = query.sqlite(self._threads.engine.dialect)
            values = compiled.parameters(params)
            return await self._threads.read(lambda conn: compiled.fetch(driver(conn), values))
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query.statement, dict(params))).all()
        return [tuple(row) for row in rows] if query.tuples else rows

    @classmethod
    async def open(cls, url: str) -> Store:
        """Connect to the store at ``url`` and bring its schema up to date."""
        engine = create_async_engine(url)
        if engine.dialect.name == "sqlite":
            sa.event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        async with engine.begin() as conn:
            await conn.run_sync(upgrade)
        log.info("store-opened dialect=%s", engine.dialect.name)
        return cls(engine)

    async def close(self) -> None:
        """Close every connection."""
        if self._threads is not None:
            self._threads.close()
        await self.engine.dispose()

    @functools.cached_property
    def tes(self) -> TesStore:
        """The GA4GH TES tasks: in this database, behind this store's writer queue."""
        from diego.state.tes_store import TesStore  # imported here: it imports this module

        return TesStore(self.engine, self._write)

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
        names = None if states is None else tuple(sorted({s.value for s in states}))
        query = _task_listing(domain is not None, cell_id is not None, names)
        rows = await self._rows(query, {"domain": domain, "cell_id": cell_id})
        return [_task(row) for row in rows]

    async def pending_tasks_created(self, after: int, until: int) -> list[Task]:
        """The Tasks still PENDING that were created in (``after``, ``until``] (ns),
        oldest first: a range of the created index."""
        rows = await self._rows(_PENDING_CREATED, {"after": after, "until": until})
        return [_task(row) for row in rows]

    async def page_of_tasks(
        self, *, limit: int, cursor: str | None = None, domain: str | None = None
    ) -> Page:
        """Up to ``limit`` Tasks after ``cursor``, oldest first; the cursor of the next page.

        A cursor names the last Task seen, so pages do not shift when Tasks are
        created or removed meanwhile.
        """
        params: dict[str, Any] = {"domain": domain, "limit": limit + 1}
        if cursor is not None:
            params["after_created_at"], params["after_guid"] = decode_cursor(cursor)
        rows = await self._rows(_task_page(cursor is not None, domain is not None), params)
        items = tuple(_task(row) for row in rows[:limit])
        more = len(rows) > limit
        return Page(items, encode_cursor(items[-1]) if more and items else None)

    async def task_json(self, guid: str) -> str:
        """The Task ``guid`` as the API writes it (``dumps(encode(task))``), mostly
        without decoding it; TaskNotFound when there is none."""
        rows = await self._rows(_TASK, {"guid": guid})
        if not rows:
            raise TaskNotFound(guid)
        return _task_json(rows[0])

    async def page_of_task_json(
        self, *, limit: int, cursor: str | None = None, domain: str | None = None
    ) -> JsonPage:
        """``page_of_tasks``, each Task as the API writes it (see ``task_json``)."""
        params: dict[str, Any] = {"domain": domain, "limit": limit + 1}
        if cursor is not None:
            params["after_created_at"], params["after_guid"] = decode_cursor(cursor)
        rows = await self._rows(_task_page(cursor is not None, domain is not None), params)
        items = tuple(map(_task_json, rows[:limit]))
        last = rows[limit - 1] if len(rows) > limit else None
        return JsonPage(items, None if last is None else _cursor(last.created_at, last.guid))

    async def _read(self, guid: str) -> tuple[Task, int]:
        rows = await self._rows(_TASK, {"guid": guid})
        if not rows:
            raise TaskNotFound(guid)
        return _task(rows[0]), rows[0].version

    # ------------------------------------------------------------ verbs

    async def desire_task(self, request: TaskCreateRequest, now: int) -> Task:
        """Store a new PENDING Task; TaskGuidAlreadyExists if the guid is taken."""
        task = Task.new(request, now)
        try:
            await self._execute(tasks.insert().values(**_columns(task), version=1))
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

    async def reject_task(self, guid: str, failure_reason: str, now: int) -> TaskChange:
        """PENDING (only) → COMPLETED and failed: the auction found no cell for it."""
        return await self._swap(guid, lambda t: lifecycle.reject(t, failure_reason, now))

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
            delete = tasks.delete().where(tasks.c.guid == guid, tasks.c.version == version)
            if await self._execute(delete) == 1:
                return task
        raise StoreConflict(guid)

    async def resolve_task(self, guid: str, now: int) -> TaskChange:
        """COMPLETED → RESOLVING, and removed: one compare-and-delete; (before, resolving).

        What a consumer's DELETE does, without storing the RESOLVING Task nobody
        would see before it is removed.
        """
        for _ in range(MAX_CAS_ATTEMPTS):
            before, version = await self._read(guid)
            after = lifecycle.resolving(before, now)  # raises unless COMPLETED
            delete = tasks.delete().where(tasks.c.guid == guid, tasks.c.version == version)
            if await self._execute(delete) == 1:
                return before, after
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
        rows = await self._rows(_PRESENCES, {"now": now})
        return [decode_trusted(CellPresence, json.loads(row.presence)) for row in rows]

    async def cell_expiries(self, now: int) -> dict[str, int]:
        """The cells whose presence has not expired at ``now``: when each would (ns)."""
        rows = await self._rows(_EXPIRIES, {"now": now})
        return {row.cell_id: row.expires_at for row in rows}

    async def remove_cell_presence(self, cell_id: str) -> None:
        """Forget a cell (it stopped)."""
        await self._execute(cells.delete().where(cells.c.cell_id == cell_id))

    async def _swap(self, guid: str, rule: Callable[[Task], Task]) -> TaskChange:
        for _ in range(MAX_CAS_ATTEMPTS):
            before, version = await self._read(guid)
            after = rule(before)  # raises when the verb does not apply
            update = (
                tasks.update()
                .where(tasks.c.guid == guid, tasks.c.version == version)
                .values(**_lifecycle_columns(after), version=version + 1)
            )
            if await self._execute(update) == 1:
                return before, after
            log.debug("task-cas-lost guid=%s version=%d", guid, version)
        raise StoreConflict(guid)

    # ------------------------------------------------------------ desired LRPs

    async def desire_lrp(self, desired: DesiredLRP, now: int) -> DesiredLRP:
        """Store a new DesiredLRP, created and updated at ``now``; DesiredLRPAlreadyExists
        if its process guid is taken."""
        desired = attrs.evolve(desired, created_at=now, updated_at=now)
        try:
            await self._execute(
                desired_lrps.insert().values(**_desired_columns(desired), version=1)
            )
        except IntegrityError:
            raise DesiredLRPAlreadyExists(desired.process_guid) from None
        return desired

    async def get_desired_lrp(self, process_guid: str) -> DesiredLRP:
        """The DesiredLRP ``process_guid``; DesiredLRPNotFound when there is none."""
        desired, _ = await self._read_desired(process_guid)
        return desired

    async def desired_lrps(self, domain: str | None = None) -> list[DesiredLRP]:
        """Every DesiredLRP (of ``domain``), by process guid."""
        rows = await self._rows(_desired_listing(domain is not None), {"domain": domain})
        return [_desired(row) for row in rows]

    async def update_desired_lrp(
        self, process_guid: str, update: DesiredLRPUpdate, now: int
    ) -> DesiredLRPChange:
        """Change the fields ``update`` gives (instances, routes, annotation)."""
        where = desired_lrps.c.process_guid == process_guid
        for _ in range(MAX_CAS_ATTEMPTS):
            before, version = await self._read_desired(process_guid)
            after = lrp_lifecycle.update_desired(before, update, now)
            swap = (
                desired_lrps.update()
                .where(where, desired_lrps.c.version == version)
                .values(**_desired_columns(after), version=version + 1)
            )
            if await self._execute(swap) == 1:
                return before, after
            log.debug("desired-lrp-cas-lost process_guid=%s version=%d", process_guid, version)
        raise StoreConflict(process_guid)

    async def remove_desired_lrp(self, process_guid: str) -> DesiredLRP:
        """Remove a DesiredLRP (its ActualLRPs stay: stopping them is the caller's job)."""
        where = desired_lrps.c.process_guid == process_guid
        for _ in range(MAX_CAS_ATTEMPTS):
            desired, version = await self._read_desired(process_guid)
            delete = desired_lrps.delete().where(where, desired_lrps.c.version == version)
            if await self._execute(delete) == 1:
                return desired
        raise StoreConflict(process_guid)

    async def _read_desired(self, process_guid: str) -> tuple[DesiredLRP, int]:
        rows = await self._rows(_DESIRED, {"process_guid": process_guid})
        if not rows:
            raise DesiredLRPNotFound(process_guid)
        return _desired(rows[0]), rows[0].version

    # ------------------------------------------------------------ actual LRPs

    async def actual_lrps(
        self,
        process_guid: str | None = None,
        domain: str | None = None,
        cell_id: str | None = None,
    ) -> list[ActualLRP]:
        """Every ActualLRP, evacuating copies included, by (process_guid, index,
        evacuating), optionally of one process, domain or cell."""
        query = _actual_listing(process_guid is not None, domain is not None, cell_id is not None)
        params = {"process_guid": process_guid, "domain": domain, "cell_id": cell_id}
        return list(map(_actual_of_tuple, await self._rows(query, params)))

    async def unclaimed_actual_lrps_since(self, after: int, until: int) -> list[ActualLRP]:
        """The UNCLAIMED ActualLRPs (not evacuating) that became so in (``after``,
        ``until``] (ns): a lookup of the cell index (an UNCLAIMED one has no cell)."""
        rows = await self._rows(_UNCLAIMED_SINCE, {"after": after, "until": until})
        return list(map(_actual_of_tuple, rows))

    async def actual_lrps_versioned(self) -> list[tuple[ActualLRP, int]]:
        """Every ActualLRP with the version of its row, by (process_guid, index,
        evacuating): a verb on many of them can start from these (``known``)."""
        rows = await self._rows(_actual_listing(False, False, False))
        return [(_actual_of_tuple(row), row[-1]) for row in rows]

    async def get_actual_lrp(
        self, process_guid: str, index: int, evacuating: bool = False
    ) -> ActualLRP:
        """The ActualLRP at ``process_guid``/``index`` (its evacuating copy if
        ``evacuating``); ActualLRPNotFound when there is none."""
        actual, _ = await self._read_actual(process_guid, index, evacuating)
        return actual

    async def create_unclaimed_actual_lrp(
        self, process_guid: str, index: int, domain: str, now: int
    ) -> ActualLRP:
        """Store a new UNCLAIMED ActualLRP; ActualLRPAlreadyExists if the index has one."""
        actual = lrp_lifecycle.new_unclaimed(process_guid, index, domain, now)
        try:
            await self._execute(actual_lrps.insert().values(**_actual_columns(actual)))
        except IntegrityError:
            raise ActualLRPAlreadyExists(process_guid, index) from None
        return actual

    async def claim_actual_lrp(
        self, process_guid: str, index: int, instance_guid: str, cell_id: str, now: int
    ) -> ActualLRPChange:
        """UNCLAIMED → CLAIMED by the instance ``instance_guid`` on ``cell_id``."""
        return await self._swap_actual(
            process_guid, index, lambda a: lrp_lifecycle.claim(a, instance_guid, cell_id, now)
        )

    async def start_actual_lrp(
        self,
        process_guid: str,
        index: int,
        domain: str,
        instance_guid: str,
        cell_id: str,
        now: int,
    ) -> tuple[ActualLRP | None, ActualLRP]:
        """→ RUNNING on ``cell_id``; a missing ActualLRP is created RUNNING (before: None).
        ``domain`` is used only to create one."""
        for _ in range(MAX_CAS_ATTEMPTS):
            try:
                before, version = await self._read_actual(process_guid, index, False)
            except ActualLRPNotFound:
                after = lrp_lifecycle.new_running(
                    process_guid, index, domain, instance_guid, cell_id, now
                )
                try:
                    await self._execute(actual_lrps.insert().values(**_actual_columns(after)))
                except IntegrityError:
                    continue  # created meanwhile: start that one
                return None, after
            after = lrp_lifecycle.start(before, instance_guid, cell_id, now)
            if await self._compare_and_swap(before, version, after):
                return before, after
        raise StoreConflict(f"{process_guid}/{index}")

    async def crash_actual_lrp(
        self,
        process_guid: str,
        index: int,
        instance_guid: str,
        cell_id: str,
        reason: str,
        now: int,
        policy: CrashPolicy | None = None,
    ) -> ActualLRPChange:
        """The instance crashed: → UNCLAIMED (restart at once) or CRASHED, counted."""
        policy = policy or CrashPolicy()
        return await self._swap_actual(
            process_guid,
            index,
            lambda a: lrp_lifecycle.crash(
                a,
                instance_guid,
                cell_id,
                reason,
                now,
                immediate_restarts=policy.immediate_restarts,
                reset_after_ns=int(policy.reset_after_running_s * 1_000_000_000),
            ),
        )

    async def unclaim_actual_lrp(self, process_guid: str, index: int, now: int) -> ActualLRPChange:
        """CLAIMED or RUNNING → UNCLAIMED, off its cell."""
        return await self._swap_actual(process_guid, index, lambda a: lrp_lifecycle.unclaim(a, now))

    async def restart_actual_lrp(self, process_guid: str, index: int, now: int) -> ActualLRPChange:
        """CRASHED → UNCLAIMED, keeping its crash count."""
        return await self._swap_actual(process_guid, index, lambda a: lrp_lifecycle.restart(a, now))

    async def fail_actual_lrp_placement(
        self, process_guid: str, index: int, error: str, now: int
    ) -> ActualLRPChange:
        """UNCLAIMED stays UNCLAIMED with ``placement_error`` set."""
        return await self._swap_actual(
            process_guid, index, lambda a: lrp_lifecycle.fail_placement(a, error, now)
        )

    async def remove_actual_lrp(
        self,
        process_guid: str,
        index: int,
        instance_guid: str | None = None,
        evacuating: bool = False,
    ) -> ActualLRP:
        """Compare-and-delete an ActualLRP (its evacuating copy if ``evacuating``); when
        ``instance_guid`` is given it must be the instance's. The ActualLRP removed."""
        for _ in range(MAX_CAS_ATTEMPTS):
            actual, version = await self._read_actual(process_guid, index, evacuating)
            lrp_lifecycle.check_removable(actual, instance_guid)
            delete = actual_lrps.delete().where(
                *_actual_key(process_guid, index, evacuating), actual_lrps.c.version == version
            )
            if await self._execute(delete) == 1:
                return actual
        raise StoreConflict(f"{process_guid}/{index}")

    async def evacuate_actual_lrp(
        self, process_guid: str, index: int, instance_guid: str, cell_id: str, now: int
    ) -> tuple[ActualLRP, ActualLRP]:
        """In one transaction: copy the RUNNING instance aside as evacuating and unclaim
        the instance. The evacuating copy and the instance after; ActualLRPAlreadyExists
        when the index has an evacuating copy already.

        The instance before is ``attrs.evolve(copy, evacuating=False)``.
        """
        for _ in range(MAX_CAS_ATTEMPTS):
            before, version = await self._read_actual(process_guid, index, False)
            copy, after = lrp_lifecycle.evacuate(before, instance_guid, cell_id, now)
            try:
                async with self._write() as conn:
                    result = await conn.execute(
                        actual_lrps.update()
                        .where(
                            *_actual_key(process_guid, index, False),
                            actual_lrps.c.version == version,
                        )
                        .values(**_actual_columns(after), version=version + 1)
                    )
                    if result.rowcount != 1:
                        raise _LostRace
                    await conn.execute(actual_lrps.insert().values(**_actual_columns(copy)))
            except _LostRace:
                log.debug("actual-lrp-cas-lost process_guid=%s index=%d", process_guid, index)
                continue
            except IntegrityError:
                raise ActualLRPAlreadyExists(process_guid, index, evacuating=True) from None
            return copy, after
        raise StoreConflict(f"{process_guid}/{index}")

    async def remove_evacuating_actual_lrp(
        self, process_guid: str, index: int, instance_guid: str
    ) -> ActualLRP:
        """Compare-and-delete the evacuating copy of the instance ``instance_guid``."""
        return await self.remove_actual_lrp(process_guid, index, instance_guid, evacuating=True)

    async def _read_actual(
        self, process_guid: str, index: int, evacuating: bool
    ) -> tuple[ActualLRP, int]:
        params = {"process_guid": process_guid, "index": index, "evacuating": evacuating}
        rows = await self._rows(_ACTUAL, params)
        if not rows:
            raise ActualLRPNotFound(process_guid, index, evacuating)
        return _actual(rows[0]), rows[0].version

    async def _swap_actual(
        self, process_guid: str, index: int, rule: Callable[[ActualLRP], ActualLRP]
    ) -> ActualLRPChange:
        for _ in range(MAX_CAS_ATTEMPTS):
            before, version = await self._read_actual(process_guid, index, False)
            after = rule(before)  # raises when the verb does not apply
            if await self._compare_and_swap(before, version, after):
                return before, after
        raise StoreConflict(f"{process_guid}/{index}")

    async def _compare_and_swap(self, before: ActualLRP, version: int, after: ActualLRP) -> bool:
        """Write ``after`` over ``before`` if the row is still at ``version``; whether
        it was (a no-op, ``after == before``, writes nothing and wins)."""
        if after == before:
            return True
        swap = (
            actual_lrps.update()
            .where(
                *_actual_key(before.process_guid, before.index, before.evacuating),
                actual_lrps.c.version == version,
            )
            .values(**_actual_columns(after), version=version + 1)
        )
        if await self._execute(swap) == 1:
            return True
        log.debug(
            "actual-lrp-cas-lost process_guid=%s index=%d version=%d",
            before.process_guid,
            before.index,
            version,
        )
        return False

    # ------------------------------------------------------------ many at once
    # The converger's verbs: a verb on each of many rows, read BATCH at a time in one
    # statement, decided by the same lifecycle rules, and written in one transaction,
    # each row compare-and-swapped on its version. A row gone, or whose rule refuses
    # it (a DiegoError), is left out; one that changed between its read and its write
    # is read and decided again. Each returns the changes it made.

    async def task_summaries(self) -> list[TaskSummary]:
        """What the converger decides on, of every Task (no definition is read)."""
        return list(await self._rows(_TASK_SUMMARIES))

    async def tasks_by_guid(self, guids: Sequence[str]) -> list[Task]:
        """The Tasks of these guids that exist, in no particular order."""
        found: list[Task] = []
        chunks = _batches(guids)
        # The next batch is read on a reader thread while this one is decoded here.
        reading = asyncio.ensure_future(self._task_rows(chunks[0])) if chunks else None
        for i in range(len(chunks)):
            assert reading is not None
            rows = await reading
            if i + 1 < len(chunks):
                reading = asyncio.ensure_future(self._task_rows(chunks[i + 1]))
            found += map(_task, rows)
        return found

    async def definition_fields(
        self, guids: Sequence[str], keys: Sequence[str]
    ) -> list[tuple[str, str, str, list[Any]]]:
        """(guid, domain, state, values) of each of these Tasks that exists: ``values``
        are the definition's values at ``keys``, in order (None where a key is absent),
        picked out by the database itself: no definition is decoded here."""
        query = _definition_fields(self.engine.dialect.name, tuple(keys))
        found: list[tuple[str, str, str, list[Any]]] = []
        for chunk in _batches(guids):
            params = {f"g{i}": guid for i, guid in enumerate(chunk)}
            for guid, domain, state, values in await self._rows(query, params):
                found.append((guid, domain, state, json.loads(values)))
        return found

    async def swap_tasks(self, rules: Mapping[str, Callable[[Task], Task]]) -> list[TaskChange]:
        """For each guid, its verb's rule, as ``_swap`` does for one Task."""

        def decide(row: Any) -> _Decided[TaskChange, str] | None:
            before = _task(row)
            try:
                after = rules[before.task_guid](before)
            except DiegoError as e:
                log.debug("task-verb-skipped guid=%s reason=%s", before.task_guid, e)
                return None
            return (before, after), before.task_guid, _swap_params(after, row.version)

        return await self._cas_many(list(rules), self._task_rows, decide, _TASK_SWAP, "task")

    async def delete_tasks(
        self, guids: Sequence[str], allowed: frozenset[TaskState] = lifecycle.DELETABLE
    ) -> list[Task]:
        """Compare-and-delete each of these Tasks that is in one of the ``allowed`` states;
        the Tasks removed."""

        def decide(row: Any) -> _Decided[Task, str] | None:
            task = _task(row)
            if task.state not in allowed:
                return None
            return task, task.task_guid, {"b_guid": task.task_guid, "b_version": row.version}

        return await self._cas_many(guids, self._task_rows, decide, _TASK_DELETE, "task-delete")

    async def _cas_many(
        self,
        keys: Sequence[K],
        read: Callable[[Sequence[K]], Awaitable[Sequence[Any]]],
        decide: Callable[[Any], _Decided[R, K] | None],
        statement: Prepared,
        what: str,
    ) -> list[R]:
        """The rounds of a verb on many rows: each batch of ``keys`` is read, each row
        ``decide``d (None: left out; parameters None: done, nothing to write) and the
        batch written, each row compared on its version; rows that lost are read and
        decided again in the next round. The writes of one batch run on the writer
        thread while the next batch is read and decided."""
        done: list[R] = []
        pending = list(keys)
        for _ in range(MAX_CAS_ATTEMPTS):
            writes: list[tuple[list[_Decided[R, K]], asyncio.Future[list[bool]]]] = []
            try:
                for chunk in _batches(pending):
                    decided = []
                    for row in await read(chunk):
                        made = decide(row)
                        if made is None:
                            continue
                        if made[2] is None:
                            done.append(made[0])
                        else:
                            decided.append(made)
                    params = [p for _, _, p in decided if p is not None]
                    writes.append((decided, asyncio.ensure_future(self._each(statement, params))))
                lost: list[K] = []
                for decided, write in writes:
                    for (result, key, _), ok in zip(decided, await write, strict=True):
                        if ok:
                            done.append(result)
                        else:
                            lost.append(key)
            finally:
                for _, write in writes:
                    write.cancel()  # only those not awaited: when one of them failed
            if not lost:
                return done
            pending = lost
        log.warning("%s-verbs-gave-up count=%d", what, len(pending))
        return done

    async def _task_rows(self, guids: Sequence[str]) -> Sequence[Any]:
        params = {f"g{i}": guid for i, guid in enumerate(guids)}
        return await self._rows(_TASKS_BY_GUID, params)

    async def desired_lrp_summaries(self) -> list[DesiredLRPSummary]:
        """What the converger decides on, of every DesiredLRP (no definition is read)."""
        return list(await self._rows(_DESIRED_SUMMARIES))

    async def swap_actual_lrps(
        self,
        rules: Mapping[tuple[str, int], Callable[[ActualLRP], ActualLRP]],
        known: Known | None = None,
    ) -> list[ActualLRPChange]:
        """For each (process guid, index), its verb's rule, as ``_swap_actual`` does for
        one instance (never an evacuating copy). A no-op (``after == before``) writes
        nothing and counts as made. ``known`` instances and versions (as just read,
        ``actual_lrps_versioned``) are decided on without reading them again; if one
        changed since, its write loses and it is read like the rest (and one whose
        rule refuses it, or leaves it as it is, is read again before that stands)."""
        unread = dict(known or {})
        recheck: list[tuple[str, int]] = []

        def decide(
            row: tuple[ActualLRP, int, bool],
        ) -> _Decided[ActualLRPChange, tuple[str, int]] | None:
            before, version, as_known = row
            key = (before.process_guid, before.index)
            try:
                after = rules[key](before)
            except DiegoError as e:
                if as_known:
                    recheck.append(key)  # refused as known: maybe not as it is now
                else:
                    log.debug("actual-lrp-verb-skipped key=%s reason=%s", key, e)
                return None
            if after == before:
                if as_known:
                    recheck.append(key)  # a no-op writes nothing: confirm it on the row
                    return None
                return (before, after), key, None
            return (before, after), key, _actual_swap_params(after, version)

        async def read(keys: Sequence[tuple[str, int]]) -> list[tuple[ActualLRP, int, bool]]:
            found: list[tuple[ActualLRP, int, bool]] = []
            missing: list[tuple[str, int]] = []
            for key in keys:
                hit = unread.pop(key, None)
                if hit is None:
                    missing.append(key)
                else:
                    found.append((*hit, True))
            if missing:
                rows = await self._actual_rows(missing, evacuating=False)
                found += ((_actual(row), row.version, False) for row in rows)
            return found

        changes = await self._cas_many(list(rules), read, decide, _ACTUAL_SWAP, "actual-lrp")
        if recheck:
            changes += await self.swap_actual_lrps({key: rules[key] for key in recheck})
        return changes

    async def remove_actual_lrps(
        self, keys: Sequence[tuple[str, int]], evacuating: bool = False
    ) -> list[ActualLRP]:
        """Compare-and-delete the ActualLRPs (or evacuating copies) at these (process
        guid, index); those removed."""

        def decide(row: Any) -> _Decided[ActualLRP, tuple[str, int]]:
            actual = _actual(row)
            params = {
                "b_process_guid": actual.process_guid,
                "b_instance_index": actual.index,
                "b_evacuating": actual.evacuating,
                "b_version": row.version,
            }
            return actual, (actual.process_guid, actual.index), params

        async def read(batch: Sequence[tuple[str, int]]) -> list[Any]:
            return await self._actual_rows(batch, evacuating)

        return await self._cas_many(keys, read, decide, _ACTUAL_DELETE, "actual-lrp-removal")

    async def create_unclaimed_actual_lrps(
        self, missing: Sequence[tuple[str, int, str]], now: int
    ) -> list[ActualLRP]:
        """Store a new UNCLAIMED ActualLRP at each (process guid, index, domain) that has
        none; those created."""
        created: list[ActualLRP] = []
        for batch in _batches(missing):
            made = [lrp_lifecycle.new_unclaimed(g, i, d, now) for g, i, d in batch]
            insert = self._insert_new_actual()
            won = await self._each(insert, [_actual_columns(a) for a in made])
            created += (actual for actual, ok in zip(made, won, strict=True) if ok)
        return created

    def _insert_new_actual(self) -> Prepared:
        if self.engine.dialect.name == "postgresql":
            return _ACTUAL_INSERT_NEW_POSTGRESQL
        return _ACTUAL_INSERT_NEW_SQLITE

    async def _actual_rows(self, keys: Sequence[tuple[str, int]], evacuating: bool) -> list[Any]:
        found: list[Any] = []
        for batch in _batches(keys):
            params = [{"process_guid": g, "index": i, "evacuating": evacuating} for g, i in batch]
            found += await self._rows_each(_ACTUAL, params)
        return found

    async def _rows_each(self, query: Prepared, params: Sequence[Mapping[str, Any]]) -> list[Any]:
        """The rows of ``query`` run once for each of ``params`` (point reads: on SQLite
        all in one trip to a reader thread)."""
        if self._threads is not None:
            compiled = query.sqlite(self._threads.engine.dialect)
            values = [compiled.parameters(p) for p in params]

            def run(conn: Connection) -> list[Any]:
                raw = driver(conn)
                return [row for v in values for row in compiled.fetch(raw, v)]

            return await self._threads.read(run)
        async with self.engine.connect() as conn:
            return [row for p in params for row in await conn.execute(query.statement, dict(p))]

    async def _each(self, statement: Prepared, params: Sequence[Mapping[str, Any]]) -> list[bool]:
        """Run ``statement`` once for each of ``params``, all in one transaction; whether
        each changed a row."""
        if not params:
            return []
        if self._threads is not None:
            compiled = statement.sqlite(self._threads.engine.dialect)
            values = [compiled.parameters(p) for p in params]

            def run(conn: Connection) -> list[bool]:
                raw = driver(conn)
                return [compiled.execute(raw, v) == 1 for v in values]

            return await self._threads.write(run)
        async with self.engine.begin() as conn:
            return [
                (await conn.execute(statement.statement, dict(p))).rowcount == 1 for p in params
            ]

    # ------------------------------------------------------------ domains

    async def upsert_domain(self, name: str, ttl_seconds: int, now: int) -> Domain:
        """Mark ``name`` fresh for ``ttl_seconds`` from ``now`` (0: forever)."""
        expires_at = 0 if ttl_seconds == 0 else now + ttl_seconds * NANOS_PER_SECOND
        domain = Domain(name=name, expires_at=expires_at)
        for _ in range(MAX_CAS_ATTEMPTS):
            try:
                async with self._write() as conn:
                    updated = await conn.execute(
                        domains.update().where(domains.c.name == name).values(expires_at=expires_at)
                    )
                    if updated.rowcount == 0:
                        await conn.execute(
                            domains.insert().values(name=name, expires_at=expires_at)
                        )
                return domain
            except IntegrityError:
                continue  # another writer inserted it first: update it instead
        raise StoreConflict(name)

    async def domains(self, now: int) -> list[Domain]:
        """The domains fresh at ``now``, by name."""
        rows = await self._rows(_DOMAINS, {"now": now})
        return [Domain(name=row.name, expires_at=row.expires_at) for row in rows]


def _columns(task: Task) -> dict[str, Any]:
    return {
        **_lifecycle_columns(task),
        "definition": dumps(encode(task.request())),
        "definition_form": WIRE_FORM,
        "completion_callback_url": task.completion_callback_url,
    }


_REQUEST_FIELDS = len(attrs.fields(TaskCreateRequest))
_WIRE_LIFECYCLE = tuple(f.name for f in attrs.fields(Task)[_REQUEST_FIELDS:])
"""The fields a Task adds to its request, in the order its wire form has them: each is
a column of its own (checked below), so a Task's wire form is its definition and
these."""
assert all(name in tasks.c for name in _WIRE_LIFECYCLE), _WIRE_LIFECYCLE


def _wire_form() -> str:
    """A name for the way a Task definition is written now: the JSON Schema of a Task
    (every key, type and default, in order) and the text's form. A definition written
    in it is the request part of the Task's wire JSON exactly."""
    definitions: dict[str, Any] = {}
    json_schema(Task, definitions)
    form = json.dumps(["compact, UTF-8, the codec's encode", definitions])
    return hashlib.sha256(form.encode()).hexdigest()[:32]


WIRE_FORM = _wire_form()
"""The form of the definitions this store writes (tasks.definition_form)."""


def _task_json(row: Any) -> str:
    """A Task's wire JSON (``dumps(encode(task))``): its definition with the lifecycle
    columns spliced on when the definition is in the current form, else by decoding."""
    if row.definition_form != WIRE_FORM:
        return dumps(encode(_task(row)))
    lifecycle = {name: getattr(row, name) for name in _WIRE_LIFECYCLE}
    lifecycle["failed"] = bool(lifecycle["failed"])
    return f"{row.definition[:-1]},{dumps(lifecycle)[1:]}"


def _lifecycle_columns(task: Task) -> dict[str, Any]:
    """The columns a lifecycle verb changes: all but the definition, which never does."""
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
    }


def _task(row: Any) -> Task:
    # The definition was encoded by this store (_columns): trusted, not validated again.
    fields = json.loads(row.definition)
    fields["state"] = row.state
    fields["cell_id"] = row.cell_id
    fields["failed"] = bool(row.failed)
    fields["failure_reason"] = row.failure_reason
    fields["result"] = row.result
    fields["created_at"] = row.created_at
    fields["updated_at"] = row.updated_at
    fields["first_completed_at"] = row.first_completed_at
    return decode_trusted(Task, fields)


_DESIRED_COLUMNS = ("instances", "created_at", "updated_at")
"""DesiredLRP fields kept in their own columns, not in its definition."""


def _desired_columns(desired: DesiredLRP) -> dict[str, Any]:
    definition = {k: v for k, v in encode(desired).items() if k not in _DESIRED_COLUMNS}
    return {
        "process_guid": desired.process_guid,
        "domain": desired.domain,
        "definition": json.dumps(definition, separators=(",", ":")),
        "instances": desired.instances,
        "created_at": desired.created_at,
        "updated_at": desired.updated_at,
    }


def _desired(row: Any) -> DesiredLRP:
    definition = json.loads(row.definition)
    columns = {"instances": row.instances, "created_at": row.created_at}
    return decode_trusted(DesiredLRP, {**definition, **columns, "updated_at": row.updated_at})


def _actual_key(process_guid: str, index: int, evacuating: bool) -> tuple[Any, ...]:
    c = actual_lrps.c
    return (c.process_guid == process_guid, c.instance_index == index, c.evacuating == evacuating)


def _actual_columns(actual: ActualLRP) -> dict[str, Any]:
    return {
        "process_guid": actual.process_guid,
        "instance_index": actual.index,
        "evacuating": actual.evacuating,
        "domain": actual.domain,
        "state": actual.state.value,
        "instance_guid": actual.instance_guid,
        "cell_id": actual.cell_id,
        "crash_count": actual.crash_count,
        "crash_reason": actual.crash_reason,
        "last_crashed_at": actual.last_crashed_at,
        "since": actual.since,
        "placement_error": actual.placement_error,
    }


_ACTUAL_FIELDS = (
    "process_guid",
    "instance_index",
    "evacuating",
    "domain",
    "state",
    "instance_guid",
    "cell_id",
    "crash_count",
    "crash_reason",
    "last_crashed_at",
    "since",
    "placement_error",
)
"""The keys of _actual_columns."""


_ACTUAL_STATES = {state.value: state for state in ActualLRPState}


def _actual_of_tuple(row: tuple[Any, ...]) -> ActualLRP:
    """The ActualLRP of a row of its _ACTUAL_FIELDS, in that order (then its version)."""
    (
        guid,
        index,
        evacuating,
        domain,
        state,
        ig,
        cell_id,
        count,
        reason,
        crashed,
        since,
        error,
        *_,
    ) = row
    return ActualLRP(
        process_guid=guid,
        index=index,
        evacuating=bool(evacuating),
        domain=domain,
        state=_ACTUAL_STATES[state],
        instance_guid=ig,
        cell_id=cell_id,
        crash_count=count,
        crash_reason=reason,
        last_crashed_at=crashed,
        since=since,
        placement_error=error,
    )


def _actual(row: Any) -> ActualLRP:
    return ActualLRP(
        process_guid=row.process_guid,
        index=row.instance_index,
        evacuating=bool(row.evacuating),
        domain=row.domain,
        state=ActualLRPState(row.state),
        instance_guid=row.instance_guid,
        cell_id=row.cell_id,
        crash_count=row.crash_count,
        crash_reason=row.crash_reason,
        last_crashed_at=row.last_crashed_at,
        since=row.since,
        placement_error=row.placement_error,
    )


# ------------------------------------------------------------ prepared reads
# Each is built once (per shape of its filters) and run with bindparam values.


def _param(name: str) -> Any:
    return sa.bindparam(name)


_TASK = Prepared(sa.select(tasks).where(tasks.c.guid == _param("guid")))
_TASK_ORDER = (tasks.c.created_at, tasks.c.guid)


@functools.cache
def _task_listing(domain: bool, cell_id: bool, states: tuple[str, ...] | None) -> Prepared:
    query = sa.select(tasks).order_by(*_TASK_ORDER)
    if domain:
        query = query.where(tasks.c.domain == _param("domain"))
    if cell_id:
        query = query.where(tasks.c.cell_id == _param("cell_id"))
    if states is not None:
        query = query.where(tasks.c.state.in_(states))
    return Prepared(query)


@functools.cache
def _task_page(after: bool, domain: bool) -> Prepared:
    query = sa.select(tasks).order_by(*_TASK_ORDER).limit(_param("limit"))
    if domain:
        query = query.where(tasks.c.domain == _param("domain"))
    if after:
        cursor = sa.tuple_(_param("after_created_at"), _param("after_guid"))
        query = query.where(sa.tuple_(*_TASK_ORDER) > cursor)
    return Prepared(query)


_PENDING_CREATED = Prepared(
    sa.select(tasks)
    .where(
        tasks.c.created_at > _param("after"),
        tasks.c.created_at <= _param("until"),
        tasks.c.state == TaskState.PENDING.value,
    )
    .order_by(*_TASK_ORDER)
)
_UNCLAIMED_SINCE = Prepared(
    sa.select(*(actual_lrps.c[name] for name in _ACTUAL_FIELDS), actual_lrps.c.version).where(
        actual_lrps.c.cell_id == "",
        actual_lrps.c.state == ActualLRPState.UNCLAIMED.value,
        actual_lrps.c.evacuating == sa.false(),
        actual_lrps.c.since > _param("after"),
        actual_lrps.c.since <= _param("until"),
    ),
    tuples=True,
)
_PRESENCES = Prepared(
    sa.select(cells.c.presence).where(cells.c.expires_at > _param("now")).order_by(cells.c.cell_id)
)
_EXPIRIES = Prepared(
    sa.select(cells.c.cell_id, cells.c.expires_at).where(cells.c.expires_at > _param("now"))
)
_DOMAINS = Prepared(
    sa.select(domains)
    .where(sa.or_(domains.c.expires_at == 0, domains.c.expires_at > _param("now")))
    .order_by(domains.c.name)
)
_DESIRED = Prepared(
    sa.select(desired_lrps).where(desired_lrps.c.process_guid == _param("process_guid"))
)


@functools.cache
def _desired_listing(domain: bool) -> Prepared:
    query = sa.select(desired_lrps).order_by(desired_lrps.c.process_guid)
    if domain:
        query = query.where(desired_lrps.c.domain == _param("domain"))
    return Prepared(query)


_ACTUAL = Prepared(
    sa.select(actual_lrps).where(
        actual_lrps.c.process_guid == _param("process_guid"),
        actual_lrps.c.instance_index == _param("index"),
        actual_lrps.c.evacuating == _param("evacuating"),
    )
)


@functools.cache
def _actual_listing(process_guid: bool, domain: bool, cell_id: bool) -> Prepared:
    c = actual_lrps.c
    query = sa.select(*(c[name] for name in _ACTUAL_FIELDS), c.version)
    query = query.order_by(c.process_guid, c.instance_index, c.evacuating)
    if process_guid:
        query = query.where(c.process_guid == _param("process_guid"))
    if domain:
        query = query.where(c.domain == _param("domain"))
    if cell_id:
        query = query.where(c.cell_id == _param("cell_id"))
    return Prepared(query, tuples=True)


_TASK_SUMMARIES = Prepared(sa.select(*(tasks.c[name] for name in TASK_SUMMARY)), tuples=True)
_DESIRED_SUMMARIES = Prepared(
    sa.select(*(desired_lrps.c[name] for name in DESIRED_LRP_SUMMARY)).order_by(
        desired_lrps.c.process_guid
    ),
    tuples=True,
)
# A fixed number of placeholders, so that one compiled statement serves every batch;
# those a short batch leaves unset are NULL, which no key equals.
_TASKS_BY_GUID = Prepared(
    sa.select(tasks).where(tasks.c.guid.in_([sa.bindparam(f"g{i}", None) for i in range(BATCH)]))
)
_SWAPPED = (
    "state",
    "cell_id",
    "updated_at",
    "first_completed_at",
    "failed",
    "failure_reason",
    "result",
)
"""The columns a lifecycle verb may change (_lifecycle_columns less guid, domain and
created_at, which none does)."""


@functools.cache
def _definition_fields(dialect: str, keys: tuple[str, ...]) -> Prepared:
    """Each Task's values at ``keys`` in its definition, as a JSON array's text."""
    values: Any
    if dialect == "postgresql":
        definition = sa.cast(tasks.c.definition, postgresql.JSON)
        values = sa.cast(sa.func.json_build_array(*(definition[k] for k in keys)), sa.Text)
    else:
        paths = [sa.literal(f"$.{key}") for key in keys]
        values = sa.func.json_extract(tasks.c.definition, *paths)
        if len(keys) == 1:  # one path gives the value itself, not an array of it
            values = sa.func.json_array(values)
    query = sa.select(tasks.c.guid, tasks.c.domain, tasks.c.state, values)
    guids: list[Any] = [sa.bindparam(f"g{i}", None) for i in range(BATCH)]
    return Prepared(query.where(tasks.c.guid.in_(guids)), tuples=True)


_TASK_SWAP = Prepared(
    tasks.update()
    .where(tasks.c.guid == _param("b_guid"), tasks.c.version == _param("b_version"))
    .values(
        {
            **{name: _param(f"b_{name}") for name in _SWAPPED},
            "version": _param("b_new_version"),
        }
    )
)


def _swap_params(after: Task, version: int) -> dict[str, Any]:
    return {
        "b_guid": after.task_guid,
        "b_version": version,
        "b_state": after.state.value,
        "b_cell_id": after.cell_id,
        "b_updated_at": after.updated_at,
        "b_first_completed_at": after.first_completed_at,
        "b_failed": after.failed,
        "b_failure_reason": after.failure_reason,
        "b_result": after.result,
        "b_new_version": version + 1,
    }


_TASK_DELETE = Prepared(
    tasks.delete().where(tasks.c.guid == _param("b_guid"), tasks.c.version == _param("b_version"))
)
_ACTUAL_WHERE = (
    actual_lrps.c.process_guid == _param("b_process_guid"),
    actual_lrps.c.instance_index == _param("b_instance_index"),
    actual_lrps.c.evacuating == _param("b_evacuating"),
    actual_lrps.c.version == _param("b_version"),
)
_ACTUAL_SWAP = Prepared(
    actual_lrps.update()
    .where(*_ACTUAL_WHERE)
    .values(
        {
            **{name: _param(f"b_{name}") for name in _ACTUAL_FIELDS},
            "version": _param("b_new_version"),
        }
    )
)


def _actual_swap_params(after: ActualLRP, version: int) -> dict[str, Any]:
    params = dict(zip(_ACTUAL_PARAMS, _actual_columns(after).values(), strict=True))
    params["b_version"] = version
    params["b_new_version"] = version + 1
    return params


_ACTUAL_PARAMS = tuple(f"b_{name}" for name in _ACTUAL_FIELDS)

_ACTUAL_DELETE = Prepared(actual_lrps.delete().where(*_ACTUAL_WHERE))
_ACTUAL_INSERT_NEW_SQLITE = Prepared(
    sqlite.insert(actual_lrps)
    .values({name: _param(name) for name in _ACTUAL_FIELDS})
    .on_conflict_do_nothing()
)
_ACTUAL_INSERT_NEW_POSTGRESQL = Prepared(
    postgresql.insert(actual_lrps)
    .values({name: _param(name) for name in _ACTUAL_FIELDS})
    .on_conflict_do_nothing()
)


def _batches(items: Sequence[T]) -> list[Sequence[T]]:
    return [items[i : i + BATCH] for i in range(0, len(items), BATCH)]


def encode_cursor(task: Task) -> str:
    """An opaque cursor naming ``task``'s place in the listing order."""
    return _cursor(task.created_at, task.task_guid)


def _cursor(created_at: int, guid: str) -> str:
    raw = f"{created_at}:{guid}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[int, str]:
    """The (created_at, guid) a cursor names; ValueError when it is not one of ours."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        created_at, guid = raw.split(":", 1)
        return int(created_at), guid
    except (ValueError, UnicodeDecodeError, binascii.Error) as e:
        raise ValueError("not a page cursor") from e
