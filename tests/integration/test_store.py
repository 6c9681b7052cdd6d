"""The BBS store against real SQLite files and a real PostgreSQL server."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from diego.models.codec import decode, dumps, encode
from diego.models.errors import (
    InvalidStateTransition,
    RunningOnDifferentCell,
    TaskGuidAlreadyExists,
    TaskNotFound,
)
from diego.models.task import Task, TaskCreateRequest, TaskState
from diego.state.schema import metadata, tasks
from diego.state.store import (
    WAL_CHECKPOINT_PAGES,
    Store,
    _columns,
    decode_cursor,
    encode_cursor,
    sqlite_url,
)

RACERS = 12


def request(guid: str = "t1", domain: str = "d", **extra: object) -> TaskCreateRequest:
    """A valid TaskCreateRequest."""
    body = {
        "task_guid": guid,
        "domain": domain,
        "stack": "linux",
        "action": {"run": {"path": "/bin/true"}},
        **extra,
    }
    return decode(TaskCreateRequest, body)


async def test_desired_task_reads_back_equal(store: Store) -> None:
    """A desired Task is stored PENDING and reads back field for field."""
    made = await store.desire_task(request(annotation="ä" * 100, memory_mb=64), now=10)
    assert made.state is TaskState.PENDING
    assert (made.created_at, made.updated_at) == (10, 10)
    assert await store.get_task("t1") == made


async def test_duplicate_guid_is_refused(store: Store) -> None:
    """Desiring a guid that exists raises TaskGuidAlreadyExists and keeps the first."""
    first = await store.desire_task(request(domain="one"), now=1)
    with pytest.raises(TaskGuidAlreadyExists):
        await store.desire_task(request(domain="two"), now=2)
    assert await store.get_task("t1") == first


async def test_unknown_guid_is_not_found(store: Store) -> None:
    """Reading or changing a guid that does not exist raises TaskNotFound."""
    with pytest.raises(TaskNotFound):
        await store.get_task("nope")
    with pytest.raises(TaskNotFound):
        await store.start_task("nope", "cell", now=1)
    with pytest.raises(TaskNotFound):
        await store.delete_task("nope")


async def test_verbs_return_before_and_after_and_persist(store: Store) -> None:
    """Each verb returns (before, after) and the store then holds after."""
    await store.desire_task(request(), now=1)
    before, after = await store.start_task("t1", "cell-a", now=2)
    assert (before.state, after.state, after.cell_id) == (
        TaskState.PENDING,
        TaskState.RUNNING,
        "cell-a",
    )
    assert await store.get_task("t1") == after
    _, done = await store.complete_task("t1", "cell-a", False, "", "42", now=3)
    assert (done.state, done.result, done.first_completed_at) == (TaskState.COMPLETED, "42", 3)
    _, resolving = await store.resolving_task("t1", now=4)
    assert resolving.state is TaskState.RESOLVING
    _, demoted = await store.demote_task("t1", now=5)
    assert (demoted.state, demoted.first_completed_at) == (TaskState.COMPLETED, 3)
    removed = await store.delete_task("t1")
    assert removed == demoted
    with pytest.raises(TaskNotFound):
        await store.get_task("t1")


async def test_refused_verbs_change_nothing(store: Store) -> None:
    """A verb the lifecycle refuses raises and leaves the stored Task as it was."""
    made = await store.desire_task(request(), now=1)
    with pytest.raises(InvalidStateTransition):
        await store.resolving_task("t1", now=2)
    with pytest.raises(InvalidStateTransition):
        await store.delete_task("t1")
    _, claimed = await store.claim_task("t1", "cell-a", now=3)
    with pytest.raises(RunningOnDifferentCell):
        await store.start_task("t1", "cell-b", now=4)
    assert await store.get_task("t1") == claimed != made


async def test_racing_starts_have_exactly_one_winner(store: Store) -> None:
    """Many cells starting one Task at once: exactly one wins, the rest are refused."""
    await store.desire_task(request(), now=1)
    results = await asyncio.gather(
        *(store.start_task("t1", f"cell-{i}", now=2) for i in range(RACERS)),
        return_exceptions=True,
    )
    winners = [r for r in results if isinstance(r, tuple)]
    assert len(winners) == 1
    assert all(isinstance(r, InvalidStateTransition) for r in results if r not in winners)
    stored = await store.get_task("t1")
    assert stored.cell_id == winners[0][1].cell_id


async def test_racing_cancel_and_complete_have_one_winner(store: Store) -> None:
    """Cancel and complete racing on a RUNNING Task: one outcome is stored, once."""
    await store.desire_task(request(), now=1)
    await store.start_task("t1", "cell-a", now=2)
    cancel, complete = await asyncio.gather(
        store.cancel_task("t1", now=3),
        store.complete_task("t1", "cell-a", False, "", "ok", now=3),
        return_exceptions=True,
    )
    outcomes = [r for r in (cancel, complete) if isinstance(r, tuple)]
    assert len(outcomes) == 1
    assert await store.get_task("t1") == outcomes[0][1]


async def test_racing_deletes_remove_once(store: Store) -> None:
    """Two deletes of one COMPLETED Task: one returns it, the other finds it gone."""
    await store.desire_task(request(), now=1)
    await store.cancel_task("t1", now=2)
    results = await asyncio.gather(
        store.delete_task("t1"), store.delete_task("t1"), return_exceptions=True
    )
    assert sum(1 for r in results if not isinstance(r, Exception)) == 1
    assert sum(1 for r in results if isinstance(r, TaskNotFound)) == 1


async def test_resolve_removes_a_completed_task_in_one_step(store: Store) -> None:
    """resolve_task: COMPLETED → RESOLVING and removed at once; anything else is refused."""
    await store.desire_task(request(), now=1)
    _, running = await store.start_task("t1", "cell-a", now=2)
    with pytest.raises(InvalidStateTransition):
        await store.resolve_task("t1", now=3)
    assert await store.get_task("t1") == running
    _, done = await store.complete_task("t1", "cell-a", False, "", "42", now=4)
    before, after = await store.resolve_task("t1", now=5)
    assert before == done
    assert (after.state, after.updated_at, after.result) == (TaskState.RESOLVING, 5, "42")
    with pytest.raises(TaskNotFound):
        await store.get_task("t1")


async def test_racing_resolves_have_one_winner(store: Store) -> None:
    """Consumers resolving one Task at once: one resolves it, the others find it gone."""
    await store.desire_task(request(), now=1)
    await store.cancel_task("t1", now=2)
    results = await asyncio.gather(
        *(store.resolve_task("t1", now=3) for _ in range(RACERS)), return_exceptions=True
    )
    assert sum(1 for r in results if isinstance(r, tuple)) == 1
    assert all(isinstance(r, (TaskNotFound, tuple)) for r in results)


async def test_sqlite_writes_wait_for_an_open_write_transaction(tmp_path: Path) -> None:
    """On SQLite a write queued while a transaction of several statements is open (the
    only writer meanwhile) lands after it, without a busy wait on the file lock."""
    store = await Store.open(sqlite_url(tmp_path))
    try:
        async with store._write() as conn:
            row = _columns(Task.new(request("a"), 1))
            await conn.execute(tasks.insert().values(**row, version=1))
            queued = asyncio.ensure_future(store.desire_task(request("b"), now=2))
            await asyncio.sleep(0.2)
            assert not queued.done()
        await queued
        assert [t.task_guid for t in await store.tasks()] == ["a", "b"]
    finally:
        await store.close()


async def test_two_stores_on_one_database_race_safely(store_url: str) -> None:
    """Two store instances (as two processes would be) racing a start: one winner."""
    first, second = await Store.open(store_url), await Store.open(store_url)
    try:
        await first.desire_task(request(), now=1)
        results = await asyncio.gather(
            *(
                (first if i % 2 else second).start_task("t1", f"cell-{i}", now=2)
                for i in range(RACERS)
            ),
            return_exceptions=True,
        )
        assert sum(1 for r in results if isinstance(r, tuple)) == 1
    finally:
        await first.close()
        await second.close()


async def test_filters_select_by_domain_cell_and_state(store: Store) -> None:
    """tasks() filters by domain, cell and states, oldest first."""
    await store.desire_task(request("a", domain="x"), now=3)
    await store.desire_task(request("b", domain="y"), now=1)
    await store.desire_task(request("c", domain="x"), now=2)
    await store.start_task("c", "cell-1", now=4)
    assert [t.task_guid for t in await store.tasks()] == ["b", "c", "a"]
    assert [t.task_guid for t in await store.tasks(domain="x")] == ["c", "a"]
    assert [t.task_guid for t in await store.tasks(cell_id="cell-1")] == ["c"]
    pending = await store.tasks(states=[TaskState.PENDING])
    assert [t.task_guid for t in pending] == ["b", "a"]


async def test_pages_do_not_shift_when_tasks_are_added(store: Store) -> None:
    """Walking pages by cursor sees each older Task once, whatever is created meanwhile."""
    for i in range(25):
        await store.desire_task(request(f"t{i:02}"), now=100 + i)
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        page = await store.page_of_tasks(limit=10, cursor=cursor)
        seen += [t.task_guid for t in page.items]
        pages += 1
        # A newer Task lands while the walk goes on: it comes last, shifting nothing.
        await store.desire_task(request(f"new{pages}"), now=1000 + pages)
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen[:25] == [f"t{i:02}" for i in range(25)]
    assert len(seen) == len(set(seen))


async def test_page_cursor_round_trips_and_rejects_garbage(store: Store) -> None:
    """A cursor names (created_at, guid); one not made by the store is a ValueError."""
    made = await store.desire_task(request("g-1"), now=77)
    assert decode_cursor(encode_cursor(made)) == (77, "g-1")
    for garbage in ("", "!!!", "bm8tY29sb24", "YTpi"):
        with pytest.raises(ValueError, match="cursor"):
            decode_cursor(garbage)


async def test_migrated_schema_matches_the_models(store: Store) -> None:
    """After migrating, the database has exactly the tables and columns schema.py declares."""
    async with store.engine.connect() as conn:
        diff = await conn.run_sync(
            lambda sync: compare_metadata(MigrationContext.configure(sync), metadata)
        )
    assert diff == []


async def test_reopening_keeps_tasks_and_migrates_once(tmp_path: Path) -> None:
    """Opening an existing store again keeps its Tasks and leaves it at the same revision."""
    url = sqlite_url(tmp_path)
    first = await Store.open(url)
    made = await first.desire_task(request(), now=5)
    await first.close()
    second = await Store.open(url)
    try:
        assert await second.get_task("t1") == made
        async with second.engine.connect() as conn:
            versions = (
                await conn.execute(sa.text("select version_num from alembic_version"))
            ).all()
        assert len(versions) == 1
    finally:
        await second.close()


async def test_store_made_at_first_revision_upgrades_in_place(tmp_path: Path) -> None:
    """A store left at the first revision, with a Task in it, upgrades to head keeping it."""
    from alembic import command
    from alembic.config import Config

    from diego.state.store import MIGRATIONS

    url = sqlite_url(tmp_path)
    engine = sa.create_engine(url.replace("+aiosqlite", ""))
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "0001")
        conn.execute(
            sa.text(
                "insert into tasks (guid, domain, state, created_at, updated_at, definition)"
                " values ('old', 'd', 'PENDING', 1, 1, :definition)"
            ),
            {
                "definition": '{"task_guid":"old","domain":"d","stack":"linux",'
                '"action":{"run":{"path":"/bin/true"}}}'
            },
        )
    engine.dispose()
    store = await Store.open(url)
    try:
        old = await store.get_task("old")
        assert old.state is TaskState.PENDING
        _, started = await store.start_task("old", "cell", now=2)
        assert started.state is TaskState.RUNNING
    finally:
        await store.close()


async def test_upgrade_copies_callback_urls_out_of_definitions(store_url: str) -> None:
    """Migration 0005 fills the new completion_callback_url column of existing Tasks
    from their definitions (the converger reads it, not the definition)."""
    from alembic import command
    from alembic.config import Config
    from sqlalchemy.ext.asyncio import create_async_engine

    from diego.state.store import MIGRATIONS

    def to_0004(conn: sa.Connection) -> None:
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        config.attributes["connection"] = conn
        command.upgrade(config, "0004")

    engine = create_async_engine(store_url)
    async with engine.begin() as conn:
        await conn.run_sync(to_0004)
        for guid, extra in (("called", ',"completion_callback_url":"http://cb/x"'), ("quiet", "")):
            definition = (
                f'{{"task_guid":"{guid}","domain":"d","stack":"linux",'
                f'"action":{{"run":{{"path":"/bin/true"}}}}{extra}}}'
            )
            await conn.execute(
                sa.text(
                    "insert into tasks (guid, domain, state, created_at, updated_at, definition)"
                    " values (:guid, 'd', 'COMPLETED', 1, 1, :definition)"
                ),
                {"guid": guid, "definition": definition},
            )
    await engine.dispose()
    store = await Store.open(store_url)
    try:
        async with store.engine.connect() as conn:
            rows = await conn.execute(sa.select(tasks.c.guid, tasks.c.completion_callback_url))
            urls = {guid: url for guid, url in rows}
        assert urls == {"called": "http://cb/x", "quiet": ""}
        assert (await store.get_task("called")).completion_callback_url == "http://cb/x"
    finally:
        await store.close()


async def test_sqlite_store_uses_wal(tmp_path: Path) -> None:
    """The SQLite store runs in WAL mode, so readers never block the writer."""
    store = await Store.open(sqlite_url(tmp_path))
    try:
        async with store.engine.connect() as conn:
            mode = (await conn.execute(sa.text("pragma journal_mode"))).scalar()
            pages = (await conn.execute(sa.text("pragma wal_autocheckpoint"))).scalar()
        assert mode == "wal"
        assert pages == WAL_CHECKPOINT_PAGES
    finally:
        await store.close()


async def test_wire_json_of_tasks_and_pages(store: Store) -> None:
    """task_json and page_of_task_json give what encoding the Tasks gives, for Tasks
    written now and for a row written before definitions recorded their form."""
    env = [{"name": "Ä", "value": "ö"}]
    await store.desire_task(request("a", annotation="grüße ✓", env=env), now=1)
    await store.desire_task(request("b"), now=2)
    await store.start_task("b", "cell-1", now=3)
    old = (
        '{"task_guid":"c","domain":"d","stack":"linux","annotation":"\\u00e4",'
        '"action":{"run":{"path":"/x"}}}'
    )
    await store._execute(
        tasks.insert().values(
            guid="c", domain="d", state="PENDING", created_at=4, updated_at=4, definition=old
        )
    )
    for guid in ("a", "b", "c"):
        assert await store.task_json(guid) == dumps(encode(await store.get_task(guid)))
    with pytest.raises(TaskNotFound):
        await store.task_json("missing")
    first = await store.page_of_task_json(limit=2)
    assert [json.loads(t) for t in first.items] == [
        encode(t) for t in (await store.page_of_tasks(limit=2)).items
    ]
    assert first.next_cursor == (await store.page_of_tasks(limit=2)).next_cursor
    rest = await store.page_of_task_json(limit=2, cursor=first.next_cursor)
    assert [json.loads(t)["task_guid"] for t in rest.items] == ["c"]
    assert rest.next_cursor is None
