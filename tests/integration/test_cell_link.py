"""The BBS's verbs for cells over HTTP: its internal API served on loopback by a real
aiohttp server over a real store, and the rep's client of it (``HttpBBS``)."""

# ruff: noqa: F811  (the world fixture, imported from test_rep)
from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from diego.api import bbs_for_cells
from diego.api.errors import json_errors
from diego.cell import rep_api
from diego.cell.bbs_http import BBSUnreachable, HttpBBS
from diego.cell.rep import Rep
from diego.models.actions import RunAction
from diego.models.cell_link import PREFIX, REP_PREFIX
from diego.models.cells import CellPresence
from diego.models.errors import (
    ActualLRPNotFound,
    CellUnreachable,
    InvalidFields,
    InvalidStateTransition,
    RunningOnDifferentCell,
    TaskNotFound,
)
from diego.models.lrp import ActualLRP, ActualLRPState
from diego.models.task import TaskState
from diego.models.work import Resources, TaskWork
from diego.scheduling.cancels import CancelsToCells
from diego.scheduling.cell_http import HttpCell
from diego.scheduling.cells import EmbeddedCells
from tests.integration.processes import eventually, host_pids_with, sleep_arg, sleeping
from tests.integration.test_rep import TOTAL, World, sh, world  # noqa: F401

TOKEN = "s3cret-cell-token"


@pytest.fixture
async def served(world: World) -> AsyncIterator[str]:
    """The world's BBS serving its cell verbs on 127.0.0.1; the server's URL."""
    app = web.Application()
    bbs_for_cells.add_routes(app, world.bbs, TOKEN)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield str(server.make_url("")).rstrip("/")
    finally:
        await server.close()


async def test_a_domain_error_arrives_as_the_same_class(
    world: World, served: str, session: aiohttp.ClientSession
) -> None:
    remote = HttpBBS(served, TOKEN, session)
    with pytest.raises(TaskNotFound) as missing:
        await remote.get_task("no-such-task")
    assert missing.value.task_guid == "no-such-task"
    task = await world.desire(sh("true"))
    before, after = await remote.start_task(task.task_guid, "cell-b")
    assert (before.state, after.state, after.cell_id) == (
        TaskState.PENDING,
        TaskState.RUNNING,
        "cell-b",
    )
    with pytest.raises(InvalidStateTransition) as lost:  # a lost compare-and-swap
        await remote.start_task(task.task_guid, "cell-b")
    assert (lost.value.before, lost.value.after) == ("RUNNING", "RUNNING")
    with pytest.raises(RunningOnDifferentCell):
        await remote.complete_task(task.task_guid, "cell-c", False, "", "")
    with pytest.raises(ActualLRPNotFound) as no_lrp:
        await remote.get_actual_lrp("web", 3)
    assert (no_lrp.value.process_guid, no_lrp.value.index) == ("web", 3)


async def test_presence_and_reads_cross_whole(
    world: World, served: str, session: aiohttp.ClientSession
) -> None:
    remote = HttpBBS(served, TOKEN, session)
    presence = CellPresence(
        cell_id="cell-b",
        zone="z1",
        stacks=("linux",),
        rootfs_providers=("preloaded",),
        capacity=Resources(1024, 2048, 8),
        url="http://10.0.0.2:1800",
    )
    await remote.renew_cell_presence(presence, 30)
    assert await world.bbs.cell_presences() == [presence]
    task = await world.desire(sh("true"))
    await world.bbs.start_task(task.task_guid, "cell-b")
    assert [t.task_guid for t in await remote.tasks(cell_id="cell-b")] == [task.task_guid]
    assert await remote.tasks(cell_id="cell-z") == []
    await remote.remove_cell_presence("cell-b")
    assert await world.bbs.cell_presences() == []


async def test_a_call_without_the_token_is_refused_and_logged(
    world: World, served: str, session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "diego.api.link")
    with pytest.raises(BBSUnreachable, match="401"):
        await HttpBBS(served, "wrong", session).get_task("x")
    async with session.post(f"{served}{PREFIX}/get_task", json={"guid": "x"}) as reply:
        assert reply.status == 401
        assert (await reply.json())["name"] == "Unauthorized"
    assert "link-refused remote=127.0.0.1" in caplog.text
    assert TOKEN not in caplog.text


async def test_bad_arguments_are_refused_naming_each(
    served: str, session: aiohttp.ClientSession
) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    body = {"process_guid": 7, "index": "0", "evacuating": False, "extra": 1}
    async with session.post(
        f"{served}{PREFIX}/get_actual_lrp", json=body, headers=headers
    ) as reply:
        assert reply.status == 400
        fields = {e["field"]: e["rule"] for e in (await reply.json())["errors"]}
    assert fields == {
        "process_guid": "must be a string",
        "index": "must be an integer",
        "extra": "unknown argument",
    }
    async with session.post(f"{served}{PREFIX}/no_such_verb", json={}, headers=headers) as reply:
        assert reply.status == 400


async def test_invalid_fields_keep_their_problems(
    served: str, session: aiohttp.ClientSession
) -> None:
    remote = HttpBBS(served, TOKEN, session)
    with pytest.raises(InvalidFields) as refused:
        await remote._call("get_task")  # no guid
    assert [(p.path, p.rule) for p in refused.value.problems] == [("guid", "required")]


async def test_a_rep_runs_a_task_through_the_bbs_over_http(
    world: World, served: str, session: aiohttp.ClientSession
) -> None:
    """A rep whose BBS is the HTTP client: it takes the work, starts the Task, runs it
    and completes it with its result, every verb over loopback."""
    rep = world.rep("cell-b", bbs=HttpBBS(served, TOKEN, session))
    task = await world.desire(sh("echo ran > /tmp/out"), result_file="/tmp/out")
    assert await rep.perform([TaskWork.from_task(task)]) == []
    done = await world.task_until(task.task_guid, lambda t: t.state is TaskState.COMPLETED)
    assert (done.failed, done.result, done.cell_id) == (False, "ran\n", "cell-b")


async def test_an_unreachable_bbs_is_one_error(session: aiohttp.ClientSession) -> None:
    with pytest.raises(BBSUnreachable, match="did not answer"):
        await HttpBBS("http://127.0.0.1:9", TOKEN, session, timeout=2).get_task("x")


# ---------------------------------------------------------------- the rep API


@pytest.fixture
async def rep_served(world: World) -> AsyncIterator[tuple[Rep, str]]:
    """A rep of the world, its rep API served on 127.0.0.1; the rep and the URL."""
    rep = world.rep("cell-b")
    app = web.Application(middlewares=[json_errors])
    rep_api.add_routes(app, [rep], TOKEN)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield rep, str(server.make_url("")).rstrip("/")
    finally:
        await server.close()


async def test_the_auction_reads_and_fills_a_remote_cell(
    world: World, rep_served: tuple[Rep, str], session: aiohttp.ClientSession
) -> None:
    """Over the rep API: the snapshot is the rep's own, work it takes runs, and what
    it cannot take comes back."""
    rep, url = rep_served
    cell = HttpCell("cell-b", url, TOKEN, session)
    assert await cell.state() == await rep.state()
    task = await world.desire(sh("echo remote > /tmp/out"), result_file="/tmp/out")
    huge = await world.desire(sh("true"), memory_mb=TOTAL.memory_mb + 1)
    refused = await cell.perform([TaskWork.from_task(task), TaskWork.from_task(huge)])
    assert refused == [TaskWork.from_task(huge)]
    done = await world.task_until(task.task_guid, lambda t: t.state is TaskState.COMPLETED)
    assert (done.failed, done.result, done.cell_id) == (False, "remote\n", "cell-b")
    elsewhere = ActualLRP(
        process_guid="web",
        index=0,
        domain="d",
        state=ActualLRPState.RUNNING,
        instance_guid="ig",
        cell_id="cell-z",
    )
    assert await cell.stop_lrp(elsewhere) is False


async def test_a_remote_cell_refuses_a_caller_without_the_token(
    rep_served: tuple[Rep, str], session: aiohttp.ClientSession
) -> None:
    _, url = rep_served
    with pytest.raises(CellUnreachable, match="401"):
        await HttpCell("cell-b", url, "wrong", session).state()
    with pytest.raises(CellUnreachable, match="404"):
        await HttpCell("cell-q", url, TOKEN, session).state()
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with session.post(
        f"{url}{REP_PREFIX}/cell-b/work", json={"tasks": [{"task_guid": 3}]}, headers=headers
    ) as reply:
        assert reply.status == 400
        assert "tasks[0].task_guid" in {e["field"] for e in (await reply.json())["errors"]}


async def test_an_unreachable_cell_is_one_error(session: aiohttp.ClientSession) -> None:
    with pytest.raises(CellUnreachable, match="did not answer"):
        await HttpCell("cell-b", "http://127.0.0.1:9", TOKEN, session, timeout=2).state()


async def test_a_remote_cell_reports_itself_whole(
    rep_served: tuple[Rep, str], session: aiohttp.ClientSession
) -> None:
    """GET /v1/cells of a control node shows a remote cell as its rep reports itself."""
    rep, url = rep_served
    assert await HttpCell("cell-b", url, TOKEN, session).report() == await rep.report()


async def test_a_cancel_reaches_a_remote_cell_at_once(
    world: World, rep_served: tuple[Rep, str], session: aiohttp.ClientSession
) -> None:
    """The control node tells the cell of a Task the BBS cancelled: its container is
    gone at once, though the rep neither polls nor hears the BBS's bus."""
    rep, url = rep_served  # its loops are not running: no poll, no bus
    cancels = asyncio.create_task(
        CancelsToCells(world.bus, EmbeddedCells([HttpCell("cell-b", url, TOKEN, session)])).run()
    )
    try:
        arg = sleep_arg()
        task = await world.desire(RunAction(path="/bin/sleep", args=(arg,)))
        assert await rep.perform([TaskWork.from_task(task)]) == []
        await world.task_until(task.task_guid, lambda t: t.state is TaskState.RUNNING)
        assert await eventually(lambda: bool(sleeping(arg)))
        await world.bbs.cancel_task(task.task_guid)
        assert await eventually(lambda: rep.executor.get(task.task_guid) is None, within=5.0)
        assert await eventually(lambda: not host_pids_with(arg), within=1.0)
    finally:
        cancels.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await cancels


async def test_a_cell_that_does_not_answer_its_state_is_left_out_soon(
    session: aiohttp.ClientSession,
) -> None:
    """A cell that takes the connection but never answers (paused, say) costs an auction
    its state timeout, not the client's ten seconds for other calls."""

    async def never(_request: web.Request) -> web.Response:
        await asyncio.sleep(3600)
        return web.Response()

    app = web.Application()
    app.router.add_get(REP_PREFIX + "/cell-p/state", never)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        url = str(server.make_url("")).rstrip("/")
        cell = HttpCell("cell-p", url, TOKEN, session, timeout=600, state_timeout=0.2)
        async with asyncio.timeout(30):  # far past the state timeout, far short of 600
            with pytest.raises(CellUnreachable, match="did not answer state"):
                await cell.state()
    finally:
        await server.close()
