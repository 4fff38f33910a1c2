"""Per-stream RTP statistics, computed a chunk at a time with numpy, state carried forward.

How this works: :class:`RtpCollector` receives a :class:`~sipflow.rtp.columns.MediaBatch`
per capture chunk. It classifies the payloads (:func:`~sipflow.rtp.columns.media_kind`),
reads the RTP headers as columns, and gives every packet a stream id: a stream is one
(source address, source port, destination address, destination port, SSRC) - never the
SSRC alone, two streams may share one. Packets are stably sorted by stream, so each stream
is a contiguous run in capture order, and every statistic is a segmented numpy operation:

* extended sequence numbers (RFC 3550 §A.1): a segmented cumulative sum of
  :func:`~sipflow.rtp.columns.seq_diff` to the previous packet; wraps fall out of it;
* expected = highest - first + 1, lost = expected - received (RFC 3550 §A.3; negative
  when duplicates outnumber losses, as the RFC notes);
* duplicates: a sequence number already seen (within the chunk, and against the last
  :data:`TAIL` sequence numbers of the stream carried from earlier chunks);
  out of order: lower than the highest seen before it, not a duplicate;
* interarrival jitter (RFC 3550 §A.8): J += (|D| - J) / 16 is a first-order linear
  recurrence, evaluated for all streams at once by a segmented doubling scan
  (:func:`segmented_iir`), in timestamp units of the stream's clock, reported in ms;
* max delta: the largest gap between consecutive arrivals.

Per stream the collector keeps a fixed set of numbers (arrays indexed by stream id) and
nothing per packet, except the few telephone-event-sized packets kept for DTMF (bounded).
RTCP packets are rare: each is parsed whole by :mod:`sipflow.rtp.rtcp` and folded into a
per-stream summary.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from operator import attrgetter
from typing import Any

import numpy as np
import numpy.typing as npt

from sipflow.errors import ParseError
from sipflow.frozen import builder
from sipflow.ingest.types import Endpoint
from sipflow.rtp import rtcp as rtcp_mod
from sipflow.rtp.announced import AnnouncedMedia
from sipflow.rtp.codecs import CANDIDATE_CLOCKS, static_clock, static_name
from sipflow.rtp.columns import (
    KIND_NAMES,
    MediaBatch,
    MediaKind,
    RtpHeaders,
    media_kind,
    rtp_headers,
    seq_diff,
    ts_diff,
)
from sipflow.sdp.srtp import MasterKey
from sipflow.timestamps import seconds

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]
Bool = npt.NDArray[np.bool_]

__all__ = ["RtpCollector", "RtpStream", "segmented_iir"]

NS = 1_000_000_000
TAIL = 64  # sequence numbers per stream remembered across chunks to spot duplicates
JITTER_GAIN = 1.0 / 16.0  # RFC 3550 §A.8
EVENTS_PER_STREAM = 4096  # telephone-event-sized packets kept per stream, at most
K = len(CANDIDATE_CLOCKS)
EMPTY = np.iinfo(np.int64).min  # an unused slot of a stream's sequence-number tail
MAX_ENDPOINTS = 65536  # address texts cached; the cache is emptied when a release finds more


@dataclass(frozen=True, slots=True)
class RtpStream:
    """One RTP stream (5-tuple + SSRC) and its statistics; JSON fields of ``rtp_streams``.

    Jitter is RFC 3550 §A.8 interarrival jitter at ``clock`` Hz, in milliseconds.
    ``call``/``leg``/``direction``/``codec`` are filled by
    :func:`sipflow.rtp.mapping.map_streams`; ``mos`` by :mod:`sipflow.rtp.mos`."""

    id: int
    source: int
    ssrc: int
    src: Endpoint
    dst: Endpoint
    payload_types: tuple[int, ...]
    pt_packets: tuple[tuple[int, int], ...]
    clock: int
    clock_known: bool
    packets: int
    expected: int
    lost: int
    duplicates: int
    out_of_order: int
    seq_wraps: int
    first_seq: int
    last_seq: int
    max_jitter_ms: float
    mean_jitter_ms: float
    max_delta_ms: float
    mean_delta_ms: float
    start: int
    end: int
    first_frame: int
    last_frame: int
    payload_bytes: int
    markers: int
    malformed: int
    jitter_by_clock: tuple[tuple[int, float, float], ...] = ()
    """(clock, max_ms, mean_ms) for each candidate clock (dynamic payload types only)."""
    codec: str | None = None
    call: int | None = None
    leg: str | None = None
    direction: str | None = None
    mos: float | None = None
    rtcp: dict[str, Any] | None = None
    srtp: dict[str, Any] | None = None
    """SRTP of the stream (:mod:`sipflow.rtp.decrypt`): method, suite, tag and packets
    authenticated / failed / decrypted; None for plain RTP or an unmapped stream."""
    srtp_keys: tuple[MasterKey, ...] = field(default=(), repr=False, compare=False)
    """The sender's SDES keys, the one that authenticated first (in memory only, for
    the audio export; never output)."""
    events: tuple[tuple[int, int, int, int, int, int, bytes], ...] = field(
        default=(), repr=False, compare=False
    )
    """The packets shaped like RFC 4733 telephone-events (``_Meta.events``),
    for the DTMF digits once the stream is mapped to its SDP (:mod:`sipflow.rtp.dtmf`)."""

    @property
    def loss_pct(self) -> float:
        return 100.0 * self.lost / self.expected if self.expected > 0 else 0.0

    def evolve(self, **changes: Any) -> RtpStream:
        """A copy with ``changes``: :func:`dataclasses.replace` without running ``__init__``
        again (a stream has about 40 fields; mapping copies every stream a few times, which
        cost a third of the media stage): every field read in one C call, the changed ones
        replaced by position, the copy built through the slot descriptors (sipflow.frozen)."""
        unknown = changes.keys() - _FIELDS
        if unknown:
            raise TypeError(f"RtpStream has no field {sorted(unknown)}")
        values = list(_get_fields(self))
        for name, value in changes.items():
            values[_POSITION[name]] = value
        return _new_stream(*values)

    def to_dict(self) -> dict[str, Any]:
        lost, expected = self.lost, self.expected
        return {
            "ssrc": f"0x{self.ssrc:08X}",
            "src": str(self.src),
            "dst": str(self.dst),
            "payload_types": list(self.payload_types),
            "codec": self.codec,
            "clock": self.clock,
            "packets": self.packets,
            "expected": expected,
            "lost": lost,
            # round(self.loss_pct, 3), without the property and the rounding of 0.0
            "loss_pct": round(100.0 * lost / expected, 3) if lost and expected > 0 else 0.0,
            "duplicates": self.duplicates,
            "out_of_order": self.out_of_order,
            "seq_wraps": self.seq_wraps,
            "max_jitter_ms": round(self.max_jitter_ms, 3),
            "mean_jitter_ms": round(self.mean_jitter_ms, 3),
            "max_delta_ms": round(self.max_delta_ms, 3),
            "start": seconds(self.start),  # = round(self.start / NS, 6), 3x faster
            "end": seconds(self.end),
            "frames": {"source": self.source, "first": self.first_frame, "last": self.last_frame},
            "call": self.call,
            "leg": self.leg,
            "direction": self.direction,
            "mos": None if self.mos is None else round(self.mos, 2),
            "rtcp": self.rtcp,
            "srtp": self.srtp,
        }


def segmented_iir(x: F64, seg: I64, a: float) -> F64:
    """y[i] = a*y[i-1] + x[i] within each run of equal ``seg`` (y restarts at x on a new
    run), for all runs at once: a Hillis-Steele doubling scan, stopped once a**k is below
    double precision (|a| < 1), so log2 steps of whole-array operations."""
    y = x.copy()
    n, k, ak = len(x), 1, a
    while k < n and ak > 1e-18:
        same = seg[k:] == seg[:-k]
        y[k:] += np.where(same, ak * y[:-k], 0.0)
        k, ak = 2 * k, ak * ak
    return y


class _Arrays:
    """Per-stream state as growable numpy arrays (struct of arrays)."""

    INT = (
        "packets",
        "base_ext",
        "max_ext",
        "last_ext",
        "dups",
        "ooo",
        "first_ts",
        "last_ts",
        "first_frame",
        "last_frame",
        "last_rts",
        "max_delta",
        "sum_delta",
        "bytes",
        "markers",
        "malformed",
        "gaps",
    )

    def __init__(self) -> None:
        self.n = 0
        self.cap = 0
        self.i: dict[str, I64] = {k: np.zeros(0, np.int64) for k in self.INT}
        self.jit = np.zeros((0, K))  # last J (timestamp units) per candidate clock
        self.jmax = np.zeros((0, K))
        self.jsum = np.zeros((0, K))
        self.tail = np.zeros((0, TAIL), np.int64)

    def grow(self, n: int) -> None:
        if n <= self.cap:
            self.n = n
            return
        cap = max(n, 2 * self.cap, 64)
        for k, v in self.i.items():
            self.i[k] = np.concatenate([v, np.zeros(cap - len(v), np.int64)])
        pad = cap - len(self.jit)
        self.jit = np.vstack([self.jit, np.zeros((pad, K))])
        self.jmax = np.vstack([self.jmax, np.zeros((pad, K))])
        self.jsum = np.vstack([self.jsum, np.zeros((pad, K))])
        self.tail = np.vstack([self.tail, np.full((pad, TAIL), EMPTY)])
        self.cap, self.n = cap, n

    def take(self, rows: I64) -> None:
        """Keep only the streams ``rows`` (in that order): the others were released."""
        keep = len(rows)
        for k, v in self.i.items():
            self.i[k] = v[rows]
        self.jit, self.jmax, self.jsum = self.jit[rows], self.jmax[rows], self.jsum[rows]
        self.tail = self.tail[rows]
        self.cap = self.n = keep


_FIELDS_ORDER = tuple(f.name for f in fields(RtpStream))
_FIELDS = frozenset(_FIELDS_ORDER)
_POSITION = {name: i for i, name in enumerate(_FIELDS_ORDER)}
_get_fields = attrgetter(*_FIELDS_ORDER)
_new_stream = builder(RtpStream)  # RtpStream(...) without ~40 frozen object.__setattr__


@dataclass
class _Meta:
    """What is kept per stream besides numbers: identity, payload types, DTMF packets."""

    source: int
    ssrc: int
    src: Endpoint
    dst: Endpoint
    clocks: tuple[int, ...]
    pts: Counter[int] = field(default_factory=Counter)
    events: list[tuple[int, int, int, int, int, int, bytes]] = field(default_factory=list)
    """(frame, ts_ns, seq_ext, rtp_ts, pt, marker, payload) of packets shaped like RFC 4733
    events (dynamic payload type, 4-byte payloads), at most EVENTS_PER_STREAM."""


class RtpCollector:
    """The RTP stage: feed it every chunk's :class:`MediaBatch`, then :meth:`finish`."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        """Payloads seen, by :class:`~sipflow.rtp.columns.MediaKind` name, plus
        ``rtp_malformed`` (lengths that do not add up), ``rtcp_malformed`` and
        ``rtp_by_sdp`` (RTP that content alone refused, found through announced SDP)."""
        self._ids: dict[tuple[int, ...], int] = {}
        self._a = _Arrays()
        self._meta: list[_Meta] = []
        self._rtcp = rtcp_mod.RtcpFolder()
        self.announced = AnnouncedMedia()
        """RTP addresses the SIP read so far announced (found even where content is not)."""
        self._ep: dict[tuple[bytes, int, int], Endpoint] = {}
        self._keys: list[tuple[int, ...]] = []
        """The ``_ids`` key of each stream (same index as ``_meta``)."""
        self._next_id = 0
        """The ``RtpStream.id`` the next stream finished gets (see :meth:`release`)."""

    # -- intake ---------------------------------------------------------------------------

    def announce(self, payload: bytes) -> None:
        """A SIP payload with SDP, seen before the media of its chunk (sipflow.rtp.announced)."""
        self.announced.add_sip(payload)

    def feed(self, batch: MediaBatch) -> None:
        """Classify one chunk's non-SIP payloads and fold the RTP/RTCP ones in."""
        if len(batch) == 0:
            return
        kinds = media_kind(batch.head, batch.length)
        rescued = self.announced.rescue(batch, kinds)
        if rescued:
            self.counts["rtp_by_sdp"] += rescued
        for kind, count in zip(*np.unique(kinds, return_counts=True), strict=True):
            self.counts[KIND_NAMES[MediaKind(int(kind))]] += int(count)
        rtp = np.flatnonzero(kinds == MediaKind.RTP)
        if len(rtp):
            self._rtp(batch if len(rtp) == len(batch) else batch.take(rtp))
        for j in np.flatnonzero(kinds == MediaKind.RTCP).tolist():
            self._rtcp_packet(batch, j)

    def _endpoint(self, raw: npt.NDArray[np.uint8], version: int, port: int) -> Endpoint:
        return self._endpoint_of(raw.tobytes(), version, port)

    def _endpoint_of(self, raw: bytes, version: int, port: int) -> Endpoint:
        """The (cached) endpoint of 16 address bytes (IPv4: the first 4) and a port."""
        key = (raw, version, port)
        ep = self._ep.get(key)
        if ep is None:
            from sipflow.ingest.decode import addr_text

            ep = Endpoint(addr_text(raw[: 4 if version == 4 else 16]), port)
            self._ep[key] = ep
        return ep

    def _endpoints(
        self, raw: npt.NDArray[np.uint8], version: list[int], port: I64
    ) -> list[Endpoint]:
        """:meth:`_endpoint_of` for each row of an (n, 16) address matrix."""
        data = raw.tobytes()
        return [
            self._endpoint_of(data[16 * i : 16 * i + 16], v, p)
            for i, (v, p) in enumerate(zip(version, port.tolist(), strict=True))
        ]

    def _stream_ids(self, b: MediaBatch, h: RtpHeaders) -> tuple[I64, I64]:
        """A global stream id per packet (new streams registered) and the order that
        groups the packets by stream, capture order kept within each (a stable sort)."""
        src = b.src.view(">u8").astype(np.int64)  # (n, 2): address bytes as two words
        dst = b.dst.view(">u8").astype(np.int64)
        rest = (b.sport << 48) | (b.dport << 32) | h.ssrc
        cols = [rest, dst[:, 0], src[:, 0]]
        if (b.version == 6).any():
            cols = [rest, dst[:, 1], dst[:, 0], src[:, 1], src[:, 0], b.version]
        order = np.lexsort(cols)
        first = np.ones(len(order), bool)
        for c in cols:
            cs = c[order]
            first[1:] &= cs[1:] == cs[:-1]
        first = ~first
        first[0] = True
        rows = order[np.flatnonzero(first)]
        keys = list(zip(*(c[rows].tolist() for c in cols), strict=True))
        got = [self._ids.get(k) for k in keys]
        new = [r for r, gid in enumerate(got) if gid is None]
        if new:
            fresh = self._new_streams([keys[r] for r in new], b, h, rows[new])
            for r, gid in zip(new, fresh, strict=True):
                got[r] = gid
        sorted_gid: I64 = np.array(got, np.int64)[np.cumsum(first) - 1]
        return sorted_gid, order

    def _new_streams(
        self, keys: list[tuple[int, ...]], b: MediaBatch, h: RtpHeaders, rows: I64
    ) -> range:
        """Register the streams ``keys`` (first packets at batch ``rows``); their ids."""
        version = b.version[rows].tolist()
        srcs = self._endpoints(b.src[rows], version, b.sport[rows])
        dsts = self._endpoints(b.dst[rows], version, b.dport[rows])
        first = len(self._meta)
        for k, src, dst, ssrc, pt in zip(
            keys, srcs, dsts, h.ssrc[rows].tolist(), h.pt[rows].tolist(), strict=True
        ):
            self._ids[k] = len(self._meta)
            clock = static_clock(pt)
            clocks = (clock,) * K if clock else CANDIDATE_CLOCKS
            self._meta.append(_Meta(b.source, ssrc, src, dst, clocks))
            self._keys.append(k)
        self._a.grow(len(self._meta))
        return range(first, len(self._meta))

    # -- RTP statistics -----------------------------------------------------------------------

    def _rtp(self, b: MediaBatch) -> None:
        h = rtp_headers(b.buf, b.offset, b.length, b.head)
        bad = ~h.valid
        if bad.any():
            self.counts["rtp_malformed"] += int(np.count_nonzero(bad))
        gid, order = self._stream_ids(b, h)
        _Update(self, b, h, gid, order).run_all()

    # -- RTCP ---------------------------------------------------------------------------------

    def _rtcp_packet(self, b: MediaBatch, j: int) -> None:
        off, size = int(b.offset[j]), int(b.length[j])
        data = b.buf[off : off + size].tobytes()
        try:
            packets = rtcp_mod.parse_compound(data)
        except ParseError:
            self.counts["rtcp_malformed"] += 1
            return
        version = int(b.version[j])
        src = self._endpoint(b.src[j], version, int(b.sport[j])).ip
        dst = self._endpoint(b.dst[j], version, int(b.dport[j])).ip
        self._rtcp.fold(packets, src, dst, int(b.ts[j]))

    # -- results ----------------------------------------------------------------------------

    def finish(self) -> list[RtpStream]:
        """Every stream seen (and not released), in order of first packet; ``id`` is that
        rank (the same however the capture was cut into chunks), after the ids
        :meth:`release` gave."""
        return self._finished(range(len(self._meta)), advance=False)  # may be called again

    def _finished(self, gids: Iterable[int], advance: bool = True) -> list[RtpStream]:
        g = np.fromiter(gids, np.int64)
        order = g[np.lexsort((g, self._a.i["first_frame"][g]))]  # by first frame, then id
        base = self._next_id
        if advance:
            self._next_id += len(order)
        return self._build_streams(order, base)

    def release(self, idle_before: int) -> list[RtpStream]:
        """Finish and forget the streams whose last packet came before ``idle_before`` (ns):
        the streaming analysis (:mod:`sipflow.engine.stream`) releases media as it ends, so
        memory holds the streams still running, not every stream of the capture. A stream
        that starts again later (same 5-tuple and SSRC) is a new stream. Ids go on from
        one release to the next (order of first packet within each)."""
        n = len(self._meta)
        if n == 0:
            return []
        idle = self._a.i["last_ts"][:n] < idle_before
        done = np.flatnonzero(idle).tolist()
        if not done:
            return []
        out = self._finished(done)
        for gid in done:
            m = self._meta[gid]
            self._rtcp.drop(m.ssrc, m.src.ip, m.dst.ip)
        keep = np.flatnonzero(~idle)
        self._a.take(keep)
        self._meta = [self._meta[g] for g in keep.tolist()]
        self._keys = [self._keys[g] for g in keep.tolist()]
        self._ids = {k: g for g, k in enumerate(self._keys)}
        if len(self._ep) > MAX_ENDPOINTS:
            self._ep.clear()  # a cache of address texts; rebuilt as packets come
        return out

    def _build_streams(self, gids: I64, base: int) -> list[RtpStream]:
        """The RtpStream of each of ``gids``, ids ``base`` on. Each column is gathered
        once for all streams (numpy scalar reads, one per stream and field, cost more
        than building the streams)."""
        a = self._a
        cols = {k: v[gids].tolist() for k, v in a.i.items()}
        jmax, jsum = a.jmax[gids].tolist(), a.jsum[gids].tolist()
        return [
            self._stream(gid, base + r, {k: v[r] for k, v in cols.items()}, jmax[r], jsum[r])
            for r, gid in enumerate(gids.tolist())
        ]

    def _stream(
        self, gid: int, rank: int, c: dict[str, int], jmax: list[float], jsum: list[float]
    ) -> RtpStream:
        """One stream from its row ``c`` of the integer columns and its jitter rows."""
        m = self._meta[gid]
        packets = c["packets"]
        expected = c["max_ext"] - c["base_ext"] + 1
        per_clock = tuple(
            (clock, jmax[k], jsum[k] / max(packets - 1, 1)) for k, clock in enumerate(m.clocks)
        )
        known = m.clocks[0] == m.clocks[-1]
        first_pt = next(iter(m.pts))
        rtcp = self._rtcp.view(m.ssrc, m.src.ip, m.dst.ip)
        return _new_stream(
            id=rank,
            source=m.source,
            ssrc=m.ssrc,
            src=m.src,
            dst=m.dst,
            payload_types=tuple(sorted(m.pts)),
            pt_packets=tuple(sorted(m.pts.items())),
            clock=m.clocks[0],
            clock_known=known,
            packets=packets,
            expected=expected,
            lost=expected - packets,
            duplicates=c["dups"],
            out_of_order=c["ooo"],
            seq_wraps=c["max_ext"] // 65536 - c["base_ext"] // 65536,
            first_seq=c["base_ext"] & 0xFFFF,
            last_seq=c["last_ext"] & 0xFFFF,
            max_jitter_ms=per_clock[0][1],
            mean_jitter_ms=per_clock[0][2],
            max_delta_ms=c["max_delta"] / 1e6,
            mean_delta_ms=c["sum_delta"] / 1e6 / max(c["gaps"], 1),
            start=c["first_ts"],
            end=c["last_ts"],
            first_frame=c["first_frame"],
            last_frame=c["last_frame"],
            payload_bytes=c["bytes"],
            markers=c["markers"],
            malformed=c["malformed"],
            events=tuple(m.events),
            jitter_by_clock=() if known else per_clock,
            codec=static_name(first_pt),
            rtcp=rtcp.to_dict(m.clocks[0]) if rtcp is not None else None,
        )


class _Update:
    """One batch folded into the per-stream arrays (all columns sorted by stream).

    ``starts`` are the first packets of each run (one run per stream in this batch),
    ``sg`` the stream id of each run, ``old`` whether the stream was seen before; the
    carried state of each run is read first (``prev_*``), then everything is computed,
    then written back."""

    def __init__(
        self, col: RtpCollector, b: MediaBatch, h: RtpHeaders, gid: I64, order: I64
    ) -> None:
        """``gid``: stream id per packet in stream order; ``order``: the batch rows in
        that order."""
        self.col, self.a = col, col._a
        self.g = gid  # already in stream order
        self.seq, self.rts, self.pt = h.seq[order], h.ts[order], h.pt[order]
        self.arr, self.frame = b.ts[order], b.frame[order]
        self.size, self.marker = h.data_len[order], h.marker[order]
        self.valid = h.valid[order]
        self.data_off = h.data_offset[order]
        self.buf = b.buf
        first = np.ones(len(self.g), bool)
        first[1:] = self.g[1:] != self.g[:-1]
        self.first = first
        self.starts = np.flatnonzero(first)
        self.ends = np.r_[self.starts[1:], len(self.g)] - 1
        self.n_run = self.ends - self.starts + 1
        self.sg = self.g[self.starts]
        self.run = np.cumsum(first) - 1
        st = self.a.i
        self.old = st["packets"][self.sg] > 0
        self.new_first = first & ~self.old[self.run]

    def run_all(self) -> None:
        ext = self._extend()
        self._sequence(ext)
        self._jitter()
        self._times()
        self._payload_types()
        self._events(ext)

    def _prev(self, col: I64, state: str) -> I64:
        """Each packet's predecessor in its stream (the carried state for a run's first;
        for a new stream the packet itself)."""
        prev = np.empty_like(col)
        prev[1:] = col[:-1]
        s = self.starts
        prev[s] = np.where(self.old, self.a.i[state][self.sg], col[s])
        return prev

    def _extend(self) -> I64:
        """Extended sequence numbers (RFC 3550 §A.1): cumulative seq_diff per stream."""
        s = self.starts
        d = np.empty_like(self.seq)
        d[1:] = seq_diff(self.seq[1:], self.seq[:-1])
        last = self.a.i["last_ext"][self.sg]
        d[s] = np.where(self.old, last + seq_diff(self.seq[s], last & 0xFFFF), self.seq[s])
        cs = np.cumsum(d)
        ext: I64 = cs - (cs[s] - d[s])[self.run]
        return ext

    def _sequence(self, ext: I64) -> None:
        a, s, sg, old = self.a.i, self.starts, self.sg, self.old
        big = np.int64(1) << 40
        cmax = np.maximum.accumulate(self.run * big + ext) - self.run * big
        carried = np.where(old, a["max_ext"][sg], np.iinfo(np.int64).min)
        highest = np.empty_like(ext)  # of the packets before, in this batch or earlier ones
        highest[1:] = cmax[:-1]
        highest[s] = carried
        highest = np.maximum(highest, carried[self.run])
        dup = self._duplicates(ext, ext <= highest)
        late = (ext < highest) & ~dup
        a["ooo"][sg] += np.add.reduceat(late.astype(np.int64), s)
        a["dups"][sg] += np.add.reduceat(dup.astype(np.int64), s)
        a["base_ext"][sg] = np.where(old, a["base_ext"][sg], ext[s])
        run_max = cmax[self.ends]
        a["max_ext"][sg] = np.where(old, np.maximum(a["max_ext"][sg], run_max), run_max)
        a["last_ext"][sg] = ext[self.ends]
        a["packets"][sg] += self.n_run
        a["malformed"][sg] += np.add.reduceat((~self.valid).astype(np.int64), s)
        self._keep_tail(ext)

    def _duplicates(self, ext: I64, maybe: Bool) -> Bool:
        """Packets whose extended sequence number an earlier packet of the stream had
        (earlier in this batch, or among the TAIL carried from earlier batches). Only a
        packet not above every earlier one (``maybe``) can be one, so only the streams
        with such a packet (few: most streams only move forward) are sorted and checked."""
        dup = np.zeros(len(ext), bool)
        hit = np.unique(self.run[maybe])
        if len(hit) == 0:
            return dup
        pkt = np.flatnonzero(np.isin(self.run, hit))
        tail = self.a.tail[self.sg[hit]].ravel()
        t_run = np.repeat(hit, TAIL)
        keep = tail != EMPTY
        runs = np.concatenate([t_run[keep], self.run[pkt]])
        vals = np.concatenate([tail[keep], ext[pkt]])
        pos = np.concatenate([np.full(int(keep.sum()), -1), pkt])
        order = np.lexsort((pos, vals, runs))
        r, v, p = runs[order], vals[order], pos[order]
        same = np.zeros(len(order), bool)
        same[1:] = (r[1:] == r[:-1]) & (v[1:] == v[:-1])
        mine = p >= 0
        dup[p[mine]] = same[mine]
        return dup

    def _keep_tail(self, ext: I64) -> None:
        """Row per stream: the last TAIL extended sequence numbers (old ones shifted)."""
        kk = np.arange(TAIL)[None, :]
        from_end = TAIL - 1 - kk
        n = self.n_run[:, None]
        fresh = ext[np.maximum(self.ends[:, None] - from_end, 0)]
        old = np.take_along_axis(self.a.tail[self.sg], np.minimum(kk + n, TAIL - 1), axis=1)
        self.a.tail[self.sg] = np.where(from_end < n, fresh, old)

    def _jitter(self) -> None:
        """RFC 3550 §A.8 for every stream at once, per candidate clock column: with
        D = (R_i - R_j) * clock - (S_i - S_j) between consecutive arrivals,
        J_i = J_(i-1) + (|D| - J_(i-1)) / 16, a linear recurrence in J."""
        a, s, sg = self.a, self.starts, self.sg
        darr = (self.arr - self._prev(self.arr, "last_ts")).astype(np.float64) / NS
        drts = ts_diff(self.rts, self._prev(self.rts, "last_rts")).astype(np.float64)
        clocks = self._clock_matrix()
        decay = 1.0 - JITTER_GAIN
        varied = bool((clocks[:, 1:] != clocks[:, :1]).any())
        for c in range(K):
            if c and not varied:  # static payload types only: every column is column 0
                a.jit[sg, c], a.jmax[sg, c], a.jsum[sg, c] = (
                    a.jit[sg, 0],
                    a.jmax[sg, 0],
                    a.jsum[sg, 0],
                )
                continue
            clock = clocks[self.run, c]
            x = np.abs(darr * clock - drts) * JITTER_GAIN
            x[self.new_first] = 0.0
            x[s] += decay * np.where(self.old, a.jit[sg, c], 0.0)
            j = segmented_iir(x, self.run, decay)
            a.jit[sg, c] = j[self.ends]
            jms = j * 1000.0 / clock
            a.jmax[sg, c] = np.maximum(a.jmax[sg, c], np.maximum.reduceat(jms, s))
            a.jsum[sg, c] += np.add.reduceat(jms, s)
        a.i["last_rts"][sg] = self.rts[self.ends]

    def _clock_matrix(self) -> F64:
        """(runs, K) clock rates: the static clock in every column, or the candidates."""
        meta = self.col._meta
        clocks = [meta[gid].clocks for gid in self.sg.tolist()]  # one array, not a row each
        return np.array(clocks, np.float64).reshape(-1, K)

    def _times(self) -> None:
        a, s, sg = self.a.i, self.starts, self.sg
        # A marker bit starts a talkspurt after silence (RFC 3551 §4.1): the gap before it
        # is silence suppression, not delay, so it is left out of the deltas (as tshark).
        delta = np.where(self.marker, 0, self.arr - self._prev(self.arr, "last_ts"))
        a["gaps"][sg] += np.add.reduceat((~self.marker & ~self.new_first).astype(np.int64), s)
        a["max_delta"][sg] = np.maximum(a["max_delta"][sg], np.maximum.reduceat(delta, s))
        a["sum_delta"][sg] += np.add.reduceat(delta, s)
        a["first_ts"][sg] = np.where(self.old, a["first_ts"][sg], self.arr[s])
        a["first_frame"][sg] = np.where(self.old, a["first_frame"][sg], self.frame[s])
        a["last_ts"][sg] = self.arr[self.ends]
        a["last_frame"][sg] = self.frame[self.ends]
        a["bytes"][sg] += np.add.reduceat(self.size, s)
        a["markers"][sg] += np.add.reduceat(self.marker.astype(np.int64), s)

    def _payload_types(self) -> None:
        pairs, counts = np.unique(self.g * 128 + self.pt, return_counts=True)
        meta = self.col._meta
        for p, c in zip(pairs.tolist(), counts.tolist(), strict=True):
            meta[p >> 7].pts[p & 0x7F] += c

    def _events(self, ext: I64) -> None:
        """Keep packets shaped like RFC 4733 events (4-byte payload, dynamic type)."""
        sel = np.flatnonzero((self.pt >= 96) & (self.size == 4) & self.valid)
        meta, buf = self.col._meta, self.buf
        for i in sel.tolist():
            m = meta[int(self.g[i])]
            if len(m.events) >= EVENTS_PER_STREAM:
                continue
            off = int(self.data_off[i])
            m.events.append(
                (
                    int(self.frame[i]),
                    int(self.arr[i]),
                    int(ext[i]),
                    int(self.rts[i]),
                    int(self.pt[i]),
                    int(self.marker[i]),
                    buf[off : off + 4].tobytes(),
                )
            )
