"""Link layer, IP, tunnel and transport headers: vectorised for the common case.

How this works: :func:`decode_chunk` looks at a whole :class:`~sipflow.ingest.pcap.RecordChunk`
at once. For Ethernet (with any number of 802.1Q/802.1ad tags), Linux cooked SLL/SLL2, raw
IP and BSD loopback it computes header fields as numpy columns and picks out the records
that are plain (unfragmented) IPv4/IPv6 + UDP: those come back as :class:`UdpColumns`
(offsets into the capture buffer, no Python object per packet). Records that are not IP at
all are counted right there. Everything else - TCP, SCTP, fragments, IPv6 extension
headers, tunnels (IP-in-IP, GRE, ERSPAN I/II/III, GTP-U), PPPoE, MPLS, other link types -
is listed in ``slow`` and decoded one at a time by :func:`decode_frame`, which returns a
:class:`Packet`, a :class:`Fragment` or the reason it was skipped (a short string that
becomes a key of ``SourceStats.skipped``).
"""

from __future__ import annotations

import ipaddress
import struct
from collections import Counter
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from sipflow.ingest.pcap import RecordChunk, rows

I64 = npt.NDArray[np.int64]
Bool = npt.NDArray[np.bool_]

IPPROTO_ICMP = 1
IPPROTO_IPIP = 4
IPPROTO_TCP = 6
IPPROTO_UDP = 17
IPPROTO_IPV6 = 41
IPPROTO_GRE = 47
IPPROTO_ESP = 50
IPPROTO_ICMPV6 = 58
IPPROTO_SCTP = 132

ETH_IPV4 = 0x0800
ETH_IPV6 = 0x86DD
ETH_VLAN = (0x8100, 0x88A8, 0x9100)  # 802.1Q, 802.1ad (QinQ), pre-standard QinQ
ETH_PPPOE_SESSION = 0x8864
ETH_MPLS = (0x8847, 0x8848)
ETH_TEB = 0x6558  # transparent Ethernet bridging (GRE carrying Ethernet)
ETH_ERSPAN_2 = 0x88BE  # ERSPAN type I (no GRE sequence) and II
ETH_ERSPAN_3 = 0x22EB
GTP_U_PORT = 2152  # 3GPP TS 29.281

# BSD loopback address families (DLT_NULL, DLT_LOOP): AF_INET is 2 everywhere; AF_INET6
# is 10 (Linux), 24 (NetBSD/OpenBSD/BSD/OS), 28 (FreeBSD), 30 (Darwin).
AF_INET6_VALUES = frozenset((10, 24, 28, 30))

LINK_ETHERNET = 1
LINK_NULL = 0
LINK_LOOP = 108
LINK_SLL = 113
LINK_SLL2 = 276
LINK_RAW = frozenset((12, 14, 101, 228, 229))
FAST_LINKS = frozenset((LINK_ETHERNET, LINK_NULL, LINK_LOOP, LINK_SLL, LINK_SLL2)) | LINK_RAW

MAX_DEPTH = 8  # nested tunnels / tags before we give up

_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")


@dataclass(frozen=True, slots=True)
class Packet:
    """A transport-layer packet: UDP (17), TCP (6) or SCTP (132) between two addresses.

    For SCTP, ``payload`` is the whole SCTP packet (common header included) and the ports
    are those of the common header. ``seq``/``ack``/``flags`` are only set for TCP.
    """

    version: int
    src_ip: str
    dst_ip: str
    protocol: int
    sport: int
    dport: int
    payload: bytes
    seq: int = 0
    ack: int = 0
    flags: int = 0


@dataclass(frozen=True, slots=True)
class Fragment:
    """One IPv4 fragment or IPv6 Fragment-header packet (RFC 791 §3.2, RFC 8200 §4.5)."""

    version: int
    src_ip: str
    dst_ip: str
    ident: int
    protocol: int
    offset: int
    more: bool
    payload: bytes


Decoded = Packet | Fragment | str


# ---------------------------------------------------------------------------------------
# address text, cached (few distinct addresses, many packets)

_ADDR: dict[bytes, str] = {}


def addr_text(raw: bytes) -> str:
    """An IPv4/IPv6 address as ``ipaddress`` prints it."""
    text = _ADDR.get(raw)
    if text is None:
        text = str(ipaddress.ip_address(raw))
        if len(_ADDR) < 65536:
            _ADDR[raw] = text
    return text


# ---------------------------------------------------------------------------------------
# per-record path


def decode_frame(link_type: int, data: bytes) -> Decoded:
    """Decode one captured frame down to its transport layer, or say why not."""
    handler = _LINKS.get(link_type)
    if handler is None:
        if link_type in LINK_RAW:
            return _raw_ip(data, 0, 0)
        return f"unsupported_link_type_{link_type}"
    return handler(data)


def _ethernet(data: bytes, off: int = 0, depth: int = 0) -> Decoded:
    if len(data) < off + 14:
        return "truncated_headers"
    return _ethertype(data, off + 12, depth)


def _ethertype(data: bytes, off: int, depth: int) -> Decoded:
    """Dispatch on the EtherType at ``off``, stepping over VLAN tags (IEEE 802.1Q)."""
    for _ in range(MAX_DEPTH * 2):
        if len(data) < off + 2:
            return "truncated_headers"
        et = _U16.unpack_from(data, off)[0]
        if et not in ETH_VLAN:
            return _by_ethertype(et, data, off + 2, depth)
        off += 4
    return "too_many_vlan_tags"


def _by_ethertype(et: int, data: bytes, off: int, depth: int) -> Decoded:
    if et == ETH_IPV4:
        return _ipv4(data, off, depth)
    if et == ETH_IPV6:
        return _ipv6(data, off, depth)
    if et == ETH_PPPOE_SESSION:
        return _pppoe(data, off, depth)
    if et in ETH_MPLS:
        return _mpls(data, off, depth)
    if et == ETH_TEB:
        return _ethernet(data, off, depth + 1) if depth < MAX_DEPTH else "tunnel_too_deep"
    return "not_ip"


def _pppoe(data: bytes, off: int, depth: int) -> Decoded:
    """PPPoE session stage (RFC 2516 §4): 6-byte header then a PPP protocol field."""
    if len(data) < off + 8:
        return "truncated_headers"
    proto = _U16.unpack_from(data, off + 6)[0]
    if proto == 0x0021:  # PPP IPv4 (RFC 1332)
        return _ipv4(data, off + 8, depth)
    if proto == 0x0057:  # PPP IPv6 (RFC 5072)
        return _ipv6(data, off + 8, depth)
    return "not_ip"


def _mpls(data: bytes, off: int, depth: int) -> Decoded:
    """MPLS label stack (RFC 3032): pop to bottom of stack, guess IP by version nibble."""
    for _ in range(MAX_DEPTH):
        if len(data) < off + 4:
            return "truncated_headers"
        bottom = data[off + 2] & 1
        off += 4
        if bottom:
            return _raw_ip(data, off, depth)
    return "too_many_mpls_labels"


def _raw_ip(data: bytes, off: int, depth: int) -> Decoded:
    if len(data) <= off:
        return "truncated_headers"
    version = data[off] >> 4
    if version == 4:
        return _ipv4(data, off, depth)
    if version == 6:
        return _ipv6(data, off, depth)
    return "not_ip"


def _sll(data: bytes) -> Decoded:
    """Linux cooked capture v1: 16-byte header, protocol at 14."""
    if len(data) < 16:
        return "truncated_headers"
    return _ethertype(data, 14, 0)


def _sll2(data: bytes) -> Decoded:
    """Linux cooked capture v2: 20-byte header, protocol at 0."""
    if len(data) < 20:
        return "truncated_headers"
    et = _U16.unpack_from(data, 0)[0]
    if et in ETH_VLAN:
        return "not_ip"
    return _by_ethertype(et, data, 20, 0)


def _null(data: bytes) -> Decoded:
    """BSD loopback (DLT_NULL host order, DLT_LOOP network order): 4-byte family."""
    if len(data) < 4:
        return "truncated_headers"
    family = _loop_family(data[:4])
    if family == 2:
        return _ipv4(data, 4, 0)
    if family in AF_INET6_VALUES:
        return _ipv6(data, 4, 0)
    return "not_ip"


def _loop_family(raw: bytes) -> int:
    le = int.from_bytes(raw, "little")
    return le if le <= 0xFFFF else int.from_bytes(raw, "big")


_LINKS = {
    LINK_ETHERNET: _ethernet,
    LINK_SLL: _sll,
    LINK_SLL2: _sll2,
    LINK_NULL: _null,
    LINK_LOOP: _null,
}


# -- IP ---------------------------------------------------------------------------------


def _ipv4(data: bytes, off: int, depth: int) -> Decoded:
    """IPv4 (RFC 791 §3.1); the header checksum is not enforced."""
    if len(data) < off + 20:
        return "truncated_headers"
    vihl = data[off]
    ihl = (vihl & 0x0F) * 4
    if vihl >> 4 != 4 or ihl < 20 or len(data) < off + ihl:
        return "bad_ip_header"
    total = _U16.unpack_from(data, off + 2)[0]
    end = off + total if total >= ihl else len(data)  # 0: TCP segmentation offload
    end = min(end, len(data))
    ident, frag = struct.unpack_from("!HH", data, off + 4)
    proto = data[off + 9]
    src, dst = addr_text(data[off + 12 : off + 16]), addr_text(data[off + 16 : off + 20])
    if frag & 0x3FFF:  # MF set or offset != 0 (RFC 791 §3.2)
        return Fragment(
            4,
            src,
            dst,
            ident,
            proto,
            (frag & 0x1FFF) * 8,
            bool(frag & 0x2000),
            data[off + ihl : end],
        )
    return ip_payload(4, src, dst, proto, data[off + ihl : end], depth)


# RFC 8200 §4: extension headers we step over; 51 is AH (RFC 4302, length in 4-byte units).
_IPV6_EXT = frozenset((0, 43, 60, 51, 135, 139, 140))


def _ipv6(data: bytes, off: int, depth: int) -> Decoded:
    """IPv6 (RFC 8200) with hop-by-hop, routing, destination options and fragment headers."""
    if len(data) < off + 40:
        return "truncated_headers"
    if data[off] >> 4 != 6:
        return "bad_ip_header"
    plen = _U16.unpack_from(data, off + 4)[0]
    nh = data[off + 6]
    src, dst = addr_text(data[off + 8 : off + 24]), addr_text(data[off + 24 : off + 40])
    end = min(off + 40 + plen, len(data)) if plen else len(data)  # 0: jumbogram / TSO
    p = off + 40
    for _ in range(MAX_DEPTH * 2):
        if nh == 44:  # Fragment header (RFC 8200 §4.5)
            if end < p + 8:
                return "truncated_headers"
            offm, ident = struct.unpack_from("!HI", data, p + 2)
            if offm & 0xFFF9 == 0:  # atomic fragment: offset 0, M clear
                nh, p = data[p], p + 8
                continue
            return Fragment(
                6, src, dst, ident, data[p], offm & 0xFFF8, bool(offm & 1), data[p + 8 : end]
            )
        if nh not in _IPV6_EXT:
            return ip_payload(6, src, dst, nh, data[p:end], depth)
        if end < p + 2:
            return "truncated_headers"
        size = (data[p + 1] + 2) * 4 if nh == 51 else (data[p + 1] + 1) * 8
        nh, p = data[p], p + size
    return "too_many_ipv6_headers"


def ip_payload(
    version: int, src: str, dst: str, proto: int, payload: bytes, depth: int = 0
) -> Decoded:
    """Decode the payload of an IP datagram (also used after fragment reassembly)."""
    if proto == IPPROTO_UDP:
        return _udp(version, src, dst, payload, depth)
    if proto == IPPROTO_TCP:
        return _tcp(version, src, dst, payload)
    if proto == IPPROTO_SCTP:
        if len(payload) < 12:
            return "truncated_headers"
        sport, dport = struct.unpack_from("!HH", payload, 0)
        return Packet(version, src, dst, IPPROTO_SCTP, sport, dport, payload)
    if proto in (IPPROTO_IPIP, IPPROTO_IPV6, IPPROTO_GRE):
        if depth >= MAX_DEPTH:
            return "tunnel_too_deep"
        if proto == IPPROTO_GRE:
            return _gre(payload, depth + 1)
        inner = _ipv4 if proto == IPPROTO_IPIP else _ipv6  # RFC 2003, RFC 4213 §3.5
        return inner(payload, 0, depth + 1)
    if proto in (IPPROTO_ICMP, IPPROTO_ICMPV6):
        return "icmp"
    if proto == IPPROTO_ESP:
        return "esp"
    if proto == 59:
        return "no_next_header"
    return "other_ip_protocol"


# -- transports -------------------------------------------------------------------------


def _udp(version: int, src: str, dst: str, seg: bytes, depth: int) -> Decoded:
    """UDP (RFC 768): the length field bounds the payload (Ethernet padding follows)."""
    if len(seg) < 8:
        return "truncated_headers"
    sport, dport, length = struct.unpack_from("!HHH", seg, 0)
    if length < 8:
        length = len(seg)  # 0 in IPv6 jumbograms (RFC 2675); otherwise broken
    payload = seg[8:length]
    if GTP_U_PORT in (sport, dport) and depth < MAX_DEPTH:
        inner = _gtp_u(payload, depth + 1)
        if inner is not None:
            return inner
    return Packet(version, src, dst, IPPROTO_UDP, sport, dport, payload)


def _tcp(version: int, src: str, dst: str, seg: bytes) -> Decoded:
    """TCP (RFC 9293 §3.1): options skipped by the data offset."""
    if len(seg) < 20:
        return "truncated_headers"
    sport, dport, seq, ack, doff_flags = struct.unpack_from("!HHIIH", seg, 0)
    doff = (doff_flags >> 12) * 4
    if doff < 20 or doff > len(seg):
        return "truncated_headers"
    return Packet(
        version, src, dst, IPPROTO_TCP, sport, dport, seg[doff:], seq, ack, doff_flags & 0xFF
    )


def _gtp_u(data: bytes, depth: int) -> Decoded | None:
    """GTPv1-U G-PDU (3GPP TS 29.281 §5): the inner IP packet, or None if not one."""
    if len(data) < 8 or data[0] >> 5 != 1 or not data[0] & 0x10 or data[1] != 0xFF:
        return None
    off = 8
    if data[0] & 0x07:  # E, S or PN: 4 more bytes, then extension headers
        if len(data) < 12:
            return "truncated_headers"
        next_ext, off = data[11], 12
        while next_ext:
            if len(data) < off + 1 or data[off] == 0:
                return "truncated_headers"
            off += data[off] * 4
            if len(data) < off:
                return "truncated_headers"
            next_ext = data[off - 1]
    return _raw_ip(data, off, depth)


def _gre(data: bytes, depth: int) -> Decoded:
    """GRE (RFC 2784, RFC 2890 key and sequence) carrying IP, Ethernet or ERSPAN."""
    if len(data) < 4:
        return "truncated_headers"
    flags, proto = struct.unpack_from("!HH", data, 0)
    if flags & 0x4007:  # routing present (RFC 1701) or version != 0
        return "unsupported_gre"
    off = 4 + 4 * ((flags >> 15) + ((flags >> 13) & 1) + ((flags >> 12) & 1))
    if len(data) < off:
        return "truncated_headers"
    if proto == ETH_ERSPAN_2:
        # ERSPAN type II has the GRE sequence bit and an 8-byte header; type I has neither.
        return _ethernet(data, off + 8 if flags & 0x1000 else off, depth)
    if proto == ETH_ERSPAN_3:
        return _erspan3(data, off, depth)
    return _by_ethertype(proto, data, off, depth)


def _erspan3(data: bytes, off: int, depth: int) -> Decoded:
    """ERSPAN type III: 12-byte header, optional 8-byte platform sub-header (O bit)."""
    if len(data) < off + 12:
        return "truncated_headers"
    frame_type = (data[off + 10] >> 2) & 0x1F
    inner = off + 12 + (8 if data[off + 11] & 1 else 0)
    if frame_type == 0:
        return _ethernet(data, inner, depth)
    if frame_type == 2:
        return _raw_ip(data, inner, depth)
    return "unsupported_erspan_frame"


# ---------------------------------------------------------------------------------------
# vectorised path


@dataclass(frozen=True, slots=True)
class UdpColumns:
    """Plain IPv4/IPv6 + UDP records of a chunk; offsets index the capture buffer."""

    index: I64  # record index in the chunk
    version: I64
    src: I64  # offset of the source address (4 or 16 bytes)
    dst: I64
    sport: I64
    dport: I64
    payload: I64  # offset of the UDP payload
    length: I64  # payload bytes available (UDP length, bounded by what was captured)
    head: npt.NDArray[np.uint8]  # (n, HEAD) first payload bytes (past length: what follows)


@dataclass(frozen=True, slots=True)
class ChunkDecode:
    """What :func:`decode_chunk` found: fast UDP columns, records for the slow path,
    and counts of records skipped right away (by reason)."""

    udp: UdpColumns
    slow: I64
    skipped: Counter[str]


class _Window:
    """The ``width`` bytes at a per-record start, copied once into an (n, width) matrix
    (:func:`~sipflow.ingest.pcap.rows`, one pass over memory). Fields are then read as
    columns; 16-bit fields at even columns through a big-endian view."""

    def __init__(self, buf: npt.NDArray[np.uint8], starts: I64, width: int) -> None:
        self.m = rows(buf, starts, width)
        self.w16 = self.m.view(np.dtype(">u2"))
        self.shift = 0

    def shifted(self, shift: int) -> _Window:
        """The same rows, read from column ``shift`` on (no copy)."""
        win = object.__new__(_Window)
        win.m, win.w16, win.shift = self.m, self.w16, self.shift + shift
        return win

    def u8(self, col: int) -> I64:
        return self.m[:, col + self.shift].astype(np.int64)

    def u16(self, col: int) -> I64:
        col += self.shift
        if col & 1:
            return (self.m[:, col].astype(np.int64) << 8) | self.m[:, col + 1]
        return self.w16[:, col >> 1].astype(np.int64)


# The vectorised path reads three windows per record: 32 bytes of link header (Ethernet +
# 4 VLAN tags, SLL, SLL2, NULL), 16 bytes of IP header, 24 bytes at the UDP header (8 +
# HEAD payload bytes: for the prefilter, and the RTP stage's MediaBatch.head): at most
# 32 + 60 + 24 = 116 bytes from its start. Records closer than _SAFE bytes to the end of
# the buffer take the slow path.
HEAD = 16
_SAFE = 128


def decode_chunk(chunk: RecordChunk) -> ChunkDecode:
    """Split a chunk into fast UDP columns, slow-path records and immediate skips."""
    buf = chunk.buf
    if len(buf) < _SAFE or len(chunk) == 0:
        empty = np.zeros(0, np.int64)
        head = np.zeros((0, HEAD), np.uint8)
        cols = UdpColumns(empty, empty, empty, empty, empty, empty, empty, empty, head)
        return ChunkDecode(cols, np.arange(len(chunk), dtype=np.int64), Counter())
    caplen, link = chunk.caplen, chunk.link_type
    safe = chunk.offset + _SAFE <= len(buf)
    base = np.minimum(chunk.offset, len(buf) - _SAFE)
    linkw = _Window(buf, base, 32)
    et, l3 = _link_columns(linkw, link)
    known = et >= 0
    l3_0 = int(l3[0])
    uniform = l3_0 <= 16 and bool((l3 == l3_0).all())  # one link header size: reuse window
    ipw = linkw.shifted(l3_0) if uniform else _Window(buf, base + l3, 16)
    b0 = ipw.u8(0)
    v4 = known & (et == ETH_IPV4) & (caplen >= l3 + 20) & (b0 >> 4 == 4) & (b0 & 0x0F >= 5)
    v6 = known & (et == ETH_IPV6) & (caplen >= l3 + 40) & (b0 >> 4 == 6)
    proto = np.where(v4, ipw.u8(9), ipw.u8(6))
    frag = v4 & ((ipw.u16(6) & 0x3FFF) != 0)
    l4 = l3 + np.where(v4, (b0 & 0x0F) * 4, 40)
    udp = safe & (v4 | v6) & ~frag & (proto == IPPROTO_UDP) & (caplen >= l4 + 8)
    idx = np.flatnonzero(udp)
    v4i = v4[idx]
    iplen = np.where(v4i, ipw.u16(2)[idx], ipw.u16(4)[idx] + 40)
    cap_i = caplen[idx]
    ip_end = np.minimum(l3[idx] + np.where(iplen > 0, iplen, cap_i), cap_i)
    cols, fast = _udp_columns(buf, idx, base[idx], l3[idx], l4[idx], ip_end, v4i)
    udp[idx[~fast]] = False
    not_ip = safe & (caplen > l3) & ((et == -2) | (known & ~np.isin(et, _SLOW_ETHERTYPES)))
    skipped: Counter[str] = Counter()
    if not_ip.any():
        skipped["not_ip"] += int(np.count_nonzero(not_ip))
    tcp = safe & (v4 | v6) & ~frag & (proto == IPPROTO_TCP) & (caplen >= l4 + 20)
    if tcp.any():
        bare = _bare_acks(buf, np.flatnonzero(tcp), base, l3, l4, caplen, v4, ipw)
        not_ip[bare] = True  # settled here: not for the slow path
        skipped["tcp_no_payload"] += len(bare)
    return ChunkDecode(cols, np.flatnonzero(~udp & ~not_ip), skipped)


def _bare_acks(
    buf: npt.NDArray[np.uint8],
    idx: I64,
    base: I64,
    l3: I64,
    l4: I64,
    caplen: I64,
    v4: Bool,
    ipw: _Window,
) -> I64:
    """Records among ``idx`` that are TCP segments without payload and without SYN, FIN or
    RST (pure ACKs, window updates): nothing for SIP, whatever the connection, so they are
    counted here instead of being decoded one by one (the slow path would say the same)."""
    v4i, cap_i, l4i = v4[idx], caplen[idx], l4[idx]
    iplen = np.where(v4i, ipw.u16(2)[idx], ipw.u16(4)[idx] + 40)
    ip_end = np.minimum(l3[idx] + np.where(iplen > 0, iplen, cap_i), cap_i)
    win = _Window(buf, base[idx] + l4i, 16)
    doff = (win.u8(12) >> 4) * 4
    flags = win.u8(13)
    bare = (doff >= 20) & (ip_end - l4i == doff) & (flags & 0x07 == 0)
    out: I64 = idx[bare]
    return out


def _udp_columns(
    buf: npt.NDArray[np.uint8], idx: I64, base: I64, l3: I64, l4: I64, ip_end: I64, v4: Bool
) -> tuple[UdpColumns, Bool]:
    """UDP fields of the candidate records; ``fast`` is False for those that need the
    slow path after all (GTP-U, bad UDP length)."""
    u = base + l4
    win = _Window(buf, u, 8 + HEAD)
    sport, dport, ulen = win.u16(0), win.u16(2), win.u16(4)
    fast = (ulen >= 8) & (sport != GTP_U_PORT) & (dport != GTP_U_PORT) & (ip_end >= l4 + 8)
    if fast.all():
        k: I64 | slice = slice(None)
    else:
        k = np.flatnonzero(fast)
    plen = np.minimum(ulen[k] - 8, ip_end[k] - l4[k] - 8)
    ip = base[k] + l3[k]
    addr = np.where(v4[k], 12, 8)
    cols = UdpColumns(
        idx[k],
        np.where(v4[k], 4, 6),
        ip + addr,
        ip + addr + np.where(v4[k], 4, 16),
        sport[k],
        dport[k],
        u[k] + 8,
        plen,
        win.m[k, 8:],
    )
    return cols, fast


_SLOW_ETHERTYPES = np.array(
    [ETH_IPV4, ETH_IPV6, ETH_PPPOE_SESSION, *ETH_MPLS, *ETH_VLAN], dtype=np.int64
)


def _link_columns(win: _Window, link: I64) -> tuple[I64, I64]:
    """Per record: EtherType-like protocol (-1 = slow path, -2 = not IP) and L3 offset."""
    n = len(link)
    lt = int(link[0])
    if lt == LINK_ETHERNET and (link == lt).all():  # the common case: one Ethernet interface
        et, l3 = win.u16(12), np.full(n, 14, np.int64)
        if np.isin(et, ETH_VLAN).any():
            et, l3 = _vlan(win, et, l3)
        return et, l3
    et = np.full(n, -1, np.int64)
    l3 = np.zeros(n, np.int64)
    eth = link == LINK_ETHERNET
    if eth.any():
        et, l3 = np.where(eth, win.u16(12), et), np.where(eth, 14, l3)
        et, l3 = _vlan(win, np.where(eth, et, -1), l3)
    for lt, col, off in ((LINK_SLL, 14, 16), (LINK_SLL2, 0, 20)):
        sel = link == lt
        if sel.any():
            et, l3 = np.where(sel, win.u16(col), et), np.where(sel, off, l3)
    raw = np.isin(link, list(LINK_RAW))
    if raw.any():
        ver = win.u8(0) >> 4
        et = np.where(raw, np.select([ver == 4, ver == 6], [ETH_IPV4, ETH_IPV6], -2), et)
    null = (link == LINK_NULL) | (link == LINK_LOOP)
    if null.any():
        le = win.u8(0) | (win.u8(1) << 8) | (win.u8(2) << 16) | (win.u8(3) << 24)
        be = (win.u16(0) << 16) | win.u16(2)
        fam = np.where(le <= 0xFFFF, le, be)
        v6 = np.isin(fam, list(AF_INET6_VALUES))
        fam_et = np.select([fam == 2, v6], [ETH_IPV4, ETH_IPV6], -2)
        et, l3 = np.where(null, fam_et, et), np.where(null, 4, l3)
    return et, l3


def _vlan(win: _Window, et: I64, l3: I64) -> tuple[I64, I64]:
    """Step over up to 4 IEEE 802.1Q / 802.1ad tags (deeper stacks go the slow way)."""
    for depth in range(4):
        tag = np.isin(et, ETH_VLAN)
        if not tag.any():
            break
        et = np.where(tag, win.u16(16 + 4 * depth), et)
        l3 = l3 + 4 * tag
    return et, l3
