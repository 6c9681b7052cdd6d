"""The ``diego`` CLI against a real server: every interaction goes through the CLI."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from .conftest import (
    CliResult,
    Server,
    Spawner,
    connections_to,
    no_traceback,
    poll,
    run_cli,
    task_request,
)

Cli = Callable[..., CliResult]

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_TASK_FAILED = 3


def write_task(tmp_path: Path, guid: str, domain: str = "e2e") -> Path:
    path = tmp_path / f"{guid}.json"
    path.write_text(json.dumps(task_request(guid, domain)))
    return path


def create(cli: Cli, tmp_path: Path, guid: str, domain: str = "e2e") -> None:
    done = cli("task", "create", "-f", str(write_task(tmp_path, guid, domain)))
    assert done.code == 0, done.err


def fields(out: str) -> dict[str, str]:
    """The ``key  value`` lines of a printed Task."""
    found = {}
    for line in out.splitlines():
        key, _, value = line.partition(" ")
        found[key] = value.strip()
    return found


def test_create_from_file_prints_task(cli: Cli, tmp_path: Path) -> None:
    """`task create -f FILE` creates the Task and prints it, PENDING."""
    done = cli("task", "create", "-f", str(write_task(tmp_path, "from-file")))
    assert done.code == 0, done.err
    shown = fields(done.out)
    assert shown["task_guid"] == "from-file"
    assert shown["domain"] == "e2e"
    assert shown["state"] == "PENDING"
    assert json.loads(shown["action"])["run"]["path"] == "/bin/echo"


def test_create_from_stdin_prints_task(cli: Cli) -> None:
    """`task create -f -` reads the request from stdin and prints the Task."""
    done = cli("task", "create", "-f", "-", input=json.dumps(task_request("from-stdin")))
    assert done.code == 0, done.err
    shown = fields(done.out)
    assert shown["task_guid"] == "from-stdin"
    assert shown["state"] == "PENDING"
    assert cli("task", "get", "from-stdin").code == 0


def test_create_json_output_parses(cli: Cli, tmp_path: Path) -> None:
    """`task create --json` prints the Task as JSON, PENDING."""
    done = cli("task", "create", "--json", "-f", str(write_task(tmp_path, "as-json")))
    assert done.code == 0, done.err
    task = json.loads(done.out)
    assert task["task_guid"] == "as-json"
    assert task["state"] == "PENDING"
    assert task["failed"] is False
    assert task["action"]["run"]["path"] == "/bin/echo"
    assert task["action"]["run"]["args"] == ["hello"]


def test_get_shows_task(cli: Cli, tmp_path: Path) -> None:
    """`task get` prints the Task as a table and, with --json, as the same JSON create gave."""
    created = cli("task", "create", "--json", "-f", str(write_task(tmp_path, "got")))
    assert created.code == 0, created.err

    shown = cli("task", "get", "got")
    assert shown.code == 0, shown.err
    assert fields(shown.out)["task_guid"] == "got"
    assert fields(shown.out)["state"] == "PENDING"

    as_json = cli("task", "get", "--json", "got")
    assert as_json.code == 0, as_json.err
    assert json.loads(as_json.out) == json.loads(created.out)


def test_list_prints_table_with_header(cli: Cli, tmp_path: Path) -> None:
    """`task list` prints a header row naming GUID and a row per Task."""
    create(cli, tmp_path, "listed-1")
    create(cli, tmp_path, "listed-2")
    done = cli("task", "list")
    assert done.code == 0, done.err
    header, *rows = done.out.splitlines()
    assert header.split()[:3] == ["GUID", "DOMAIN", "STATE"]
    assert [row.split()[:3] for row in rows] == [
        ["listed-1", "e2e", "PENDING"],
        ["listed-2", "e2e", "PENDING"],
    ]


def test_list_domain_filters(cli: Cli, tmp_path: Path) -> None:
    """`task list --domain D` shows only the Tasks of domain D."""
    create(cli, tmp_path, "in-a", domain="domain-a")
    create(cli, tmp_path, "in-b", domain="domain-b")

    table = cli("task", "list", "--domain", "domain-a")
    assert table.code == 0, table.err
    assert "in-a" in table.out
    assert "in-b" not in table.out

    as_json = cli("task", "list", "--domain", "domain-b", "--json")
    assert as_json.code == 0, as_json.err
    assert [t["task_guid"] for t in json.loads(as_json.out)] == ["in-b"]


def test_duplicate_guid_is_refused(cli: Cli, tmp_path: Path) -> None:
    """Creating the same guid twice exits non-zero with TaskGuidAlreadyExists and no trace."""
    path = write_task(tmp_path, "twice")
    assert cli("task", "create", "-f", str(path)).code == 0
    again = cli("task", "create", "-f", str(path))
    assert again.code != 0
    assert "TaskGuidAlreadyExists" in again.err
    assert no_traceback(again.err + again.out)


def test_get_missing_task(cli: Cli) -> None:
    """`task get` of an unknown guid exits 1 with TaskNotFound."""
    done = cli("task", "get", "missing")
    assert done.code == EXIT_ERROR
    assert "TaskNotFound" in done.err
    assert no_traceback(done.err)


def test_cancel_then_wait(cli: Cli, tmp_path: Path) -> None:
    """After `task cancel`, `task wait` prints failed: true, failure_reason: cancelled and
    exits 3."""
    create(cli, tmp_path, "to-cancel")
    cancelled = cli("task", "cancel", "to-cancel")
    assert cancelled.code == 0, cancelled.err
    assert fields(cancelled.out)["state"] == "COMPLETED"

    waited = cli("task", "wait", "to-cancel")
    assert waited.code == EXIT_TASK_FAILED, waited.err
    lines = waited.out.splitlines()
    assert "failed: true" in lines
    assert "failure_reason: cancelled" in lines


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads sockets from /proc")
def test_wait_started_before_cancel_returns(
    cli: Cli, server: Server, spawn: Spawner, tmp_path: Path
) -> None:
    """A `task wait` already following the event stream returns (exit 3, cancelled) once
    the Task is cancelled."""
    create(cli, tmp_path, "awaited")
    waiter = spawn("task", "wait", "awaited", api=server.url)

    # The waiter opens a second connection only after the stream says it is
    # subscribed (to look at the Task's current state): from then on it cannot
    # miss the cancel.
    poll(
        lambda: connections_to(waiter.pid, server.port) >= 2 or waiter.proc.poll() is not None,
        20.0,
        "task wait to subscribe to the event stream",
    )
    assert waiter.proc.poll() is None, waiter.err()

    assert cli("task", "cancel", "awaited").code == 0
    assert waiter.wait(20.0) == EXIT_TASK_FAILED, waiter.err()
    lines = waiter.out().splitlines()
    assert "failed: true" in lines
    assert "failure_reason: cancelled" in lines
    assert no_traceback(waiter.err())


def test_delete_needs_completed_task(cli: Cli, tmp_path: Path) -> None:
    """`task delete` of a PENDING Task fails with InvalidStateTransition; of a COMPLETED one
    it succeeds and the Task is gone."""
    create(cli, tmp_path, "doomed")
    early = cli("task", "delete", "doomed")
    assert early.code != 0
    assert "InvalidStateTransition" in early.err
    assert no_traceback(early.err)
    assert fields(cli("task", "get", "doomed").out)["state"] == "PENDING"

    assert cli("task", "cancel", "doomed").code == 0
    deleted = cli("task", "delete", "doomed")
    assert deleted.code == 0, deleted.err
    assert "doomed" in deleted.out

    gone = cli("task", "get", "doomed")
    assert gone.code == EXIT_ERROR
    assert "TaskNotFound" in gone.err
    assert "doomed" not in cli("task", "list").out


def test_events_json_stream(cli: Cli, server: Server, spawn: Spawner, tmp_path: Path) -> None:
    """`diego events --json` prints one JSON line per event: for a create, cancel and
    delete, task_created, task_changed (PENDING -> COMPLETED), task_changed
    (COMPLETED -> RESOLVING) and task_removed."""
    follower = spawn("events", "--json", api=server.url)

    if Path("/proc/net/tcp").exists():
        # Connected first, so the first probe is very likely seen.
        poll(
            lambda: (
                connections_to(follower.pid, server.port) >= 1 or follower.proc.poll() is not None
            ),
            20.0,
            "diego events to connect",
        )
    # Barrier: create probe Tasks until one shows on the stream, so the follower
    # is known to be subscribed before the sequence under test begins.
    end = time.monotonic() + 20.0
    for attempt in range(1, 1000):
        assert follower.proc.poll() is None, follower.err()
        create(cli, tmp_path, f"probe-{attempt}", domain="probe")
        seen_by = time.monotonic() + 2.0
        while f'"probe-{attempt}"' not in follower.out() and time.monotonic() < seen_by:
            time.sleep(0.02)
        if f'"probe-{attempt}"' in follower.out():
            break
        assert time.monotonic() < end, "diego events never showed a probe Task"

    create(cli, tmp_path, "watched")
    assert cli("task", "cancel", "watched").code == 0
    assert cli("task", "delete", "watched").code == 0
    poll(
        lambda: '"task_removed"' in follower.out() and '"watched"' in follower.out(),
        20.0,
        "task_removed of the watched Task on the stream",
    )
    follower.terminate()

    events = [json.loads(line) for line in follower.out().splitlines()]
    watched = [
        e
        for e in events
        if (e["data"].get("task") or e["data"].get("after") or {}).get("task_guid") == "watched"
    ]
    assert [e["type"] for e in watched] == [
        "task_created",
        "task_changed",
        "task_changed",
        "task_removed",
    ]
    created, cancelled, resolving, removed = (e["data"] for e in watched)
    assert created["task"]["state"] == "PENDING"
    assert (cancelled["before"]["state"], cancelled["after"]["state"]) == ("PENDING", "COMPLETED")
    assert cancelled["after"]["failed"] is True
    assert cancelled["after"]["failure_reason"] == "cancelled"
    assert (resolving["before"]["state"], resolving["after"]["state"]) == (
        "COMPLETED",
        "RESOLVING",
    )
    assert removed["task"]["task_guid"] == "watched"
    assert no_traceback(follower.err())


def test_unreachable_api(refused_port: int) -> None:
    """With --api at a closed port the CLI exits 1 with a plain "cannot reach" error."""
    done = run_cli("task", "list", api=f"http://127.0.0.1:{refused_port}")
    assert done.code == EXIT_ERROR
    assert "cannot reach" in done.err
    assert no_traceback(done.err)


def test_diego_api_env_instead_of_flag(server: Server, tmp_path: Path) -> None:
    """DIEGO_API in the environment points the CLI at the server without --api."""
    env = {"DIEGO_API": server.url}
    path = write_task(tmp_path, "via-env")
    assert run_cli("task", "create", "-f", str(path), env=env).code == 0
    listed = run_cli("task", "list", "--json", env=env)
    assert listed.code == 0, listed.err
    assert [t["task_guid"] for t in json.loads(listed.out)] == ["via-env"]


def test_create_from_non_json_file_is_usage_error(cli: Cli, tmp_path: Path) -> None:
    """`task create -f` of a file that is not JSON is a usage error (exit 2) and creates
    nothing."""
    path = tmp_path / "not.json"
    path.write_text("this is not json\n")
    done = cli("task", "create", "-f", str(path))
    assert done.code == EXIT_USAGE
    assert "not JSON" in done.err
    assert no_traceback(done.err)
    assert json.loads(cli("task", "list", "--json").out) == []
