"""The rep's client of a BBS on another machine: ``BBSClient`` over HTTP.

Each verb is one ``POST`` to the BBS's internal API (``diego.api.bbs_for_cells``),
its arguments and answer in the wire of ``diego.models.cell_link``. A domain error
raised there (a lost compare-and-swap, not found, invalid) is raised here as the
same class, so the rep acts on it as it does in-process. A BBS that cannot be
reached, or answers what is not the wire, raises ``BBSUnreachable``.
"""

from __future__ import annotations

import json
from typing import Any

import aiohttp

from diego.api import link_auth
from diego.models import cell_link
from diego.models.cells import CellPresence
from diego.models.errors import DiegoError
from diego.models.logs import LogBatch
from diego.models.lrp import ActualLRP, DesiredLRP
from diego.models.task import Task
from diego.models.tes import TesTask


class BBSUnreachable(DiegoError):
    """The BBS did not answer, or answered what is not a verb's answer."""

    name = "BBSUnreachable"


class HttpBBS:
    """The verbs a rep calls, made on the BBS at ``url`` with the cell ``token``."""

    def __init__(
        self, url: str, token: str, session: aiohttp.ClientSession, timeout: float = 30.0
    ) -> None:
        self.url = url.rstrip("/") + cell_link.PREFIX
        self._headers = link_auth.headers(token)
        self._session = session
        self._timeout = aiohttp.ClientTimeout(total=timeout)

    async def _call(self, verb: str, **args: Any) -> Any:
        body = cell_link.encode_args(verb, args)
        try:
            async with self._session.post(
                f"{self.url}/{verb}", json=body, headers=self._headers, timeout=self._timeout
            ) as reply:
                text = await reply.text()
                status = reply.status
        except (aiohttp.ClientError, TimeoutError) as e:
            raise BBSUnreachable(f"the BBS at {self.url} did not answer {verb}: {e!r}") from None
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        if status == 200 and isinstance(data, dict) and "result" in data:
            try:
                return cell_link.VERBS[verb].result.decode(data["result"])
            except (ValueError, KeyError, TypeError) as e:
                raise BBSUnreachable(f"the BBS answered {verb} with what is not one: {e}") from None
        if isinstance(data, dict) and "name" in data and status != 401:
            raise cell_link.error_from_data(data)
        raise BBSUnreachable(f"the BBS answered {verb} with {status}: {text[:200]}")

    async def get_task(self, guid: str) -> Task:
        result: Task = await self._call("get_task", guid=guid)
        return result

    async def get_tes_task(self, task_id: str) -> TesTask:
        result: TesTask = await self._call("get_tes_task", task_id=task_id)
        return result

    async def tasks(self, *, cell_id: str | None = None) -> list[Task]:
        result: list[Task] = await self._call("tasks", cell_id=cell_id)
        return result

    async def start_task(self, guid: str, cell_id: str) -> tuple[Task, Task]:
        result: tuple[Task, Task] = await self._call("start_task", guid=guid, cell_id=cell_id)
        return result

    async def complete_task(
        self, guid: str, cell_id: str, failed: bool, failure_reason: str, result: str
    ) -> tuple[Task, Task]:
        change: tuple[Task, Task] = await self._call(
            "complete_task",
            guid=guid,
            cell_id=cell_id,
            failed=failed,
            failure_reason=failure_reason,
            result=result,
        )
        return change

    async def renew_cell_presence(self, presence: CellPresence, ttl: float) -> None:
        await self._call("renew_cell_presence", presence=presence, ttl=ttl)

    async def remove_cell_presence(self, cell_id: str) -> None:
        await self._call("remove_cell_presence", cell_id=cell_id)

    async def get_desired_lrp(self, process_guid: str) -> DesiredLRP:
        result: DesiredLRP = await self._call("get_desired_lrp", process_guid=process_guid)
        return result

    async def actual_lrps(
        self,
        process_guid: str | None = None,
        domain: str | None = None,
        cell_id: str | None = None,
    ) -> list[ActualLRP]:
        result: list[ActualLRP] = await self._call(
            "actual_lrps", process_guid=process_guid, domain=domain, cell_id=cell_id
        )
        return result

    async def get_actual_lrp(
        self, process_guid: str, index: int, evacuating: bool = False
    ) -> ActualLRP:
        result: ActualLRP = await self._call(
            "get_actual_lrp", process_guid=process_guid, index=index, evacuating=evacuating
        )
        return result

    async def claim_actual_lrp(
        self, process_guid: str, index: int, instance_guid: str, cell_id: str
    ) -> tuple[ActualLRP, ActualLRP]:
        result: tuple[ActualLRP, ActualLRP] = await self._call(
            "claim_actual_lrp",
            process_guid=process_guid,
            index=index,
            instance_guid=instance_guid,
            cell_id=cell_id,
        )
        return result

    async def start_actual_lrp(
        self, process_guid: str, index: int, domain: str, instance_guid: str, cell_id: str
    ) -> tuple[ActualLRP | None, ActualLRP]:
        result: tuple[ActualLRP | None, ActualLRP] = await self._call(
            "start_actual_lrp",
            process_guid=process_guid,
            index=index,
            domain=domain,
            instance_guid=instance_guid,
            cell_id=cell_id,
        )
        return result

    async def crash_actual_lrp(
        self, process_guid: str, index: int, instance_guid: str, cell_id: str, reason: str
    ) -> tuple[ActualLRP, ActualLRP]:
        result: tuple[ActualLRP, ActualLRP] = await self._call(
            "crash_actual_lrp",
            process_guid=process_guid,
            index=index,
            instance_guid=instance_guid,
            cell_id=cell_id,
            reason=reason,
        )
        return result

    async def unclaim_actual_lrp(
        self, process_guid: str, index: int
    ) -> tuple[ActualLRP, ActualLRP]:
        result: tuple[ActualLRP, ActualLRP] = await self._call(
            "unclaim_actual_lrp", process_guid=process_guid, index=index
        )
        return result

    async def remove_actual_lrp(
        self,
        process_guid: str,
        index: int,
        instance_guid: str | None = None,
        evacuating: bool = False,
    ) -> ActualLRP:
        result: ActualLRP = await self._call(
            "remove_actual_lrp",
            process_guid=process_guid,
            index=index,
            instance_guid=instance_guid,
            evacuating=evacuating,
        )
        return result

    async def evacuate_actual_lrp(
        self, process_guid: str, index: int, instance_guid: str, cell_id: str
    ) -> tuple[ActualLRP, ActualLRP]:
        result: tuple[ActualLRP, ActualLRP] = await self._call(
            "evacuate_actual_lrp",
            process_guid=process_guid,
            index=index,
            instance_guid=instance_guid,
            cell_id=cell_id,
        )
        return result

    async def remove_evacuating_actual_lrp(
        self, process_guid: str, index: int, instance_guid: str
    ) -> ActualLRP:
        result: ActualLRP = await self._call(
            "remove_evacuating_actual_lrp",
            process_guid=process_guid,
            index=index,
            instance_guid=instance_guid,
        )
        return result

    async def ship_logs(self, batch: LogBatch) -> None:
        await self._call("ship_logs", batch=batch)
