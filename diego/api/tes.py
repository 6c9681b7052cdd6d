"""GA4GH TES 1.1 at /ga4gh/tes/v1: service-info, create, get, list and cancel tasks.

Errors are TES-style ``{"error": "..."}``: 400 for an invalid task or parameter
(naming the field), 404 for an unknown id; never a 500 for bad input.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable

from aiohttp import web

from diego import __version__
from diego.api.json import json_response, read_json
from diego.api.keys import SETTINGS_KEY
from diego.api.routes import ANY_METHOD, Param, Reply, Route
from diego.models.codec import InvalidDocument
from diego.models.errors import DiegoError, InvalidFields, InvalidRequest, TesTaskNotFound
from diego.models.tes import (
    DEFAULT_VIEW,
    TesState,
    TesTask,
    decode_create,
    service_info,
    view,
)
from diego.tes import SUPPORTED_BACKEND_PARAMETERS, TesService

BASE = "/ga4gh/tes/v1"
LEGACY_SERVICE_INFO = "/v1/tasks/service-info"
"""Where TES 0.x clients (py-tes 0.4) ask for service-info."""
TASK_ID = "{id:[^/:]+}"
"""A task id has no colon, so /tasks/x:cancel is the cancel's path alone (a GET of
it is a 405 allowing POST, not a lookup of a task named "x:cancel")."""
DEFAULT_PAGE_SIZE = 256
MAX_PAGE_SIZE = 2048
STORAGE = ["file://", "http://", "https://", "s3://"]

TES_KEY = web.AppKey("tes", TesService)

Handler = Callable[[web.Request], Awaitable[web.Response]]


def tes_errors(handler: Handler) -> Handler:
    """Answer a handler's domain errors as TES does: ``{"error": ...}``."""

    @functools.wraps(handler)
    async def wrapped(request: web.Request) -> web.Response:
        try:
            return await handler(request)
        except TesTaskNotFound as e:
            return json_response({"error": e.message}, status=404)
        except InvalidFields as e:
            problems = "; ".join(f"{p.path}: {p.rule}" for p in e.problems)
            return json_response({"error": f"invalid task: {problems}"}, status=400)
        except DiegoError as e:
            status = 400 if isinstance(e, InvalidRequest) else 409
            return json_response({"error": e.message}, status=status)

    return wrapped


class InvalidTesTask(InvalidFields):
    """A TES task document broke the rules."""


@tes_errors
async def get_service_info(request: web.Request) -> web.Response:
    """What this TES service is."""
    info = service_info(_version(), STORAGE, list(SUPPORTED_BACKEND_PARAMETERS))
    return json_response(info)


@tes_errors
async def create_task(request: web.Request) -> web.Response:
    """Create a TES task; its id."""
    body = await read_json(request)
    try:
        task = decode_create(body, request.app[SETTINGS_KEY].limits)
    except InvalidDocument as e:
        raise InvalidTesTask(e.problems) from None
    created = await request.app[TES_KEY].create(task)
    return json_response({"id": created.id})


@tes_errors
async def get_task(request: web.Request) -> web.Response:
    """One TES task in the view asked for (MINIMAL by default)."""
    kind = _view(request)
    task = await request.app[TES_KEY].tes.get_tes_task(request.match_info["id"])
    return json_response(view(task, kind))


@tes_errors
async def list_tasks(request: web.Request) -> web.Response:
    """TES tasks, newest first, a page at a time, filtered."""
    query = request.query
    kind = _view(request)
    size = _page_size(query.get("page_size"))
    state = query.get("state")
    if state is not None and state not in TesState.__members__:
        raise InvalidRequest(f"state: must be one of {', '.join(TesState.__members__)}")
    keys, values = query.getall("tag_key", []), query.getall("tag_value", [])
    if len(values) > len(keys):
        raise InvalidRequest("tag_value: each must follow a tag_key")
    tags = [(k, values[i] if i < len(values) else "") for i, k in enumerate(keys)]
    tasks, token = await request.app[TES_KEY].tes.list_tes_tasks(
        page_size=size,
        page_token=query.get("page_token", ""),
        name_prefix=query.get("name_prefix", ""),
        state=TesState(state) if state else None,
        tags=tags,
    )
    body: dict[str, object] = {"tasks": [view(t, kind) for t in tasks]}
    if token:
        body["next_page_token"] = token
    return json_response(body)


@tes_errors
async def cancel_task(request: web.Request) -> web.Response:
    """Cancel a TES task (CANCELING, then CANCELED)."""
    await request.app[TES_KEY].cancel(request.match_info["id"])
    return json_response({})


async def only_get(request: web.Request) -> web.Response:
    """A 405 for any method but GET."""
    raise web.HTTPMethodNotAllowed(request.method, ["GET"])


def _view(request: web.Request) -> str:
    kind = request.query.get("view", DEFAULT_VIEW.value)
    if kind not in ("MINIMAL", "BASIC", "FULL"):
        raise InvalidRequest("view: must be MINIMAL, BASIC or FULL")
    return kind


def _page_size(text: str | None) -> int:
    if text is None:
        return DEFAULT_PAGE_SIZE
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= MAX_PAGE_SIZE:
        raise InvalidRequest(f"page_size: must be an integer from 1 to {MAX_PAGE_SIZE}")
    return int(text)


def _version() -> str:
    return __version__


ID = Param("id", "path", "the TES task's id")
VIEW = Param(
    "view",
    "query",
    "MINIMAL (default), BASIC or FULL",
    bounds={"enum": ["MINIMAL", "BASIC", "FULL"]},
)
STATES = {"enum": list(TesState.__members__)}
TES_ERROR = '{"error": "..."}'

ROUTES = [
    Route(
        "GET",
        f"{BASE}/service-info",
        get_service_info,
        "tesServiceInfo",
        "GA4GH service-info of the TES service.",
        replies=(Reply(200, "the service-info document"),),
    ),
    Route(
        "GET",
        LEGACY_SERVICE_INFO,
        get_service_info,
        "tesServiceInfoLegacy",
        f"The same as {BASE}/service-info, where TES 0.x clients (py-tes 0.4) ask.",
        replies=(Reply(200, "the service-info document"),),
    ),
    # Else /v1/tasks/{task_guid} would take the path's other methods.
    Route(ANY_METHOD, LEGACY_SERVICE_INFO, only_get, "tesServiceInfoLegacyOthers", ""),
    Route(
        "POST",
        f"{BASE}/tasks",
        create_task,
        "tesCreateTask",
        "Create a TES task (TES 1.1 tesTask); it is queued and run on a cell.",
        request=TesTask,
        replies=(Reply(200, '{"id": ...}'), Reply(400, f"invalid task: {TES_ERROR}")),
    ),
    Route(
        "GET",
        f"{BASE}/tasks",
        list_tasks,
        "tesListTasks",
        "TES tasks, newest first; page tokens are cursors.",
        params=(
            VIEW,
            Param(
                "page_size",
                "query",
                f"1 to {MAX_PAGE_SIZE}, default {DEFAULT_PAGE_SIZE}",
                "integer",
                {"minimum": 1, "maximum": MAX_PAGE_SIZE},
            ),
            Param("page_token", "query", "next_page_token of the page before"),
            Param("name_prefix", "query", "only tasks whose name starts so"),
            Param(
                "state",
                "query",
                "only tasks in this state",
                bounds={"enum": list(TesState.__members__)},
            ),
            Param("tag_key", "query", "only tasks with this tag (repeatable)"),
            Param("tag_value", "query", "the value of the tag_key at the same place"),
        ),
        replies=(Reply(200, '{"tasks": [...], "next_page_token": ...}'),),
    ),
    Route(
        "GET",
        f"{BASE}/tasks/{TASK_ID}",
        get_task,
        "tesGetTask",
        "One TES task.",
        params=(ID, VIEW),
        replies=(Reply(200, "the task in the view asked for"), Reply(404, TES_ERROR)),
    ),
    Route(
        "POST",
        f"{BASE}/tasks/{TASK_ID}:cancel",
        cancel_task,
        "tesCancelTask",
        "Cancel a TES task.",
        params=(ID,),
        replies=(Reply(200, "{}"), Reply(404, TES_ERROR)),
    ),
]
