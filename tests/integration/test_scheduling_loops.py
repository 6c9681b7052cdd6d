"""The auctioneer, converger and resolver loops over a real store, bus and HTTP."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from diego.bus import Bus
from diego.callbacks import Resolver
from diego.clock import FakeClock
from diego.models.cells import CellPresence
from diego.models.codec import decode
from diego.models.errors import TaskNotFound
from diego.models.events import Event
from diego.models.lrp import ActualLRP, ActualLRPKey, ActualLRPState, DesiredLRP
from diego.models.task import Task, TaskCreateRequest, TaskState
from diego.models.work import CellSnapshot, Resources, TaskWork
from diego.scheduling.auctioneer import Auctioneer
from diego.scheduling.cells import EmbeddedCells
from diego.scheduling.convergence import CELL_DISAPPEARED, EXPIRED_PENDING, ConvergerSettings
from diego.scheduling.converger import Converger
from diego.scheduling.intake import Intake
from diego.state.bbs import BBS
from diego.state.schema import actual_lrps
from diego.state.store import Store, _actual_columns, sqlite_url


@pytest.fixture
async def bbs(tmp_path: Path) -> AsyncIterator[BBS]:
    """A BBS over a fresh SQLite store, with a fake clock."""
    store = await Store.open(sqlite_url(tmp_path))
    bus: Bus[Event] = Bus()
    try:
        yield BBS(store, bus, FakeClock())
    finally:
        await store.close()


def request(guid: str, **extra: Any) -> TaskCreateRequest:
    """A valid TaskCreateRequest."""
    body = {"task_guid": guid, "domain": "d", "stack": "linux", "action": {"run": {"path": "/x"}}}
    return decode(TaskCreateRequest, {**body, **extra})


class SimulatedCell:
    """A cell of the auction's own protocol: fixed room; records what it is given."""

    def __init__(self, cell_id: str, memory_mb: int, refuse: bool = False, dead: bool = False):
        self.cell_id = cell_id
        self.total = Resources(memory_mb, 1000, 10)
        self.refuse = refuse
        self.dead = dead
        self.given: list[str] = []

    async def state(self) -> CellSnapshot:
        return CellSnapshot(
            self.cell_id,
            "z0",
            frozenset({"linux"}),
            frozenset({"preloaded"}),
            self.total,
            self.total,
        )

    async def perform(self, work: Sequence[TaskWork]) -> list[TaskWork]:
        if self.dead:
            raise ConnectionError("no answer")
        if self.refuse:
            return list(work)
        self.given += [w.task_guid for w in work]
        return []


async def test_auction_places_and_fails_what_fits_nowhere(bbs: BBS) -> None:
    """Placed work reaches its cell; work no cell could ever hold fails with the reason."""
    cell = SimulatedCell("a", memory_mb=100)
    auctioneer = Auctioneer(bbs, EmbeddedCells([cell]))
    small = await bbs.desire_task(request("small", memory_mb=50))
    huge = await bbs.desire_task(request("huge", memory_mb=500))
    auctioneer.submit([small, huge])
    await auctioneer.auction()
    assert cell.given == ["small"]
    failed = await bbs.get_task("huge")
    assert (failed.state, failed.failure_reason) == (
        TaskState.COMPLETED,
        "insufficient resources: memory",
    )


async def test_a_stale_copy_of_a_started_task_is_never_failed_by_the_auction(bbs: BBS) -> None:
    """The auction fails only what is still PENDING: a copy read before the Task started
    (the intake's, the converger's) that no cell answering now could hold leaves it
    running."""
    cell = SimulatedCell("a", memory_mb=100)
    auctioneer = Auctioneer(bbs, EmbeddedCells([cell]))
    stale = await bbs.desire_task(request("started-elsewhere", memory_mb=500))
    await bbs.start_task("started-elsewhere", "cell-b")  # cell-b did not answer the auction
    auctioneer.submit([stale])
    await auctioneer.auction()
    after = await bbs.get_task("started-elsewhere")
    assert (after.state, after.cell_id, after.failed) == (TaskState.RUNNING, "cell-b", False)


async def test_refused_work_is_carried_but_unanswered_work_is_not(bbs: BBS) -> None:
    """A cell that refuses gets the work again next batch; a cell that does not answer does not."""
    refusing = SimulatedCell("a", memory_mb=100, refuse=True)
    auctioneer = Auctioneer(bbs, EmbeddedCells([refusing]))
    task = await bbs.desire_task(request("t"))
    auctioneer.submit([task])
    await auctioneer.auction()
    refusing.refuse = False
    await auctioneer.auction()
    assert refusing.given == ["t"]

    dead = SimulatedCell("b", memory_mb=100, dead=True)
    auctioneer = Auctioneer(bbs, EmbeddedCells([dead]))
    other = await bbs.desire_task(request("u"))
    auctioneer.submit([other])
    await auctioneer.auction()
    dead.dead = False
    await auctioneer.auction()
    assert dead.given == []  # the converger, not the auction, recovers it


async def test_auction_loop_retries_carried_work_when_kicked(bbs: BBS) -> None:
    """Carried-over work is auctioned again as soon as capacity is said to be freed."""
    cell = SimulatedCell("a", memory_mb=100, refuse=True)
    auctioneer = Auctioneer(bbs, EmbeddedCells([cell]), retry_interval=3600)
    loop = asyncio.create_task(auctioneer.run())
    try:
        auctioneer.submit([await bbs.desire_task(request("t"))])
        await _until(lambda: auctioneer.batches >= 1)
        cell.refuse = False
        auctioneer.kick()
        await _until(lambda: cell.given == ["t"])
    finally:
        loop.cancel()


async def test_new_work_alone_does_not_auction_carried_work_again(bbs: BBS) -> None:
    """Work carried over waits for a kick (or the retry interval): a new Task cannot
    make room, and auctioning everything carried with each new one was quadratic."""
    cell = SimulatedCell("a", memory_mb=100, refuse=True)
    auctioneer = Auctioneer(bbs, EmbeddedCells([cell]), retry_interval=3600)
    loop = asyncio.create_task(auctioneer.run())
    try:
        auctioneer.submit([await bbs.desire_task(request("t"))])
        await _until(lambda: auctioneer.batches == 1)
        cell.refuse = False
        auctioneer.submit([await bbs.desire_task(request("u"))])
        await _until(lambda: cell.given == ["u"])  # not "t": it waits for a kick
        auctioneer.kick()
        await _until(lambda: cell.given == ["u", "t"])
    finally:
        loop.cancel()


async def test_converger_fails_tasks_of_vanished_cells(bbs: BBS) -> None:
    """A RUNNING Task whose cell has no live presence is failed; one on a live cell is not."""
    for guid in ("lost", "kept"):
        await bbs.desire_task(request(guid))
    await bbs.start_task("lost", "gone-cell")
    await bbs.start_task("kept", "live-cell")
    presence = CellPresence(
        cell_id="live-cell", capacity=Resources(memory_mb=1, disk_mb=1, containers=1)
    )
    await bbs.renew_cell_presence(presence, ttl=60)
    converger = Converger(bbs, ConvergerSettings(), 1.0, lambda _t: None, lambda _t: None)
    await converger.converge()
    lost = await bbs.get_task("lost")
    assert (lost.state, lost.failure_reason) == (TaskState.COMPLETED, CELL_DISAPPEARED)
    assert (await bbs.get_task("kept")).state is TaskState.RUNNING


async def test_converger_kicks_expires_and_reaps(bbs: BBS) -> None:
    """Stale PENDING Tasks are re-auctioned, expired ones failed, long-COMPLETED ones removed."""
    clock = bbs.clock
    assert isinstance(clock, FakeClock)
    await bbs.desire_task(request("ancient"))
    clock.advance(1700)
    await bbs.desire_task(request("stale"))
    await bbs.desire_task(request("done"))
    await bbs.cancel_task("done")
    clock.advance(200)  # ancient: 1900 s old; stale: 200 s; done: completed 200 s ago
    auctioned: list[str] = []
    converger = Converger(
        bbs,
        ConvergerSettings(),
        1.0,
        lambda tasks: auctioned.extend(t.task_guid for t in tasks),
        lambda _t: None,
    )
    await converger.converge()
    ancient = await bbs.get_task("ancient")
    assert (ancient.state, ancient.failure_reason) == (TaskState.COMPLETED, EXPIRED_PENDING)
    assert auctioned == ["stale"]
    with pytest.raises(TaskNotFound):
        await bbs.get_task("done")


async def test_converger_resolves_and_demotes(bbs: BBS) -> None:
    """A COMPLETED Task with a callback untouched too long is handed to the resolver whole;
    a RESOLVING one stuck too long is demoted to COMPLETED."""
    clock = bbs.clock
    assert isinstance(clock, FakeClock)
    for guid in ("called", "called-too", "stuck", "recent"):
        await bbs.desire_task(request(guid, completion_callback_url=f"http://cb/{guid}"))
        if guid == "recent":
            clock.advance(40)
        await bbs.cancel_task(guid)
        if guid == "stuck":
            await bbs.resolving_task(guid)
    resolved: list[Task] = []
    converger = Converger(bbs, ConvergerSettings(), 1.0, lambda _t: None, resolved.append)
    todo = await converger.converge()
    assert (todo.resolve, todo.demote) == (("called", "called-too"), ("stuck",))
    assert [t.task_guid for t in resolved] == ["called", "called-too"]
    assert resolved[0] == await bbs.get_task("called")
    assert (await bbs.get_task("stuck")).state is TaskState.COMPLETED


async def test_converger_lrp_pass_steps_then_auctions(bbs: BBS) -> None:
    """Instances of a dead cell are unclaimed, CRASHED ones past their backoff restarted,
    missing ones created, dead evacuating copies removed, extra ones stopped; what was
    stepped, and stale UNCLAIMED ones, are auctioned."""
    clock = bbs.clock
    assert isinstance(clock, FakeClock)
    store = bbs.store
    await bbs.upsert_domain("apps", 0)
    await bbs.desire_lrp(
        decode(
            DesiredLRP,
            {
                "process_guid": "app",
                "domain": "apps",
                "stack": "linux",
                "instances": 4,
                "action": {"run": {"path": "/start"}},
            },
        )
    )
    await bbs.start_actual_lrp("app", 0, "apps", "ig-0", "dead-cell")
    await bbs.evacuate_actual_lrp("app", 0, "ig-0", "dead-cell")  # 0: UNCLAIMED + copy
    await bbs.start_actual_lrp("app", 1, "apps", "ig-1", "dead-cell")
    crashed = ActualLRP(
        process_guid="app",
        index=2,
        domain="apps",
        state=ActualLRPState.CRASHED,
        crash_count=3,
        last_crashed_at=clock.now(),
        since=clock.now(),
    )
    await store._execute(actual_lrps.insert().values(**_actual_columns(crashed)))
    await bbs.create_unclaimed_actual_lrp("app", 5, "apps")  # beyond instances: extra
    clock.advance(60)  # the backoff of a third crash (30 s) and the kick (30 s) passed
    stopped: list[ActualLRP] = []
    started: list[ActualLRPKey] = []

    async def stop(actual: ActualLRP) -> None:
        stopped.append(actual)

    converger = Converger(
        bbs,
        ConvergerSettings(),
        1.0,
        lambda _t: None,
        lambda _t: None,
        start_lrps=started.extend,
        stop_lrp=stop,
    )
    await converger.converge_lrps()
    states = {(a.index, a.evacuating): a.state for a in await bbs.actual_lrps("app")}
    assert states == {
        (0, False): ActualLRPState.UNCLAIMED,
        (1, False): ActualLRPState.UNCLAIMED,
        (2, False): ActualLRPState.UNCLAIMED,
        (3, False): ActualLRPState.UNCLAIMED,
        (5, False): ActualLRPState.UNCLAIMED,
    }
    assert [(a.index, a.state) for a in stopped] == [(5, ActualLRPState.UNCLAIMED)]
    assert [(k.process_guid, k.index) for k in started] == [
        ("app", 0),
        ("app", 1),
        ("app", 2),
        ("app", 3),
    ]


class CallbackServer:
    """A completion-callback endpoint on loopback answering a script of statuses."""

    def __init__(self, statuses: list[int], delay: float = 0.0) -> None:
        self.statuses = statuses
        self.delay = delay
        self.bodies: list[Any] = []

    async def handle(self, request: web.Request) -> web.Response:
        self.bodies.append(await request.json())
        await asyncio.sleep(self.delay)
        status = self.statuses.pop(0) if self.statuses else 200
        return web.Response(status=status)


async def serve_callbacks(callback: CallbackServer) -> TestServer:
    app = web.Application()
    app.router.add_post("/done", callback.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    return server


async def completed_with_callback(bbs: BBS, url: str) -> Task:
    await bbs.desire_task(request("t", completion_callback_url=url))
    await bbs.start_task("t", "cell")
    _, done = await bbs.complete_task("t", "cell", False, "", "the result")
    return done


async def test_callback_retries_503_then_resolves(bbs: BBS) -> None:
    """503 twice then 200: three POSTs of the TaskResponse, then the Task is removed."""
    callback = CallbackServer([503, 503, 200])
    server = await serve_callbacks(callback)
    try:
        done = await completed_with_callback(bbs, str(server.make_url("/done")))
        resolver = Resolver(bbs, timeout=5)
        await resolver._resolve(done)
    finally:
        await server.close()
    assert len(callback.bodies) == 3
    assert callback.bodies[0]["task_guid"] == "t"
    assert callback.bodies[0]["result"] == "the result"
    with pytest.raises(TaskNotFound):
        await bbs.get_task("t")


async def test_callback_that_stays_unavailable_leaves_task_resolving(bbs: BBS) -> None:
    """503 four times: the Task stays RESOLVING for the converger to demote and retry."""
    callback = CallbackServer([503] * 10)
    server = await serve_callbacks(callback)
    try:
        done = await completed_with_callback(bbs, str(server.make_url("/done")))
        await Resolver(bbs, timeout=5, immediate_retries=3)._resolve(done)
    finally:
        await server.close()
    assert len(callback.bodies) == 4
    assert (await bbs.get_task("t")).state is TaskState.RESOLVING


async def test_callback_timeout_leaves_task_resolving(bbs: BBS) -> None:
    """A callback that does not answer in time leaves the Task RESOLVING, called once."""
    callback = CallbackServer([200], delay=5)
    server = await serve_callbacks(callback)
    try:
        done = await completed_with_callback(bbs, str(server.make_url("/done")))
        await Resolver(bbs, timeout=0.2)._resolve(done)
    finally:
        await server.close()
    assert len(callback.bodies) == 1
    assert (await bbs.get_task("t")).state is TaskState.RESOLVING


async def test_only_one_resolver_calls_the_callback(bbs: BBS) -> None:
    """Two resolvers racing on one COMPLETED Task: the callback is called once."""
    callback = CallbackServer([200, 200])
    server = await serve_callbacks(callback)
    try:
        done = await completed_with_callback(bbs, str(server.make_url("/done")))
        await asyncio.gather(Resolver(bbs)._resolve(done), Resolver(bbs)._resolve(done))
    finally:
        await server.close()
    assert len(callback.bodies) == 1


async def test_resolver_follows_completions_on_the_bus(bbs: BBS) -> None:
    """A Task that completes with a callback URL is resolved without anyone asking."""
    callback = CallbackServer([200])
    server = await serve_callbacks(callback)
    resolver = Resolver(bbs)
    loop = asyncio.create_task(resolver.run())
    try:
        await asyncio.sleep(0)  # let the resolver subscribe
        await completed_with_callback(bbs, str(server.make_url("/done")))
        await _until(lambda: len(callback.bodies) == 1)
    finally:
        loop.cancel()
        await server.close()


async def _until(condition: Any, deadline: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline
    while not condition():
        assert loop.time() < end, "condition not met in time"
        await asyncio.sleep(0.01)


async def test_an_auction_takes_at_most_max_batch_items_oldest_first(bbs: BBS) -> None:
    """However much is pending, one batch is bounded; the rest follows at once."""
    cell = SimulatedCell("a", memory_mb=1000)
    auctioneer = Auctioneer(bbs, EmbeddedCells([cell]), max_batch=2)
    tasks = [await bbs.desire_task(request(f"t{i}")) for i in range(5)]
    auctioneer.submit(tasks)
    await auctioneer.auction()
    assert cell.given == ["t0", "t1"]
    await auctioneer.auction()
    await auctioneer.auction()
    assert cell.given == [f"t{i}" for i in range(5)]


class Taken:
    """The intake's two outlets, recording what reached them."""

    def __init__(self) -> None:
        self.tasks: list[str] = []
        self.instances: list[tuple[str, int]] = []

    def submit(self, tasks: Sequence[Task]) -> None:
        self.tasks += [t.task_guid for t in tasks]

    def request_starts(self, keys: Sequence[tuple[str, int]]) -> None:
        self.instances += list(keys)


async def test_the_intake_finds_in_the_store_what_no_event_brought(bbs: BBS) -> None:
    """Work written by another node (its events on its own bus) reaches this node's
    auctioneer by the intake's read of the store, one interval after it is made; work
    no longer waiting by then does not."""
    assert isinstance(bbs.clock, FakeClock)
    taken = Taken()
    intake = Intake(bbs, taken, taken, poll=0.02)
    running = asyncio.create_task(intake.run())
    try:
        await asyncio.sleep(0.05)
        assert taken.tasks == []  # nothing waiting at the start
        other = BBS(bbs.store, Bus(), bbs.clock)  # another node's BBS on the same store
        bbs.clock.advance(0.01)
        await other.desire_task(request("waiting"))
        await other.desire_task(request("started"))
        await other.start_task("started", "cell-1")
        await other.create_unclaimed_actual_lrps([("web", 0, "d"), ("web", 1, "d")])
        await asyncio.sleep(0.1)
        assert taken.tasks == []  # not yet an interval old
        bbs.clock.advance(1.0)
        for _ in range(100):
            if taken.tasks and taken.instances:
                break
            await asyncio.sleep(0.02)
        assert taken.tasks == ["waiting"]
        assert sorted(taken.instances) == [("web", 0), ("web", 1)]
        await asyncio.sleep(0.1)  # read once: later reads start past them
        assert taken.tasks == ["waiting"]
        assert len(taken.instances) == 2
        await bbs.desire_task(request("nudged"))  # this node's event: taken at once
        for _ in range(50):
            if "nudged" in taken.tasks:
                break
            await asyncio.sleep(0.01)
        assert taken.tasks == ["waiting", "nudged"]
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
