"""The token of the links between a node and its cells on other machines.

Both internal APIs (the BBS's for cells, a cell's rep API) take a call only with
``Authorization: Bearer TOKEN``; anything else is a 401, logged with the source
address (and never with what was sent). Mutual TLS can take this seam's place.
"""

from __future__ import annotations

import hmac
import logging

from aiohttp import web

from diego.api.json import json_response

log = logging.getLogger("diego.api.link")


def refusal(request: web.Request, token: str) -> web.Response | None:
    """None if ``request`` bears ``token``; else the 401 to answer (and it is logged)."""
    given = request.headers.get("Authorization", "").encode()
    if hmac.compare_digest(given, f"Bearer {token}".encode()):
        return None
    log.warning("link-refused remote=%s path=%s", request.remote, request.path)
    body = {"name": "Unauthorized", "message": "a cell token is needed, and this is not it"}
    return json_response(body, status=401)


def headers(token: str) -> dict[str, str]:
    """The headers a client of either internal API sends."""
    return {"Authorization": f"Bearer {token}"}
