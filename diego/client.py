"""An asyncio client of a node's HTTP API, used by the CLI and the tests."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from types import TracebackType
from typing import Any

import aiohttp
import attrs

from diego.models.codec import decode
from diego.models.lrp import ActualLRP, DesiredLRP
from diego.models.task import Task

DEFAULT_API = "http://127.0.0.1:8889"


TES = "/ga4gh/tes/v1"


class ApiError(Exception):
    """The node answered with an error: its status, name and message."""

    def __init__(self, status: int, name: str, message: str, body: Any = None) -> None:
        super().__init__(f"{name}: {message}")
        self.status = status
        self.name = name
        self.message = message
        self.body = body


@attrs.frozen
class StreamEvent:
    """One server-sent event: its type and its JSON data."""

    type: str
    data: Any
    id: str = ""


class Client:
    """The API of the node at ``url``. Use as an async context manager."""

    def __init__(self, url: str = DEFAULT_API) -> None:
        self.url = url.rstrip("/")
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Client:
        # Event streams stay open indefinitely: no total timeout.
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=10)
        self._session = aiohttp.ClientSession(timeout=timeout)
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._session is not None:
            await self._session.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        """The open HTTP session."""
        if self._session is None:
            raise RuntimeError("use the Client as 'async with Client(url) as client'")
        return self._session

    async def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        async with self.session.request(method, self.url + path, **kwargs) as response:
            text = await response.text()
            body = (
                json.loads(text) if text and response.content_type == "application/json" else None
            )
            if response.status >= 400:
                raise _error(response.status, body, text)
            return body

    async def create_tes_task(self, task: dict[str, Any]) -> str:
        """Create a GA4GH TES task; its id."""
        return str((await self._call("POST", TES + "/tasks", json=task))["id"])

    async def get_tes_task(self, task_id: str, view: str = "MINIMAL") -> dict[str, Any]:
        """One TES task in ``view``."""
        return dict(await self._call("GET", f"{TES}/tasks/{task_id}", params={"view": view}))

    async def list_tes_tasks_filtered(
        self, params: dict[str, str], tags: Sequence[str] = ()
    ) -> dict[str, Any]:
        """A page of TES tasks (``view``, ``page_size``, ``page_token``, ``state``,
        ``name_prefix``), of those with every tag ``KEY=VALUE`` (or ``KEY``)."""
        query: list[tuple[str, str]] = list(params.items())
        for tag in tags:
            key, _, value = tag.partition("=")
            query += [("tag_key", key), ("tag_value", value)]
        return dict(await self._call("GET", TES + "/tasks", params=query))

    async def cancel_tes_task(self, task_id: str) -> None:
        """Cancel a TES task."""
        await self._call("POST", f"{TES}/tasks/{task_id}:cancel")

    async def ping(self) -> dict[str, Any]:
        """The node's ping answer."""
        return dict(await self._call("GET", "/v1/ping"))

    async def create_task(self, request: Any) -> Task:
        """Desire a Task from a TaskCreateRequest (as JSON data)."""
        return decode(Task, await self._call("POST", "/v1/tasks", json=request))

    async def get_task(self, guid: str) -> Task:
        """One Task."""
        return decode(Task, await self._call("GET", f"/v1/tasks/{guid}"))

    async def list_tasks(self, domain: str | None = None) -> list[Task]:
        """Every Task (of a domain), oldest first."""
        params = {"domain": domain} if domain is not None else {}
        return [decode(Task, t) for t in await self._call("GET", "/v1/tasks", params=params)]

    async def cancel_task(self, guid: str) -> Task:
        """Cancel a Task; the cancelled Task."""
        return decode(Task, await self._call("POST", f"/v1/tasks/{guid}/cancel"))

    async def delete_task(self, guid: str) -> None:
        """Resolve (remove) a COMPLETED Task."""
        await self._call("DELETE", f"/v1/tasks/{guid}")

    async def desire_lrp(self, desired: Any) -> DesiredLRP:
        """Create a DesiredLRP (as JSON data)."""
        return decode(DesiredLRP, await self._call("POST", "/v1/desired_lrps", json=desired))

    async def get_desired_lrp(self, process_guid: str) -> DesiredLRP:
        """One DesiredLRP."""
        return decode(DesiredLRP, await self._call("GET", f"/v1/desired_lrps/{process_guid}"))

    async def list_desired_lrps(self, domain: str | None = None) -> list[DesiredLRP]:
        """Every DesiredLRP (of a domain)."""
        params = {"domain": domain} if domain is not None else {}
        found = await self._call("GET", "/v1/desired_lrps", params=params)
        return [decode(DesiredLRP, d) for d in found]

    async def update_desired_lrp(self, process_guid: str, update: Any) -> DesiredLRP:
        """Change instances, routes or annotation."""
        path = f"/v1/desired_lrps/{process_guid}"
        return decode(DesiredLRP, await self._call("PUT", path, json=update))

    async def remove_desired_lrp(self, process_guid: str) -> None:
        """Delete a DesiredLRP."""
        await self._call("DELETE", f"/v1/desired_lrps/{process_guid}")

    async def actual_lrps(self, process_guid: str) -> list[ActualLRP]:
        """The instances of one process."""
        found = await self._call("GET", f"/v1/actual_lrps/{process_guid}")
        return [decode(ActualLRP, a) for a in found]

    async def domains(self) -> list[str]:
        """The fresh domains."""
        return list(await self._call("GET", "/v1/domains"))

    async def upsert_domain(self, domain: str, ttl: int) -> None:
        """Mark a domain fresh for ``ttl`` seconds (0: forever)."""
        await self._call("PUT", f"/v1/domains/{domain}", json={"ttl": ttl})

    async def cells(self) -> list[dict[str, Any]]:
        """The node's cells."""
        return list(await self._call("GET", "/v1/cells"))

    async def evacuate_cell(self, cell_id: str) -> None:
        """Start evacuating a cell."""
        await self._call("POST", f"/v1/cells/{cell_id}/evacuate")

    async def logs(
        self, log_guid: str, tail: int = 100, follow: bool = False
    ) -> AsyncIterator[StreamEvent]:
        """The lines of ``log_guid``: the last ``tail``, then new ones if ``follow``."""
        params = {"tail": str(tail), "follow": "true" if follow else "false"}
        async for event in self._stream(f"/v1/logs/{log_guid}", params):
            yield event

    async def events(self, domain: str | None = None) -> AsyncIterator[StreamEvent]:
        """The node's events from now on; the first item is yielded once subscribed.

        The first item is ``StreamEvent("subscribed", None)``: every change after
        it will be seen.
        """
        params = {"domain": domain} if domain is not None else {}
        async for event in self._stream("/v1/events", params):
            yield event

    async def _stream(self, path: str, params: dict[str, str]) -> AsyncIterator[StreamEvent]:
        async with self.session.get(self.url + path, params=params) as response:
            if response.status >= 400:
                text = await response.text()
                raise _error(response.status, _json_or_none(text), text)
            fields: dict[str, str] = {}
            async for raw in response.content:
                line = raw.decode().rstrip("\r\n")
                if line.startswith(": subscribed"):
                    yield StreamEvent("subscribed", None)
                elif line.startswith(":"):
                    continue
                elif line:
                    key, _, value = line.partition(":")
                    fields[key] = value.removeprefix(" ")
                elif fields:
                    yield StreamEvent(
                        fields.get("event", "message"),
                        json.loads(fields.get("data", "null")),
                        fields.get("id", ""),
                    )
                    fields = {}


def _json_or_none(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


def _error(status: int, body: Any, text: str) -> ApiError:
    if isinstance(body, dict) and "name" in body:
        return ApiError(status, str(body["name"]), str(body.get("message", "")), body)
    if isinstance(body, dict) and "error" in body:  # the TES API's shape
        return ApiError(status, f"HTTP{status}", str(body["error"]), body)
    return ApiError(status, f"HTTP{status}", text.strip()[:200] or "no message", body)
