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
from urllib.parse import urlsplit

import aiohttp
import attrs
from aiohttp import web

from diego.api import bbs_for_cells
from diego.api.app import make_app
from diego.api.errors import BadRequestsInOneLine, json_errors
from diego.api.keys import SETTINGS_KEY
from diego.bus import Bus
from diego.callbacks import Resolver
from diego.cell import rep_api
from diego.cell.backends.base import Backend
from diego.cell.backends.docker import DockerBackend, DockerOptions, remove_strays
from diego.cell.backends.local import LocalBackend
from diego.cell.backends.local import remove_strays as remove_local_strays
from diego.cell.bbs_http import HttpBBS
from diego.cell.executor import Executor, LogSink, MonitorSettings
from diego.cell.log_shipping import LogShipper, ShippingSettings
from diego.cell.rep import BBSClient, Rep, RepSettings
from diego.cell.transfer import Transfers
from diego.clock import SystemClock
from diego.config import Settings, cell_token
from diego.logs import LogStore
from diego.models.events import Event
from diego.models.work import Resources
from diego.roles import check_roles, parse_roles
from diego.scheduling.auctioneer import Auctioneer
from diego.scheduling.cancels import CancelsToCells
from diego.scheduling.cell_http import HttpCells
from diego.scheduling.cells import CellDirectory, EmbeddedCells, PresentCells
from diego.scheduling.convergence import ConvergerSettings
from diego.scheduling.converger import Converger
from diego.scheduling.intake import Intake
from diego.scheduling.lrp_convergence import LRPConvergerSettings
from diego.scheduling.lrps import LRPController
from diego.state.bbs import BBS
from diego.state.store import Store, sqlite_url
from diego.tes import TesService, TesSettings

log = logging.getLogger("diego.node")


HTTP_LOG = logging.getLogger("diego.http")
"""The HTTP server's own log (connections, requests it could not parse)."""
HTTP_LOG.addFilter(BadRequestsInOneLine())


class ApiServer:
    """The HTTP API on its listening socket (bound before the parts are built, so that
    a cell knows the port it is reached at even when the port was 0)."""

    def __init__(self, app: web.Application, sock: socket.socket) -> None:
        self.app = app
        self.sock = sock
        self.url = ""

    async def run(self, on_listening: Callable[[str], None] | None = None) -> None:
        """Serve until cancelled."""
        runner = web.AppRunner(self.app, access_log=None, handle_signals=False, logger=HTTP_LOG)
        await runner.setup()
        try:
            site = web.SockSite(runner, self.sock)
            await site.start()
            host, port = runner.addresses[0][:2]
            self.url = f"http://{host if ':' not in host else f'[{host}]'}:{port}"
            log.info("api-listening url=%s", self.url)
            if on_listening is not None:
                on_listening(self.url)
            await asyncio.Future()  # until cancelled
        finally:
            await runner.cleanup()


def listening_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` and listening (port 0: a free one)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(1024)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


def advertised_url(settings: Settings, sock: socket.socket) -> str:
    """Where the control node reaches this node's cells: ``[node] advertise_url``, or
    the address it listens on (with a wildcard, the one it reaches the BBS from)."""
    if settings.node.advertise_url:
        return settings.node.advertise_url.rstrip("/")
    host, port = sock.getsockname()[:2]
    if host in ("0.0.0.0", "::"):
        bbs = urlsplit(settings.node.bbs_url)
        with socket.socket(sock.family, socket.SOCK_DGRAM) as probe:
            probe.connect((bbs.hostname or "127.0.0.1", bbs.port or 80))
            host = probe.getsockname()[0]
    return f"http://{f'[{host}]' if ':' in host else host}:{port}"


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
    bbs: BBSClient,
    bus: Bus[Event],
    logs: LogSink,
    transfers: Transfers,
    capacity_freed: asyncio.Event,
    url: str = "",
) -> list[Rep]:
    """The cells of this node; ``url``: where their rep API is reached, for cells whose
    BBS is on another machine."""
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
        cell_id = config.id or f"{prefix}-{i}"
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
        zone = config.zone or f"z{i % config.zones}"
        rep = Rep(
            cell_id, zone, config.stacks, executor, bbs, bus, rep_settings, capacity_freed, url
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


async def serve(
    settings: Settings,
    on_listening: Callable[[str], None] | None = None,
    stopping: asyncio.Event | None = None,
) -> None:
    """Run the node's roles until cancelled, or until ``stopping`` is set: a control
    node (with its own cells or none), or a node of cells only, reaching its BBS over
    HTTP."""
    token = cell_token(settings)
    roles = parse_roles(settings.node.role)
    check_roles(roles, settings.node.bbs_url, settings.cell.count, token)
    sock = listening_socket(settings.server.host, settings.server.port)
    try:
        if "bbs" in roles:
            await _serve_control(settings, roles, token, sock, on_listening, stopping)
        else:
            await _serve_cells(settings, token, sock, on_listening, stopping)
    finally:
        sock.close()
        log.info("node-stopped")


async def _serve_cells(
    settings: Settings,
    token: str,
    sock: socket.socket,
    on_listening: Callable[[str], None] | None,
    stopping: asyncio.Event | None,
) -> None:
    """The cells of a node whose BBS is on another machine: each reaches it over HTTP
    and is reached by the auctioneer through its rep API."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    transfers = Transfers.from_settings(settings.transfer, settings.data_dir.resolve())
    url = advertised_url(settings, sock)
    async with aiohttp.ClientSession() as session:
        try:
            clock = SystemClock()
            bbs = HttpBBS(settings.node.bbs_url, token, session)
            # The cell's own bus, which no BBS publishes on: cancels and stops come
            # through the rep API (or, if missed, at the reps' polls).
            bus: Bus[Event] = Bus(settings.events.queue_size)
            g = settings.logs
            shipper = LogShipper(
                bbs,
                clock,
                ShippingSettings(
                    interval=g.ship_interval,
                    batch_lines=g.ship_batch_lines,
                    batch_bytes=g.ship_batch_bytes,
                    buffer_bytes=g.ship_buffer_bytes,
                    retry_interval=g.ship_retry_interval,
                ),
            )
            reps = await build_cells(settings, bbs, bus, shipper, transfers, asyncio.Event(), url)
            app = web.Application(
                middlewares=[json_errors], client_max_size=settings.server.max_body_bytes
            )
            app[SETTINGS_KEY] = settings
            rep_api.add_routes(app, reps, token, settings.limits)
            log.info("cells-of-a-remote-bbs bbs=%s advertised=%s", settings.node.bbs_url, url)
            api = ApiServer(app, sock)
            parts = [api.run(on_listening), shipper.run(), *(rep.run() for rep in reps)]
            await _run_parts(parts, reps, stopping or asyncio.Event())
        finally:
            await transfers.close()


async def _serve_control(
    settings: Settings,
    roles: frozenset[str],
    token: str,
    sock: socket.socket,
    on_listening: Callable[[str], None] | None,
    stopping: asyncio.Event | None,
) -> None:
    """The store and BBS, and whichever of the API, auctioneer, converger and cells
    ``roles`` names."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    store = await Store.open(settings.store.url or sqlite_url(settings.data_dir))
    for root in settings.transfer.file_roots:
        if not Path(root).is_absolute():
            (settings.data_dir / root).mkdir(parents=True, exist_ok=True)
    transfers = Transfers.from_settings(settings.transfer, settings.data_dir.resolve())
    session = aiohttp.ClientSession()
    try:
        clock = SystemClock()
        bus: Bus[Event] = Bus(settings.events.queue_size)
        bbs = BBS(store, bus, clock, settings.crash.policy())
        logs = LogStore(clock, settings.logs.keep_lines, settings.logs.keep_guids)
        capacity_freed = asyncio.Event()
        reps = []
        if "cell" in roles:
            reps = await build_cells(settings, bbs, bus, logs, transfers, capacity_freed)
        cells: CellDirectory = EmbeddedCells(reps)
        connector = HttpCells(token, session, settings.auction.cell_state_timeout)
        if token:  # cells on other machines may join: the BBS holds their presences
            cells = PresentCells(reps, bbs, connector)
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
            cells,
            logs=logs,
        )
        if "api" in roles:
            app = make_app(
                bbs,
                settings,
                cells=cells,
                logs=logs,
                lrp_controller=lrps,
                tes=tes,
                cell_token=token,
            )
        else:  # the BBS's internal API alone, for its cells
            app = web.Application(
                middlewares=[json_errors], client_max_size=settings.server.max_body_bytes
            )
            app[SETTINGS_KEY] = settings
            if token:
                bbs_for_cells.add_routes(app, bbs, token, logs)
        api = ApiServer(app, sock)
        parts = [api.run(on_listening), resolver.run(), lrps.run(), tes.run()]
        if token:  # cancels for the cells on other machines (the node's own follow the bus)
            parts.append(CancelsToCells(bus, PresentCells((), bbs, connector)).run())
        if "auctioneer" in roles:
            intake = Intake(bbs, auctioneer, lrps, settings.auction.intake_poll)
            parts += [intake.run(), auctioneer.run()]
        if "converger" in roles:
            # Cells on other machines could not renew while this node was down: a
            # presence TTL for them to do so before their absence counts.
            grace = settings.cell.presence_ttl if token else 0.0
            parts.append(_once_present(reps, grace, converger.run))
        parts += [rep.run() for rep in reps]
        await _run_parts(parts, reps, stopping or asyncio.Event())
    finally:
        await session.close()
        await transfers.close()
        await store.close()


async def _once_present(
    reps: Sequence[Rep], grace: float, part: Callable[[], Coroutine[Any, Any, None]]
) -> None:
    """Run ``part`` once every embedded cell has announced itself, and ``grace``
    seconds have passed for the cells on other machines: a restarted node's converger
    must not take cells not back yet for gone."""
    await asyncio.gather(*(rep.present.wait() for rep in reps))
    if grace:
        log.info("converger-waiting seconds=%g: for the cells to renew their presences", grace)
        await asyncio.sleep(grace)
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
