"""Interface selection by prefix, as the reference sidecar finds interfaces."""

from __future__ import annotations

import pytest

from pcaptool.sidecar.capture import iface_matches, match_interfaces

NAMES = [
    "eth0",
    "eth1",
    "eth10",
    "ipvlan-eth0",
    "eth-foo",
    "ethernet",
    "veth0",
    "xipvlan-eth0",
    "ipvlan-ens4",
    "ens4",
    "ens",
    "lo",
    "lo0",
    "vpcaptest-a",
]


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [
        ("eth", ["eth0", "eth1", "eth10", "ipvlan-eth0"]),
        ("eth1", ["eth1", "eth10"]),
        ("ens", ["ipvlan-ens4", "ens4", "ens"]),
        ("veth", ["veth0"]),
        ("wlan", []),
        ("lo", ["lo", "lo0"]),
        ("vpcaptest-a", ["vpcaptest-a"]),
        # regex characters in the prefix are literal
        ("e.h", []),
    ],
)
def test_prefix_selects_as_the_reference(prefix, expected):
    assert match_interfaces(prefix, NAMES, is_lo=lambda n: n.startswith("lo")) == expected


def test_loopbacks_only_when_asked_or_named():
    def is_lo(name):
        return name in {"lo", "lo0"}

    assert match_interfaces("lo", NAMES, is_lo=is_lo) == ["lo", "lo0"]
    names = ["dummy0", "dummy1"]
    assert match_interfaces("dummy", names, is_lo=lambda n: n == "dummy1") == ["dummy0"]
    assert match_interfaces("dummy", names, is_lo=lambda n: n == "dummy1", loopback=True) == names


def test_digit_must_follow_the_prefix():
    assert iface_matches("eth", "eth0")
    assert iface_matches("eth", "ipvlan-eth7")
    assert iface_matches("eth", "eth")  # a full name selects itself
    assert not iface_matches("eth", "ethx0")
    assert not iface_matches("eth", "myeth0")
