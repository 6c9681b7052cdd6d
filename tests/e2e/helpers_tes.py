"""What the TES e2e tests share: plain requests below /ga4gh/tes/v1, and clean-up."""

from __future__ import annotations

import json
import subprocess
from typing import Any

from .conftest import DOCKER, http_request, poll
from .helpers_cells import Node

BASE = "/ga4gh/tes/v1"
DEADLINE = 30.0
"""How long a TES task may take from creation to a final state."""
FINAL = {"COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED", "PREEMPTED"}


def tes_request(node: Node, method: str, path: str, body: Any = None) -> Any:
    """One plain HTTP request below /ga4gh/tes/v1; the reply."""
    data = None if body is None else json.dumps(body)
    return http_request(node.url, method, BASE + path, data)


def diego_container_guids() -> set[str]:
    """The guids of every container diego labelled, running or not."""
    listed = subprocess.run(
        [
            DOCKER,
            "ps",
            "-a",
            "--filter",
            "label=org.diego.cell",
            "--format",
            '{{.Label "org.diego.guid"}}',
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return set(listed.stdout.split())


def clean_up(node: Node, backend: str) -> None:
    """Cancel every unfinished TES task of the node; wait until all are final and (on
    Docker) none has a container left."""
    if node.server.proc is None or node.server.proc.poll() is not None:
        return
    reply = tes_request(node, "GET", "/tasks?page_size=2048")
    assert reply.status == 200, reply.text
    ids = [t["id"] for t in reply.body["tasks"]]
    for task in reply.body["tasks"]:
        if task["state"] not in FINAL:
            tes_request(node, "POST", f"/tasks/{task['id']}:cancel")

    def all_final() -> bool:
        states = [
            t["state"] for t in tes_request(node, "GET", "/tasks?page_size=2048").body["tasks"]
        ]
        return all(state in FINAL for state in states)

    poll(all_final, DEADLINE, "every TES task to be final", interval=0.1)
    if backend == "docker":
        poll(
            lambda: not diego_container_guids() & set(ids),
            DEADLINE,
            "the TES tasks' containers to be removed",
            interval=0.2,
        )


# ------------------------------------------------------------------ 1. inputs
