"""The composition root: builds every part a node runs and runs them together.

Each part exposes ``async run()`` and stops cleanly when cancelled; the node
runs them under one TaskGroup, so a part that fails stops the node rather than
leaving it half alive. Asked to stop (``stopping`` set: SIGTERM or SIGINT), the
node first evacuates its cells (no new work; running Tasks get up to the
evacuation timeout), then cancels every part.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import shutil
import socket
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

import attrs
from aiohttp import web

from diego.api.app import make_app
from diego.api.errors import BadRequestsInOneLine
from diego.bus import Bus, follow
from diego.callbacks import Resolver
from diego.cell.backends.base import Backend
from diego.cell.backends.docker import DockerBackend, DockerOptions, remove_strays
from diego.cell.backends.local import LocalBackend
from diego.cell.backends.local import remove_strays as remove_local_strays
from diego.cell.executor import Executor, MonitorSettings
from diego.cell.rep import Rep, RepSettings
from diego.cell.transfer import Transfers
from diego.clock import SystemClock
from diego.config import Settings, cell_token
from diego.logs import LogStore
from diego.models.events import Event, TaskCreated
from diego.models.task import TaskState
from diego.models.work import Resources
from diego.scheduling.auctioneer import Auctioneer
from diego.scheduling.cells import EmbeddedCells
from diego.scheduling.convergence import Converger
from diego.scheduling.converger import ConvergerSettings
from diego.scheduling.lrp_converger import LRPConvergerSettings
from diego.scheduling.lrps import LRPController
from diego.state.bbs import BBS
from diego.state.store import Store, sqlite_url
from diego.tes import TesService, TesSettings

log = logging.getLogger("diego.node")


HTTP_LOG = logging.getLogger("diego.http")
"""The HTTP server's own log (connections, requests it could not parse)."""
HTTP_LOG.addFilter(BadRequestsInOneLine())


class ApiServer:
    """The HTTP API on its listening address."""

    def __init__(self, app: web.Application, host: str, port: int) -> None:
        self.app = app
        self.host = host
        self.port = port
        self.url = ""

    async def run(self, on_listening: Callable[[str], None] | None = None) -> None:
        """Serve until cancelled."""
        runner = web.AppRunner(self.app, access_log=None, handle_signals=False, logger=HTTP_LOG)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.host, self.port)
            await site.start()
            host, port = runner.addresses[0][:2]
            self.url = f"http://{host if ':' not in host else f'[{host}]'}:{port}"
            log.info("api-listening url=%s", self.url)
            if on_listening is not None:
                on_listening(self.url)
            await asyncio.Future()  # until cancelled
        finally:
            await runner.cleanup()


def machine_capacity(data_dir: Path, cells: int) -> Resources:
    """This machine's memory and disk, shared equally by ``cells`` cells."""
    pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    disk = shutil.disk_usage(data_dir).total
    share = max(1, cells)
    return Resources(
        memory_mb=pages // (1024 * 1024) // share,
        disk_mb=disk // (1024 * 1024) // share,
        containers=0,
    )


def node_identity(settings: Settings) -> str:
    """What tells this node's containers from others' on a shared engine: its data dir."""
    return hashlib.sha256(str(settings.data_dir.resolve()).encode()).hexdigest()[:16]


async def make_backend(settings: Settings, cell_id: str, home: Path) -> Backend:
    """The backend ``[cell] backend`` names, for the cell ``cell_id``."""
    if settings.cell.backend == "docker":
        _check_key_quota(settings.cell.max_containers)
        d = settings.docker
        options = DockerOptions(
            url=d.url,
            preloaded=d.images(),
            keepalive=d.keepalive,
            pull_timeout=d.pull_timeout,
            node=node_identity(settings),
            state_dir=str(home / "containers"),
        )
        return await DockerBackend.open(cell_id, options)
    return LocalBackend(
        home / "containers",
        hide=(settings.data_dir.resolve(),),
        container_uid=settings.cell.container_uid,
        spares=settings.cell.spare_containers,
        name=cell_id,
    )


KEYS_QUOTA = Path("/proc/sys/kernel/keys/maxkeys")


def _check_key_quota(max_containers: int) -> None:
    """Warn when the kernel's key quota per user is below what the cell's containers may
    need: runc makes a session keyring for each exec, all as the same remapped uid,
    and past the quota an exec fails "disk quota exceeded"."""
    try:
        quota = int(KEYS_QUOTA.read_text())
    except (OSError, ValueError):
        return
    if quota < 2 * max_containers:
        log.warning(
            "docker-key-quota-low kernel.keys.maxkeys=%d max_containers=%d: execs fail past "
            "about %d at once; raise it (sysctl -w kernel.keys.maxkeys=20000 "
            "kernel.keys.maxbytes=2000000, as scripts/docker.sh does)",
            quota,
            max_containers,
            quota,
        )


async def build_cells(
    settings: Settings,
    bbs: BBS,
    logs: LogStore,
    transfers: Transfers,
    capacity_freed: asyncio.Event,
) -> list[Rep]:
    """The embedded cells of this node."""
    config = settings.cell
    data_dir = settings.data_dir.resolve()
    detected = machine_capacity(data_dir, config.count)
    total = Resources(
        memory_mb=config.memory_mb or detected.memory_mb,
        disk_mb=config.disk_mb or detected.disk_mb,
        containers=config.max_containers,
    )
    prefix = config.name_prefix or socket.gethostname()
    rep_settings = RepSettings(
        poll_interval=config.poll_interval,
        presence_ttl=config.presence_ttl,
        evacuation_timeout=config.evacuation_timeout,
        evacuation_poll=config.evacuation_poll,
    )
    monitor = MonitorSettings(
        unhealthy_interval=config.monitor_unhealthy_interval,
        healthy_interval=config.monitor_interval,
    )
    reps = []
    for i in range(config.count):
        cell_id = f"{prefix}-{i}"
        home = data_dir / "cells" / cell_id
        backend = await make_backend(settings, cell_id, home)
        capabilities = backend.capabilities()
        log.info(
            "cell-capabilities cell=%s %s",
            cell_id,
            " ".join(f"{k}={v}" for k, v in attrs.asdict(capabilities).items()),
        )
        executor = Executor(
            backend,
            total,
            logs,
            transfers,
            home / "scratch",
            monitor=monitor,
            allow_privileged=config.allow_privileged,
            max_pids=config.max_pids,
            journals=home / "journals",
            tes_tail_bytes=settings.tes.tail_bytes,
        )
        zone = f"z{i % config.zones}"
        rep = Rep(
            cell_id, zone, config.stacks, executor, bbs, bbs.bus, rep_settings, capacity_freed
        )
        reps.append(rep)
    ours = {rep.cell_id for rep in reps}
    if config.backend == "docker":
        options = DockerOptions(url=settings.docker.url, node=node_identity(settings))
        for name in await remove_strays(options, ours):
            log.info("container-of-a-cell-gone-removed name=%s", name)
    else:
        hide = (data_dir,)
        strays = await remove_local_strays(data_dir / "cells", ours, hide, config.container_uid)
        for guid in strays:
            log.info("container-of-a-cell-gone-removed guid=%s", guid)
    return reps


async def feed_auctioneer(bbs: BBS, auctioneer: Auctioneer) -> None:
    """Send the auctioneer every PENDING Task: those already stored, then each new one
    (and those stored again, should it fall behind the bus)."""

    async def pending() -> None:
        auctioneer.submit(await bbs.tasks(states=[TaskState.PENDING]))

    async def created(event: Event) -> None:
        assert isinstance(event, TaskCreated)
        auctioneer.submit([event.task])

    await follow(
        bbs.bus,
        lambda e: isinstance(e, TaskCreated),
        created,
        name="auctioneer",
        catch_up=pending,
    )


async def serve(
    settings: Settings,
    on_listening: Callable[[str], None] | None = None,
    stopping: asyncio.Event | None = None,
) -> None:
    """Run a whole node until cancelled, or until ``stopping`` is set."""
    token = cell_token(settings)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    store = await Store.open(settings.store.url or sqlite_url(settings.data_dir))
    for root in settings.transfer.file_roots:
        if not Path(root).is_absolute():
            (settings.data_dir / root).mkdir(parents=True, exist_ok=True)
    transfers = Transfers.from_settings(settings.transfer, settings.data_dir.resolve())
    try:
        clock = SystemClock()
        bus: Bus[Event] = Bus(settings.events.queue_size)
        bbs = BBS(store, bus, clock, settings.crash.policy())
        logs = LogStore(clock, settings.logs.keep_lines, settings.logs.keep_guids)
        capacity_freed = asyncio.Event()
        reps = await build_cells(settings, bbs, logs, transfers, capacity_freed)
        cells = EmbeddedCells(reps)
        auctioneer = Auctioneer(
            bbs,
            cells,
            settings.auction.retry_interval,
            settings.auction.max_batch,
            capacity_freed,
        )
        c = settings.converger
        lrps = LRPController(bbs, auctioneer.submit_work, cells, c.max_lrp_creates)
        resolver = Resolver(bbs, settings.callbacks.timeout, settings.callbacks.immediate_retries)
        converger = Converger(
            bbs,
            ConvergerSettings(c.kick_task_interval, c.expire_pending_task, c.expire_completed_task),
            c.interval,
            auctioneer.submit_work,
            resolver.resolve,
            lrp_settings=LRPConvergerSettings(
                kick_interval_s=c.kick_lrp_interval,
                crash_policy=settings.crash.policy(),
                max_creates=c.max_lrp_creates,
            ),
            start_lrps=lrps.request_starts,
            stop_lrp=lrps.stop,
        )
        t = settings.tes
        tes = TesService(
            bbs,
            TesSettings(
                stack=t.stack,
                retention=t.retention,
                prune_interval=t.prune_interval,
                local_runs_without_image=t.local_runs_without_image,
                tail_bytes=t.tail_bytes,
                egress=t.egress,
            ),
            docker_cells=lambda: any(
                "docker" in rep.executor.backend.capabilities().rootfs_providers for rep in reps
            ),
            logs=logs,
        )
        app = make_app(
            bbs,
            settings,
            cells=reps,
            logs=logs,
            lrp_controller=lrps,
            tes=tes,
            cell_token=token,
        )
        api = ApiServer(app, settings.server.host, settings.server.port)
        await _run_parts(
            [
                api.run(on_listening),
                feed_auctioneer(bbs, auctioneer),
                auctioneer.run(),
                _once_present(reps, converger.run),
                resolver.run(),
                lrps.run(),
                tes.run(),
                *(rep.run() for rep in reps),
            ],
            reps,
            stopping or asyncio.Event(),
        )
    finally:
        await transfers.close()
        await store.close()
        log.info("node-stopped")


async def _once_present(reps: Sequence[Rep], part: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run ``part`` once every embedded cell has announced itself: a restarted node's
    converger must not take its own cells, not back yet, for gone."""
    await asyncio.gather(*(rep.present.wait() for rep in reps))
    await part()


async def _run_parts(
    parts: Sequence[Coroutine[Any, Any, None]], reps: Sequence[Rep], stopping: asyncio.Event
) -> None:
    async with asyncio.TaskGroup() as group:
        running = [group.create_task(part) for part in parts]
        await stopping.wait()
        log.info("node-stopping: evacuating %d cells", len(reps))
        await asyncio.gather(*(rep.evacuate() for rep in reps))
        for task in running:
            task.cancel()
