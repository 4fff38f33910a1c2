"""RTP and RTCP header fields of a whole chunk of UDP payloads, as numpy columns.

How this works: ingest hands over a :class:`MediaBatch` per capture chunk - the UDP payloads
that are not SIP, as offsets into the capture buffer plus their addresses, ports, times and
frame numbers (no Python object per packet). :func:`media_kind` sorts them by their first
bytes (RFC 7983 §7 demultiplexing: STUN 0-3, ZRTP 16-19, DTLS 20-63, TURN channel 64-79,
RTP/RTCP 128-191; RTP vs RTCP by the second byte, RFC 5761 §4). :func:`rtp_headers` then
reads the fixed RTP header (RFC 3550 §5.1) of every RTP payload at once: version, padding,
extension, CSRC count, marker, payload type, sequence number, timestamp, SSRC, and the
payload size after CSRCs, header extension (§5.3.1) and padding.

Wrap-around arithmetic lives in named helpers (:func:`seq_diff`, :func:`ts_diff`) that work
on Python ints and numpy arrays alike.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import numpy.typing as npt

from sipflow.ingest.pcap import rows

I64 = npt.NDArray[np.int64]
U8 = npt.NDArray[np.uint8]
Bool = npt.NDArray[np.bool_]

__all__ = [
    "MediaBatch",
    "MediaKind",
    "RtpHeaders",
    "addr_matrix",
    "media_kind",
    "rtp_headers",
    "seq_diff",
    "seq_gt",
    "ts_diff",
]

N = TypeVar("N", int, I64)


def seq_diff(a: N, b: N) -> N:
    """``a - b`` for 16-bit RTP sequence numbers, in -32768..32767 (RFC 3550 §A.1)."""
    return ((a - b + 32768) & 0xFFFF) - 32768


def seq_gt(a: int, b: int) -> bool:
    """Sequence number ``a`` comes after ``b`` (modulo 2**16)."""
    return seq_diff(a, b) > 0


def ts_diff(a: N, b: N) -> N:
    """``a - b`` for 32-bit RTP timestamps, in -2**31..2**31-1 (RFC 3550 §5.1)."""
    return ((a - b + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)


class MediaKind(enum.IntEnum):
    """What a non-SIP UDP payload on a media path is (RFC 7983 §7)."""

    OTHER = 0
    RTP = 1
    RTCP = 2
    STUN = 3
    ZRTP = 4
    DTLS = 5
    TURN_CHANNEL = 6


# Names for the counts RtpCollector keeps, by kind.
KIND_NAMES = {k: k.name.lower() for k in MediaKind}


@dataclass(frozen=True, slots=True)
class MediaBatch:
    """Non-SIP UDP payloads of one chunk, handed from ingest to the RTP stage as columns.

    ``src``/``dst`` are (n, 16) address bytes (IPv4 in the first 4 bytes, the rest zero);
    ``offset``/``length`` locate each UDP payload in ``buf``; ``head`` holds its first 16
    bytes (bytes past ``length`` are whatever followed in the buffer)."""

    source: int
    buf: U8
    frame: I64
    ts: I64
    version: I64
    src: U8
    dst: U8
    sport: I64
    dport: I64
    offset: I64
    length: I64
    head: U8

    def __len__(self) -> int:
        return len(self.frame)

    def take(self, sel: I64 | Bool) -> MediaBatch:
        """The rows ``sel`` (indices or a mask) as a new batch."""
        return MediaBatch(
            self.source,
            self.buf,
            self.frame[sel],
            self.ts[sel],
            self.version[sel],
            self.src[sel],
            self.dst[sel],
            self.sport[sel],
            self.dport[sel],
            self.offset[sel],
            self.length[sel],
            self.head[sel],
        )


def window(buf: U8, starts: I64, width: int) -> U8:
    """``buf[s : s + width]`` for every start as an (n, width) matrix (clipped at the end
    of the buffer: callers check lengths before trusting bytes past a payload)."""
    if len(buf) < width:
        buf = np.concatenate([buf, np.zeros(width - len(buf), np.uint8)])
    return rows(buf, np.clip(starts, 0, len(buf) - width), width)


def addr_matrix(buf: U8, offset: I64, version: I64) -> U8:
    """(n, 16) address bytes at ``offset``: 16 for IPv6, 4 then zeros for IPv4 (each
    offset at least 16 bytes before the end of ``buf``, as ingest's are)."""
    if (version == 4).all():  # the common case: gather 4 bytes per row, not 16
        m = np.zeros((len(offset), 16), np.uint8)
        m[:, :4] = window(buf, offset, 4)
        return m
    m = window(buf, offset, 16)  # a new matrix (rows copies)
    m[version == 4, 4:] = 0
    return m


# RFC 5761 §4: RTCP packet types 192-223 (SR 200, RR 201, SDES 202, BYE 203, APP 204,
# RTPFB 205, PSFB 206, XR 207, FIR/NACK 192/193, SMPTETC 194, IJ 195) collide with RTP
# payload types 64-95 with the marker bit set; those RTP payload types are not used.
RTCP_PT_LO, RTCP_PT_HI = 192, 223


def media_kind(head: U8, length: I64) -> npt.NDArray[np.int8]:
    """A :class:`MediaKind` per payload from its first bytes (RFC 7983 §7, RFC 5761 §4).

    RTP needs version 2, at least 12 bytes, room for its CSRC list, and a payload type
    outside 72-76 (RFC 3551 §6 leaves them unassigned because they collide with RTCP).
    RTCP needs version 2, a packet type 192-223 and a first length field that fits."""
    out = np.zeros(len(length), np.int8)
    if len(length) == 0:
        return out
    b0 = head[:, 0].astype(np.int64)
    b1 = head[:, 1].astype(np.int64)
    v2 = (b0 >> 6) == 2
    rtcp_len = ((head[:, 2].astype(np.int64) << 8) | head[:, 3]) * 4 + 4
    rtcp = v2 & (b1 >= RTCP_PT_LO) & (b1 <= RTCP_PT_HI) & (length >= 8) & (rtcp_len <= length)
    pt = b1 & 0x7F
    rtp = v2 & ~rtcp & (length >= 12 + 4 * (b0 & 0x0F)) & ((pt < 72) | (pt > 76))
    out[rtp] = MediaKind.RTP
    out[rtcp] = MediaKind.RTCP
    low = np.flatnonzero(b0 < 0x80)  # the other kinds all start below RTP's version bits
    if len(low):
        out[low] = _not_rtp_kind(head[low].astype(np.int64), length[low])
    return out


def _not_rtp_kind(h: I64, length: I64) -> npt.NDArray[np.int8]:
    """:func:`media_kind` for payloads whose first byte is below 0x80 (not RTP/RTCP):
    first bytes ``h`` as int64 columns; the kinds' first-byte ranges do not overlap."""
    out = np.zeros(len(length), np.int8)
    b0, b1 = h[:, 0], h[:, 1]
    out[(b0 <= 3) & (length >= 20) & (h[:, 4] == 0x21) & (h[:, 5] == 0x12)] = MediaKind.STUN
    # ZRTP (RFC 6189 §5): 0x10 0x00, sequence, then the magic cookie "ZRTP"
    zrtp = (b0 == 0x10) & (b1 == 0) & (h[:, 4] == 0x5A) & (h[:, 5] == 0x52) & (h[:, 6] == 0x54)
    out[zrtp & (length >= 12)] = MediaKind.ZRTP
    # DTLS record (RFC 6347 §4.1): content type 20-25, version 254.x (DTLS 1.0 / 1.2)
    out[(b0 >= 20) & (b0 <= 25) & (b1 == 0xFE) & (length >= 13)] = MediaKind.DTLS
    # TURN ChannelData (RFC 8656 §12.4): channel 0x4000-0x4FFF, length that fits
    chan_len = ((h[:, 2] << 8) | h[:, 3]) + 4
    turn = (b0 >= 64) & (b0 <= 79) & (chan_len <= length) & (length <= chan_len + 3)
    out[turn] = MediaKind.TURN_CHANNEL
    return out


@dataclass(frozen=True, slots=True)
class RtpHeaders:
    """The fixed RTP header of each payload (RFC 3550 §5.1) and where its data is.

    ``data_offset``/``data_len`` locate the payload data in the buffer after the CSRC list,
    the header extension and before the padding; ``valid`` is False where the lengths do
    not add up (then the packet is counted as malformed, not used)."""

    padding: Bool
    extension: Bool
    cc: I64
    marker: Bool
    pt: I64
    seq: I64
    ts: I64
    ssrc: I64
    data_offset: I64
    data_len: I64
    valid: Bool


def rtp_headers(buf: U8, offset: I64, length: I64, head: U8 | None = None) -> RtpHeaders:
    """RTP header fields of the payloads ``buf[offset:offset+length]`` (all RTP v2)."""
    h = head if head is not None and head.shape[1] >= 12 else window(buf, offset, 16)
    words = np.ascontiguousarray(h[:, :12]).view(">u4")  # (n, 3) big-endian 32-bit words
    b0, b1 = h[:, 0].astype(np.int64), h[:, 1].astype(np.int64)
    cc = b0 & 0x0F
    seq = (words[:, 0] & 0xFFFF).astype(np.int64)
    ts = words[:, 1].astype(np.int64)
    ssrc = words[:, 2].astype(np.int64)
    start = 12 + 4 * cc
    ext = (b0 & 0x10) != 0
    if ext.any():  # RFC 3550 §5.3.1: 16-bit profile word, 16-bit length in 32-bit words
        w = window(buf, offset + start, 4).astype(np.int64)
        ext_len = np.where(ext, 4 + 4 * ((w[:, 2] << 8) | w[:, 3]), 0)
    else:
        ext_len = np.zeros(len(b0), np.int64)
    pad = (b0 & 0x20) != 0
    pad_len = np.zeros(len(b0), np.int64)
    if pad.any():  # RFC 3550 §5.1: the last octet counts the padding octets
        last = buf[np.clip(offset + length - 1, 0, max(len(buf) - 1, 0))].astype(np.int64)
        pad_len = np.where(pad, last, 0)
    data_off = start + ext_len
    data_len = length - data_off - pad_len
    valid = (data_len >= 0) & (length >= data_off) & ~(pad & (pad_len == 0))
    return RtpHeaders(
        pad,
        ext,
        cc,
        (b1 & 0x80) != 0,
        b1 & 0x7F,
        seq,
        ts,
        ssrc,
        offset + data_off,
        np.maximum(data_len, 0),
        valid,
    )
