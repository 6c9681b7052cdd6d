"""Roles from [node] role: aliases, unknown names, and what cannot run together."""

from __future__ import annotations

import pytest

from diego.roles import ROLES, RoleError, check_roles, parse_roles


def test_aliases_and_lists() -> None:
    assert parse_roles("all") == frozenset(ROLES)
    assert parse_roles("control") == frozenset(ROLES) - {"cell"}
    assert parse_roles(" bbs, api ,cell") == {"bbs", "api", "cell"}
    with pytest.raises(RoleError, match="unknown role 'ceLL'"):
        parse_roles("ceLL")
    with pytest.raises(RoleError, match="at least one"):
        parse_roles(" , ")


def test_what_runs_and_what_is_refused() -> None:
    check_roles(parse_roles("all"), "", 0, "")  # a whole node with no cells of its own
    check_roles(parse_roles("control"), "", 0, "t")
    check_roles(parse_roles("cell"), "http://a:8889", 1, "t")
    refused = [
        (parse_roles("api"), "", 1, "", "api without bbs"),
        (parse_roles("cell"), "", 1, "t", "node.bbs_url"),
        (parse_roles("cell"), "http://a", 1, "", "cell token"),
        (parse_roles("cell"), "http://a", 0, "t", "only cells"),
        (parse_roles("control"), "http://a", 1, "t", "runs bbs itself"),
    ]
    for roles, url, cells, token, said in refused:
        with pytest.raises(RoleError, match=said):
            check_roles(roles, url, cells, token)
