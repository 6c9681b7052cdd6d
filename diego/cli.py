"""The ``diego`` command: ``serve`` runs a node; the rest are clients of its API.

Client commands print human tables by default and JSON with ``--json``. A
server error is printed plainly on stderr and exits 1; ``task wait`` exits 0
when the Task succeeded and 3 when it failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import sys
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import click

from diego import __version__, config, node
from diego.client import DEFAULT_API, ApiError, Client, StreamEvent
from diego.models.codec import decode, encode
from diego.models.task import Task, TaskState
from diego.models.tes import FINAL_STATES
from diego.roles import RoleError, check_roles, parse_roles

T = TypeVar("T")

EXIT_ERROR = 1
EXIT_TASK_FAILED = 3


def _run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a client coroutine; print errors plainly and exit non-zero."""
    try:
        return asyncio.run(coro)
    except ApiError as e:
        click.echo(f"error: {e.name}: {e.message}", err=True)
    except aiohttp.ClientConnectionError as e:
        click.echo(f"error: cannot reach diego: {e}", err=True)
    except aiohttp.ClientError as e:
        click.echo(f"error: {e}", err=True)
    except KeyboardInterrupt:
        pass
    sys.exit(EXIT_ERROR)


def _client(ctx: click.Context) -> Client:
    return Client(ctx.find_root().obj["api"])


def _with_client(ctx: click.Context, call: Callable[[Client], Awaitable[T]]) -> T:
    async def go() -> T:
        async with _client(ctx) as client:
            return await call(client)

    return _run(go())


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")


@click.group()
@click.version_option(__version__, prog_name="diego")
@click.option(
    "--api",
    envvar="DIEGO_API",
    default=DEFAULT_API,
    show_default=True,
    help="The node's API URL (env DIEGO_API).",
)
@click.pass_context
def main(ctx: click.Context, api: str) -> None:
    """diego: Tasks and processes scheduled onto cells, Cloud Foundry Diego style."""
    ctx.obj = {"api": api}


# ------------------------------------------------------------------ serve


@main.command()
@click.option(
    "--role",
    help="The roles to run: all, control (all but cell), cell, or a comma list of api, "
    "bbs, auctioneer, converger, cell [default: all].",
)
@click.option("--bbs-url", help="A cell-only node: its control node's URL.")
@click.option("--cell-id", help="The id of this node's one cell [default: HOSTNAME-0].")
@click.option("--zone", help="The zone of this node's cells [default: z0, z1, ...].")
@click.option("--listen", help="HOST:PORT for the API [default: 127.0.0.1:8889].")
@click.option("--data-dir", type=click.Path(file_okay=False), help="State directory.")
@click.option("--cells", type=int, help="Embedded cells to run [default: 1].")
@click.option("--zones", type=int, help="Zones to spread the embedded cells over [default: 1].")
@click.option(
    "--cell-backend",
    type=click.Choice(["local", "docker"]),
    help="How the cells make containers [default: local].",
)
@click.option(
    "--config",
    "config_file",
    envvar="DIEGO_CONFIG",
    type=click.Path(dir_okay=False, path_type=Path),
    help="A diego.toml (env DIEGO_CONFIG).",
)
def serve(
    role: str | None,
    bbs_url: str | None,
    cell_id: str | None,
    zone: str | None,
    listen: str | None,
    data_dir: str | None,
    cells: int | None,
    zones: int | None,
    cell_backend: str | None,
    config_file: Path | None,
) -> None:
    """Run a node until SIGINT or SIGTERM: store, API, auctioneer, converger and cells.

    The first signal evacuates the cells (no new work; running Tasks get the
    evacuation timeout), then stops; a second one stops at once.
    """
    overrides = {
        "node.role": role,
        "node.bbs_url": bbs_url,
        "cell.id": cell_id,
        "cell.zone": zone,
        "server.listen": listen,
        "server.data_dir": data_dir,
        "cell.count": cells,
        "cell.zones": zones,
        "cell.backend": cell_backend,
    }
    try:
        settings = config.load(config_file, overrides=overrides)
        token = config.cell_token(settings)  # a token file that cannot be read stops us here
        check_roles(
            parse_roles(settings.node.role), settings.node.bbs_url, settings.cell.count, token
        )
    except (config.ConfigError, RoleError) as e:
        raise click.UsageError(f"configuration: {e}") from None
    logging.basicConfig(
        level=settings.log.level.upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    # Alembic narrates every plugin it loads at INFO; its news is in our own lines.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    asyncio.run(_serve_until_signalled(settings))


async def _serve_until_signalled(settings: config.Settings) -> None:
    stopping = asyncio.Event()
    serving = asyncio.ensure_future(node.serve(settings, stopping=stopping))

    def on_signal() -> None:
        if stopping.is_set():
            serving.cancel()  # a second signal: stop now
        stopping.set()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    with contextlib.suppress(asyncio.CancelledError):
        await serving


# ------------------------------------------------------------------ tasks


@main.group()
def task() -> None:
    """Create, inspect, cancel, wait for and delete Tasks."""


@task.command("create")
@click.option(
    "-f",
    "--file",
    "source",
    type=click.File("r"),
    required=True,
    help="TaskCreateRequest JSON, or -.",
)
@json_option
@click.pass_context
def task_create(ctx: click.Context, source: Any, as_json: bool) -> None:
    """Create a Task from a TaskCreateRequest JSON document."""
    request = _load_json(source)
    _print_model(_with_client(ctx, lambda c: c.create_task(request)), as_json)


@task.command("get")
@click.argument("task_guid")
@json_option
@click.pass_context
def task_get(ctx: click.Context, task_guid: str, as_json: bool) -> None:
    """Show one Task."""
    _print_model(_with_client(ctx, lambda c: c.get_task(task_guid)), as_json)


@task.command("list")
@click.option("--domain", help="Only this domain's Tasks.")
@json_option
@click.pass_context
def task_list(ctx: click.Context, domain: str | None, as_json: bool) -> None:
    """List Tasks, oldest first."""
    found = _with_client(ctx, lambda c: c.list_tasks(domain))
    if as_json:
        click.echo(json.dumps([encode(t) for t in found], indent=2))
        return
    rows = [(t.task_guid, t.domain, t.state.value, t.cell_id or "-", _outcome(t)) for t in found]
    click.echo(_table(("GUID", "DOMAIN", "STATE", "CELL", "OUTCOME"), rows))


@task.command("cancel")
@click.argument("task_guid")
@json_option
@click.pass_context
def task_cancel(ctx: click.Context, task_guid: str, as_json: bool) -> None:
    """Cancel a Task that has not completed."""
    _print_model(_with_client(ctx, lambda c: c.cancel_task(task_guid)), as_json)


@task.command("delete")
@click.argument("task_guid")
@click.pass_context
def task_delete(ctx: click.Context, task_guid: str) -> None:
    """Delete (resolve) a COMPLETED Task."""
    _with_client(ctx, lambda c: c.delete_task(task_guid))
    click.echo(f"deleted {task_guid}")


@task.command("wait")
@click.argument("task_guid")
@click.option("--timeout", type=float, help="Give up after this many seconds.")
@json_option
@click.pass_context
def task_wait(ctx: click.Context, task_guid: str, timeout: float | None, as_json: bool) -> None:
    """Wait until a Task is COMPLETED; print failed, failure_reason and result.

    Exits 0 when the Task succeeded, 3 when it failed.
    """

    async def wait(client: Client) -> Task:
        return await asyncio.wait_for(_wait_for_completion(client, task_guid), timeout)

    try:
        done = _with_client(ctx, wait)
    except TimeoutError:
        click.echo(f"error: {task_guid} not completed within {timeout:g}s", err=True)
        sys.exit(EXIT_ERROR)
    if as_json:
        click.echo(json.dumps(encode(done), indent=2))
    else:
        click.echo(f"failed: {str(done.failed).lower()}")
        click.echo(f"failure_reason: {done.failure_reason}")
        click.echo(f"result: {done.result}")
    if done.failed:
        sys.exit(EXIT_TASK_FAILED)


async def _wait_for_completion(client: Client, guid: str) -> Task:
    """Follow the event stream until the Task is COMPLETED (or is being resolved)."""
    finished = (TaskState.COMPLETED, TaskState.RESOLVING)
    async for event in client.events():
        if event.type == "subscribed":
            # From here no change is missed: look at where the Task is now.
            current = await client.get_task(guid)
            if current.state in finished:
                return current
        elif _guid_of(event) == guid:
            task = _task_of(event)
            if event.type == "task_removed" or task.state in finished:
                return task
    raise ApiError(0, "StreamEnded", "the event stream ended before the Task completed")


def _guid_of(event: StreamEvent) -> str | None:
    data = event.data if isinstance(event.data, dict) else {}
    task = data.get("after") or data.get("task") or {}
    return task.get("task_guid") if isinstance(task, dict) else None


def _task_of(event: StreamEvent) -> Task:
    data = event.data
    return decode(Task, data.get("after") or data["task"])


# ------------------------------------------------------------------ events


@main.command()
@click.option("--domain", help="Only this domain's events.")
@json_option
@click.pass_context
def events(ctx: click.Context, domain: str | None, as_json: bool) -> None:
    """Print the node's events as they happen, until interrupted."""

    async def follow(client: Client) -> None:
        async for event in client.events(domain):
            if event.type == "subscribed":
                continue
            if as_json:
                click.echo(json.dumps({"type": event.type, "data": event.data}))
            else:
                click.echo(_describe(event))

    _with_client(ctx, follow)


def _describe(event: StreamEvent) -> str:
    data = event.data if isinstance(event.data, dict) else {}
    if event.type == "task_changed":
        before, after = data["before"], data["after"]
        moved = f"{before['state']} -> {after['state']}"
        return f"{event.type:<14} {after['task_guid']}  {moved}  {_outcome_data(after)}".rstrip()
    if "task" in data:
        task = data["task"]
        return f"{event.type:<14} {task['task_guid']}  {task['state']}"
    return f"{event.type:<14} {json.dumps(data)}"


# ------------------------------------------------------------------ LRPs


@main.group()
def lrp() -> None:
    """Desire, scale, inspect and delete long-running processes."""


@lrp.command("create")
@click.option(
    "-f", "--file", "source", type=click.File("r"), required=True, help="DesiredLRP JSON, or -."
)
@json_option
@click.pass_context
def lrp_create(ctx: click.Context, source: Any, as_json: bool) -> None:
    """Desire an LRP from a DesiredLRP JSON document."""
    desired = _load_json(source)
    _print_model(_with_client(ctx, lambda c: c.desire_lrp(desired)), as_json)


@lrp.command("get")
@click.argument("process_guid")
@json_option
@click.pass_context
def lrp_get(ctx: click.Context, process_guid: str, as_json: bool) -> None:
    """Show one DesiredLRP."""
    _print_model(_with_client(ctx, lambda c: c.get_desired_lrp(process_guid)), as_json)


@lrp.command("list")
@click.option("--domain", help="Only this domain's.")
@json_option
@click.pass_context
def lrp_list(ctx: click.Context, domain: str | None, as_json: bool) -> None:
    """List DesiredLRPs."""
    found = _with_client(ctx, lambda c: c.list_desired_lrps(domain))
    if as_json:
        click.echo(json.dumps([encode(d) for d in found], indent=2))
        return
    rows = [(d.process_guid, d.domain, str(d.instances), str(d.memory_mb)) for d in found]
    click.echo(_table(("PROCESS GUID", "DOMAIN", "INSTANCES", "MEMORY MB"), rows))


@lrp.command("scale")
@click.argument("process_guid")
@click.argument("instances", type=click.IntRange(min=0))
@json_option
@click.pass_context
def lrp_scale(ctx: click.Context, process_guid: str, instances: int, as_json: bool) -> None:
    """Set the number of instances."""
    update = {"instances": instances}
    _print_model(_with_client(ctx, lambda c: c.update_desired_lrp(process_guid, update)), as_json)


@lrp.command("delete")
@click.argument("process_guid")
@click.pass_context
def lrp_delete(ctx: click.Context, process_guid: str) -> None:
    """Delete a DesiredLRP; its instances stop."""
    _with_client(ctx, lambda c: c.remove_desired_lrp(process_guid))
    click.echo(f"deleted {process_guid}")


@lrp.command("instances")
@click.argument("process_guid")
@json_option
@click.pass_context
def lrp_instances(ctx: click.Context, process_guid: str, as_json: bool) -> None:
    """List the instances (ActualLRPs) of one process."""
    found = _with_client(ctx, lambda c: c.actual_lrps(process_guid))
    if as_json:
        click.echo(json.dumps([encode(a) for a in found], indent=2))
        return
    rows = [
        (
            str(a.index),
            a.state.value + (" (evacuating)" if a.evacuating else ""),
            a.cell_id or "-",
            str(a.crash_count),
            a.crash_reason or a.placement_error,
        )
        for a in found
    ]
    click.echo(_table(("INDEX", "STATE", "CELL", "CRASHES", "REASON"), rows))


@main.command()
@json_option
@click.pass_context
def domains(ctx: click.Context, as_json: bool) -> None:
    """List the fresh domains."""
    found = _with_client(ctx, lambda c: c.domains())
    click.echo(json.dumps(found) if as_json else "\n".join(found))


# ------------------------------------------------------------------ GA4GH TES


@main.group()
def tes() -> None:
    """GA4GH TES tasks (/ga4gh/tes/v1)."""


def _pairs(values: Sequence[str], option: str) -> list[tuple[str, str]]:
    pairs = []
    for value in values:
        left, sep, right = value.partition("=")
        if not sep or not left or not right:
            raise click.BadParameter(f"{value!r}: must be PATH=VALUE", param_hint=option)
        pairs.append((left, right))
    return pairs


@tes.command("run")
@click.argument("command")
@click.option("--image", required=True, help="The executor's image.")
@click.option("--in", "inputs", multiple=True, help="PATH=URL: an input file (repeatable).")
@click.option("--out", "outputs", multiple=True, help="PATH=URL: an output file (repeatable).")
@click.option("--content", multiple=True, help="PATH=TEXT: an input of this text.")
@click.option("--name", help="The task's name.")
@click.option("--cpu", type=click.IntRange(min=1), help="CPU cores.")
@click.option("--ram", type=click.FloatRange(min=0, min_open=True), help="RAM in GB.")
@click.option("--disk", type=click.FloatRange(min=0, min_open=True), help="Disk in GB.")
@click.option("--wait", is_flag=True, help="Wait for the end; print state and stdout.")
@click.pass_context
def tes_run(
    ctx: click.Context,
    command: str,
    image: str,
    inputs: tuple[str, ...],
    outputs: tuple[str, ...],
    content: tuple[str, ...],
    name: str | None,
    cpu: int | None,
    ram: float | None,
    disk: float | None,
    wait: bool,
) -> None:
    """Run COMMAND (a shell command line) as a TES task; print its id.

    With --wait, print its final state and its stdout instead, and exit 0 only
    if it is COMPLETE (3 otherwise).
    """
    task: dict[str, Any] = {
        "executors": [{"image": image, "command": ["/bin/sh", "-c", command]}],
        "inputs": [{"path": p, "url": u} for p, u in _pairs(inputs, "--in")]
        + [{"path": p, "content": t} for p, t in _pairs(content, "--content")],
        "outputs": [{"path": p, "url": u} for p, u in _pairs(outputs, "--out")],
    }
    if name:
        task["name"] = name
    resources = {"cpu_cores": cpu, "ram_gb": ram, "disk_gb": disk}
    if any(v is not None for v in resources.values()):
        task["resources"] = {k: v for k, v in resources.items() if v is not None}

    async def go(client: Client) -> dict[str, Any] | str:
        task_id = await client.create_tes_task(task)
        if not wait:
            return task_id
        while True:
            found = await client.get_tes_task(task_id, "FULL")
            if found["state"] in FINAL_STATES:
                return found
            await asyncio.sleep(0.2)

    result = _with_client(ctx, go)
    if isinstance(result, str):
        click.echo(result)
        return
    click.echo(result["state"])
    for attempt in result.get("logs", []):
        for executor in attempt.get("logs", []):
            click.echo(executor.get("stdout", ""), nl=False)
    if result["state"] != "COMPLETE":
        sys.exit(EXIT_TASK_FAILED)


@tes.command("get")
@click.argument("task_id")
@click.option(
    "--view", type=click.Choice(["MINIMAL", "BASIC", "FULL"]), default="FULL", show_default=True
)
@click.pass_context
def tes_get(ctx: click.Context, task_id: str, view: str) -> None:
    """One TES task, as JSON."""
    found = _with_client(ctx, lambda c: c.get_tes_task(task_id, view))
    click.echo(json.dumps(found, indent=2))


@tes.command("list")
@click.option("--state", help="Only tasks in this state.")
@click.option("--name-prefix", help="Only tasks whose name starts so.")
@click.option("--tag", "tags", multiple=True, help="KEY=VALUE or KEY: only tasks so tagged.")
@json_option
@click.pass_context
def tes_list(
    ctx: click.Context,
    state: str | None,
    name_prefix: str | None,
    tags: tuple[str, ...],
    as_json: bool,
) -> None:
    """Every TES task, newest first (all pages)."""

    async def go(client: Client) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        token = ""
        while True:
            params = {"view": "BASIC", "page_size": "256"}
            if token:
                params["page_token"] = token
            if state:
                params["state"] = state
            if name_prefix:
                params["name_prefix"] = name_prefix
            page = await client.list_tes_tasks_filtered(params, tags)
            found += page.get("tasks", [])
            token = page.get("next_page_token", "")
            if not token:
                return found

    found = _with_client(ctx, go)
    if as_json:
        click.echo(json.dumps(found))
        return
    rows = [(t["id"], t["state"], t.get("name", ""), t.get("creation_time", "")) for t in found]
    click.echo(_table(("ID", "STATE", "NAME", "CREATED"), rows))


@tes.command("cancel")
@click.argument("task_id")
@click.pass_context
def tes_cancel(ctx: click.Context, task_id: str) -> None:
    """Cancel a TES task."""
    _with_client(ctx, lambda c: c.cancel_tes_task(task_id))


# ------------------------------------------------------------------ logs and cells


@main.command()
@click.argument("log_guid")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines.")
@click.option("--tail", type=int, default=100, show_default=True, help="Recent lines first.")
@json_option
@click.pass_context
def logs(ctx: click.Context, log_guid: str, follow: bool, tail: int, as_json: bool) -> None:
    """Print a log_guid's container output (recent lines; -f to follow)."""

    async def show(client: Client) -> None:
        async for event in client.logs(log_guid, tail, follow):
            if event.type != "log":
                continue
            if as_json:
                click.echo(json.dumps(event.data))
            else:
                line = event.data
                click.echo(f"[{line['source_type']}/{line['stream']}] {line['message']}")

    _with_client(ctx, show)


@main.command()
@json_option
@click.pass_context
def cells(ctx: click.Context, as_json: bool) -> None:
    """List the node's cells and their free capacity."""
    found = _with_client(ctx, lambda c: c.cells())
    if as_json:
        click.echo(json.dumps(found, indent=2))
        return
    rows = [_cell_row(c) for c in found]
    header = ("CELL", "ZONE", "STACKS", "FREE MEMORY MB", "FREE DISK MB", "CONTAINERS", "")
    click.echo(_table(header, rows))


# ------------------------------------------------------------------ output


def _cell_row(cell: dict[str, Any]) -> tuple[str, ...]:
    if not cell.get("reachable", True):
        return (cell["cell_id"], "", "", "", "", "", f"unreachable: {cell.get('error', '')}")
    return (
        cell["cell_id"],
        cell["zone"],
        ",".join(cell["stacks"]),
        f"{cell['available']['memory_mb']}/{cell['capacity']['memory_mb']}",
        f"{cell['available']['disk_mb']}/{cell['capacity']['disk_mb']}",
        str(cell["containers"]),
        "evacuating" if cell["evacuating"] else "",
    )


def _outcome(task: Task) -> str:
    if task.state not in (TaskState.COMPLETED, TaskState.RESOLVING):
        return ""
    return f"failed: {task.failure_reason}" if task.failed else "succeeded"


def _outcome_data(task: dict[str, Any]) -> str:
    if task.get("state") not in ("COMPLETED", "RESOLVING"):
        return ""
    return f"failed: {task.get('failure_reason', '')}" if task.get("failed") else "succeeded"


def _load_json(source: Any) -> Any:
    """The JSON document in an open file (or stdin); a usage error if it is not JSON."""
    try:
        return json.load(source)
    except ValueError as e:
        raise click.UsageError(f"{source.name}: not JSON: {e}") from None


def _print_model(model: object, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(encode(model), indent=2))
        return
    data = encode(model)
    actions = {k: data.pop(k) for k in ("setup", "action", "monitor") if k in data}
    width = max(len(k) for k in data)
    for key, value in data.items():
        if value in ("", [], None) and key not in ("state",):
            continue
        shown = json.dumps(value) if isinstance(value, list | dict | bool) else value
        click.echo(f"{key:<{width}}  {shown}")
    for key, value in actions.items():
        click.echo(f"{key:<{width}}  {json.dumps(value, separators=(',', ':'))}")


def _table(header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> str:
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(header)]
    lines = [header, *rows]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )
