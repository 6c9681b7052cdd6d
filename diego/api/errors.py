"""Errors as JSON: every failure is ``{"name": ..., "message": ...}`` with a status.

Domain errors map to 4xx by class; aiohttp's own HTTP errors (unknown route,
wrong method, body too large) get the same shape. Anything unexpected is logged
with its traceback and answered 500 with no detail: a client never sees a trace.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage

from diego.api.json import json_response
from diego.api.keys import SETTINGS_KEY
from diego.models import errors
from diego.state.store import StoreConflict

log = logging.getLogger("diego.api")

STATUS: dict[type[errors.DiegoError], int] = {
    errors.InvalidRequest: 400,
    errors.TaskNotFound: 404,
    errors.TaskGuidAlreadyExists: 409,
    errors.InvalidStateTransition: 409,
    errors.RunningOnDifferentCell: 409,
    errors.DesiredLRPNotFound: 404,
    errors.DesiredLRPAlreadyExists: 409,
    errors.ActualLRPNotFound: 404,
    errors.ActualLRPAlreadyExists: 409,
    errors.InvalidActualLRPTransition: 409,
    errors.ActualLRPOnDifferentCell: 409,
    errors.CellNotFound: 404,
    errors.CellUnreachable: 503,
}

HTTP_NAMES = {
    400: "InvalidRequest",
    404: "NotFound",
    405: "MethodNotAllowed",
    413: "RequestTooLarge",
}


def status_of(error: errors.DiegoError) -> int:
    """The HTTP status of a domain error (its nearest mapped class decides)."""
    for cls in type(error).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 500


def error_body(error: errors.DiegoError) -> dict[str, Any]:
    """The JSON body that reports ``error``."""
    body: dict[str, Any] = {"name": error.name, "message": error.message}
    if isinstance(error, errors.InvalidFields):
        body["errors"] = [{"field": p.path, "rule": p.rule} for p in error.problems]
    return body


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answer every error as JSON; never let a traceback reach the client."""
    try:
        return await handler(request)
    except errors.DiegoError as e:
        return json_response(error_body(e), status=status_of(e))
    except StoreConflict:
        body = {"name": "Conflict", "message": "the task kept changing; try again"}
        return json_response(body, status=503)
    except web.HTTPRequestEntityTooLarge:
        limit = request.app[SETTINGS_KEY].server.max_body_bytes
        body = {"name": "RequestTooLarge", "message": f"request body exceeds {limit} bytes"}
        return json_response(body, status=413)
    except web.HTTPException as e:
        if e.status < 400:
            raise
        name = HTTP_NAMES.get(e.status, e.reason.replace(" ", ""))
        message = f"{e.reason}: {request.method} {request.path}"
        response = json_response({"name": name, "message": message}, status=e.status)
        if isinstance(e, web.HTTPMethodNotAllowed):
            response.headers["Allow"] = ", ".join(sorted(e.allowed_methods))
        return response
    except Exception:
        log.exception("request-failed method=%s path=%s", request.method, request.path)
        body = {"name": "InternalError", "message": "the server failed; see its log"}
        return json_response(body, status=500)


class BadRequestsInOneLine(logging.Filter):
    """aiohttp logs a request it cannot parse (a NUL in a header, say) with a
    traceback at ERROR; the client got its 400. Make that one INFO line: a stray
    client must not fill the node's log with tracebacks."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite a bad-request record in place; pass every other one as it is."""
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, BadHttpMessage):
            reason = " ".join(str(error.message).split())[:200]
            record.msg, record.args = "bad-http-request %s", (reason,)
            record.levelno, record.levelname = logging.INFO, "INFO"
            record.exc_info = record.exc_text = None
        return True
