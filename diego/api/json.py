"""Reading and writing JSON bodies."""

from __future__ import annotations

import json
from typing import Any, TypeVar

from aiohttp import web

from diego.api.keys import SETTINGS_KEY
from diego.models.codec import InvalidDocument, decode
from diego.models.codec import dumps as codec_dumps
from diego.models.errors import InvalidFields, InvalidJSON
from diego.models.limits import Limits

T = TypeVar("T")


def dumps(data: Any) -> str:
    """Compact JSON."""
    return codec_dumps(data)


def json_response(data: Any, status: int = 200) -> web.Response:
    """A JSON response."""
    return json_text_response(dumps(data), status)


def json_text_response(text: str, status: int = 200) -> web.Response:
    """A response of JSON already written."""
    return web.Response(text=text, status=status, content_type="application/json")


async def read_json(request: web.Request) -> Any:
    """The request's body as JSON; InvalidJSON when it is not.

    aiohttp refuses a body over the app's ``client_max_size`` (413) while reading.
    """
    raw = await request.read()
    try:
        return json.loads(raw)
    except UnicodeDecodeError:
        raise InvalidJSON("request body is not UTF-8") from None
    except json.JSONDecodeError as e:
        raise InvalidJSON(
            f"request body is not JSON: {e.msg} at line {e.lineno} column {e.colno}"
        ) from None
    except RecursionError:
        raise InvalidJSON("request body is nested too deeply") from None


async def read_model(request: web.Request, cls: type[T], error: type[InvalidFields]) -> T:
    """The request's body decoded as ``cls`` within the node's limits; ``error`` naming
    every broken field if not."""
    return decode_model(await read_json(request), cls, error, request.app[SETTINGS_KEY].limits)


def decode_model(body: Any, cls: type[T], error: type[InvalidFields], limits: Limits) -> T:
    """``body`` decoded as ``cls`` within ``limits``; ``error`` naming every broken field
    if not."""
    try:
        return decode(cls, body, limits=limits)
    except InvalidDocument as e:
        raise error(e.problems) from None
