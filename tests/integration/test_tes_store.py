"""The GA4GH TES task store against real SQLite files and a real PostgreSQL server.

TES tasks stay after they finish: created, read, changed by compare-and-swap,
listed newest first page by page (pages that do not shift), filtered, and pruned.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping
from typing import Any

import attrs
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from diego.models.codec import decode
from diego.models.errors import InvalidRequest, TesTaskAlreadyExists, TesTaskNotFound
from diego.models.task import TaskState
from diego.models.tes import FINAL_STATES, TesState, TesTask, TesTaskLog, rfc3339
from diego.state import tes_store
from diego.state.store import Store, head_revision, upgrade
from diego.state.tes_store import TesStore, decode_page_token, encode_page_token

RACERS = 12

URL_SAFE = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")

FINAL = sorted(FINAL_STATES)
NOT_FINAL = sorted(set(TesState) - FINAL_STATES)


@pytest.fixture
def tes(store: Store) -> TesStore:
    """The TES tasks of an open, migrated, empty store."""
    return store.tes


def tes_task(
    task_id: str,
    *,
    name: str | None = None,
    state: TesState = TesState.QUEUED,
    tags: Mapping[str, str] | None = None,
) -> TesTask:
    """A small valid TesTask."""
    executor = {"image": "alpine", "command": ["true"]}
    body = {"id": task_id, "state": state.value, "executors": [executor], "tags": tags or {}}
    if name is not None:
        body["name"] = name
    return decode(TesTask, body)


def full_task(task_id: str = "full") -> TesTask:
    """A TesTask using most of the document: inputs, outputs, executors, tags, logs."""
    return decode(
        TesTask,
        {
            "id": task_id,
            "state": "RUNNING",
            "name": "ünïcode name",
            "description": "d" * 1000,
            "inputs": [
                {"url": "s3://bucket/in.txt", "path": "/data/in.txt"},
                {"content": "hello\n", "path": "/data/hello.txt", "name": "greeting"},
            ],
            "outputs": [{"url": "s3://bucket/out/", "path": "/out/*.txt", "path_prefix": "/out/"}],
            "resources": {"cpu_cores": 2, "ram_gb": 1.5, "zones": ["a"]},
            "executors": [
                {"image": "alpine", "command": ["sh", "-c", "echo hi"], "env": {"A": "1"}},
                {"image": "busybox", "command": ["true"], "ignore_error": True},
            ],
            "volumes": ["/scratch"],
            "tags": {"project": "p1", "empty": ""},
            "logs": [
                {
                    "logs": [{"start_time": rfc3339(1), "stdout": "hi\n", "exit_code": 0}],
                    "metadata": {"cell": "c1"},
                    "outputs": [{"url": "s3://b/o", "path": "/out/a.txt", "size_bytes": "3"}],
                    "system_logs": ["started"],
                }
            ],
        },
    )


async def ids(tes: TesStore, **filters: Any) -> list[str]:
    """The ids of one big page of tasks matching ``filters``, newest first."""
    tasks, token = await tes.list_tes_tasks(page_size=1000, **filters)
    assert token == ""
    return [t.id or "" for t in tasks]


async def walk(tes: TesStore, page_size: int, **filters: Any) -> list[list[str]]:
    """Every page of matching tasks, as ids, following the page tokens."""
    pages: list[list[str]] = []
    token = ""
    while True:
        tasks, token = await tes.list_tes_tasks(page_size=page_size, page_token=token, **filters)
        pages.append([t.id or "" for t in tasks])
        if not token:
            return pages


def append_system_log(line: str) -> tes_store.TesTaskChange:
    """A change adding a task log whose system_logs is ``line``."""
    return lambda t: attrs.evolve(t, logs=(*t.logs, TesTaskLog(system_logs=(line,))))


# ---------------------------------------------------------------- create and get


async def test_created_task_reads_back_equal(tes: TesStore) -> None:
    """A task with inputs, outputs, executors, tags and logs reads back field for field;
    its creation_time is stamped from now_ns."""
    made = await tes.create_tes_task(full_task(), now_ns=1_700_000_000_000_000_000)
    assert made == attrs.evolve(full_task(), creation_time=rfc3339(1_700_000_000_000_000_000))
    assert await tes.get_tes_task("full") == made


async def test_given_creation_time_is_kept(tes: TesStore) -> None:
    """A task that has a creation_time keeps it."""
    task = attrs.evolve(tes_task("t"), creation_time="2020-01-01T00:00:00Z")
    assert (await tes.create_tes_task(task, now_ns=5)).creation_time == "2020-01-01T00:00:00Z"
    assert (await tes.get_tes_task("t")).creation_time == "2020-01-01T00:00:00Z"


async def test_duplicate_id_is_refused(tes: TesStore) -> None:
    """Creating an id that exists raises TesTaskAlreadyExists and keeps the first."""
    first = await tes.create_tes_task(tes_task("t", name="one"), now_ns=1)
    with pytest.raises(TesTaskAlreadyExists, match="'t'"):
        await tes.create_tes_task(tes_task("t", name="two", tags={"k": "v"}), now_ns=2)
    assert await tes.get_tes_task("t") == first
    assert await ids(tes, tags=[("k", "")]) == []


async def test_unknown_id_is_not_found(tes: TesStore) -> None:
    """Reading or updating an id that does not exist raises TesTaskNotFound naming it."""
    with pytest.raises(TesTaskNotFound, match="'nope'"):
        await tes.get_tes_task("nope")
    with pytest.raises(TesTaskNotFound, match="'nope'"):
        await tes.update_tes_task("nope", lambda t: t, now_ns=1)


async def test_task_without_id_is_refused(tes: TesStore) -> None:
    """A task must carry its id to be stored."""
    with pytest.raises(ValueError, match="id"):
        await tes.create_tes_task(attrs.evolve(tes_task("x"), id=None), now_ns=1)


# ---------------------------------------------------------------- update


async def test_update_applies_the_change_and_persists(tes: TesStore) -> None:
    """An update stores what the change returns: state, logs and tags alike."""
    await tes.create_tes_task(tes_task("t", tags={"old": "1"}), now_ns=1)

    def finish(task: TesTask) -> TesTask:
        return attrs.evolve(task, state=TesState.COMPLETE, tags={"new": "2"})

    after = await tes.update_tes_task("t", finish, now_ns=2)
    assert after.state is TesState.COMPLETE
    assert await tes.get_tes_task("t") == after
    assert await ids(tes, state=TesState.COMPLETE) == ["t"]
    assert await ids(tes, tags=[("old", "")]) == []
    assert await ids(tes, tags=[("new", "2")]) == ["t"]


async def test_refused_or_empty_changes_write_nothing(tes: TesStore) -> None:
    """A change that raises, or returns the task as it was, leaves the row alone;
    a change of id is refused."""
    made = await tes.create_tes_task(tes_task("t"), now_ns=1)

    def refuse(task: TesTask) -> TesTask:
        raise RuntimeError("no")

    with pytest.raises(RuntimeError):
        await tes.update_tes_task("t", refuse, now_ns=2)
    assert await tes.update_tes_task("t", lambda t: t, now_ns=3) == made
    with pytest.raises(ValueError, match="keep its id"):
        await tes.update_tes_task("t", lambda t: attrs.evolve(t, id="other"), now_ns=4)
    assert await tes.get_tes_task("t") == made
    async with tes.engine.connect() as conn:
        row = (await conn.execute(sa.text("select version, updated_at from tes_tasks"))).one()
    assert tuple(row) == (1, 1)


async def test_concurrent_updates_are_all_applied(tes: TesStore) -> None:
    """Many updates racing on one task: each is applied, none is lost."""
    await tes.create_tes_task(tes_task("t"), now_ns=1)
    await asyncio.gather(
        *(tes.update_tes_task("t", append_system_log(f"line-{i}"), now_ns=2) for i in range(RACERS))
    )
    stored = await tes.get_tes_task("t")
    lines = sorted(log.system_logs[0] for log in stored.logs)
    assert lines == sorted(f"line-{i}" for i in range(RACERS))


async def test_concurrent_tag_changes_are_all_applied(tes: TesStore) -> None:
    """Racing updates each adding a tag: the document and the tag filter see them all."""
    await tes.create_tes_task(tes_task("t"), now_ns=1)

    def add_tag(key: str) -> tes_store.TesTaskChange:
        return lambda t: attrs.evolve(t, tags={**t.tags, key: "v"})

    await asyncio.gather(*(tes.update_tes_task("t", add_tag(f"k{i}"), now_ns=2) for i in range(6)))
    assert set((await tes.get_tes_task("t")).tags) == {f"k{i}" for i in range(6)}
    for i in range(6):
        assert await ids(tes, tags=[(f"k{i}", "v")]) == ["t"]


async def test_two_stores_on_one_database_create_and_update_safely(store_url: str) -> None:
    """Two store instances (as two processes would be) creating and updating at once:
    every task gets its own place in the listing and no update is lost."""
    first, second = await Store.open(store_url), await Store.open(store_url)
    try:
        stores = [first.tes, second.tes]
        await asyncio.gather(
            *(stores[i % 2].create_tes_task(tes_task(f"t{i}"), now_ns=i) for i in range(RACERS))
        )
        listed = await ids(first.tes)
        assert sorted(listed) == sorted(f"t{i}" for i in range(RACERS))
        await asyncio.gather(
            *(
                stores[i % 2].update_tes_task("t0", append_system_log(str(i)), now_ns=99)
                for i in range(RACERS)
            )
        )
        assert len((await second.tes.get_tes_task("t0")).logs) == RACERS
    finally:
        await first.close()
        await second.close()


# ---------------------------------------------------------------- list and pages


async def test_list_is_newest_first(tes: TesStore) -> None:
    """Tasks are listed in reverse order of creation (not of the clock they were given)."""
    for i, now in enumerate((30, 10, 20)):
        await tes.create_tes_task(tes_task(f"t{i}"), now_ns=now)
    assert await ids(tes) == ["t2", "t1", "t0"]


@pytest.mark.parametrize("page_size", [1, 2, 3, 5, 6])
async def test_paging_walks_every_task_once(tes: TesStore, page_size: int) -> None:
    """Following the tokens visits every task exactly once, newest first, in full pages;
    the last page (even an exactly full one) ends with an empty token."""
    for i in range(6):
        await tes.create_tes_task(tes_task(f"t{i}"), now_ns=i)
    pages = await walk(tes, page_size)
    assert [i for page in pages for i in page] == [f"t{i}" for i in reversed(range(6))]
    assert len(pages) == math.ceil(6 / page_size)
    assert all(len(page) == page_size for page in pages[:-1])


async def test_empty_store_lists_one_empty_page(tes: TesStore) -> None:
    """No tasks: an empty page and no next token."""
    assert await tes.list_tes_tasks(page_size=10) == ([], "")


async def test_pages_do_not_shift_when_tasks_are_created(tes: TesStore) -> None:
    """Tasks created between two page requests are not on later pages; the walk still
    sees each older task exactly once."""
    for i in range(7):
        await tes.create_tes_task(tes_task(f"old{i}"), now_ns=i)
    seen: list[str] = []
    token = ""
    for page_number in range(100):
        page, token = await tes.list_tes_tasks(page_size=2, page_token=token)
        seen += [t.id or "" for t in page]
        await tes.create_tes_task(tes_task(f"new{page_number}"), now_ns=100 + page_number)
        if not token:
            break
    assert seen == [f"old{i}" for i in reversed(range(7))]


async def test_a_token_outlives_pruned_tasks_and_seqs_are_not_reused(tes: TesStore) -> None:
    """The newest tasks pruned mid-walk, then new ones created: the walk goes on with
    the older tasks, and the new tasks (numbered after the pruned ones) stay out."""
    for i in range(4):
        await tes.create_tes_task(tes_task(f"t{i}", state=TesState.COMPLETE), now_ns=i)
    first, token = await tes.list_tes_tasks(page_size=1)
    assert [t.id for t in first] == ["t3"]
    await tes.update_tes_task("t0", lambda t: attrs.evolve(t, state=TesState.RUNNING), now_ns=1)
    await tes.update_tes_task("t1", lambda t: attrs.evolve(t, state=TesState.RUNNING), now_ns=1)
    assert await tes.prune_tes_tasks(finished_before_ns=10) == 2  # t3 and t2
    for i in range(3):
        await tes.create_tes_task(tes_task(f"new{i}"), now_ns=20 + i)
    rest, _ = await tes.list_tes_tasks(page_size=10, page_token=token)
    assert [t.id for t in rest] == ["t1", "t0"]
    assert await ids(tes) == ["new2", "new1", "new0", "t1", "t0"]


@pytest.mark.parametrize(
    "token",
    [
        "garbage!",
        "!!!",
        "e30",  # {}
        "eyJzZXEiOiJ4In0",  # {"seq":"x"}
        "eyJzZXEiOjB9",  # {"seq":0}
        "eyJzZXEiOnRydWV9",  # {"seq":true}
        "WzFd",  # [1]
        "_w",  # not UTF-8
    ],
)
async def test_invalid_page_token_is_refused(tes: TesStore, token: str) -> None:
    """A page token this store did not make is an InvalidRequest naming page_token."""
    with pytest.raises(InvalidRequest, match="page_token"):
        await tes.list_tes_tasks(page_size=1, page_token=token)


async def test_page_size_below_one_is_refused(tes: TesStore) -> None:
    """A page holds at least one task."""
    with pytest.raises(InvalidRequest, match="page_size"):
        await tes.list_tes_tasks(page_size=0)


def test_page_token_round_trips() -> None:
    """A page token names the seq it was made from, opaquely (URL-safe, no padding)."""
    for seq in (1, 7, 2**40):
        token = encode_page_token(seq)
        assert set(token) <= URL_SAFE
        assert decode_page_token(token) == seq


# ---------------------------------------------------------------- filters


async def test_name_prefix_filter_is_literal_and_case_exact(tes: TesStore) -> None:
    """name_prefix matches the start of the name exactly: % and _ (and the escape
    character) are not wildcards, case matters, a task without a name never matches."""
    names = ["50%_off", "50x_off", "50%Xoff", "50%", "abc", "Abc", "xabc", "a\\b", "a_c"]
    for i, name in enumerate(names):
        await tes.create_tes_task(tes_task(name, name=name), now_ns=i)
    await tes.create_tes_task(tes_task("nameless"), now_ns=99)
    assert await ids(tes, name_prefix="50%_") == ["50%_off"]
    assert await ids(tes, name_prefix="50%") == ["50%", "50%Xoff", "50%_off"]
    assert await ids(tes, name_prefix="ab") == ["abc"]
    assert await ids(tes, name_prefix="a\\") == ["a\\b"]
    assert await ids(tes, name_prefix="a_") == ["a_c"]
    assert await ids(tes, name_prefix="abcd") == []
    assert len(await ids(tes, name_prefix="")) == len(names) + 1


async def test_state_filter(tes: TesStore) -> None:
    """state selects the tasks in that state."""
    await tes.create_tes_task(tes_task("q1"), now_ns=1)
    await tes.create_tes_task(tes_task("r", state=TesState.RUNNING), now_ns=2)
    await tes.create_tes_task(tes_task("q2"), now_ns=3)
    assert await ids(tes, state=TesState.QUEUED) == ["q2", "q1"]
    assert await ids(tes, state=TesState.RUNNING) == ["r"]
    assert await ids(tes, state=TesState.COMPLETE) == []


async def test_tag_filters(tes: TesStore) -> None:
    """Each (key, value) must match; an empty value matches the key with any value."""
    await tes.create_tes_task(tes_task("a", tags={"project": "p1", "user": "ann"}), now_ns=1)
    await tes.create_tes_task(tes_task("b", tags={"project": "p2", "user": "bob"}), now_ns=2)
    await tes.create_tes_task(tes_task("c", tags={"project": ""}), now_ns=3)
    await tes.create_tes_task(tes_task("d"), now_ns=4)
    assert await ids(tes, tags=[("project", "p1")]) == ["a"]
    assert await ids(tes, tags=[("project", "")]) == ["c", "b", "a"]
    assert await ids(tes, tags=[("project", "p2"), ("user", "bob")]) == ["b"]
    assert await ids(tes, tags=[("project", "p1"), ("user", "bob")]) == []
    assert await ids(tes, tags=[("user", "")]) == ["b", "a"]
    assert await ids(tes, tags=[("nope", "")]) == []
    assert await ids(tes, tags=[("project", "P1")]) == []


async def test_filtered_pages_are_full_of_matching_tasks(tes: TesStore) -> None:
    """Filters apply before paging: every page but the last holds page_size matches,
    and the walk visits each match once."""
    for i in range(12):
        tags = {"even": "yes"} if i % 2 == 0 else {}
        state = TesState.COMPLETE if i % 3 == 0 else TesState.QUEUED
        await tes.create_tes_task(tes_task(f"t{i:02}", name=f"job-{i}", state=state, tags=tags), i)
    pages = await walk(tes, 2, tags=[("even", "")], name_prefix="job-")
    assert pages == [["t10", "t08"], ["t06", "t04"], ["t02", "t00"]]
    pages = await walk(tes, 3, tags=[("even", "yes")], state=TesState.COMPLETE)
    assert pages == [["t06", "t00"]]


# ---------------------------------------------------------------- prune


async def test_prune_removes_only_old_finished_tasks(tes: TesStore) -> None:
    """Pruning removes tasks in a final state last changed before the cutoff, tags
    included; running ones and recently finished ones stay."""
    for state in FINAL:
        await tes.create_tes_task(tes_task(f"old-{state}", state=state, tags={"k": "v"}), 10)
        await tes.create_tes_task(tes_task(f"new-{state}", state=state), 100)
    for state in NOT_FINAL:
        await tes.create_tes_task(tes_task(f"old-{state}", state=state), 10)
    assert await tes.prune_tes_tasks(finished_before_ns=50) == len(FINAL)
    left = set(await ids(tes))
    assert left == {f"new-{s}" for s in FINAL} | {f"old-{s}" for s in NOT_FINAL}
    async with tes.engine.connect() as conn:
        tags = (await conn.execute(sa.text("select count(*) from tes_task_tags"))).scalar()
    assert tags == 0
    with pytest.raises(TesTaskNotFound):
        await tes.get_tes_task(f"old-{FINAL[0]}")
    assert await tes.prune_tes_tasks(finished_before_ns=50) == 0


async def test_prune_goes_by_the_last_change(tes: TesStore) -> None:
    """A task created long ago but finished recently is not pruned yet."""
    await tes.create_tes_task(tes_task("t"), now_ns=1)
    await tes.update_tes_task("t", lambda t: attrs.evolve(t, state=TesState.COMPLETE), now_ns=90)
    assert await tes.prune_tes_tasks(finished_before_ns=50) == 0
    assert await tes.prune_tes_tasks(finished_before_ns=91) == 1


async def test_prune_works_in_batches(tes: TesStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """More prunable tasks than one batch holds are all removed, and counted."""
    monkeypatch.setattr(tes_store, "PRUNE_BATCH", 2)
    for i in range(5):
        await tes.create_tes_task(tes_task(f"t{i}", state=TesState.COMPLETE, tags={"k": "v"}), i)
    await tes.create_tes_task(tes_task("running", state=TesState.RUNNING), now_ns=0)
    assert await tes.prune_tes_tasks(finished_before_ns=100) == 5
    assert await ids(tes) == ["running"]


# ---------------------------------------------------------------- migration


async def test_store_at_revision_0003_upgrades_keeping_its_tasks(store_url: str) -> None:
    """A store left at revision 0003 with a Task in it upgrades to head keeping the
    Task, and then stores TES tasks."""
    engine = create_async_engine(store_url)
    async with engine.begin() as conn:
        await conn.run_sync(upgrade, "0003")
        names = await conn.run_sync(lambda sync: sa.inspect(sync).get_table_names())
        assert "tes_tasks" not in names
        await conn.execute(
            sa.text(
                "insert into tasks (guid, domain, state, created_at, updated_at, definition)"
                " values ('old', 'd', 'PENDING', 1, 1, :definition)"
            ),
            {
                "definition": '{"task_guid":"old","domain":"d","stack":"linux",'
                '"action":{"run":{"path":"/bin/true"}}}'
            },
        )
    await engine.dispose()
    store = await Store.open(store_url)
    try:
        assert (await store.get_task("old")).state is TaskState.PENDING
        made = await store.tes.create_tes_task(tes_task("tes-1", tags={"k": "v"}), now_ns=1)
        assert await store.tes.get_tes_task("tes-1") == made
        assert await ids(store.tes, tags=[("k", "v")]) == ["tes-1"]
        async with store.engine.connect() as conn:
            version = await conn.execute(sa.text("select version_num from alembic_version"))
            assert version.scalar() == head_revision()
    finally:
        await store.close()
