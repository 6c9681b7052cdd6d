"""The store of GA4GH TES tasks: kept after they finish, listed newest first.

Diego removes a Task once it is resolved, but a TES server answers GET and LIST
for finished tasks too, until retention prunes them. So TES tasks have tables of
their own (``tes_tasks``, ``tes_task_tags``) in the BBS database, written behind
the same writer queue as the rest of the store (``Store.tes`` hands one out).

A task is kept whole, as the codec encodes it (``document``, logs included); the
columns beside it (name, state, and the tags in their own table) are copies for
filtering in SQL. Each task's ``seq`` comes from a counter bumped in the inserting
transaction, so it grows with every create and is never reused, not even after a
prune. Lists go by seq descending, and a page token names the last seq returned:
the next page is exactly the matching tasks older than that one, so a page never
shifts when tasks are created or removed meanwhile.

Changes are compare-and-swap on ``version``, retried like the Task verbs.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import attrs
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from diego.models.codec import decode, encode
from diego.models.errors import InvalidRequest, TesTaskAlreadyExists, TesTaskNotFound
from diego.models.tes import FINAL_STATES, TesState, TesTask, rfc3339
from diego.state.schema import TES_TASK_SEQ, counters, tes_task_tags, tes_tasks
from diego.state.store import MAX_CAS_ATTEMPTS, StoreConflict

PRUNE_BATCH = 500
"""Tasks removed per write transaction, so a big prune never holds the writer long."""

LIKE_ESCAPE = "\\"

Writer = Callable[[], contextlib.AbstractAsyncContextManager[AsyncConnection]]
"""Opens a write transaction (the Store's ``_write``: queued on SQLite)."""

TesTaskChange = Callable[[TesTask], TesTask]
"""What ``update_tes_task`` applies: the task as stored → the task to store."""


class TesStore:
    """GA4GH TES tasks in SQL: create, get, compare-and-swap update, list, prune."""

    def __init__(self, engine: AsyncEngine, write: Writer) -> None:
        self.engine = engine
        self._write = write

    async def create_tes_task(self, task: TesTask, now_ns: int) -> TesTask:
        """Store a new task, created at ``now_ns``; the task stored.

        Its ``creation_time`` is ``now_ns`` unless it has one. TesTaskAlreadyExists
        when the id is taken; ValueError when the task has no id.
        """
        task_id = _id_of(task)
        if task.creation_time is None:
            task = attrs.evolve(task, creation_time=rfc3339(now_ns))
        row = {**_columns(task), "id": task_id, "created_at": now_ns, "updated_at": now_ns}
        try:
            async with self._write() as conn:
                seq = await _next_seq(conn)
                await conn.execute(tes_tasks.insert().values(**row, seq=seq, version=1))
                await _insert_tags(conn, task_id, task.tags)
        except IntegrityError:
            raise TesTaskAlreadyExists(task_id) from None
        return task

    async def get_tes_task(self, task_id: str) -> TesTask:
        """The task ``task_id``; TesTaskNotFound when there is none."""
        task, _ = await self._read(task_id)
        return task

    async def update_tes_task(self, task_id: str, change: TesTaskChange, now_ns: int) -> TesTask:
        """Apply ``change`` to the stored task and store the result; the task after.

        Read, apply, compare-and-swap on the version: a change that lost to another
        is applied again to what won, so none is lost. ``change`` may raise to refuse
        (nothing is written); it must keep the id. A change to nothing writes nothing.
        """
        for _ in range(MAX_CAS_ATTEMPTS):
            before, version = await self._read(task_id)
            after = change(before)
            if after.id != before.id:
                raise ValueError(f"a change of tes task {task_id!r} must keep its id")
            if after == before or await self._swap(before, version, after, now_ns):
                return after
        raise StoreConflict(task_id)

    async def list_tes_tasks(
        self,
        *,
        page_size: int,
        page_token: str = "",
        name_prefix: str = "",
        state: TesState | None = None,
        tags: Sequence[tuple[str, str]] = (),
    ) -> tuple[list[TesTask], str]:
        """Up to ``page_size`` matching tasks, newest first, and the next page's token.

        ``page_token`` is "" for the first page, else a token this method returned;
        the next token is "" when no matching task is left. Filters: the name starts
        with ``name_prefix``; the state is ``state``; for each (key, value) of
        ``tags`` the task has that tag (an empty value: that key, any value).
        InvalidRequest for a page_size below 1 or a token not made here.
        """
        if page_size < 1:
            raise InvalidRequest("page_size: must be at least 1")
        query = (
            sa.select(tes_tasks.c.seq, tes_tasks.c.document)
            .where(*_filters(name_prefix, state, tags))
            .order_by(tes_tasks.c.seq.desc())
            .limit(page_size + 1)
        )
        if page_token:
            query = query.where(tes_tasks.c.seq < decode_page_token(page_token))
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        page = rows[:page_size]
        more = len(rows) > page_size
        return [_task(row) for row in page], encode_page_token(page[-1].seq) if more else ""

    async def prune_tes_tasks(self, finished_before_ns: int) -> int:
        """Remove the tasks in a final state last changed before ``finished_before_ns``;
        how many were removed."""
        total = 0
        while True:
            removed = await self._prune_batch(finished_before_ns)
            total += removed
            if removed < PRUNE_BATCH:
                return total

    async def _prune_batch(self, finished_before_ns: int) -> int:
        """Remove up to PRUNE_BATCH prunable tasks, and their tags; how many."""
        c = tes_tasks.c
        prunable = sa.and_(
            c.state.in_([s.value for s in FINAL_STATES]), c.updated_at < finished_before_ns
        )
        batch = sa.select(c.id).where(prunable).limit(PRUNE_BATCH).scalar_subquery()
        # One statement, a write first: SQLite then takes its write lock at once (a
        # read upgraded to a write can fail busy), and PostgreSQL checks ``prunable``
        # again on rows changed meanwhile.
        delete = tes_tasks.delete().where(c.id.in_(batch), prunable).returning(c.id)
        async with self._write() as conn:
            removed = (await conn.execute(delete)).scalars().all()
            if removed:
                # PostgreSQL cascades; SQLite leaves foreign keys unenforced.
                tags = tes_task_tags.delete().where(tes_task_tags.c.task_id.in_(removed))
                await conn.execute(tags)
        return len(removed)

    async def _read(self, task_id: str) -> tuple[TesTask, int]:
        query = sa.select(tes_tasks.c.document, tes_tasks.c.version).where(
            tes_tasks.c.id == task_id
        )
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).first()
        if row is None:
            raise TesTaskNotFound(task_id)
        return _task(row), row.version

    async def _swap(self, before: TesTask, version: int, after: TesTask, now_ns: int) -> bool:
        """Write ``after`` over ``before`` if the row is still at ``version``; whether it was."""
        task_id = _id_of(before)
        async with self._write() as conn:
            result = await conn.execute(
                tes_tasks.update()
                .where(tes_tasks.c.id == task_id, tes_tasks.c.version == version)
                .values(**_columns(after), updated_at=now_ns, version=version + 1)
            )
            if result.rowcount != 1:
                return False
            if after.tags != before.tags:
                await conn.execute(tes_task_tags.delete().where(tes_task_tags.c.task_id == task_id))
                await _insert_tags(conn, task_id, after.tags)
        return True


# ---------------------------------------------------------------- rows


def _id_of(task: TesTask) -> str:
    if task.id is None:
        raise ValueError("a tes task must have an id to be stored")
    return task.id


def _columns(task: TesTask) -> dict[str, Any]:
    """The columns a task's content decides (not id, seq, times or version)."""
    return {
        "name": task.name or "",
        "state": task.state.value,
        "document": json.dumps(encode(task), separators=(",", ":")),
    }


def _task(row: Any) -> TesTask:
    return decode(TesTask, json.loads(row.document))


async def _next_seq(conn: AsyncConnection) -> int:
    """The next TES task seq, bumped inside the caller's transaction."""
    value = counters.c.value
    result = await conn.execute(
        counters.update()
        .where(counters.c.name == TES_TASK_SEQ)
        .values(value=value + 1)
        .returning(value)
    )
    return int(result.scalar_one())


async def _insert_tags(conn: AsyncConnection, task_id: str, tags: Mapping[str, str]) -> None:
    if tags:
        rows = [{"task_id": task_id, "key": k, "value": v} for k, v in tags.items()]
        await conn.execute(tes_task_tags.insert(), rows)


# ---------------------------------------------------------------- filters


def _filters(
    name_prefix: str, state: TesState | None, tags: Iterable[tuple[str, str]]
) -> list[sa.ColumnElement[bool]]:
    """The WHERE clauses of a listing: every one must hold."""
    clauses = [_has_tag(key, value) for key, value in tags]
    if name_prefix:
        clauses.append(_name_starts_with(name_prefix))
    if state is not None:
        clauses.append(tes_tasks.c.state == state.value)
    return clauses


def _name_starts_with(prefix: str) -> sa.ColumnElement[bool]:
    """The name starts with ``prefix``, its ``%`` and ``_`` taken literally.

    LIKE can use the name index; the substr compare makes the match case-exact,
    which SQLite's LIKE is not.
    """
    name = tes_tasks.c.name
    return sa.and_(
        name.like(escape_like(prefix) + "%", escape=LIKE_ESCAPE),
        sa.func.substr(name, 1, len(prefix)) == prefix,
    )


def escape_like(text: str) -> str:
    """``text`` as a LIKE pattern matching only itself (escape character: LIKE_ESCAPE)."""
    for special in (LIKE_ESCAPE, "%", "_"):
        text = text.replace(special, LIKE_ESCAPE + special)
    return text


def _has_tag(key: str, value: str) -> sa.ColumnElement[bool]:
    """The task has tag ``key`` with ``value``; an empty ``value``: with any value."""
    t = tes_task_tags.c
    match = [t.task_id == tes_tasks.c.id, t.key == key]
    if value:
        match.append(t.value == value)
    return sa.exists().where(*match)


# ---------------------------------------------------------------- page tokens


def encode_page_token(seq: int) -> str:
    """An opaque page token: list the tasks older than the one numbered ``seq``."""
    raw = json.dumps({"seq": seq}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_page_token(token: str) -> int:
    """The seq a page token names; InvalidRequest naming page_token if it is not ours."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        seq = json.loads(raw)["seq"]
    except (ValueError, TypeError, KeyError, binascii.Error):
        seq = None
    if type(seq) is not int or seq < 1:
        raise InvalidRequest("page_token: not a token this server gave")
    return seq
