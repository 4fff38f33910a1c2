"""Media addresses announced in SDP, learnt from the SIP of a capture while it is read.

How this works: RTP is found by content (:func:`~sipflow.rtp.columns.media_kind`), and
that heuristic refuses two kinds of real RTP: payload types 72-76 (RFC 3551 §6 leaves them
unassigned because, with the marker bit set, they read as RTCP packet types 200-204,
RFC 5761 §4), and marker-bit packets of payload types 64-95, which it takes for RTCP when
their sequence number happens to fit as an RTCP length. A stream the SDP of a call
announced with such a payload type is RTP all the same, so:

* ingest hands every SIP payload that carries an ``m=`` line to the media sink
  (``MediaSink.announce``) before the media of the same capture chunk (SIP comes before
  its media, as on the wire); :meth:`AnnouncedMedia.add_sip` reads the connection address,
  port and payload types of each RTP m-line (RFC 8866 §5.7, §5.14) without a full SDP
  parse, and keeps them as int64 hashes of (address, port, payload type). Only payload
  types 64-95 are kept - content takes every other one already - and none of an m-line
  with ``a=rtcp-mux`` (RFC 5761 §4 forbids them there, so such a packet really is RTCP);
  an SDP without such a type costs one regex search. At most :data:`MAX_ENTRIES` are
  kept, the oldest forgotten first, so memory is bounded whatever the capture;
* :meth:`AnnouncedMedia.rescue` then turns, column-wise, each version-2 payload that the
  heuristic called ``other`` or ``rtcp`` into RTP when it goes to, or comes from, an
  announced address with one of that m-line's payload types.

STUN, DTLS, ZRTP and TURN ChannelData on those ports keep their kind: their first byte is
never that of version 2 (RFC 7983 §7), so they are never candidates.
"""

from __future__ import annotations

import ipaddress
import re

import numpy as np
import numpy.typing as npt

from sipflow.rtp.columns import MediaBatch, MediaKind

I64 = npt.NDArray[np.int64]

__all__ = ["MAX_ENTRIES", "AnnouncedMedia", "sdp_media"]

MAX_ENTRIES = 65536
"""(address, port, payload type) triples remembered, at most (about 1 MB)."""

_RTCP_LIKE = range(64, 96)  # RFC 5761 §4: RTP payload types that collide with RTCP
# an m= line listing one of them (the quick test before anything is parsed)
_ODD_PT = re.compile(rb"\nm=[^\r\n]*? (?:6[4-9]|[78][0-9]|9[0-5])(?=[ \r\n]|$)")

_M1 = np.uint64(0x9E3779B97F4A7C15)
_M2 = np.uint64(0xC2B2AE3D27D4EB4F)
_M3 = np.uint64(0x165667B19E3779F9)


def _mix(hi: I64, lo: I64, port: I64, pt: I64) -> I64:
    """A 64-bit hash of (address words, port, payload type) per row (as int64)."""
    with np.errstate(over="ignore"):
        h = hi.astype(np.uint64) * _M1
        h ^= lo.astype(np.uint64) * _M2
        h ^= ((port.astype(np.uint64) << np.uint64(8)) | pt.astype(np.uint64)) * _M3
        h ^= h >> np.uint64(29)
    out: I64 = h.view(np.int64)
    return out


_MASK = (1 << 64) - 1


def _mix_one(hi: int, lo: int, port: int, pt: int) -> int:
    """:func:`_mix` of one triple in Python ints (the same value, without numpy's cost)."""
    h = ((hi & _MASK) * int(_M1)) & _MASK
    h ^= ((lo & _MASK) * int(_M2)) & _MASK
    h ^= ((((port << 8) | pt) & _MASK) * int(_M3)) & _MASK
    h ^= h >> 29
    return h - (1 << 64) if h >= 1 << 63 else h


def _words(raw: bytes) -> tuple[int, int]:
    """16 address bytes (IPv4 first, then zeros, as MediaBatch rows) as two int64 words."""
    raw = raw.ljust(16, b"\0")
    return int.from_bytes(raw[:8], "big", signed=True), int.from_bytes(raw[8:], "big", signed=True)


def sdp_media(payload: bytes) -> list[tuple[bytes, int, tuple[int, ...], bool]]:
    """(address bytes, port, payload types, rtcp-mux) of each RTP m-line in the SDP of a
    SIP payload (a session-level c= applies to m-lines without their own)."""
    body = payload[payload.find(b"\n\r\n") + 1 :] if b"\n\r\n" in payload else payload
    out: list[list[object]] = []
    session: bytes | None = None
    for m in _LINES.finditer(body):
        port, proto, fmts, conn, mux = m.groups()
        if port is not None:  # an m= line: a new section, kept only for RTP profiles
            rtp = b"RTP/" in proto.upper()
            out.append([int(port), fmts.split(), None, False] if rtp else [])
        elif conn is not None:
            if out and out[-1]:
                out[-1][2] = conn
            elif not out:
                session = conn
        elif mux is not None and out and out[-1]:
            out[-1][3] = True
    found = (_finish(cur, session) for cur in out if cur)
    return [x for x in found if x[0] and x[1]]


# one pass over the body: m= (RFC 8866 §5.14), c= (§5.7) and a=rtcp-mux (RFC 5761 §5.1.1)
_LINES = re.compile(
    rb"^(?:m=[A-Za-z]+ (\d+)(?:/\d+)? (\S+)((?: +\S+)*)|c=IN IP[46] ([^\s/]+)[^\r\n]*"
    rb"|a=(rtcp-mux))\r?$",
    re.M,
)
_PACKED: dict[bytes, bytes] = {}


def _packed(text: bytes | None) -> bytes:
    """Address bytes of an IP literal (cached, bounded); b"" for a name or placeholder."""
    if not text:
        return b""
    raw = _PACKED.get(text)
    if raw is None:
        try:
            raw = ipaddress.ip_address(text.decode("ascii")).packed
        except (ValueError, UnicodeDecodeError):
            raw = b""  # a host name or a placeholder: nothing to match packets against
        if len(_PACKED) >= MAX_ENTRIES:
            _PACKED.clear()
        _PACKED[text] = raw
    return raw


def _finish(cur: list[object], session: bytes | None) -> tuple[bytes, int, tuple[int, ...], bool]:
    port, fmts, addr, mux = cur
    assert isinstance(port, int) and isinstance(fmts, list) and isinstance(mux, bool)
    raw = _packed(addr if isinstance(addr, bytes) else session)
    pts = tuple(int(f) for f in fmts if f.isdigit() and int(f) < 128)
    return raw, port, pts, mux


class AnnouncedMedia:
    """(address, port, payload type) of the RTP m-lines seen so far, bounded."""

    def __init__(self) -> None:
        self._entries: dict[int, None] = {}
        self._keys: I64 | None = np.zeros(0, np.int64)

    def __len__(self) -> int:
        return len(self._entries)

    def add_sip(self, payload: bytes) -> int:
        """Learn the RTP m-lines of the SDP in one SIP payload that list a payload type
        64-95 (without rtcp-mux); returns how many triples."""
        if _ODD_PT.search(payload) is None:
            return 0
        added = 0
        for raw, port, pts, mux in sdp_media(payload):
            hi, lo = _words(raw)
            for pt in pts:
                if pt in _RTCP_LIKE and not mux:
                    self._add(hi, lo, port, pt)
                    added += 1
        return added

    def _add(self, hi: int, lo: int, port: int, pt: int) -> None:
        key = _mix_one(hi, lo, port, pt)
        if key in self._entries:
            return
        if len(self._entries) >= MAX_ENTRIES:
            del self._entries[next(iter(self._entries))]  # the oldest first
        self._entries[key] = None
        self._keys = None

    def keys(self) -> I64:
        if self._keys is None:
            self._keys = np.sort(np.fromiter(self._entries, np.int64, len(self._entries)))
        return self._keys

    def rescue(self, batch: MediaBatch, kinds: npt.NDArray[np.int8]) -> int:
        """Turn the version-2 payloads content refused (``other``) or took for RTCP into RTP
        where they go to or come from an announced address with an announced payload type
        (in place, in ``kinds``); returns how many."""
        if not self._entries or len(kinds) == 0:
            return 0
        b0 = batch.head[:, 0].astype(np.int64)
        refused = (kinds == MediaKind.OTHER) | (kinds == MediaKind.RTCP)
        rows = np.flatnonzero(refused & ((b0 >> 6) == 2) & (batch.length >= 12 + 4 * (b0 & 0x0F)))
        if len(rows) == 0:
            return 0
        pt = batch.head[rows, 1].astype(np.int64) & 0x7F
        src = batch.src[rows].view(">u8").astype(np.int64)
        dst = batch.dst[rows].view(">u8").astype(np.int64)
        keys = self.keys()
        to = np.isin(_mix(dst[:, 0], dst[:, 1], batch.dport[rows], pt), keys)
        frm = np.isin(_mix(src[:, 0], src[:, 1], batch.sport[rows], pt), keys)
        hit = rows[to | frm]
        kinds[hit] = MediaKind.RTP
        return len(hit)
