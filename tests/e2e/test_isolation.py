"""What a container may do, on each cell backend: users, network, images.

Every test starts a node of its own (the ``node`` fixture runs once per backend);
the egress test makes its own Docker network and target on this machine.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import DOCKER, poll
from .helpers_cells import (
    CellServer,
    Node,
    cell_server_in,
    run,
    running_command,
    sh,
    start_node,
    unique,
)
from .helpers_cells import task as make_task


@pytest.fixture
def cell_server(tmp_path: Path, backend: str) -> Iterator[CellServer]:
    """A Server helper (not started) for each backend, on a data dir containers can reach."""
    with cell_server_in(tmp_path, backend, "diego-e2e-iso-") as helper:
        yield helper


@pytest.fixture
def node(cell_server: CellServer) -> Node:
    """A running node with one cell of the backend under test, which allows privileged
    containers (a test below runs one)."""
    return start_node(cell_server, cell={"allow_privileged": True})


def output(node: Node, log_guid: str) -> list[str]:
    """The lines a Task logged."""
    return [line["message"] for line in node.logs(log_guid)]


def host_uid(pid: int) -> int:
    """The real uid of host process ``pid``."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError(f"no Uid line for {pid}")


@pytest.mark.parametrize("privileged", [False, True])
def test_root_in_a_container_is_root_on_the_host_only_when_privileged(
    node: Node, privileged: bool
) -> None:
    """Root in an unprivileged container is an unprivileged host uid; a privileged
    container's root is the host's root."""
    guid, marker = unique("uid"), unique("mark")
    node.create(make_task(guid, run("sleep", "1000"), marker=marker, privileged=privileged))
    pids = poll(
        lambda: running_command(marker, ["sleep", "1000"]) or None, 15.0, "the sleep on the host"
    )
    uid = host_uid(pids[0])
    if privileged:
        assert uid == 0
    else:
        assert uid != 0
    assert node.request("POST", f"/v1/tasks/{guid}/cancel").status == 200
    node.wait_state(guid)


def test_a_node_refuses_privileged_work_and_caps_processes_by_default(
    cell_server: CellServer,
) -> None:
    """With the default [cell] settings but max_pids 20: a privileged Task is a 400 and
    never stored; a Task forking 200 sleeps fails at the cell's process limit."""
    node = start_node(cell_server, cell={"max_pids": 20})
    guid = unique("priv")
    reply = node.request("POST", "/v1/tasks", make_task(guid, run("true"), privileged=True))
    assert reply.status == 400, reply.text
    assert reply.body["errors"][0]["field"] == "privileged"
    assert "allow_privileged" in reply.body["message"]
    assert node.request("GET", f"/v1/tasks/{guid}").status == 404
    done = node.run(make_task(unique("forks"), sh("for i in $(seq 200); do sleep 1000 & done")))
    assert done["failed"] is True
    assert done["failure_reason"] == "Exited with status 2 (process limit of 20 reached)"


def test_container_without_rules_has_only_loopback(node: Node) -> None:
    """A Task with no security group rules sees no network interface but ``lo``."""
    guid, log_guid = unique("nonet"), unique("nonet-log")
    script = "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '"
    done = node.run(make_task(guid, sh(script), log_guid=log_guid))
    assert done["failed"] is False, done["failure_reason"]
    assert output(node, log_guid) == ["lo"]


# ------------------------------------------------------------------ Docker only


@pytest.fixture
def target() -> Iterator[str]:
    """The address of a container on a network of the test's own, serving HTTP on ports
    8001 and 8002 (``/index.html`` is ``ok``)."""
    name = f"diego-e2e-target-{uuid.uuid4().hex[:8]}"
    docker = [DOCKER]
    subprocess.run([*docker, "network", "create", name], check=True, capture_output=True)
    try:
        serve = "echo ok > /tmp/index.html && httpd -p 8001 -h /tmp && httpd -p 8002 -h /tmp"
        subprocess.run(
            [
                *docker,
                "run",
                "-d",
                "--name",
                name,
                "--network",
                name,
                "diego/busybox:latest",
                "sh",
                "-c",
                f"{serve} && exec sleep 1000",
            ],
            check=True,
            capture_output=True,
        )
        address = subprocess.run(
            [
                *docker,
                "inspect",
                "-f",
                "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
                name,
            ],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        yield address
    finally:
        subprocess.run([*docker, "rm", "-f", name], capture_output=True)
        subprocess.run([*docker, "network", "rm", name], capture_output=True)


@pytest.mark.parametrize("backend", ["docker"])
def test_a_rule_for_one_port_lets_it_through_and_refuses_another(node: Node, target: str) -> None:
    """With a tcp rule for port 8001 of the target, the Task fetches from 8001 and is
    refused at once on 8002 of the same address."""
    guid, log_guid = unique("egress"), unique("egress-log")
    get = "printf 'GET /index.html HTTP/1.0\\r\\n\\r\\n'"
    probe = (
        f"{get} | nc -w 5 {target} 8001 > /tmp/reply; echo first=$?; tail -n 1 /tmp/reply; "
        f"nc -w 5 {target} 8002 < /dev/null; echo second=$?"
    )
    rule = {"protocol": "tcp", "destination": target, "ports": [8001]}
    request = make_task(guid, sh(probe), log_guid=log_guid, security_group_rules=[rule])
    done = node.run(request)
    assert done["failed"] is False, done["failure_reason"]
    lines = output(node, log_guid)
    assert "ok" in lines
    assert "first=0" in lines
    assert any(line.startswith("second=") and line != "second=0" for line in lines), lines


@pytest.mark.parametrize("backend", ["docker"])
def test_docker_root_fs_picks_the_image_and_a_missing_image_fails_naming_it(
    node: Node,
) -> None:
    """root_fs docker:///diego/busybox#latest runs; an image no registry has fails the
    Task with a reason naming the image."""
    guid = unique("image")
    request = make_task(guid, sh("test -x /bin/busybox"), root_fs="docker:///diego/busybox#latest")
    done = node.run(request)
    assert done["failed"] is False, done["failure_reason"]

    missing = unique("missing")
    request = make_task(missing, sh("true"), root_fs="docker:///diego/no-such-image#v9")
    done = node.run(request, deadline=60.0)
    assert done["failed"] is True
    assert "diego/no-such-image:v9" in done["failure_reason"]


@pytest.mark.parametrize("backend", ["local"])
def test_docker_root_fs_on_a_node_without_docker_cells_fails_naming_the_provider(
    node: Node,
) -> None:
    """The auction sends docker:// work only to Docker cells: with none, the Task fails
    saying no cell has the provider."""
    guid = unique("nodocker")
    request = make_task(guid, sh("true"), root_fs="docker:///diego/busybox#latest")
    done = node.run(request)
    assert done["failed"] is True
    assert "root_fs provider 'docker'" in done["failure_reason"]
