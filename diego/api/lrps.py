"""/v1/desired_lrps, /v1/actual_lrps and /v1/domains."""

from __future__ import annotations

import attrs
from aiohttp import web

from diego.api.json import decode_model, json_response, read_json, read_model
from diego.api.keys import BBS_KEY, LRPS_KEY, SETTINGS_KEY
from diego.api.policy import check_policy
from diego.api.routes import Param, Reply, Route
from diego.models.codec import Problem, encode
from diego.models.errors import InvalidDesiredLRP, InvalidDomain, InvalidRequest
from diego.models.lrp import UPDATABLE, ActualLRP, DesiredLRP, DesiredLRPUpdate, DomainUpsert
from diego.models.rules import INT32_MAX

ERROR = "Error"


async def desire_lrp(request: web.Request) -> web.Response:
    """Create a DesiredLRP; its instances are started."""
    desired = await read_model(request, DesiredLRP, InvalidDesiredLRP)
    check_policy(desired, request.app[SETTINGS_KEY].cell, InvalidDesiredLRP)
    created = await request.app[LRPS_KEY].desire(desired)
    return json_response(encode(created), status=201)


async def list_desired_lrps(request: web.Request) -> web.Response:
    """Every DesiredLRP (of a domain)."""
    found = await request.app[BBS_KEY].desired_lrps(domain=request.query.get("domain"))
    return json_response([encode(d) for d in found])


async def get_desired_lrp(request: web.Request) -> web.Response:
    """One DesiredLRP."""
    found = await request.app[BBS_KEY].get_desired_lrp(request.match_info["process_guid"])
    return json_response(encode(found))


async def update_desired_lrp(request: web.Request) -> web.Response:
    """Change instances, routes or annotation; anything else is refused by name."""
    body = await read_json(request)
    if isinstance(body, dict):
        fixed = [
            Problem(key, f"cannot be changed: only {', '.join(UPDATABLE)} may be updated")
            for key in body
            if key not in UPDATABLE and key in _DESIRED_FIELDS
        ]
        if fixed:
            raise InvalidDesiredLRP(tuple(fixed))
    limits = request.app[SETTINGS_KEY].limits
    update = decode_model(body, DesiredLRPUpdate, InvalidDesiredLRP, limits)
    after = await request.app[LRPS_KEY].update(request.match_info["process_guid"], update)
    return json_response(encode(after))


async def remove_desired_lrp(request: web.Request) -> web.Response:
    """Delete a DesiredLRP; every instance of it is stopped."""
    await request.app[LRPS_KEY].remove(request.match_info["process_guid"])
    return web.Response(status=204)


async def list_actual_lrps(request: web.Request) -> web.Response:
    """Every ActualLRP (of a domain, or on a cell), evacuating copies included."""
    found = await request.app[BBS_KEY].actual_lrps(
        domain=request.query.get("domain"), cell_id=request.query.get("cell_id")
    )
    return json_response([encode(a) for a in found])


async def actual_lrps_of(request: web.Request) -> web.Response:
    """The ActualLRPs of one process."""
    guid = request.match_info["process_guid"]
    found = await request.app[BBS_KEY].actual_lrps(process_guid=guid)
    return json_response([encode(a) for a in found])


def _index(request: web.Request) -> int:
    text = request.match_info["index"]
    if not (text.isascii() and text.isdigit()) or int(text) > INT32_MAX:
        raise InvalidRequest(f"index: must be a whole number from 0 to {INT32_MAX}")
    return int(text)


async def get_actual_lrp(request: web.Request) -> web.Response:
    """One instance (the evacuating copy if the index has one, as Diego answers)."""
    bbs = request.app[BBS_KEY]
    guid, index = request.match_info["process_guid"], _index(request)
    actuals = [a for a in await bbs.actual_lrps(process_guid=guid) if a.index == index]
    if not actuals:
        actual = await bbs.get_actual_lrp(guid, index)  # raises ActualLRPNotFound
        return json_response(encode(actual))
    chosen = next((a for a in actuals if a.evacuating), actuals[0])
    return json_response(encode(chosen))


async def kill_actual_lrp(request: web.Request) -> web.Response:
    """Stop one instance; it is started again while still desired."""
    await request.app[LRPS_KEY].kill(request.match_info["process_guid"], _index(request))
    return web.Response(status=204)


async def upsert_domain(request: web.Request) -> web.Response:
    """Mark a domain fresh for ``ttl`` seconds (0: forever)."""
    upsert = await read_model(request, DomainUpsert, InvalidDomain)
    await request.app[BBS_KEY].upsert_domain(request.match_info["domain"], upsert.ttl)
    return web.Response(status=204)


async def list_domains(request: web.Request) -> web.Response:
    """The fresh domains."""
    return json_response([d.name for d in await request.app[BBS_KEY].domains()])


_DESIRED_FIELDS = frozenset(a.name for a in attrs.fields(DesiredLRP))

GUID = Param("process_guid", "path", "the DesiredLRP's process_guid")
INDEX = Param(
    "index", "path", "the instance's index", "integer", {"minimum": 0, "maximum": INT32_MAX}
)
NOT_FOUND = Reply(404, "no such DesiredLRP (DesiredLRPNotFound)", ERROR)

ROUTES = [
    Route(
        "POST",
        "/v1/desired_lrps",
        desire_lrp,
        "desireLRP",
        "Desire a long-running process; its instances are started.",
        request=DesiredLRP,
        replies=(
            Reply(201, "the DesiredLRP", DesiredLRP),
            Reply(400, "invalid (InvalidDesiredLRP), each field named", ERROR),
            Reply(409, "the process_guid exists (DesiredLRPAlreadyExists)", ERROR),
        ),
    ),
    Route(
        "GET",
        "/v1/desired_lrps",
        list_desired_lrps,
        "listDesiredLRPs",
        "Every DesiredLRP.",
        params=(Param("domain", "query", "only this domain's"),),
        replies=(Reply(200, "the DesiredLRPs", [DesiredLRP]),),
    ),
    Route(
        "GET",
        "/v1/desired_lrps/{process_guid}",
        get_desired_lrp,
        "getDesiredLRP",
        "One DesiredLRP.",
        params=(GUID,),
        replies=(Reply(200, "the DesiredLRP", DesiredLRP), NOT_FOUND),
    ),
    Route(
        "PUT",
        "/v1/desired_lrps/{process_guid}",
        update_desired_lrp,
        "updateDesiredLRP",
        "Change instances, routes or annotation (nothing else may change).",
        request=DesiredLRPUpdate,
        params=(GUID,),
        replies=(
            Reply(200, "the updated DesiredLRP", DesiredLRP),
            Reply(400, "a field that may not change, or an invalid value", ERROR),
            NOT_FOUND,
        ),
    ),
    Route(
        "DELETE",
        "/v1/desired_lrps/{process_guid}",
        remove_desired_lrp,
        "removeDesiredLRP",
        "Delete a DesiredLRP; every instance is stopped.",
        params=(GUID,),
        replies=(Reply(204, "removed"), NOT_FOUND),
    ),
    Route(
        "GET",
        "/v1/actual_lrps",
        list_actual_lrps,
        "listActualLRPs",
        "Every ActualLRP, evacuating copies included.",
        params=(
            Param("domain", "query", "only this domain's"),
            Param("cell_id", "query", "only those on this cell"),
        ),
        replies=(Reply(200, "the ActualLRPs", [ActualLRP]),),
    ),
    Route(
        "GET",
        "/v1/actual_lrps/{process_guid}",
        actual_lrps_of,
        "getActualLRPs",
        "The ActualLRPs of one process.",
        params=(GUID,),
        replies=(Reply(200, "its ActualLRPs", [ActualLRP]),),
    ),
    Route(
        "GET",
        "/v1/actual_lrps/{process_guid}/index/{index}",
        get_actual_lrp,
        "getActualLRP",
        "One instance; the evacuating copy when the index has one.",
        params=(GUID, INDEX),
        replies=(
            Reply(200, "the ActualLRP", ActualLRP),
            Reply(404, "no such instance (ActualLRPNotFound)", ERROR),
        ),
    ),
    Route(
        "DELETE",
        "/v1/actual_lrps/{process_guid}/index/{index}",
        kill_actual_lrp,
        "killActualLRP",
        "Stop one instance; it is started again because it is still desired.",
        params=(GUID, INDEX),
        replies=(
            Reply(204, "stopping"),
            Reply(404, "no such instance (ActualLRPNotFound)", ERROR),
        ),
    ),
    Route(
        "PUT",
        "/v1/domains/{domain}",
        upsert_domain,
        "upsertDomain",
        'Mark a domain fresh: {"ttl": seconds}, 0 for ever. The converger stops extra '
        "instances only in fresh domains.",
        request=DomainUpsert,
        params=(Param("domain", "path", "the domain"),),
        replies=(Reply(204, "fresh"), Reply(400, "bad ttl (InvalidDomain)", ERROR)),
    ),
    Route(
        "GET",
        "/v1/domains",
        list_domains,
        "listDomains",
        "The fresh domains.",
        replies=(Reply(200, "their names"),),
    ),
]
