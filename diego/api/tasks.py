"""/v1/tasks: create, fetch, list, cancel and delete Tasks."""

from __future__ import annotations

from aiohttp import web

from diego.api.json import json_response, json_text_response, read_model
from diego.api.keys import BBS_KEY, SETTINGS_KEY
from diego.api.policy import check_policy
from diego.api.routes import Param, Reply, Route
from diego.models.codec import Problem, encode
from diego.models.errors import InvalidRequest, InvalidTask
from diego.models.task import Task, TaskCreateRequest
from diego.models.tes import TES_DOMAIN

MAX_PAGE_SIZE = 10_000
NEXT_PAGE_HEADER = "Diego-Next-Page-Token"

ERROR = "Error"

TES_DOMAIN_RESERVED = (
    f"must not be {TES_DOMAIN!r}: reserved for the Tasks of TES tasks (POST /ga4gh/tes/v1/tasks)"
)


async def create_task(request: web.Request) -> web.Response:
    """Desire a Task from a TaskCreateRequest."""
    task_request = await read_model(request, TaskCreateRequest, InvalidTask)
    check_policy(task_request, request.app[SETTINGS_KEY].cell, InvalidTask)
    if task_request.domain == TES_DOMAIN:
        # Its Tasks are TES jobs to the cells and TES tasks to the TES service.
        raise InvalidTask((Problem("domain", TES_DOMAIN_RESERVED),))
    task = await request.app[BBS_KEY].desire_task(task_request)
    return json_response(encode(task), status=201)


async def get_task(request: web.Request) -> web.Response:
    """One Task."""
    return json_text_response(await request.app[BBS_KEY].task_json(request.match_info["task_guid"]))


async def list_tasks(request: web.Request) -> web.Response:
    """Every Task (of a domain), oldest first; paged when page_size is given."""
    bbs = request.app[BBS_KEY]
    domain = request.query.get("domain")
    size_text = request.query.get("page_size")
    token = request.query.get("page_token")
    if size_text is None and token is None:
        return json_response([encode(t) for t in await bbs.tasks(domain=domain)])
    size = _page_size(size_text)
    try:
        page = await bbs.page_of_task_json(limit=size, cursor=token, domain=domain)
    except ValueError:
        raise InvalidRequest("page_token: not a token this server gave") from None
    response = json_text_response(f"[{','.join(page.items)}]")
    if page.next_cursor:
        response.headers[NEXT_PAGE_HEADER] = page.next_cursor
    return response


def _page_size(text: str | None) -> int:
    if text is None:
        return MAX_PAGE_SIZE
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= MAX_PAGE_SIZE:
        raise InvalidRequest(f"page_size: must be an integer from 1 to {MAX_PAGE_SIZE}")
    return int(text)


async def cancel_task(request: web.Request) -> web.Response:
    """PENDING, CLAIMED or RUNNING → COMPLETED, failed, "cancelled"."""
    _, after = await request.app[BBS_KEY].cancel_task(request.match_info["task_guid"])
    return json_response(encode(after))


async def delete_task(request: web.Request) -> web.Response:
    """Resolve a COMPLETED Task: COMPLETED → RESOLVING → removed."""
    await request.app[BBS_KEY].resolve_task(request.match_info["task_guid"])
    return web.Response(status=204)


GUID = Param("task_guid", "path", "the Task's guid")
NOT_FOUND = Reply(404, "no Task has that guid (TaskNotFound)", ERROR)

ROUTES = [
    Route(
        "POST",
        "/v1/tasks",
        create_task,
        "desireTask",
        "Create a Task; it starts PENDING.",
        request=TaskCreateRequest,
        replies=(
            Reply(201, "the Task, PENDING", Task),
            Reply(400, "invalid JSON (InvalidJSON) or task (InvalidTask), each field named", ERROR),
            Reply(409, "a Task with that guid exists (TaskGuidAlreadyExists)", ERROR),
            Reply(413, "the body is over the size limit (RequestTooLarge)", ERROR),
        ),
    ),
    Route(
        "GET",
        "/v1/tasks",
        list_tasks,
        "listTasks",
        "List Tasks, oldest first. With page_size or page_token, one page: the "
        f"next page's token is in the {NEXT_PAGE_HEADER} header.",
        params=(
            Param("domain", "query", "only the Tasks of this domain"),
            Param(
                "page_size",
                "query",
                f"at most this many (1-{MAX_PAGE_SIZE})",
                "integer",
                {"minimum": 1, "maximum": MAX_PAGE_SIZE},
            ),
            Param("page_token", "query", "the token of the page to fetch"),
        ),
        replies=(
            Reply(200, "the Tasks", [Task]),
            Reply(400, "a bad page_size or page_token (InvalidRequest)", ERROR),
        ),
    ),
    Route(
        "GET",
        "/v1/tasks/{task_guid}",
        get_task,
        "getTask",
        "Fetch one Task.",
        params=(GUID,),
        replies=(Reply(200, "the Task", Task), NOT_FOUND),
    ),
    Route(
        "POST",
        "/v1/tasks/{task_guid}/cancel",
        cancel_task,
        "cancelTask",
        'Cancel a PENDING, CLAIMED or RUNNING Task: it becomes COMPLETED, failed, "cancelled".',
        params=(GUID,),
        replies=(
            Reply(200, "the cancelled Task", Task),
            NOT_FOUND,
            Reply(409, "the Task has completed already (InvalidStateTransition)", ERROR),
        ),
    ),
    Route(
        "DELETE",
        "/v1/tasks/{task_guid}",
        delete_task,
        "deleteTask",
        "Resolve a COMPLETED Task: it is removed.",
        params=(GUID,),
        replies=(
            Reply(204, "removed"),
            NOT_FOUND,
            Reply(409, "the Task is not COMPLETED (InvalidStateTransition)", ERROR),
        ),
    ),
]
