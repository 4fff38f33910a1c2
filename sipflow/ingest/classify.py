"""SIP (and its keep-alives, and STUN) recognised by content, on any port.

How this works: two steps. :func:`prefilter` looks at the first bytes of every UDP payload
of a chunk at once (numpy) and sorts them into ``CANDIDATE`` (could be a SIP start line:
three upper-case letters then a letter or space - every SIP method - or ``SIP/``), CRLF
keep-alives, STUN, and ``OTHER`` (RTP, DNS, binary junk: never copied out of the buffer).
:func:`classify_payload` then checks one candidate exactly against the start-line grammar
(RFC 3261 §7.1 Request-Line / §7.2 Status-Line):

* ``SIP``: ``token SP Request-URI SP SIP/2.0`` or ``SIP/2.0 SP 3DIGIT ...``;
* ``MALFORMED_SIP``: starts with a known SIP method or ``SIP/`` but the start line is
  broken - still emitted, the SIP parser turns it into a finding;
* ``OTHER``: anything else that merely looked upper-case (HTTP on 5060, text protocols).
"""

from __future__ import annotations

import enum
import re

import numpy as np
import numpy.typing as npt

from sipflow.memo import remember

I64 = npt.NDArray[np.int64]


class Kind(enum.IntEnum):
    """What a payload is, as far as SIP ingest cares."""

    OTHER = 0
    CANDIDATE = 1  # prefilter only: needs classify_payload
    SIP = 2
    MALFORMED_SIP = 3
    KEEPALIVE_PING = 4  # RFC 5626 §4.4.1: double CRLF
    KEEPALIVE_PONG = 5  # RFC 5626 §4.4.1: single CRLF
    STUN = 6  # RFC 5389 §6 (magic cookie)


# SIP methods of RFC 3261 and its extensions (RFC 3262, 3265/6665, 3311, 3428, 3515, 3903,
# 6086); used to call a broken start line "malformed SIP" rather than "not SIP".
METHODS = frozenset(
    b"INVITE ACK BYE CANCEL OPTIONS REGISTER PRACK SUBSCRIBE NOTIFY PUBLISH INFO REFER "
    b"MESSAGE UPDATE".split()
)
STUN_COOKIE = b"\x21\x12\xa4\x42"
MAX_START_LINE = 4096

# RFC 3261 §25.1: token = 1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~")
_TOKEN = rb"[A-Za-z0-9\-.!%*_+`'~]+"
# Request-Line = Method SP Request-URI SP SIP-Version CRLF  (§25.1)
_REQUEST = re.compile(rb"(" + _TOKEN + rb") (\S+) [Ss][Ii][Pp]/2\.0\r?$")
# Status-Line = SIP-Version SP Status-Code SP Reason-Phrase CRLF  (§25.1)
_STATUS = re.compile(rb"[Ss][Ii][Pp]/2\.0 [1-6][0-9][0-9](?: [^\r\n]*)?\r?$")


def classify_payload(payload: bytes) -> Kind:
    """Exact classification of one payload (UDP datagram or first bytes of a stream)."""
    if payload == b"\r\n\r\n":
        return Kind.KEEPALIVE_PING
    if payload == b"\r\n":
        return Kind.KEEPALIVE_PONG
    if is_stun(payload):
        return Kind.STUN
    nl = payload.find(b"\n", 0, MAX_START_LINE)
    line = payload[:nl] if nl >= 0 else payload[:MAX_START_LINE]
    kind = _LINE_KINDS.get(line)
    if kind is None:
        kind = remember(_LINE_KINDS, line, _classify_line(line), _LINE_KINDS_MAX)
    return kind


# first line -> its Kind: start lines recur (a capture has few methods, URIs and status
# lines), so most payloads are classified by one look-up; bounded, emptied when full
_LINE_KINDS: dict[bytes, Kind] = {}
_LINE_KINDS_MAX = 1024


def _classify_line(line: bytes) -> Kind:
    if _REQUEST.match(line) or _STATUS.match(line):
        return Kind.SIP
    word = line.split(b" ", 1)[0].rstrip(b"\r")
    if word in METHODS or line[:4].upper() == b"SIP/":
        return Kind.MALFORMED_SIP
    return Kind.OTHER


def is_stun(payload: bytes) -> bool:
    """A STUN message (RFC 5389 §6): top two bits zero, magic cookie, length fits."""
    return (
        len(payload) >= 20
        and payload[0] < 0x40
        and payload[4:8] == STUN_COOKIE
        and int.from_bytes(payload[2:4], "big") + 20 == len(payload)
    )


def is_websocket_upgrade(payload: bytes) -> bool:
    """An HTTP/1.1 WebSocket opening handshake request (RFC 6455 §4.1) - SIP over WS
    (RFC 7118) starts this way on a TCP connection."""
    if not payload.startswith(b"GET "):
        return False
    head = payload[:4096].lower()
    return b"upgrade: websocket" in head or b"upgrade:websocket" in head


def looks_like_sip(payload: bytes) -> bool:
    """The payload starts with a SIP start line (broken or not)."""
    return classify_payload(payload) in (Kind.SIP, Kind.MALFORMED_SIP)


def prefilter(
    buf: npt.NDArray[np.uint8],
    offset: I64,
    length: I64,
    head: npt.NDArray[np.uint8] | None = None,
) -> npt.NDArray[np.int8]:
    """Vectorised first look at payloads ``buf[offset:offset+length]``: a :class:`Kind`
    per payload, ``CANDIDATE`` meaning "check with :func:`classify_payload`". ``head``,
    when given, holds at least the first 8 bytes of each payload (bytes past ``length``
    ignored)."""
    out = np.zeros(len(offset), np.int8)
    top = len(buf) - 1
    b0 = head[:, 0] if head is not None else buf[np.minimum(offset, top)]
    # First byte: an upper-case letter or s (SIP method, "SIP/"), CR, or < 0x40 (STUN).
    # RTP (version 2: 0x80-0xbf), RTCP, DTLS and most binary payloads stop here.
    sel = np.flatnonzero(
        (length >= 2) & (((b0 >= 0x41) & (b0 <= 0x5A)) | (b0 == 0x73) | (b0 < 0x40))
    )
    if len(sel) == 0:
        return out
    off, size = offset[sel], length[sel]
    if head is not None:
        b = [head[sel, k].astype(np.int64) for k in range(8)]
    else:
        b = [buf[np.minimum(off + k, top)].astype(np.int64) for k in range(8)]
    upper = [(x >= 0x41) & (x <= 0x5A) for x in b[:4]]
    word = upper[0] & upper[1] & upper[2] & (upper[3] | (b[3] == 0x20))
    sip = ((b[0] | 0x20) == 0x73) & ((b[1] | 0x20) == 0x69) & ((b[2] | 0x20) == 0x70)
    sip &= b[3] == 0x2F
    kind = np.zeros(len(sel), np.int8)
    kind[(size >= 4) & (word | sip)] = Kind.CANDIDATE
    crlf = (b[0] == 0x0D) & (b[1] == 0x0A)
    kind[(size == 2) & crlf] = Kind.KEEPALIVE_PONG
    kind[(size == 4) & crlf & (b[2] == 0x0D) & (b[3] == 0x0A)] = Kind.KEEPALIVE_PING
    stun = (size >= 20) & (b[0] < 0x40) & (b[4] == 0x21) & (b[5] == 0x12)
    stun &= (b[6] == 0xA4) & (b[7] == 0x42) & (((b[2] << 8) | b[3]) + 20 == size)
    kind[stun] = Kind.STUN
    out[sel] = kind
    return out


# Reasons for SourceStats.skipped, by Kind, for payloads that are not emitted.
SKIP_REASON = {
    Kind.OTHER: "non_sip_udp",
    Kind.KEEPALIVE_PING: "keepalive_ping",
    Kind.KEEPALIVE_PONG: "keepalive_pong",
    Kind.STUN: "stun",
}
