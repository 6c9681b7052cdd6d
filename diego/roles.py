"""The roles a node runs, from ``[node] role`` (or ``--role``): which parts it builds.

The roles are Diego's parts: ``api`` (the public API), ``bbs`` (the store and the
BBS's internal API for cells), ``auctioneer``, ``converger`` and ``cell`` (the rep,
executor and backend of ``[cell] count`` cells). ``control`` is every role but
``cell``; ``all`` (the default) is every role, today's whole node in one process.
A node without ``bbs`` runs only cells, which reach the BBS at ``[node] bbs_url``
with the cell token.
"""

from __future__ import annotations

ROLES = ("api", "bbs", "auctioneer", "converger", "cell")
ALIASES = {"control": frozenset(ROLES) - {"cell"}, "all": frozenset(ROLES)}
_NEED_THE_STORE = ("api", "auctioneer", "converger")


class RoleError(ValueError):
    """The roles named cannot run together (or are not roles); the message says why."""


def parse_roles(text: str) -> frozenset[str]:
    """The roles ``text`` names (a comma list of roles and aliases)."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise RoleError("node.role: must name at least one role")
    roles: set[str] = set()
    for name in names:
        if name in ALIASES:
            roles |= ALIASES[name]
        elif name in ROLES:
            roles.add(name)
        else:
            raise RoleError(
                f"node.role: unknown role {name!r}: the roles are {', '.join(ROLES)}, "
                "control (all but cell) and all"
            )
    return frozenset(roles)


def check_roles(roles: frozenset[str], bbs_url: str, cells: int, token: str) -> None:
    """Refuse roles that contradict each other or the settings they need."""
    if "bbs" not in roles:
        without = [r for r in _NEED_THE_STORE if r in roles]
        if without:
            raise RoleError(
                f"node.role: {', '.join(without)} without bbs: a node that runs them reads "
                "the store itself, so it runs bbs too (a node that only runs cells names "
                "cell alone)"
            )
        if not bbs_url:
            raise RoleError("node.bbs_url: a node that runs only cells needs the BBS's URL")
        if not token:
            raise RoleError(
                "server.cell_token_file: a cell on another machine needs the cell token "
                "(or DIEGO_LINK_TOKEN), the same as its control node's"
            )
    elif bbs_url:
        raise RoleError("node.bbs_url: given, but this node runs bbs itself")
    if roles == {"cell"} and cells < 1:
        raise RoleError("cell.count: 0, but this node runs only cells")
