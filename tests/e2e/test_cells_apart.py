"""Cells on other machines: a control node and two ``--role=cell`` nodes, each cell in
a network namespace of its own joined to the control node by a veth pair on a bridge
this test makes (10.213.N.0/24: addresses of the test's own hosts, removed after).

Where namespaces cannot be made (not root, no iproute2), the cells run on loopback
ports instead, and the test output says so.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

from .conftest import Server, no_traceback, poll, run_cli
from .helpers_cells import CellServer, cell_server_in, marked_processes, sh, task, unique
from .helpers_lrps import (
    LRP_DEADLINE,
    desired_lrp,
    instance_pids,
    instances_of,
    kill_marked,
    lrp_config,
    wait_all_running,
)

pytestmark = pytest.mark.slow

TOKEN = "e2e-apart-token"
ENV = {"DIEGO_LINK_TOKEN": TOKEN}
CELLS = {"cell-b": "z1", "cell-c": "z2"}
DISAPPEARED = "cell disappeared before completion"


@attrs.frozen
class Hosts:
    """Where each node listens, and what its command runs under."""

    control_ip: str
    cell_ips: dict[str, str]
    prefixes: dict[str, tuple[str, ...]]


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


def _make_hosts(tag: str, subnet: int) -> Hosts:
    bridge = f"dgb{tag}"
    _ip("link", "add", bridge, "type", "bridge")
    _ip("addr", "add", f"10.213.{subnet}.1/24", "dev", bridge)
    _ip("link", "set", bridge, "up")
    ips, prefixes = {}, {}
    for n, cell in enumerate(CELLS):
        ns, veth = f"dg{tag}{n}", f"dgv{tag}{n}"
        _ip("netns", "add", ns)
        _ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
        _ip("link", "set", veth, "master", bridge, "up")
        ips[cell] = f"10.213.{subnet}.{11 + n}"
        _ip("-n", ns, "addr", "add", f"{ips[cell]}/24", "dev", "eth0")
        _ip("-n", ns, "link", "set", "eth0", "up")
        _ip("-n", ns, "link", "set", "lo", "up")
        prefixes[cell] = ("ip", "netns", "exec", ns)
    return Hosts(f"10.213.{subnet}.1", ips, prefixes)


def _remove_hosts(tag: str) -> None:
    for n in range(len(CELLS)):
        ns = f"dg{tag}{n}"
        pids = subprocess.run(
            ["ip", "netns", "pids", ns], capture_output=True, text=True, check=False
        ).stdout.split()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGKILL)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)
    subprocess.run(["ip", "link", "del", f"dgb{tag}"], capture_output=True, check=False)


@pytest.fixture
def hosts(capsys: pytest.CaptureFixture[str]) -> Iterator[Hosts]:
    tag = uuid.uuid4().hex[:6]
    try:
        made = _make_hosts(tag, random.randint(1, 254))
    except (OSError, subprocess.SubprocessError) as e:
        _remove_hosts(tag)
        with capsys.disabled():
            print(
                f"\n[test_cells_apart] network namespaces could not be made ({e!r}): "
                "the cells run on distinct loopback ports instead"
            )
        yield Hosts("127.0.0.1", dict.fromkeys(CELLS, "127.0.0.1"), dict.fromkeys(CELLS, ()))
        return
    try:
        yield made
    finally:
        _remove_hosts(tag)


def _free_port(host: str) -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


@attrs.define
class Cluster:
    """The control node and the cell nodes, started on demand."""

    hosts: Hosts
    tmp_path: Path
    control: Server
    cells: dict[str, CellServer]
    control_listen: str
    converger: dict[str, Any] = attrs.Factory(dict)

    def start_control(self) -> str:
        config = lrp_config(self.control.tmp_path / "diego.toml", converger=self.converger)
        return self.control.start(
            "--role", "control", "--config", str(config), listen=self.control_listen, env=ENV
        )

    def start_cell(self, cell_id: str, token: str = TOKEN) -> str:
        cell = self.cells[cell_id]
        config = lrp_config(cell.tmp_path / "diego.toml")
        return cell.start(
            "--role",
            "cell",
            "--bbs-url",
            self.control.url,
            "--cell-id",
            cell_id,
            "--zone",
            CELLS[cell_id],
            "--config",
            str(config),
            listen=f"{self.hosts.cell_ips[cell_id]}:0",
            env={"DIEGO_LINK_TOKEN": token},
        )

    def start_all(self) -> None:
        self.start_control()
        for cell_id in CELLS:
            self.start_cell(cell_id)
        poll(lambda: self.listed() == set(CELLS) or None, 20.0, "both cells to be listed")

    def listed(self) -> set[str]:
        return {c["cell_id"] for c in self.control.request("GET", "/v1/cells").body}

    def request(self, method: str, path: str, body: Any = None) -> Any:
        """One request to the control node (``instances_of`` and friends take this)."""
        if body is None:
            return self.control.request(method, path)
        return self.control.post_json(path, body)

    def task_state(self, guid: str) -> dict[str, Any]:
        return dict(self.control.request("GET", f"/v1/tasks/{guid}").body)

    def wait_task(self, guid: str, state: str, deadline: float = 20.0) -> dict[str, Any]:
        def reached() -> dict[str, Any] | None:
            now = self.task_state(guid)
            return now if now.get("state") == state else None

        return poll(reached, deadline, f"the Task {guid} to be {state}", interval=0.1)


@pytest.fixture
def cluster(tmp_path: Path, hosts: Hosts) -> Iterator[Cluster]:
    control = Server(tmp_path / "control")
    control.tmp_path.mkdir()
    with contextlib.ExitStack() as stack:
        cells = {}
        for cell_id in CELLS:
            (tmp_path / cell_id).mkdir()
            cell = stack.enter_context(cell_server_in(tmp_path / cell_id, "local", "diego-apart-"))
            cell.prefix = hosts.prefixes[cell_id]
            cells[cell_id] = cell
        listen = f"{hosts.control_ip}:{_free_port(hosts.control_ip)}"
        try:
            yield Cluster(hosts, tmp_path, control, cells, listen)
        finally:
            control.close()


def _lrp_on_both(cluster: Cluster, guid: str, marker: str) -> dict[int, dict[str, Any]]:
    reply = cluster.control.post_json("/v1/desired_lrps", desired_lrp(guid, marker, instances=2))
    assert reply.status == 201, reply.text
    running = wait_all_running(cluster, guid, 2)  # type: ignore[arg-type]
    assert {a["cell_id"] for a in running.values()} == set(CELLS), running
    return running


def _all_running_on(cluster: Cluster, guid: str, cell_id: str) -> dict[int, dict[str, Any]]:
    """Wait until both instances of ``guid`` are RUNNING on ``cell_id`` (the one from the
    lost cell started again there)."""

    def moved() -> dict[int, dict[str, Any]] | None:
        now = instances_of(cluster, guid)  # type: ignore[arg-type]
        on = {(a["state"], a["cell_id"]) for a in now.values()}
        return now if len(now) == 2 and on == {("RUNNING", cell_id)} else None

    return poll(moved, LRP_DEADLINE, f"both instances RUNNING on {cell_id}", interval=0.05)


def _long_task_on(cluster: Cluster, cell_id: str, marker: str) -> str:
    """A Task sleeping on ``cell_id``: submitted while it is the only cell."""
    guid = unique("long")
    assert cluster.control.post_json("/v1/tasks", task(guid, sh("sleep 1000"), marker=marker))
    running = cluster.wait_task(guid, "RUNNING")
    assert running["cell_id"] == cell_id, running
    poll(lambda: marked_processes(marker) or None, 10.0, "the Task's processes", interval=0.1)
    return guid


def test_tasks_lrps_and_logs_run_on_cells_apart(cluster: Cluster) -> None:
    """Tasks and LRP instances submitted to the control node run on the two cells;
    diego cells lists them at their own addresses; diego logs shows what ran there."""
    cluster.start_all()
    listed = {c["cell_id"]: c for c in cluster.control.request("GET", "/v1/cells").body}
    for cell_id, zone in CELLS.items():
        assert listed[cell_id]["zone"] == zone
        assert listed[cell_id]["url"] == cluster.cells[cell_id].url
        assert cluster.hosts.cell_ips[cell_id] in listed[cell_id]["url"]
    shown = run_cli("cells", api=cluster.control.url)
    assert shown.code == 0, shown.err
    assert {line.split()[0] for line in shown.out.splitlines()[1:]} == set(CELLS)

    guids = [unique("apart") for _ in range(4)]
    log_guid = unique("apart-log")
    for guid in guids:
        body = task(guid, sh("echo one; echo two"), log_guid=log_guid)
        assert cluster.control.post_json("/v1/tasks", body).status == 201
    for guid in guids:
        done = cluster.wait_task(guid, "COMPLETED")
        assert done["failed"] is False, done
        assert done["cell_id"] in CELLS, done

    def all_lines() -> list[str] | None:
        result = run_cli("logs", log_guid, api=cluster.control.url)
        lines = result.out.splitlines()
        return lines if len(lines) == 2 * len(guids) else None

    lines = poll(all_lines, 20.0, "every Task's lines on the control node", interval=0.2)
    assert sorted(set(lines)) == ["[TASK/OUT] one", "[TASK/OUT] two"]

    marker = unique("apart-mark")
    try:
        _lrp_on_both(cluster, unique("apart-lrp"), marker)
    finally:
        kill_marked(marker)


def test_kill_9_of_a_cell_moves_its_instances_and_fails_its_tasks(cluster: Cluster) -> None:
    """With convergence ticks 30 s apart, the expiry of the killed cell's presence
    alone fails its Task with Diego's reason and starts its instance on the other cell;
    the killed cell, started again, leaves nothing of its own running."""
    cluster.converger = {"interval": 30.0}
    cluster.start_control()
    cluster.start_cell("cell-b")
    poll(lambda: cluster.listed() == {"cell-b"} or None, 20.0, "cell-b")
    task_marker, lrp_marker = unique("doomed"), unique("moved")
    try:
        guid = _long_task_on(cluster, "cell-b", task_marker)
        cluster.start_cell("cell-c")
        poll(lambda: cluster.listed() == set(CELLS) or None, 20.0, "both cells")
        process = unique("moved-lrp")
        _lrp_on_both(cluster, process, lrp_marker)

        cluster.cells["cell-b"].kill()
        failed = cluster.wait_task(guid, "COMPLETED", deadline=15.0)
        assert (failed["failed"], failed["failure_reason"]) == (True, DISAPPEARED), failed
        _all_running_on(cluster, process, "cell-c")
        # The watch acted, not a tick 30 s away (bench lost-cell measures how soon).
        assert "cells-disappeared cells=cell-b" in cluster.control.stderr

        # Its processes outlived it; started again, the cell removes them.
        cluster.start_cell("cell-b")
        poll(lambda: not marked_processes(task_marker) or None, 20.0, "the Task's processes")
        poll(
            lambda: sorted(len(p) for p in instance_pids(lrp_marker).values()) == [1, 1] or None,
            20.0,
            "one process per instance",
        )
        assert cluster.task_state(guid)["failure_reason"] == DISAPPEARED
    finally:
        kill_marked(task_marker)
        kill_marked(lrp_marker)


def test_a_cell_paused_past_its_ttl_leaves_no_duplicate(cluster: Cluster) -> None:
    """SIGSTOP a cell past its presence TTL: its Task fails, its instance starts on the
    other cell. Resumed, it finds through its rep tables that neither is its own any
    more and stops both: one process per instance, and the Task is not run again."""
    cluster.start_control()
    cluster.start_cell("cell-b")
    poll(lambda: cluster.listed() == {"cell-b"} or None, 20.0, "cell-b")
    task_marker, lrp_marker = unique("paused-task"), unique("paused-lrp")
    paused = cluster.cells["cell-b"]
    try:
        guid = _long_task_on(cluster, "cell-b", task_marker)
        cluster.start_cell("cell-c")
        poll(lambda: cluster.listed() == set(CELLS) or None, 20.0, "both cells")
        process = unique("paused")
        before = _lrp_on_both(cluster, process, lrp_marker)
        assert paused.proc is not None
        paused.proc.send_signal(signal.SIGSTOP)
        try:
            failed = cluster.wait_task(guid, "COMPLETED", deadline=15.0)
            assert failed["failure_reason"] == DISAPPEARED, failed
            _all_running_on(cluster, process, "cell-c")
        finally:
            paused.proc.send_signal(signal.SIGCONT)
        poll(lambda: not marked_processes(task_marker) or None, 20.0, "the Task's processes")
        poll(
            lambda: sorted(len(p) for p in instance_pids(lrp_marker).values()) == [1, 1] or None,
            20.0,
            "one process per instance",
        )
        poll(lambda: "cell-b" in cluster.listed() or None, 10.0, "cell-b to be back")
        now = instances_of(cluster, process)  # type: ignore[arg-type]
        assert {a["cell_id"] for a in now.values()} == {"cell-c"}, now
        moved_index = next(i for i, a in before.items() if a["cell_id"] == "cell-b")
        assert now[moved_index]["instance_guid"] != before[moved_index]["instance_guid"]
        final = cluster.task_state(guid)
        assert (final["state"], final["failure_reason"]) == ("COMPLETED", DISAPPEARED)
        assert no_traceback(paused.stderr), paused.stderr
    finally:
        kill_marked(task_marker)
        kill_marked(lrp_marker)


def test_restarting_the_control_node_loses_nothing(cluster: Cluster) -> None:
    """kill -9 of the control node while the cells run: a Task that finished meanwhile
    completes with its result, every line it wrote meanwhile is served, and the LRP
    instances run on as they were (same instances, same processes)."""
    cluster.start_all()
    marker = unique("steady")
    try:
        process = unique("steady-lrp")
        before = _lrp_on_both(cluster, process, marker)
        pids = instance_pids(marker)
        guid, log_guid = unique("across"), unique("across-log")
        script = "echo early; sleep 3; echo late; echo kept > /tmp/out"
        body = task(guid, sh(script), log_guid=log_guid, result_file="/tmp/out")
        assert cluster.control.post_json("/v1/tasks", body).status == 201
        cluster.wait_task(guid, "RUNNING")
        cluster.control.kill()
        time.sleep(4.0)  # the Task ends, and its late line is written, while it is down
        cluster.start_control()
        done = cluster.wait_task(guid, "COMPLETED")
        assert (done["failed"], done["result"]) == (False, "kept\n"), done

        def lines() -> list[str] | None:
            result = run_cli("logs", log_guid, api=cluster.control.url)
            return result.out.splitlines() if "[TASK/OUT] late" in result.out else None

        shown = poll(lines, 20.0, "the line written while the node was down", interval=0.2)
        assert "[TASK/OUT] late" in shown
        after = wait_all_running(cluster, process, 2, deadline=LRP_DEADLINE)  # type: ignore[arg-type]
        assert {i: a["instance_guid"] for i, a in after.items()} == {
            i: a["instance_guid"] for i, a in before.items()
        }
        assert instance_pids(marker) == pids
    finally:
        kill_marked(marker)


def test_a_cell_with_a_wrong_token_is_refused_and_its_address_logged(cluster: Cluster) -> None:
    cluster.start_control()
    cluster.start_cell("cell-b", token="not-the-token")
    address = cluster.hosts.cell_ips["cell-b"]
    poll(
        lambda: f"link-refused remote={address}" in cluster.control.stderr or None,
        10.0,
        "the control node to refuse the cell, naming its address",
    )
    assert "not-the-token" not in cluster.control.stderr
    assert cluster.listed() == set()


def test_evacuating_a_remote_cell_moves_its_instances(cluster: Cluster) -> None:
    """POST /v1/cells/CELL/evacuate on the control node reaches the cell's rep API: its
    instance starts on the other cell before it is stopped there, and the cell is then
    listed as evacuating."""
    cluster.start_all()
    marker = unique("evacuated")
    try:
        process = unique("evacuated-lrp")
        _lrp_on_both(cluster, process, marker)
        reply = cluster.control.request("POST", "/v1/cells/cell-b/evacuate")
        assert reply.status == 202, reply.text
        _all_running_on(cluster, process, "cell-c")
        listed = {c["cell_id"]: c for c in cluster.control.request("GET", "/v1/cells").body}
        assert listed["cell-b"]["evacuating"] is True, listed
        poll(
            lambda: sorted(len(p) for p in instance_pids(marker).values()) == [1, 1] or None,
            20.0,
            "one process per instance",
        )
        missing = cluster.control.request("POST", "/v1/cells/cell-q/evacuate")
        assert missing.status == 404, missing.text
    finally:
        kill_marked(marker)
