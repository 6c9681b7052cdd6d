"""Egress limits for a container with security group rules, as iptables argument lists.

A Docker-backed cell puts a container that has security group rules on a Docker
bridge network of its own, so everything the container sends enters the host
from that one bridge interface. Its egress is limited to exactly its rules:
packets entering from the bridge go through a chain of its own, ``DIEGO-<bridge>``,
which accepts replies on connections already set up, then what each rule allows,
and refuses everything else (TCP with a reset, the rest with ICMP
port-unreachable) so that a refused connection fails at once instead of timing
out. The chain is hooked into DOCKER-USER (traffic the host forwards) and INPUT
(traffic to the host itself); a further DOCKER-USER rule lets replies back to the
container through Docker's isolation of networks from one another.

This module only builds the argument lists (each without the ``iptables`` binary
and starting with ``-w``, to wait for the xtables lock); running them is the
caller's. It is IPv4 only: a container's bridge has no IPv6, so a rule whose
destination is IPv6 grants nothing and produces no lines.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence

from diego.models.task import SecurityGroupRule

CHAIN_PREFIX = "DIEGO-"
LOG_PREFIX = "diego-"
MAX_CHAIN_NAME = 28
"""iptables' limit on the length of a chain name."""
MAX_LOG_PREFIX = 29
"""iptables' limit on the length of a LOG target's ``--log-prefix``."""
MULTIPORT_MAX = 15
"""The most ports one ``-m multiport --dports`` match takes."""

ESTABLISHED = ["-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED"]

# iptables reads "+" at the end of an interface name as "any name starting so";
# a bridge name is held to plain characters so it can only ever name itself.
_BRIDGE_NAME = re.compile(r"[A-Za-z0-9_.-]+")


def chain_name(bridge: str) -> str:
    """The iptables chain for a container's bridge: ``DIEGO-<bridge>``.

    Raises ValueError if the bridge name is empty, holds a character other than
    letters, digits, ``_``, ``.`` and ``-``, or makes the chain name longer than
    iptables allows (28 characters).
    """
    if not _BRIDGE_NAME.fullmatch(bridge):
        raise ValueError(f"bad bridge name {bridge!r}")
    name = CHAIN_PREFIX + bridge
    if len(name) > MAX_CHAIN_NAME:
        raise ValueError(f"chain name {name!r} is longer than {MAX_CHAIN_NAME} characters")
    return name


def setup_commands(bridge: str, rules: Sequence[SecurityGroupRule]) -> list[list[str]]:
    """The iptables argument lists that, run in order, limit egress from ``bridge`` to ``rules``.

    First the chain is created, then filled (replies on established connections
    accepted, then each rule's lines, then the refusals), then hooked into
    DOCKER-USER and INPUT. Creating the chain fails if it already exists: run
    teardown_commands first to clear what an earlier setup left.
    """
    chain = chain_name(bridge)
    prefix = _log_prefix(bridge)
    return [
        ["-w", "-N", chain],
        *(["-w", "-A", chain, *body] for body in _chain_bodies(rules, prefix)),
        *(["-w", "-I", *hook] for hook in _hooks(bridge, chain)),
    ]


def teardown_commands(bridge: str) -> list[list[str]]:
    """The iptables argument lists that undo setup_commands for ``bridge``.

    The hooks are deleted, then the chain flushed and deleted. Any of them fails
    if what it removes is already gone, which the caller may ignore.
    """
    chain = chain_name(bridge)
    return [
        *(["-w", "-D", *hook] for hook in _hooks(bridge, chain)),
        ["-w", "-F", chain],
        ["-w", "-X", chain],
    ]


def _log_prefix(bridge: str) -> str:
    prefix = f"{LOG_PREFIX}{bridge} "
    if len(prefix) > MAX_LOG_PREFIX:
        raise ValueError(f"log prefix {prefix!r} is longer than {MAX_LOG_PREFIX} characters")
    return prefix


def _hooks(bridge: str, chain: str) -> list[list[str]]:
    """Each hook as its chain and match; each is inserted at the top of its chain."""
    return [
        ["DOCKER-USER", "-i", bridge, "-j", chain],
        ["DOCKER-USER", "-o", bridge, *ESTABLISHED, "-j", "ACCEPT"],
        ["INPUT", "-i", bridge, "-j", chain],
    ]


def _chain_bodies(rules: Iterable[SecurityGroupRule], log_prefix: str) -> list[list[str]]:
    """The rules of the container's chain, each without ``-A CHAIN``."""
    bodies = [[*ESTABLISHED, "-j", "ACCEPT"]]
    for rule in rules:
        bodies.extend(_rule_bodies(rule, log_prefix))
    bodies.append(["-p", "tcp", "-j", "REJECT", "--reject-with", "tcp-reset"])
    bodies.append(["-j", "REJECT", "--reject-with", "icmp-port-unreachable"])
    return bodies


def _rule_bodies(rule: SecurityGroupRule, log_prefix: str) -> list[list[str]]:
    """One security group rule's lines: an ACCEPT per match, each after its LOG if logged.

    A LOG line has its ACCEPT line's match, so only the rule's own traffic is
    logged; as replies are accepted before it, that is each new connection.
    """
    destination = _destination_match(rule.destination)
    if destination is None:
        return []
    protocol = _protocol_match(rule.protocol)
    bodies: list[list[str]] = []
    for ports in _port_matches(rule):
        match = [*protocol, *destination, *ports]
        if rule.log:
            bodies.append([*match, "-j", "LOG", "--log-prefix", log_prefix])
        bodies.append([*match, "-j", "ACCEPT"])
    return bodies


def _protocol_match(protocol: str) -> list[str]:
    if protocol == "all":
        return []
    if protocol in ("tcp", "udp", "icmp"):
        return ["-p", protocol]
    raise ValueError(f"unknown protocol {protocol!r}")


def _destination_match(destination: str) -> list[str] | None:
    """The match for an address, CIDR or range ``first-last``; None if it is IPv6.

    Raises ValueError if ``destination`` is none of those.
    """
    if "/" in destination:
        network = ipaddress.ip_network(destination.strip(), strict=False)
        return ["-d", str(network)] if network.version == 4 else None
    if "-" in destination:
        first_text, last_text = destination.split("-", 1)
        first = ipaddress.ip_address(first_text.strip())
        last = ipaddress.ip_address(last_text.strip())
        if first.version != last.version or int(first) > int(last):
            raise ValueError(f"bad destination range {destination!r}")
        return ["-m", "iprange", "--dst-range", f"{first}-{last}"] if first.version == 4 else None
    address = ipaddress.ip_address(destination.strip())
    return ["-d", str(address)] if address.version == 4 else None


def _port_matches(rule: SecurityGroupRule) -> list[list[str]]:
    """The port (or ICMP type) matches of a rule: one line each; ``[[]]`` for any."""
    matches: list[list[str]] = []
    if rule.protocol in ("tcp", "udp"):
        ports = list(dict.fromkeys(rule.ports or ()))
        for start in range(0, len(ports), MULTIPORT_MAX):
            group = ",".join(str(port) for port in ports[start : start + MULTIPORT_MAX])
            matches.append(["-m", "multiport", "--dports", group])
        if rule.port_range is not None:
            matches.append(["--dport", f"{rule.port_range.start}:{rule.port_range.end}"])
    elif rule.protocol == "icmp" and rule.icmp_info is not None:
        matches.append(["--icmp-type", f"{rule.icmp_info.type}/{rule.icmp_info.code}"])
    return matches or [[]]
