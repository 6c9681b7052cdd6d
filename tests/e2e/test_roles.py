"""A node split by role: a control node with no cells of its own, and a node that runs
only a cell, reaching the control node's BBS over HTTP and reached through its rep
API, both real ``diego serve`` processes on loopback with the same cell token."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .conftest import DIEGO, Server, clean_env, no_traceback, poll, run_cli
from .helpers_cells import (
    CellServer,
    cell_server_in,
    marked_processes,
    sh,
    task,
    unique,
    write_config,
)
from .helpers_lrps import desired_lrp

TOKEN = "e2e-cell-token"
ENV = {"DIEGO_LINK_TOKEN": TOKEN}


@pytest.fixture
def control(tmp_path: Path) -> Iterator[Server]:
    """A control node (api, bbs, auctioneer, converger; no cells), started."""
    server = Server(tmp_path / "control")
    server.tmp_path.mkdir()
    config = write_config(server.tmp_path / "diego.toml", [server.tmp_path])
    try:
        server.start("--role", "control", "--config", str(config), env=ENV)
        yield server
    finally:
        server.close()


@pytest.fixture
def cell(tmp_path: Path) -> Iterator[CellServer]:
    """A cell-only node's server helper (not started), on a reachable data dir."""
    (tmp_path / "cell").mkdir()
    with cell_server_in(tmp_path / "cell", "local", "diego-e2e-roles-") as helper:
        yield helper


def start_cell(
    cell: CellServer,
    control: Server,
    token: str = TOKEN,
    cell_settings: dict[str, Any] | None = None,
) -> str:
    overrides = {"cell": cell_settings} if cell_settings else {}
    config = write_config(cell.tmp_path / "diego.toml", [cell.tmp_path], **overrides)
    return cell.start(
        "--role",
        "cell",
        "--bbs-url",
        control.url,
        "--cell-id",
        "cell-b",
        "--zone",
        "z1",
        "--config",
        str(config),
        env={"DIEGO_LINK_TOKEN": token},
    )


def test_a_task_submitted_to_the_control_node_runs_on_the_remote_cell(
    control: Server, cell: CellServer
) -> None:
    start_cell(cell, control)
    guid = unique("remote")
    body = task(guid, sh("echo ran on $(hostname) > /tmp/out"), result_file="/tmp/out")
    assert control.post_json("/v1/tasks", body).status == 201

    def completed() -> dict | None:
        reply = control.request("GET", f"/v1/tasks/{guid}")
        return reply.body if reply.body.get("state") == "COMPLETED" else None

    done = poll(completed, 20.0, "the Task to complete", interval=0.1)
    assert (done["failed"], done["cell_id"]) == (False, "cell-b"), done
    assert done["result"].startswith("ran on "), done
    assert "cells-of-a-remote-bbs" in cell.stderr
    (listed,) = control.request("GET", "/v1/cells").body
    assert (listed["cell_id"], listed["zone"], listed["reachable"]) == ("cell-b", "z1", True)
    assert listed["url"] == cell.url, listed
    shown = run_cli("cells", api=control.url)
    assert shown.code == 0, shown.err
    row = next(line.split() for line in shown.out.splitlines() if "cell-b" in line)
    assert row[:2] == ["cell-b", "z1"], shown.out


def test_the_control_node_serves_the_logs_of_a_task_on_the_remote_cell(
    control: Server, cell: CellServer
) -> None:
    """``diego logs`` on the control node prints what a Task wrote on the remote cell,
    as for an embedded cell."""
    start_cell(cell, control)
    guid, log_guid = unique("remote-logs"), unique("logs-guid")
    script = "echo to-stdout; echo to-stderr >&2; echo again"
    assert control.post_json("/v1/tasks", task(guid, sh(script), log_guid=log_guid)).status == 201

    def shown() -> list[str] | None:
        result = run_cli("logs", log_guid, api=control.url)
        lines = result.out.splitlines()
        return lines if result.code == 0 and "[TASK/OUT] again" in lines else None

    lines = poll(shown, 20.0, "the Task's lines on the control node", interval=0.2)
    # stdout and stderr are read apart: only each one's own order holds.
    assert sorted(lines) == ["[TASK/ERR] to-stderr", "[TASK/OUT] again", "[TASK/OUT] to-stdout"]
    assert lines.index("[TASK/OUT] to-stdout") < lines.index("[TASK/OUT] again")


def test_a_cancel_on_the_control_node_stops_the_task_on_the_remote_cell_at_once(
    control: Server, cell: CellServer
) -> None:
    """The control node tells the cell: its container stops though the cell would not
    poll for an hour."""
    start_cell(cell, control, cell_settings={"poll_interval": 3600.0})
    guid, marker = unique("cancel"), unique("mark")
    body = task(guid, sh("sleep 1000"), marker=marker)
    assert control.post_json("/v1/tasks", body).status == 201
    poll(lambda: marked_processes(marker) or None, 20.0, "the Task's processes", interval=0.1)
    assert control.request("POST", f"/v1/tasks/{guid}/cancel").status in (200, 204)
    poll(lambda: not marked_processes(marker) or None, 10.0, "its processes to end")
    done = control.request("GET", f"/v1/tasks/{guid}").body
    assert (done["state"], done["failure_reason"]) == ("COMPLETED", "cancelled"), done


def test_an_lrp_runs_on_the_remote_cell_and_is_stopped_there(
    control: Server, cell: CellServer
) -> None:
    """An LRP desired on the control node is claimed and run by the remote cell; deleted,
    its instance is stopped by the control node through the cell's rep API."""
    start_cell(cell, control)
    guid, marker = unique("remote-lrp"), unique("mark")
    reply = control.post_json("/v1/desired_lrps", desired_lrp(guid, marker, instances=1))
    assert reply.status == 201, reply.text

    def running() -> list | None:
        rows = control.request("GET", f"/v1/actual_lrps/{guid}").body
        ok = [(a["state"], a["cell_id"]) for a in rows] == [("RUNNING", "cell-b")]
        return rows if ok else None

    poll(running, 20.0, "the instance RUNNING on cell-b", interval=0.1)
    assert marked_processes(marker)
    assert control.request("DELETE", f"/v1/desired_lrps/{guid}").status in (200, 204)
    poll(
        lambda: control.request("GET", f"/v1/actual_lrps/{guid}").body == [] or None,
        20.0,
        "the instance to be removed",
        interval=0.1,
    )
    poll(lambda: not marked_processes(marker) or None, 10.0, "its processes to end")


def test_a_cell_with_a_wrong_token_is_refused(control: Server, cell: CellServer) -> None:
    start_cell(cell, control, token="not-the-token")
    poll(
        lambda: "link-refused remote=127.0.0.1" in control.stderr or None,
        10.0,
        "the control node to refuse the cell",
    )
    assert "not-the-token" not in control.stderr
    poll(
        lambda: "presence-announcement-failed cell=cell-b" in cell.stderr or None,
        10.0,
        "the cell to say it was refused",
    )
    assert no_traceback(cell.stderr), cell.stderr
    guid = unique("unplaced")
    assert control.post_json("/v1/tasks", task(guid, sh("true"))).status == 201
    reply = control.request("GET", f"/v1/tasks/{guid}")
    assert reply.body["state"] == "PENDING", reply.body  # no cell to run it


@pytest.mark.parametrize(
    ("args", "env", "said"),
    [
        (("--role", "bogus"), {}, "unknown role 'bogus'"),
        (("--role", "api"), {}, "api without bbs"),
        (("--role", "cell"), {}, "node.bbs_url"),
        (("--role", "cell", "--bbs-url", "http://127.0.0.1:1"), {}, "cell token"),
        (("--role", "control", "--bbs-url", "http://127.0.0.1:1"), ENV, "runs bbs itself"),
        (("--cells", "2", "--cell-id", "one"), {}, "cell.id"),
        (("--role", "cell", "--cells", "0", "--bbs-url", "http://127.0.0.1:1"), ENV, "only cells"),
    ],
)
def test_roles_that_cannot_run_are_refused_at_start(
    tmp_path: Path, args: tuple[str, ...], env: dict[str, str], said: str
) -> None:
    done = subprocess.run(
        [str(DIEGO), "serve", "--data-dir", str(tmp_path / "data"), *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=clean_env(env),
        timeout=30,
        check=False,
    )
    assert done.returncode != 0
    assert said in done.stderr, done.stderr
    assert no_traceback(done.stderr), done.stderr
    assert "api-listening" not in done.stderr
