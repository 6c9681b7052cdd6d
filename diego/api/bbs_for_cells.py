"""The BBS's internal API for cells on other machines: the verbs a rep calls.

Served under ``/internal/bbs/v1`` (see ``diego.models.cell_link`` for the verbs and
their wire) only when the node has a cell token: every call must carry it as
``Authorization: Bearer TOKEN``; a call without it, or with another, gets 401 and
is logged with its source address. The routes are not in the public OpenAPI
document: they are for diego's own cells, not for clients.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from diego.api import link_auth
from diego.api.errors import status_of
from diego.api.json import json_response, read_json
from diego.models import cell_link, errors
from diego.models.cell_link import LOG_VERBS, PREFIX, VERBS


def add_routes(app: web.Application, bbs: object, token: str, logs: object = None) -> None:
    """Serve the cell verbs of ``bbs`` (each looked up on it by name: the BBS has them
    all) and of ``logs`` (the log store: the lines cells ship) on ``app``, to callers
    bearing ``token``."""
    if not token:
        raise ValueError("the cell link needs a token")

    async def call(request: web.Request) -> web.Response:
        refused = link_auth.refusal(request, token)
        if refused is not None:
            return refused
        verb = request.match_info["verb"]
        try:
            if verb not in VERBS:
                known = ", ".join(VERBS)
                raise errors.InvalidRequest(f"no verb {verb!r}: the verbs are {known}")
            target = logs if verb in LOG_VERBS else bbs
            if target is None:
                raise errors.InvalidRequest(f"{verb}: this node keeps no logs")
            args = cell_link.decode_args(verb, await read_json(request))
            result: Any = await getattr(target, verb)(**args)
        except errors.DiegoError as e:
            return json_response(cell_link.error_data(e), status=status_of(e))
        return json_response({"result": VERBS[verb].result.encode(result)})

    app.router.add_post(PREFIX + "/{verb}", call)
