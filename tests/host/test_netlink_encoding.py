"""umlstate's hand-built rtnetlink requests, byte for byte against pyroute2's encoder.

kernel.py builds its six message layouts with struct, for speed; pyroute2 is
the reference for what the kernel expects. The kernel tests show the requests
work; these show they are the messages a netlink library would send.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

import pytest
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
from pyroute2.netlink.rtnl.ndmsg import ndmsg

from umlstate.host import rtnl as k

SEQ = 7


def reference(msg: Any, kind: int, header_flags: int, **fields: Any) -> bytes:
    for key, value in fields.items():
        msg[key] = value
    msg["header"]["type"] = kind
    msg["header"]["flags"] = header_flags
    msg["header"]["sequence_number"] = SEQ
    msg.encode()
    return bytes(msg.data)


ACK, ADD = k.NLM_F_REQUEST | k.NLM_F_ACK, k.NLM_F_REQUEST | k.NLM_F_ACK | k.NLM_F_CREATE | k.NLM_F_EXCL
ADDRESS = ipaddress.IPv4Interface("172.16.99.254/24")
GUEST = ipaddress.IPv4Address("172.16.99.1")

CASES: dict[str, tuple[bytes, bytes]] = {
    "mark a tap (alias, group)": (
        k.message(k.RTM_NEWLINK, ACK, SEQ, k.link_request(5, alias="umlstate:lab", group=1650496500)),
        reference(ifinfmsg(), k.RTM_NEWLINK, ACK, index=5,
                  attrs=[("IFLA_IFALIAS", "umlstate:lab"), ("IFLA_GROUP", 1650496500)])),
    "link up": (
        k.message(k.RTM_NEWLINK, ACK, SEQ, k.link_request(5, up=True)),
        reference(ifinfmsg(), k.RTM_NEWLINK, ACK, index=5, flags=k.IFF_UP, change=k.IFF_UP, attrs=[])),
    "delete a link": (
        k.message(k.RTM_DELLINK, ACK, SEQ, k.link_request(5)),
        reference(ifinfmsg(), k.RTM_DELLINK, ACK, index=5, attrs=[])),
    "delete a link group": (
        k.message(k.RTM_DELLINK, ACK, SEQ, k.link_request(0, group=1650496500)),
        reference(ifinfmsg(), k.RTM_DELLINK, ACK, index=0, attrs=[("IFLA_GROUP", 1650496500)])),
    "add an address": (
        k.message(k.RTM_NEWADDR, ADD, SEQ, k.address_request(5, ADDRESS, add=True)),
        reference(ifaddrmsg(), k.RTM_NEWADDR, ADD, family=socket.AF_INET, prefixlen=24, index=5,
                  attrs=[("IFA_LOCAL", "172.16.99.254"), ("IFA_ADDRESS", "172.16.99.254"),
                         ("IFA_BROADCAST", "172.16.99.255")])),
    "delete an address": (
        k.message(k.RTM_DELADDR, ACK, SEQ, k.address_request(5, ADDRESS, add=False)),
        reference(ifaddrmsg(), k.RTM_DELADDR, ACK, family=socket.AF_INET, prefixlen=24, index=5,
                  attrs=[("IFA_LOCAL", "172.16.99.254"), ("IFA_ADDRESS", "172.16.99.254")])),
    "add a proxy entry": (
        k.message(k.RTM_NEWNEIGH, ADD, SEQ, k.proxy_request(3, GUEST)),
        reference(ndmsg(), k.RTM_NEWNEIGH, ADD, family=socket.AF_INET, ifindex=3, flags=k.NTF_PROXY,
                  state=k.NUD_PERMANENT, attrs=[("NDA_DST", "172.16.99.1")])),
    "delete a proxy entry": (
        k.message(k.RTM_DELNEIGH, ACK, SEQ, k.proxy_request(3, GUEST)),
        reference(ndmsg(), k.RTM_DELNEIGH, ACK, family=socket.AF_INET, ifindex=3, flags=k.NTF_PROXY,
                  state=k.NUD_PERMANENT, attrs=[("NDA_DST", "172.16.99.1")])),
    "dump tun links": (
        k.message(k.RTM_GETLINK, k.NLM_F_REQUEST | k.NLM_F_DUMP, SEQ, k.link_dump_request("tun")),
        reference(ifinfmsg(), k.RTM_GETLINK, k.NLM_F_REQUEST | k.NLM_F_DUMP, family=socket.AF_UNSPEC,
                  attrs=[("IFLA_EXT_MASK", k.RTEXT_FILTER_SKIP_STATS),
                         ("IFLA_LINKINFO", {"attrs": [("IFLA_INFO_KIND", "tun")]})])),
}


@pytest.mark.parametrize("case", CASES)
def test_a_request_is_the_bytes_pyroute2_would_send(case: str) -> None:
    ours, theirs = CASES[case]
    assert ours.hex() == theirs.hex()
