"""Snakemake's TES executor runs a three-rule workflow on diego, end to end.

What a Snakemake user runs: ``snakemake --executor tes`` (from ``.venv-snakemake``)
against a node with one Docker cell. Each job becomes a TES task that runs
Snakemake inside an image built here (``snakemake_image``), and reads and writes
the workflow's files on S3. The S3 server (moto) runs on a "storage host": a
network namespace of the test's own, linked to this machine by a veth pair, so
the only way a task reaches it is the node's ``[tes] egress`` rule naming exactly
its address and port. The workflow's result is read back from S3, and each job is
a COMPLETE TES task.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from ..moto_server import FAKE_KEY, FAKE_SECRET, REGION, moto_server, s3_client
from .conftest import poll
from .helpers_cells import CellServer, Node, cell_server_in, start_node, unique
from .helpers_tes import clean_up, tes_request
from .snakemake_image import VENV, ensure_image

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

SNAKEMAKE = VENV / "bin" / "snakemake"
RUN_DEADLINE = 420.0
"""How long the whole workflow may take: the executor waits 40 s before its first
status check, and then checks every few seconds."""
SNAKEFILE = """\
rule all:
    input: "shout.txt"

rule greet:
    output: "greeting.txt"
    shell: "echo hello from diego > {output}"

rule upper:
    input: "greeting.txt"
    output: "upper.txt"
    shell: "tr a-z A-Z < {input} > {output}"

rule shout:
    input: "upper.txt"
    output: "shout.txt"
    shell: "cat {input} {input} > {output}"
"""


@contextlib.contextmanager
def storage_host() -> Iterator[str]:
    """A network namespace linked to this machine by a veth pair; its address.

    The pair's /30 (10.213.N.0/30, N from the pid) is routed here only, never beyond.
    """
    n = os.getpid() % 250 + 1
    name, here, there = f"diego-s3-{os.getpid()}", f"ds3h{n}", f"ds3n{n}"
    address, gateway = f"10.213.{n}.2", f"10.213.{n}.1"

    def ip(*args: str) -> None:
        subprocess.run(["ip", *args], check=True, capture_output=True)

    ip("netns", "add", name)
    try:
        ip("link", "add", here, "type", "veth", "peer", "name", there, "netns", name)
        ip("addr", "add", f"{gateway}/30", "dev", here)
        ip("link", "set", here, "up")
        ip("-n", name, "addr", "add", f"{address}/30", "dev", there)
        ip("-n", name, "link", "set", there, "up")
        ip("-n", name, "link", "set", "lo", "up")
        with moto_server(address, wrap=("ip", "netns", "exec", name)) as endpoint:
            yield endpoint
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)
        subprocess.run(["ip", "link", "del", here], check=False, capture_output=True)


@pytest.fixture
def s3_endpoint() -> Iterator[str]:
    """moto's S3 server on the storage host: its endpoint URL."""
    with storage_host() as endpoint:
        yield endpoint


@pytest.fixture
def cell_server(tmp_path: Path) -> Iterator[CellServer]:
    """A Server helper (not started) for a node with one Docker cell."""
    with cell_server_in(tmp_path, "docker", "diego-e2e-snakemake-") as helper:
        yield helper


@pytest.fixture
def node(cell_server: CellServer, s3_endpoint: str) -> Iterator[Node]:
    """A node whose TES tasks may reach the storage host's S3 port, and nothing else."""
    storage = urlsplit(s3_endpoint)
    egress = {"protocol": "tcp", "destination": storage.hostname, "ports": [storage.port]}
    started = start_node(cell_server, tes={"egress": [egress]})
    yield started
    clean_up(started, "docker")


def test_a_three_rule_snakemake_workflow_runs_through_tes(
    node: Node, s3_endpoint: str, tmp_path: Path
) -> None:
    """``snakemake --executor tes`` runs greet, upper and shout as three TES tasks in the
    locally built image; shout.txt lands on S3 with what the three rules made."""
    image = ensure_image()
    bucket = unique("smk")
    s3 = s3_client(s3_endpoint)
    s3.create_bucket(Bucket=bucket)
    workdir = tmp_path / "workflow"
    workdir.mkdir()
    (workdir / "Snakefile").write_text(SNAKEFILE)
    # The executor reads GITHUB_WORKSPACE/funnel.log whenever a job fails (debugging
    # code left in 0.1.3): without it a failed job is a KeyError, not a report.
    (workdir / "funnel.log").write_text("(diego's log is the node's stderr)\n")
    env = {
        "PATH": f"{VENV / 'bin'}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "GITHUB_WORKSPACE": str(workdir),
        "AWS_DEFAULT_REGION": REGION,
        "SNAKEMAKE_STORAGE_S3_ACCESS_KEY": FAKE_KEY,
        "SNAKEMAKE_STORAGE_S3_SECRET_KEY": FAKE_SECRET,
        "no_proxy": "*",
    }
    command = [
        str(SNAKEMAKE),
        "--executor",
        "tes",
        "--tes-url",
        f"{node.url}/ga4gh/tes",  # the executor's py-tes 0.4 adds /v1 itself
        "--container-image",
        image,
        "--default-storage-provider",
        "s3",
        "--default-storage-prefix",
        f"s3://{bucket}",
        "--storage-s3-endpoint-url",
        s3_endpoint,
        "--jobs",
        "1",
        "--seconds-between-status-checks",
        "2",
        "--latency-wait",
        "1",
    ]
    run = subprocess.run(
        command,
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=RUN_DEADLINE,
        check=False,
    )
    assert run.returncode == 0, f"{run.stderr[-6000:]}\n--- node ---\n{node.server.stderr[-4000:]}"

    shout = s3.get_object(Bucket=bucket, Key="shout.txt")["Body"].read()
    assert shout == b"HELLO FROM DIEGO\nHELLO FROM DIEGO\n"
    tasks = tes_request(node, "GET", "/tasks?view=BASIC").body["tasks"]
    # Each task is named by its job script: snakejob.RULE.JOBID.sh
    assert sorted(t["name"].split(".")[1] for t in tasks) == ["greet", "shout", "upper"], tasks
    assert {t["state"] for t in tasks} == {"COMPLETE"}
    assert all(t["executors"][0]["image"] == image for t in tasks)
    s3.close()


@pytest.mark.parametrize("egress", [True, False], ids=["with-egress", "without"])
def test_a_tes_task_reaches_the_storage_host_only_by_the_egress_rule(
    cell_server: CellServer, s3_endpoint: str, egress: bool
) -> None:
    """With the rule a TES task reaches the S3 port; by default it has no network."""
    storage = urlsplit(s3_endpoint)
    rule = {"protocol": "tcp", "destination": storage.hostname, "ports": [storage.port]}
    node = start_node(cell_server, tes={"egress": [rule] if egress else []})
    try:
        run_one(node, s3_endpoint, egress)
    finally:
        clean_up(node, "docker")


def run_one(node: Node, s3_endpoint: str, egress: bool) -> None:
    """A TES task that fetches the S3 endpoint: it says whether it was reached."""
    storage = urlsplit(s3_endpoint)  # busybox's static wget crashes here: nc connects
    script = (
        f"nc -w 5 {storage.hostname} {storage.port} </dev/null && echo reached || echo unreachable"
    )
    body = {"executors": [{"image": "alpine:latest", "command": ["sh", "-c", script]}]}
    task_id = tes_request(node, "POST", "/tasks", body).body["id"]

    def final() -> dict[str, Any] | None:
        task: dict[str, Any] = tes_request(node, "GET", f"/tasks/{task_id}?view=FULL").body
        return None if task["state"] in ("QUEUED", "INITIALIZING", "RUNNING") else task

    task = poll(final, 60.0, f"TES task {task_id} to end")
    assert task["state"] == "COMPLETE", task
    assert task["logs"][0]["logs"][0]["stdout"].split() == ["reached" if egress else "unreachable"]
