"""Completion callbacks: POST a completed Task to its completion_callback_url.

Resolving starts with a compare-and-swap COMPLETED → RESOLVING, which only one
resolver can win: the first call of a callback happens at most once. Then:

- 503 or 504: try again at once, up to ``immediate_retries`` times;
- any other answer: the Task is resolved and removed;
- no answer (timeout, refused connection) or 503/504 to the end: the Task stays
  RESOLVING, the converger demotes it after its kick interval and it is tried
  again (about every 30 s by default) until it expires (2 min by default).
"""

from __future__ import annotations

import asyncio
import json
import logging

import aiohttp

from diego.bus import follow
from diego.models.codec import encode
from diego.models.errors import DiegoError
from diego.models.events import TaskChanged
from diego.models.task import Task, TaskState
from diego.state.bbs import BBS

log = logging.getLogger("diego.callbacks")

RETRY_AT_ONCE = (503, 504)


class Resolver:
    """Calls completion callbacks, and removes the Tasks they resolve."""

    def __init__(self, bbs: BBS, timeout: float = 10.0, immediate_retries: int = 3) -> None:
        self.bbs = bbs
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self.immediate_retries = immediate_retries
        self._tasks: set[asyncio.Task[None]] = set()

    def resolve(self, task: Task) -> None:
        """Start resolving ``task`` in the background."""
        job = asyncio.create_task(self._resolve(task))
        self._tasks.add(job)
        job.add_done_callback(self._tasks.discard)

    async def run(self) -> None:
        """Resolve each Task that becomes COMPLETED with a callback, until cancelled."""
        try:
            # What is missed while behind, the converger kicks on its next pass.
            await follow(self.bbs.bus, _completed_with_callback, self._completed, name="resolver")
        finally:
            for job in tuple(self._tasks):
                job.cancel()

    async def _completed(self, event: object) -> None:
        assert isinstance(event, TaskChanged)
        self.resolve(event.after)

    async def _resolve(self, task: Task) -> None:
        try:
            _, resolving = await self.bbs.resolving_task(task.task_guid)
        except DiegoError:
            return  # someone else is resolving it, or it is gone
        body = json.dumps(encode(task)).encode()
        headers = {"Content-Type": "application/json"}
        url = task.completion_callback_url
        try:
            async with aiohttp.ClientSession(timeout=self.timeout) as session:
                for _ in range(1 + self.immediate_retries):
                    async with session.post(url, data=body, headers=headers) as response:
                        status = response.status
                    if status not in RETRY_AT_ONCE:
                        break
        except (aiohttp.ClientError, TimeoutError) as e:
            log.info("callback-unreachable guid=%s url=%s error=%r", task.task_guid, url, e)
            return
        if status in RETRY_AT_ONCE:
            log.info("callback-unavailable guid=%s status=%d", task.task_guid, status)
            return
        try:
            await self.bbs.delete_task(resolving.task_guid)
        except DiegoError as e:
            log.info("resolved-task-not-deleted guid=%s reason=%s", task.task_guid, e)


def _completed_with_callback(event: object) -> bool:
    return (
        isinstance(event, TaskChanged)
        and event.after.state is TaskState.COMPLETED
        and bool(event.after.completion_callback_url)
    )
