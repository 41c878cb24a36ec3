"""Does an address answer? One ICMP echo, from the namespace this process entered.

Host layer, used by apply to call a guest ready only once its addresses answer
from the host side (mconsole answers long before a guest's network is up).
A raw socket (root's CAP_NET_RAW): no ping program is run, and replies are
matched by identifier, sequence and source, so another guest's echo or a
stray packet never counts.
"""

from __future__ import annotations

import os
import select
import socket
import struct
import time

ECHO_REQUEST, ECHO_REPLY = 8, 0
_HEADER = struct.Struct("!BBHHH")  # type, code, checksum, identifier, sequence


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071) of ICMP and the IP family's headers."""
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def answers(address: str, timeout: float = 0.5) -> bool:
    """One echo request to ``address``; True when its reply comes back within ``timeout`` seconds."""
    ident, seq = os.getpid() & 0xFFFF, int(time.monotonic() * 1000) & 0xFFFF
    payload = b"umlstate"
    packet = _HEADER.pack(ECHO_REQUEST, 0, 0, ident, seq) + payload
    packet = _HEADER.pack(ECHO_REQUEST, 0, checksum(packet), ident, seq) + payload
    deadline = time.monotonic() + timeout
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as sock:
            sock.setblocking(False)
            sock.sendto(packet, (address, 0))
            while (left := deadline - time.monotonic()) > 0:
                ready, _, _ = select.select([sock], [], [], left)
                if not ready:
                    return False
                data, (source, _) = sock.recvfrom(1 << 16)
                start = (data[0] & 0x0F) * 4  # past the IP header
                if len(data) < start + _HEADER.size or source != address:
                    continue
                kind, _code, _sum, got_ident, got_seq = _HEADER.unpack_from(data, start)
                if kind == ECHO_REPLY and (got_ident, got_seq) == (ident, seq):
                    return True
    except OSError:  # no route yet, unreachable: not answering
        return False
    return False
