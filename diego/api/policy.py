"""What the node's operator allows, checked at create time before anything is stored."""

from __future__ import annotations

from diego.models.codec import Problem
from diego.models.errors import InvalidFields

PRIVILEGED_REFUSED = (
    "not allowed: this node's cells run no privileged containers ([cell] allow_privileged = false)"
)


def check_privileged(privileged: bool, allowed: bool, error: type[InvalidFields]) -> None:
    """``error`` naming the field unless privileged work is ``allowed`` or not asked for.

    A privileged container's root is the cell machine's root; the operator decides
    with ``[cell] allow_privileged`` (off by default, as Diego's rep).
    """
    if privileged and not allowed:
        raise error((Problem("privileged", PRIVILEGED_REFUSED),))
