"""The iptables argument lists that limit a container's egress to its security group rules.

Each case builds rules with the real model classes and expects the exact lines
setup_commands puts into the container's chain, or the exact hooks and teardown.
"""

from __future__ import annotations

import pytest

from diego.cell.backends.egress import chain_name, setup_commands, teardown_commands
from diego.models.task import ICMPInfo, PortRange, SecurityGroupRule

BRIDGE = "dg1a2b3c4d5e6f"
CHAIN = "DIEGO-dg1a2b3c4d5e6f"
PREFIX = "diego-dg1a2b3c4d5e6f "
HEAD = ["-w", "-A", CHAIN]

ESTABLISHED = [*HEAD, "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT"]
REJECT_TCP = [*HEAD, "-p", "tcp", "-j", "REJECT", "--reject-with", "tcp-reset"]
REJECT_REST = [*HEAD, "-j", "REJECT", "--reject-with", "icmp-port-unreachable"]
HOOKS = [
    ["-w", "-I", "DOCKER-USER", "-i", BRIDGE, "-j", CHAIN],
    [
        "-w",
        "-I",
        "DOCKER-USER",
        "-o",
        BRIDGE,
        "-m",
        "conntrack",
        "--ctstate",
        "ESTABLISHED,RELATED",
        "-j",
        "ACCEPT",
    ],
    ["-w", "-I", "INPUT", "-i", BRIDGE, "-j", CHAIN],
]


def rule_lines(*rules: SecurityGroupRule) -> list[list[str]]:
    """The chain lines the rules produce, between ESTABLISHED and the REJECTs."""
    commands = setup_commands(BRIDGE, rules)
    appended = [c for c in commands if c[:3] == HEAD]
    assert appended[0] == ESTABLISHED
    assert appended[-2:] == [REJECT_TCP, REJECT_REST]
    return appended[1:-2]


def accept(*match: str) -> list[str]:
    return [*HEAD, *match, "-j", "ACCEPT"]


def log(*match: str) -> list[str]:
    return [*HEAD, *match, "-j", "LOG", "--log-prefix", PREFIX]


def test_tcp_ports_use_multiport() -> None:
    rule = SecurityGroupRule(protocol="tcp", destination="10.0.0.0/8", ports=(80, 443))
    assert rule_lines(rule) == [
        accept("-p", "tcp", "-d", "10.0.0.0/8", "-m", "multiport", "--dports", "80,443")
    ]


def test_tcp_port_range_uses_dport() -> None:
    rule = SecurityGroupRule(
        protocol="tcp", destination="10.0.0.1", port_range=PortRange(start=8000, end=8080)
    )
    assert rule_lines(rule) == [accept("-p", "tcp", "-d", "10.0.0.1", "--dport", "8000:8080")]


def test_udp_ports() -> None:
    rule = SecurityGroupRule(protocol="udp", destination="8.8.8.8", ports=(53,))
    assert rule_lines(rule) == [
        accept("-p", "udp", "-d", "8.8.8.8", "-m", "multiport", "--dports", "53")
    ]


def test_udp_port_range() -> None:
    rule = SecurityGroupRule(
        protocol="udp", destination="10.0.0.0/24", port_range=PortRange(start=53, end=53)
    )
    assert rule_lines(rule) == [accept("-p", "udp", "-d", "10.0.0.0/24", "--dport", "53:53")]


def test_icmp_uses_type_and_code() -> None:
    rule = SecurityGroupRule(
        protocol="icmp", destination="0.0.0.0/0", icmp_info=ICMPInfo(type=8, code=0)
    )
    assert rule_lines(rule) == [accept("-p", "icmp", "-d", "0.0.0.0/0", "--icmp-type", "8/0")]


def test_all_has_no_protocol() -> None:
    rule = SecurityGroupRule(protocol="all", destination="192.168.1.0/24")
    assert rule_lines(rule) == [accept("-d", "192.168.1.0/24")]


def test_cidr_is_normalised_to_its_network() -> None:
    rule = SecurityGroupRule(protocol="all", destination="10.1.2.3/8")
    assert rule_lines(rule) == [accept("-d", "10.0.0.0/8")]


def test_single_ip_uses_d() -> None:
    rule = SecurityGroupRule(protocol="all", destination="10.0.0.1")
    assert rule_lines(rule) == [accept("-d", "10.0.0.1")]


def test_range_uses_iprange() -> None:
    rule = SecurityGroupRule(protocol="tcp", destination="10.0.0.1-10.0.0.9", ports=(22,))
    assert rule_lines(rule) == [
        accept(
            "-p",
            "tcp",
            "-m",
            "iprange",
            "--dst-range",
            "10.0.0.1-10.0.0.9",
            "-m",
            "multiport",
            "--dports",
            "22",
        )
    ]


def test_range_with_spaces_is_trimmed() -> None:
    rule = SecurityGroupRule(protocol="all", destination="10.0.0.1 - 10.0.0.9")
    assert rule_lines(rule) == [accept("-m", "iprange", "--dst-range", "10.0.0.1-10.0.0.9")]


def test_log_puts_a_log_line_before_its_accept() -> None:
    rule = SecurityGroupRule(protocol="tcp", destination="10.0.0.1", ports=(443,), log=True)
    match = ("-p", "tcp", "-d", "10.0.0.1", "-m", "multiport", "--dports", "443")
    assert rule_lines(rule) == [log(*match), accept(*match)]


def test_log_prefix_fits_iptables_limit() -> None:
    rule = SecurityGroupRule(protocol="all", destination="10.0.0.1", log=True)
    bridge = "b" * 22
    lines = setup_commands(bridge, [rule])
    prefixes = [line[line.index("--log-prefix") + 1] for line in lines if "--log-prefix" in line]
    assert prefixes == [f"diego-{bridge} "]
    assert len(prefixes[0]) <= 29


def test_log_of_a_split_rule_logs_each_accept() -> None:
    ports = tuple(range(1, 17))  # 16 ports: 15 + 1
    rule = SecurityGroupRule(protocol="udp", destination="10.0.0.1", ports=ports, log=True)
    first = (
        "-p",
        "udp",
        "-d",
        "10.0.0.1",
        "-m",
        "multiport",
        "--dports",
        ",".join(map(str, ports[:15])),
    )
    second = ("-p", "udp", "-d", "10.0.0.1", "-m", "multiport", "--dports", "16")
    assert rule_lines(rule) == [log(*first), accept(*first), log(*second), accept(*second)]


def test_more_than_15_ports_are_split() -> None:
    ports = tuple(range(1000, 1031))  # 31 ports: 15 + 15 + 1
    rule = SecurityGroupRule(protocol="tcp", destination="10.0.0.1", ports=ports)

    def group(first: int, last: int) -> str:
        return ",".join(str(p) for p in range(first, last + 1))

    assert rule_lines(rule) == [
        accept("-p", "tcp", "-d", "10.0.0.1", "-m", "multiport", "--dports", group(1000, 1014)),
        accept("-p", "tcp", "-d", "10.0.0.1", "-m", "multiport", "--dports", group(1015, 1029)),
        accept("-p", "tcp", "-d", "10.0.0.1", "-m", "multiport", "--dports", "1030"),
    ]


def test_exactly_15_ports_are_one_line() -> None:
    ports = tuple(range(1, 16))
    rule = SecurityGroupRule(protocol="tcp", destination="10.0.0.1", ports=ports)
    assert len(rule_lines(rule)) == 1


def test_ipv6_destination_grants_nothing() -> None:
    rule = SecurityGroupRule(protocol="all", destination="2001:db8::/32")
    assert rule_lines(rule) == []


def test_bad_destination_is_refused() -> None:
    rule = SecurityGroupRule(protocol="all", destination="not-an-address")
    with pytest.raises(ValueError, match="does not appear to be an IPv4 or IPv6 address"):
        setup_commands(BRIDGE, [rule])


def test_unknown_protocol_is_refused() -> None:
    rule = SecurityGroupRule(protocol="sctp", destination="10.0.0.1")
    with pytest.raises(ValueError, match="unknown protocol"):
        setup_commands(BRIDGE, [rule])


def test_no_rules_refuses_everything() -> None:
    assert setup_commands(BRIDGE, []) == [
        ["-w", "-N", CHAIN],
        ESTABLISHED,
        REJECT_TCP,
        REJECT_REST,
        *HOOKS,
    ]


def test_full_setup_in_order() -> None:
    rules = [
        SecurityGroupRule(protocol="tcp", destination="10.0.0.0/8", ports=(80,), log=True),
        SecurityGroupRule(
            protocol="icmp", destination="10.0.0.1", icmp_info=ICMPInfo(type=0, code=0)
        ),
    ]
    web = ("-p", "tcp", "-d", "10.0.0.0/8", "-m", "multiport", "--dports", "80")
    assert setup_commands(BRIDGE, rules) == [
        ["-w", "-N", CHAIN],
        ESTABLISHED,
        log(*web),
        accept(*web),
        accept("-p", "icmp", "-d", "10.0.0.1", "--icmp-type", "0/0"),
        REJECT_TCP,
        REJECT_REST,
        *HOOKS,
    ]


def test_every_command_waits_for_the_lock() -> None:
    rule = SecurityGroupRule(protocol="all", destination="10.0.0.1", log=True)
    commands = [*setup_commands(BRIDGE, [rule]), *teardown_commands(BRIDGE)]
    assert all(command[0] == "-w" for command in commands)
    assert not any("iptables" in command for command in commands)


def test_teardown_mirrors_setup_hooks() -> None:
    teardown = teardown_commands(BRIDGE)
    assert teardown == [
        *(["-w", "-D", *hook[2:]] for hook in HOOKS),
        ["-w", "-F", CHAIN],
        ["-w", "-X", CHAIN],
    ]
    assert [c[2:] for c in teardown[:3]] == [c[2:] for c in setup_commands(BRIDGE, [])[-3:]]


def test_chain_name() -> None:
    assert chain_name(BRIDGE) == CHAIN


def test_chain_name_at_the_limit() -> None:
    assert len(chain_name("b" * 22)) == 28


@pytest.mark.parametrize(
    ("bridge", "words"),
    [
        ("b" * 23, "longer than 28 characters"),
        ("", "bad bridge name"),
        ("dg+", "bad bridge name"),  # "+" would match every bridge starting "dg"
        ("dg 1", "bad bridge name"),
        ("dg/1", "bad bridge name"),
    ],
)
def test_bad_bridge_names_are_refused(bridge: str, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        chain_name(bridge)
    with pytest.raises(ValueError, match=words):
        setup_commands(bridge, [])
    with pytest.raises(ValueError, match=words):
        teardown_commands(bridge)
