"""LRPs really run by the embedded cells of a ``diego serve`` process.

Every test starts its own node (``--cells 3 --zones 2`` unless it needs otherwise:
cells -0 and -2 in zone z0, cell -1 in z1) with short LRP timings, drives it over
HTTP and the CLI, and looks at the host's /proc for its instances' processes: each
DesiredLRP carries a unique marker in its env, and each instance its INSTANCE_INDEX.
With two zones an instance of index > 1 may only go to its preferred zone, so tests
of three instances pick a process guid whose indices 0 and 2 prefer z0 (two cells)
and index 1 prefers z1.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from .conftest import Server, poll, run_cli
from .helpers_cells import (
    CellServer,
    Node,
    backend_args,
    cell_server_in,
    marked_processes,
    unique,
)
from .helpers_lrps import (
    DOMAIN,
    LRP_DEADLINE,
    EventRecorder,
    actuals,
    cell_zones,
    create_lrp,
    desired_lrp,
    guid_preferring,
    instance_pids,
    instances_of,
    kill_marked,
    lrp_config,
    sample_until,
    sh,
    start_lrp_node,
    wait_all_running,
)

THREE_CELLS = ("--cells", "3", "--zones", "2")
SPREAD = ["z0", "z1", "z0"]
"""Zone preferences of indices 0, 1, 2 that three cells in z0, z1, z0 can all honour."""


@pytest.fixture
def markers() -> Iterator[Callable[[], str]]:
    """Makes unique markers; every process still carrying one is killed at teardown."""
    made: list[str] = []

    def make() -> str:
        marker = unique("lrp-mark")
        made.append(marker)
        return marker

    try:
        yield make
    finally:
        for marker in made:
            kill_marked(marker)


@pytest.fixture
def cell_server(tmp_path: Path, markers: Callable[[], str], backend: str) -> Iterator[CellServer]:
    """A Server helper (not started) whose data directory the containers' uid can traverse,
    for each cell backend.

    It depends on ``markers`` so that the node is stopped before leftovers are killed.
    """
    with cell_server_in(tmp_path, backend, "diego-e2e-lrp-") as helper:
        yield helper


@pytest.fixture
def three_cells(cell_server: CellServer) -> Node:
    """A running node with three cells in zones z0, z1, z0 and short LRP timings."""
    return start_lrp_node(cell_server, *THREE_CELLS)


def wait_pids(marker: str, indices: set[int], what: str) -> dict[int, list[int]]:
    """Wait until exactly one sleeper runs for each of ``indices`` (and none other)."""

    def check() -> dict[int, list[int]] | None:
        found = instance_pids(marker)
        ok = set(found) == indices and all(len(p) == 1 for p in found.values())
        return found if ok else None

    return poll(check, 10.0, what, interval=0.05)


# ------------------------------------------------------------------ placement


def test_three_instances_run_on_three_different_cells(
    three_cells: Node, markers: Callable[[], str]
) -> None:
    """Three instances of one DesiredLRP become RUNNING on three different cells, index 2
    in its preferred zone, each with its own process on the host."""
    node = three_cells
    guid, marker = guid_preferring("spread", SPREAD), markers()
    create_lrp(node, desired_lrp(guid, marker, instances=3))

    running = wait_all_running(node, guid, 3)
    zones = cell_zones(node)
    assert {a["cell_id"] for a in running.values()} == set(zones)
    assert zones[running[2]["cell_id"]] == SPREAD[2]
    assert len({a["instance_guid"] for a in running.values()}) == 3
    assert all(a["crash_count"] == 0 and a["domain"] == DOMAIN for a in running.values())
    wait_pids(marker, {0, 1, 2}, "one sleeper per instance on the host")


# ------------------------------------------------------------------ crashes


def test_killed_instance_process_comes_back_running_with_a_crash_counted(
    three_cells: Node, markers: Callable[[], str]
) -> None:
    """SIGKILL of an instance's process on the host brings the instance back RUNNING, in a
    new process, with crash_count 1 and a crash_reason."""
    node = three_cells
    guid, marker = unique("crashy"), markers()
    create_lrp(node, desired_lrp(guid, marker, instances=1))
    before = wait_all_running(node, guid, 1)[0]
    (old_pid,) = wait_pids(marker, {0}, "the instance's sleeper")[0]

    os.kill(old_pid, signal.SIGKILL)

    def restarted() -> dict[str, Any] | None:
        now = instances_of(node, guid).get(0)
        ok = now is not None and now["state"] == "RUNNING" and now["crash_count"] == 1
        return now if ok else None

    after = poll(restarted, LRP_DEADLINE, "the instance RUNNING with crash_count 1", 0.05)
    assert after["crash_reason"], after
    assert after["last_crashed_at"] > 0
    assert after["instance_guid"] != before["instance_guid"]
    (new_pid,) = wait_pids(marker, {0}, "the restarted instance's sleeper")[0]
    assert new_pid != old_pid


def test_always_exiting_process_restarts_twice_at_once_then_stays_crashed(
    cell_server: CellServer, markers: Callable[[], str]
) -> None:
    """An instance whose process always exits (no monitor) crashes and is restarted at once
    twice (UNCLAIMED, then RUNNING again), and its third crash leaves it CRASHED with
    crash_count 3 (the next restart is 30 s away); the whole backoff schedule up to the
    200-restart limit is covered by the unit tests of diego.models.crash_policy."""
    node = start_lrp_node(cell_server, "--cells", "1")
    guid, marker = unique("exits"), markers()
    recorder = EventRecorder(node.url)
    try:
        # A short sleep so that each start is RUNNING before it exits.
        create_lrp(node, desired_lrp(guid, marker, action=sh("sleep 0.3; exit 1"), monitor=None))

        def crashed() -> dict[str, Any] | None:
            now = instances_of(node, guid).get(0)
            return now if now is not None and now["state"] == "CRASHED" else None

        final = poll(crashed, LRP_DEADLINE, "the instance to be CRASHED", interval=0.05)
        events = recorder.until(
            lambda seen: _crash_counts(seen, guid)[-1:] == [3], 10.0, "the third crash event"
        )
    finally:
        recorder.close()

    assert final["crash_count"] == 3, final
    assert final["last_crashed_at"] > 0
    assert final["crash_reason"], final
    assert final["cell_id"] == ""

    steps: list[tuple[Any, ...]] = []
    for kind, data in events:
        if kind == "actual_lrp_crashed" and data["actual_lrp"]["process_guid"] == guid:
            steps.append(("crashed", data["crash_count"], data["actual_lrp"]["state"]))
        elif kind == "actual_lrp_changed" and data["after"]["process_guid"] == guid:
            after = data["after"]
            if after["state"] == "RUNNING" and data["before"]["state"] != "RUNNING":
                steps.append(("running", after["crash_count"]))
    assert steps == [
        ("running", 0),
        ("crashed", 1, "UNCLAIMED"),
        ("running", 1),
        ("crashed", 2, "UNCLAIMED"),
        ("running", 2),
        ("crashed", 3, "CRASHED"),
    ]

    # Not restarted within the backoff: CRASHED, count 3, for the next second.
    end = time.monotonic() + 1.0
    while time.monotonic() < end:
        now = instances_of(node, guid)[0]
        assert (now["state"], now["crash_count"]) == ("CRASHED", 3), now
        time.sleep(0.05)
    assert instance_pids(marker, ["sleep", "0.3"]) == {}


def test_always_exiting_process_walks_the_backoff_to_the_limit(
    cell_server: CellServer, markers: Callable[[], str]
) -> None:
    """With shrunken crash constants ([crash] in the config), an always-exiting instance
    is restarted at once, then by the converger after each backoff, and stays CRASHED
    once its crash count reaches max_restarts."""
    crash = {
        "immediate_restarts": 2,
        "backoff_base": 0.3,
        "max_backoff": 0.6,
        "max_restarts": 5,
        "reset_after_running": 300.0,
    }
    node = start_lrp_node(cell_server, "--cells", "1", crash=crash)
    guid, marker = unique("limit"), markers()
    recorder = EventRecorder(node.url)
    try:
        create_lrp(node, desired_lrp(guid, marker, action=sh("sleep 0.2; exit 1"), monitor=None))

        def at_the_limit() -> dict[str, Any] | None:
            now = instances_of(node, guid).get(0)
            done = now is not None and now["state"] == "CRASHED" and now["crash_count"] == 5
            return now if done else None

        poll(at_the_limit, 20.0, "the instance to reach 5 crashes", interval=0.05)
        events = recorder.until(
            lambda seen: _crash_counts(seen, guid)[-1:] == [5], 10.0, "the fifth crash event"
        )
    finally:
        recorder.close()

    crashes = [
        (data["crash_count"], data["actual_lrp"]["state"])
        for kind, data in events
        if kind == "actual_lrp_crashed" and data["actual_lrp"]["process_guid"] == guid
    ]
    # Crash 1 restarts at once; 2, 3 and 4 wait out a backoff; 5 is the limit.
    assert crashes == [
        (1, "UNCLAIMED"),
        (2, "CRASHED"),
        (3, "CRASHED"),
        (4, "CRASHED"),
        (5, "CRASHED"),
    ]
    # At the limit it is never restarted: well past the longest backoff it is still CRASHED.
    end = time.monotonic() + 1.5
    while time.monotonic() < end:
        now = instances_of(node, guid)[0]
        assert (now["state"], now["crash_count"]) == ("CRASHED", 5), now
        time.sleep(0.05)


def _crash_counts(events: list[tuple[str, dict[str, Any]]], guid: str) -> list[int]:
    return [
        data["crash_count"]
        for kind, data in events
        if kind == "actual_lrp_crashed" and data["actual_lrp"]["process_guid"] == guid
    ]


def _desire_fewer_behind_the_nodes_back(node: Node, guid: str, instances: int) -> None:
    """Lower a DesiredLRP's instances in the store itself, as another node of a cluster
    sharing the store would: no API call tells this node's controller."""
    with sqlite3.connect(node.data_dir / "bbs.sqlite3", timeout=10) as db:
        changed = db.execute(
            "update desired_lrps set instances = ?, version = version + 1 where process_guid = ?",
            (instances, guid),
        ).rowcount
    assert changed == 1


@pytest.mark.parametrize("fresh", [False, True], ids=["stale-domain", "fresh-domain"])
def test_converger_stops_extras_only_in_a_fresh_domain(
    cell_server: CellServer, markers: Callable[[], str], fresh: bool
) -> None:
    """When the store says fewer instances than run, the converger stops the extra ones if
    their domain is fresh, and keeps them if it is stale (the desired state may be stale)."""
    node = start_lrp_node(cell_server, "--cells", "1")
    domain = unique("dom")
    guid, marker = unique("extra"), markers()
    create_lrp(node, {**desired_lrp(guid, marker, instances=3), "domain": domain})
    wait_all_running(node, guid, 3)
    ttl = 0 if fresh else 1
    assert node.request("PUT", f"/v1/domains/{domain}", {"ttl": ttl}).status == 204
    if not fresh:
        poll(
            lambda: domain not in node.request("GET", "/v1/domains").body,
            5.0,
            "the domain to go stale",
        )
    _desire_fewer_behind_the_nodes_back(node, guid, 1)
    if fresh:

        def only_index_0() -> bool:
            return sorted(instances_of(node, guid)) == [0]

        poll(only_index_0, 10.0, "the converger to stop indices 1 and 2")
        wait_pids(marker, {0}, "only index 0 to keep running")
    else:
        # Many convergence passes (0.3 s apart): the extras are left alone.
        end = time.monotonic() + 2.0
        while time.monotonic() < end:
            running = instances_of(node, guid)
            assert sorted(running) == [0, 1, 2], running
            assert all(a["state"] == "RUNNING" for a in running.values()), running
            time.sleep(0.1)


# ------------------------------------------------------------------ scaling and deleting


def test_cli_scale_down_stops_the_extra_instances(
    three_cells: Node, markers: Callable[[], str]
) -> None:
    """``diego lrp scale GUID 1`` on three instances removes indices 1 and 2 (ActualLRPs and
    processes) while index 0 keeps running untouched."""
    node = three_cells
    guid, marker = guid_preferring("scale", SPREAD), markers()
    create_lrp(node, desired_lrp(guid, marker, instances=3))
    first = wait_all_running(node, guid, 3)[0]
    (first_pid,) = wait_pids(marker, {0, 1, 2}, "three sleepers")[0]

    result = run_cli("lrp", "scale", guid, "1", api=node.url)
    assert result.code == 0, result.err
    assert ["instances", "1"] in [line.split() for line in result.out.splitlines()]

    poll(lambda: len(actuals(node, guid)) == 1, 10.0, "indices 1 and 2 to be removed", 0.05)
    kept = instances_of(node, guid)
    assert list(kept) == [0]
    assert kept[0]["state"] == "RUNNING"
    assert kept[0]["instance_guid"] == first["instance_guid"]
    assert kept[0]["cell_id"] == first["cell_id"]
    assert wait_pids(marker, {0}, "the sleepers of indices 1 and 2 to end")[0] == [first_pid]
    desired = node.request("GET", f"/v1/desired_lrps/{guid}")
    assert desired.status == 200, desired.text
    assert desired.body["instances"] == 1


def test_deleting_the_desired_lrp_stops_every_instance(
    three_cells: Node, markers: Callable[[], str]
) -> None:
    """DELETE /v1/desired_lrps/{guid} stops every instance: no ActualLRP and no process
    is left, and the DesiredLRP is gone."""
    node = three_cells
    guid, marker = guid_preferring("doomed", SPREAD), markers()
    create_lrp(node, desired_lrp(guid, marker, instances=3))
    wait_all_running(node, guid, 3)
    wait_pids(marker, {0, 1, 2}, "three sleepers")

    reply = node.request("DELETE", f"/v1/desired_lrps/{guid}")
    assert reply.status == 204, reply.text

    poll(lambda: actuals(node, guid) == [], 10.0, "every ActualLRP to be removed", 0.05)
    poll(lambda: marked_processes(marker) == [], 10.0, "every process to end", 0.05)
    gone = node.request("GET", f"/v1/desired_lrps/{guid}")
    assert gone.status == 404, gone.text
    assert gone.body["name"] == "DesiredLRPNotFound"
    # Nothing comes back: the converger does not restart an undesired process.
    time.sleep(1.0)
    assert actuals(node, guid) == []
    assert marked_processes(marker) == []


# ------------------------------------------------------------------ domains


def test_domain_is_listed_while_fresh(server: Server) -> None:
    """A domain upserted with ttl 0 stays in GET /v1/domains; one with ttl 1 is recorded
    fresh until one second after its upsert and leaves the list once that is over; a
    negative ttl is a 400 naming ttl."""
    forever, short = unique("forever"), unique("short")
    assert server.request("PUT", f"/v1/domains/{forever}", '{"ttl": 0}').status == 204
    before = time.time_ns()
    assert server.request("PUT", f"/v1/domains/{short}", '{"ttl": 1}').status == 204
    after = time.time_ns()

    listed = server.request("GET", "/v1/domains")
    assert listed.status == 200
    assert {forever, short} <= set(listed.body)
    # The ttl counts seconds from the upsert (test_lrp_store shows, on a fake clock, that a
    # domain is listed until exactly its expiry).
    db = sqlite3.connect(server.data_dir / "bbs.sqlite3", timeout=10)
    try:
        query = "select name, expires_at from domains where name in (?, ?)"
        expiries = dict(db.execute(query, (forever, short)).fetchall())
    finally:
        db.close()
    assert expiries[forever] == 0
    assert before + 1_000_000_000 <= expiries[short] <= after + 1_000_000_000

    def expired() -> bool:
        return short not in server.request("GET", "/v1/domains").body

    poll(expired, 5.0, f"domain {short} to expire", interval=0.05)
    assert forever in server.request("GET", "/v1/domains").body
    result = run_cli("domains", api=server.url)
    assert result.code == 0, result.err
    assert forever in result.out.split()
    assert short not in result.out.split()

    bad = server.request("PUT", f"/v1/domains/{forever}", '{"ttl": -1}')
    assert bad.status == 400, bad.text
    assert bad.body["name"] == "InvalidDomain"
    assert "ttl" in bad.body["message"]


# ------------------------------------------------------------------ evacuation


def test_evacuation_keeps_both_instances_running_throughout(
    three_cells: Node, markers: Callable[[], str]
) -> None:
    """POST /v1/cells/{cell}/evacuate on the cell of one of two instances moves it to
    another cell without ever having fewer than two RUNNING rows (evacuating copies
    included), and leaves no evacuating row behind."""
    node = three_cells
    guid, marker = guid_preferring("evac", SPREAD[:2]), markers()
    create_lrp(node, desired_lrp(guid, marker, instances=2))
    before = wait_all_running(node, guid, 2)
    wait_pids(marker, {0, 1}, "two sleepers")
    victim = before[1]["cell_id"]  # alone in z1: its replacement must go to z0
    assert before[0]["cell_id"] != victim

    reply = node.request("POST", f"/v1/cells/{victim}/evacuate")
    assert reply.status == 202, reply.text

    def settled(rows: list[dict[str, Any]]) -> bool:
        return (
            len(rows) == 2
            and all(not a["evacuating"] and a["state"] == "RUNNING" for a in rows)
            and all(a["cell_id"] != victim for a in rows)
        )

    samples = sample_until(lambda: actuals(node, guid), settled, 10.0, "the move to finish")
    for rows in samples:
        running = [a for a in rows if a["state"] == "RUNNING"]
        assert len(running) >= 2, rows
    assert any(a["evacuating"] for rows in samples for a in rows), "no evacuating copy seen"

    after = {a["index"]: a for a in samples[-1]}
    assert after[0]["instance_guid"] == before[0]["instance_guid"]
    assert after[1]["instance_guid"] != before[1]["instance_guid"]
    assert len({after[0]["cell_id"], after[1]["cell_id"], victim}) == 3
    wait_pids(marker, {0, 1}, "the evacuated instance's old process to end")

    def victim_emptied() -> dict[str, Any] | None:
        # The evacuating row goes before the container finishes being destroyed.
        cell = {c["cell_id"]: c for c in node.cells()}[victim]
        return cell if cell["containers"] == 0 else None

    cell = poll(victim_emptied, 5.0, "the evacuated cell's containers to be destroyed")
    assert cell["evacuating"] is True


# ------------------------------------------------------------------ the CLI and the API


def test_cli_lrp_commands_and_invalid_requests(
    cell_server: CellServer, markers: Callable[[], str]
) -> None:
    """``diego lrp create -f``, ``get``, ``list``, ``instances`` and ``delete`` print
    sensible output; an invalid DesiredLRP and an update of a fixed field are 400s naming
    the field."""
    node = start_lrp_node(cell_server, "--cells", "1")
    (cell,) = node.cells()
    guid, marker = unique("cli"), markers()
    path = cell_server.tmp_path / "lrp.json"
    path.write_text(json.dumps(desired_lrp(guid, marker, instances=1)))

    created = run_cli("lrp", "create", "-f", str(path), api=node.url)
    assert created.code == 0, created.err
    fields = {line.split()[0]: line.split()[1:] for line in created.out.splitlines()}
    assert fields["process_guid"] == [guid]
    assert fields["domain"] == [DOMAIN]
    assert fields["instances"] == ["1"]
    assert "action" in fields
    assert "monitor" in fields

    got = run_cli("lrp", "get", guid, "--json", api=node.url)
    assert got.code == 0, got.err
    document = json.loads(got.out)
    assert (document["process_guid"], document["instances"], document["memory_mb"]) == (
        guid,
        1,
        32,
    )
    assert document["created_at"] > 0

    listed = run_cli("lrp", "list", api=node.url)
    assert listed.code == 0, listed.err
    header, *rows = listed.out.splitlines()
    assert header.split() == ["PROCESS", "GUID", "DOMAIN", "INSTANCES", "MEMORY", "MB"]
    assert [guid, DOMAIN, "1", "32"] in [row.split() for row in rows]

    wait_all_running(node, guid, 1)
    shown = run_cli("lrp", "instances", guid, api=node.url)
    assert shown.code == 0, shown.err
    header, *rows = shown.out.splitlines()
    assert header.split() == ["INDEX", "STATE", "CELL", "CRASHES", "REASON"]
    assert [row.split() for row in rows] == [["0", "RUNNING", cell["cell_id"], "0"]]
    as_json = run_cli("lrp", "instances", guid, "--json", api=node.url)
    assert as_json.code == 0, as_json.err
    assert [(a["index"], a["state"]) for a in json.loads(as_json.out)] == [(0, "RUNNING")]

    # Invalid documents are refused, naming the field.
    bad = desired_lrp(unique("bad"), marker, instances=-1)
    reply = node.request("POST", "/v1/desired_lrps", bad)
    assert reply.status == 400, reply.text
    assert reply.body["name"] == "InvalidDesiredLRP"
    assert "instances" in reply.body["message"]
    bad_guid = desired_lrp("not a guid!", marker)
    reply = node.request("POST", "/v1/desired_lrps", bad_guid)
    assert reply.status == 400, reply.text
    assert "process_guid" in reply.body["message"]
    path.write_text(json.dumps(bad))
    refused = run_cli("lrp", "create", "-f", str(path), api=node.url)
    assert refused.code == 1
    assert "InvalidDesiredLRP" in refused.err
    assert "instances" in refused.err

    reply = node.request("PUT", f"/v1/desired_lrps/{guid}", {"instances": 2, "stack": "other"})
    assert reply.status == 400, reply.text
    assert reply.body["name"] == "InvalidDesiredLRP"
    assert "stack" in reply.body["message"]
    assert node.request("GET", f"/v1/desired_lrps/{guid}").body["instances"] == 1

    deleted = run_cli("lrp", "delete", guid, api=node.url)
    assert deleted.code == 0, deleted.err
    assert deleted.out.strip() == f"deleted {guid}"
    poll(lambda: actuals(node, guid) == [], 10.0, "the instance to be removed", 0.05)
    poll(lambda: marked_processes(marker) == [], 10.0, "the instance's processes to end", 0.05)


# ------------------------------------------------------------------ a vanished cell


def test_instance_of_a_vanished_cell_runs_on_another_cell(
    cell_server: CellServer, markers: Callable[[], str]
) -> None:
    """After kill -9 of a node and a restart whose only cell has another name, the
    instance of the vanished cell is unclaimed by the converger once the old cell's
    presence has expired, and is RUNNING on the new cell."""
    node = start_lrp_node(cell_server, "--cells", "1", cell={"name_prefix": "first"})
    guid, marker = unique("orphan"), markers()
    create_lrp(node, desired_lrp(guid, marker, instances=1))
    assert wait_all_running(node, guid, 1)[0]["cell_id"] == "first-0"

    cell_server.kill()
    config = lrp_config(cell_server.tmp_path / "other.toml", cell={"name_prefix": "other"})
    restarted = Node(cell_server, config, (*backend_args(cell_server), "--cells", "1"))
    restarted.restart()
    assert [c["cell_id"] for c in restarted.cells()] == ["other-0"]

    # presence_ttl 2 s, converger every 0.3 s: well within 10 s (the defaults are 30 s).
    def moved() -> dict[str, Any] | None:
        rows = actuals(restarted, guid)
        ok = [(a["index"], a["state"], a["cell_id"]) for a in rows] == [(0, "RUNNING", "other-0")]
        return rows[0] if ok else None

    poll(moved, 10.0, "the instance RUNNING on other-0", interval=0.05)
    assert "converging-lrps unclaim=1 " in cell_server.stderr, cell_server.stderr
    wait_pids(marker, {0}, "one sleeper, on the new cell")


def test_kill_9_and_restart_keep_the_instances_running(
    cell_server: CellServer, markers: Callable[[], str]
) -> None:
    """After kill -9 and a restart with the same cell, an instance the old run left
    keeps running: the same instance and process, no crash counted, its monitor run
    again. One whose process died while the node was down is a crash, counted once,
    and runs again: exactly one copy of each index."""
    node = start_lrp_node(cell_server, "--cells", "1")
    guid, marker = unique("adopted"), markers()
    create_lrp(node, desired_lrp(guid, marker, instances=2))
    before = wait_all_running(node, guid, 2)
    pids = wait_pids(marker, {0, 1}, "the first sleepers")

    cell_server.kill()
    os.kill(pids[1][0], signal.SIGKILL)  # index 1's process dies while the node is down
    node.restart()

    def settled() -> dict[int, dict[str, Any]] | None:
        rows = instances_of(node, guid)
        running = sorted(i for i, a in rows.items() if a["state"] == "RUNNING")
        moved = rows.get(1, {}).get("instance_guid") != before[1]["instance_guid"]
        return rows if running == [0, 1] and moved else None

    after = poll(settled, LRP_DEADLINE, "index 0 RUNNING still, index 1 RUNNING again")
    assert after[0]["instance_guid"] == before[0]["instance_guid"]
    assert after[0]["crash_count"] == 0
    assert after[1]["crash_count"] == 1
    assert after[1]["crash_reason"] == "Exited with status 137", after[1]
    now = wait_pids(marker, {0, 1}, "exactly one sleeper per index after the restart")
    assert now[0] == pids[0]  # the very process the first run started
    assert "container-resumed" in cell_server.stderr
