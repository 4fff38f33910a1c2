"""read_capture: a capture file in, SIP-carrying Datagrams out, in capture order.

How this works: records come from :mod:`sipflow.ingest.pcap` a chunk at a time.
:func:`~sipflow.ingest.decode.decode_chunk` splits each chunk into plain IP+UDP columns and
records for the per-record decoder. UDP payloads go through the vectorised
:func:`~sipflow.ingest.classify.prefilter`; only candidates are copied out and checked
exactly. The others (TCP, SCTP, fragments, tunnels, ...) are decoded one at a time:

* IP fragments go to a ``FragmentReassembler``; a rebuilt datagram is decoded again;
* TCP segments go to a ``TcpReassembler`` only for connections that carry SIP: tracking
  starts at a segment whose payload starts like SIP or like a WebSocket upgrade, or at a
  SYN to/from a port already seen carrying SIP (RFC 3261 §18.3 framing happens later, in
  :mod:`sipflow.sip.framing`);
* SCTP packets go to ``sctp.data_chunks`` (RFC 4168).

Every frame either contributes to a Datagram or is counted in ``SourceStats.skipped``
with a reason. Memory is bounded by one chunk plus reassembly state.

Media: with a ``media_sink`` (e.g. :class:`sipflow.rtp.streams.RtpCollector`), the UDP
payloads that are not SIP (``non_sip_udp``; RTP, RTCP, DTLS, ... - the sink sorts them
and counts them by kind) are also handed to the sink as one
:class:`~sipflow.rtp.columns.MediaBatch` of columns per chunk, never one object per
packet; the few that came the slow way (tunnels, fragments, deep VLAN stacks) follow in a
second, small batch per chunk. Before that, each SIP payload of the chunk that carries an
SDP ``m=`` line is shown to the sink (``announce``), so RTP on announced addresses is
found even where its content alone would not be (:mod:`sipflow.rtp.announced`). SIP
handling and ``SourceStats`` are the same with or without a sink.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Protocol

import numpy as np
import numpy.typing as npt

from sipflow.findings import Finding
from sipflow.frozen import builder
from sipflow.ingest import classify, hep
from sipflow.ingest.classify import Kind
from sipflow.ingest.decode import (
    IPPROTO_SCTP,
    IPPROTO_TCP,
    IPPROTO_UDP,
    ChunkDecode,
    Fragment,
    Packet,
    addr_text,
    decode_chunk,
    decode_frame,
    ip_payload,
)
from sipflow.ingest.pcap import LINKTYPE_NAMES, Capture, RecordChunk, open_capture
from sipflow.ingest.reassembly import FragmentReassembler, TcpReassembler
from sipflow.ingest.sctp import SctpReassembler
from sipflow.ingest.tls import TlsFollower, TlsStats
from sipflow.ingest.types import (
    TCP_FIN,
    TCP_RST,
    TCP_SYN,
    Datagram,
    Endpoint,
    IpFragment,
    SourceStats,
    TcpSegment,
    Transport,
)
from sipflow.rtp.columns import MediaBatch, addr_matrix, window

if TYPE_CHECKING:
    from sipflow.ingest.tls_facts import TlsKeys

__all__ = ["MediaSink", "read_capture"]


class MediaSink(Protocol):
    """Receives the non-SIP UDP payloads of each chunk as columns, and first the SIP
    payloads of the chunk that carry SDP (``announce``: the media addresses they name)."""

    def feed(self, batch: MediaBatch) -> None: ...

    def announce(self, payload: bytes) -> None: ...


def read_capture(
    path: str,
    source: int,
    stats: SourceStats,
    findings: list[Finding],
    media_sink: MediaSink | None = None,
    tls: TlsKeys | None = None,
    tls_stats: TlsStats | None = None,
    on_chunk: Callable[[], None] | None = None,
) -> Iterator[Datagram]:
    """Datagrams that carry (or may carry) SIP from one capture, in capture order.

    ``on_chunk`` is called after each chunk of records is counted in ``stats`` (progress).

    TLS connections (:mod:`sipflow.ingest.tls`) come out as ``Transport.TLS`` cleartext
    when ``tls`` holds their keys; their session facts are collected in ``tls_stats``.

    Raises :class:`~sipflow.errors.InputError` (on the first ``next``) when ``path`` is not
    a readable capture; damage inside a capture becomes Findings appended to ``findings``.
    """
    cap = open_capture(path, source)
    findings.extend(cap.findings)
    cap.findings = findings
    stats.format = cap.format
    try:
        pipeline = _Pipeline(cap, source, stats, findings, media_sink)
        pipeline.tls = TlsFollower(
            tls, tls_stats, source, findings, classify.looks_like_sip, stats.skipped
        )
        pipeline.on_chunk = on_chunk
        yield from pipeline.run()
    finally:
        stats.skipped.update(cap.skipped)
        cap.close()


class _Pipeline:
    """State carried across chunks: reassemblers, tracked TCP connections, SIP ports."""

    def __init__(
        self,
        cap: Capture,
        source: int,
        stats: SourceStats,
        findings: list[Finding],
        media_sink: MediaSink | None = None,
    ) -> None:
        self.cap = cap
        self.media_sink = media_sink
        self.slow_media: list[tuple[int, int, Endpoint, Endpoint, bytes]] = []
        self.source = source
        self.stats = stats
        self.findings = findings
        self.skipped = stats.skipped
        self.frag = FragmentReassembler()
        self.tcp = TcpReassembler()
        self.sctp = SctpReassembler()
        self.tracked: set[tuple[Endpoint, Endpoint]] = set()
        self.sip_ports: set[int] = set()
        self.hep = hep.HepDecapsulator(source, self.skipped, findings)  # HEP on any port
        self.tls = TlsFollower(None, None, source, findings, classify.looks_like_sip)
        self.on_chunk: Callable[[], None] | None = None

    def run(self) -> Iterator[Datagram]:
        for chunk in self.cap.chunks():
            self._account(chunk)
            if self.on_chunk is not None:
                self.on_chunk()
            for dg in self._chunk(chunk):  # the chunk's media reaches the sink after its SIP
                if self.media_sink is not None and b"\nm=" in dg.payload:
                    self.media_sink.announce(dg.payload)  # SDP: sipflow.rtp.announced
                yield dg
            yield from self._expire(int(chunk.ts.max()))
        yield from self._flush()

    def _account(self, chunk: RecordChunk) -> None:
        st = self.stats
        st.frames += len(chunk)
        st.bytes += int(chunk.caplen.sum())
        lo, hi = int(chunk.ts.min()), int(chunk.ts.max())
        st.first_ts = lo if st.first_ts is None else min(st.first_ts, lo)
        st.last_ts = hi if st.last_ts is None else max(st.last_ts, hi)
        link = chunk.link_type
        for lt in [int(link[0])] if (link == link[0]).all() else np.unique(link).tolist():
            st.link_types.add(LINKTYPE_NAMES.get(lt, f"LINKTYPE_{lt}"))

    # -- one chunk ----------------------------------------------------------------------

    def _chunk(self, chunk: RecordChunk) -> Iterator[Datagram]:
        dec = decode_chunk(chunk)
        self.skipped.update(dec.skipped)
        udp = dec.udp
        kinds = classify.prefilter(chunk.buf, udp.payload, udp.length, udp.head)
        other = np.flatnonzero(kinds == Kind.OTHER)  # HEP payloads go the candidate way
        kinds[other[hep.hep_candidates(chunk.buf, udp.payload[other], udp.length[other])]] = (
            Kind.CANDIDATE
        )
        for kind, reason in classify.SKIP_REASON.items():  # counted without a copy
            count = int(np.count_nonzero(kinds == kind))
            if count:
                self.skipped[reason] += count
        cand = np.flatnonzero(kinds == Kind.CANDIDATE)
        fast = _FastUdp(chunk, dec, cand, self.cap)
        work = np.concatenate([udp.index[cand], dec.slow])
        n_fast = len(cand)
        for j in np.argsort(work, kind="stable").tolist():
            if j < n_fast:
                src, dst, payload, frame, ts = fast.item(j)
                dg = self._udp(src, dst, payload, frame, ts)
                if dg is not None:
                    yield dg
            else:
                yield from self._slow(chunk, int(dec.slow[j - n_fast]))
        if self.media_sink is not None:
            self._media(chunk, dec, kinds)

    def _media(self, chunk: RecordChunk, dec: ChunkDecode, kinds: npt.NDArray[np.int8]) -> None:
        """Hand the chunk's non-SIP UDP payloads to the media sink as columns."""
        assert self.media_sink is not None
        udp = dec.udp
        sel = np.flatnonzero(kinds == Kind.OTHER)
        if len(sel):
            buf, rec, version = chunk.buf, udp.index[sel], udp.version[sel]
            batch = MediaBatch(
                self.source,
                buf,
                chunk.frame[rec],
                chunk.ts[rec],
                version,
                addr_matrix(buf, udp.src[sel], version),
                addr_matrix(buf, udp.dst[sel], version),
                udp.sport[sel],
                udp.dport[sel],
                udp.payload[sel],
                udp.length[sel],
                udp.head[sel],  # the first 16 payload bytes, read by decode_chunk
            )
            self.media_sink.feed(batch)
        if self.slow_media:
            self.media_sink.feed(_slow_batch(self.source, self.slow_media))
            self.slow_media.clear()

    def _udp(
        self, src: Endpoint, dst: Endpoint, payload: bytes, frame: int, ts: int, slow: bool = False
    ) -> Datagram | None:
        kind = classify.classify_payload(payload)
        if kind is Kind.SIP or kind is Kind.MALFORMED_SIP:
            self.sip_ports.add(src.port)
            self.sip_ports.add(dst.port)
            return _new_datagram(src, dst, Transport.UDP, payload, (frame,), ts, self.source)
        if kind is Kind.OTHER and hep.looks_like_hep(payload):
            return self.hep.datagram(payload, frame, ts)  # inner SIP, inner 5-tuple
        self.skipped[classify.SKIP_REASON.get(kind, "non_sip_udp")] += 1
        if kind is Kind.OTHER and slow and self.media_sink is not None:
            self.slow_media.append((frame, ts, src, dst, payload))
        return None

    def _slow(self, chunk: RecordChunk, i: int) -> Iterator[Datagram]:
        frame, ts = int(chunk.frame[i]), int(chunk.ts[i])
        res = decode_frame(int(chunk.link_type[i]), chunk.data(i))
        if isinstance(res, Fragment):
            yield from self._fragment(res, frame, ts)
        elif isinstance(res, Packet):
            yield from self._packet(res, (frame,), ts)
        else:
            self.skipped[res] += 1

    # -- transports -----------------------------------------------------------------------

    def _packet(self, pkt: Packet, frames: tuple[int, ...], ts: int) -> Iterator[Datagram]:
        src, dst = Endpoint(pkt.src_ip, pkt.sport), Endpoint(pkt.dst_ip, pkt.dport)
        if pkt.protocol == IPPROTO_UDP:
            dg = self._udp(src, dst, pkt.payload, frames[-1], ts, slow=True)
            if dg is not None:
                yield dg if len(frames) == 1 else _with_frames(dg, frames)
        elif pkt.protocol == IPPROTO_TCP:
            yield from self._tcp(pkt, src, dst, frames[-1], ts)
        elif pkt.protocol == IPPROTO_SCTP:
            yield from self._sctp(pkt, src, dst, frames[-1], ts)

    def _tcp(
        self, pkt: Packet, src: Endpoint, dst: Endpoint, frame: int, ts: int
    ) -> Iterator[Datagram]:
        key = (src, dst) if src <= dst else (dst, src)
        control = pkt.flags & (TCP_SYN | TCP_FIN | TCP_RST)
        if key not in self.tracked:
            if self.tls.wants(pkt.payload, pkt.sport, pkt.dport, self.sip_ports):
                self.tls.open(src, dst)  # TLS records, on any port: sipflow.ingest.tls
            elif not self._starts_sip(pkt):
                self.skipped["non_sip_tcp" if pkt.payload else "tcp_no_payload"] += 1
                return
            self.tracked.add(key)
        elif not pkt.payload and not control:
            self.skipped["tcp_no_payload"] += 1
            return
        if not pkt.payload:  # a SYN/FIN/RST: stream state for reassembly, no SIP to count
            self.skipped["tcp_no_payload"] += 1
        seg = TcpSegment(self.source, frame, ts, src, dst, pkt.seq, pkt.ack, pkt.flags, pkt.payload)
        yield from self.tls.route(self.tcp.feed(seg))
        self._drain_tcp_findings()

    def _starts_sip(self, pkt: Packet) -> bool:
        if pkt.payload:
            if classify.looks_like_sip(pkt.payload) or classify.is_websocket_upgrade(pkt.payload):
                self.sip_ports.update((pkt.sport, pkt.dport))
                return True
            return False
        return bool(pkt.flags & TCP_SYN) and (
            pkt.sport in self.sip_ports or pkt.dport in self.sip_ports
        )

    def _sctp(
        self, pkt: Packet, src: Endpoint, dst: Endpoint, frame: int, ts: int
    ) -> Iterator[Datagram]:
        dgs, found = self.sctp.data_chunks(self.source, frame, ts, src, dst, pkt.payload)
        self.findings.extend(found)
        if not dgs:
            self.skipped["sctp_no_message"] += 1  # control chunks, or a fragment held
        yield from dgs

    def _fragment(self, frag: Fragment, frame: int, ts: int) -> Iterator[Datagram]:
        ipf = IpFragment(
            self.source,
            frame,
            ts,
            frag.version,
            frag.src_ip,
            frag.dst_ip,
            frag.ident,
            frag.protocol,
            frag.offset,
            frag.more,
            frag.payload,
        )
        whole = self.frag.feed(ipf)
        if whole is None:
            return  # held until the rest arrives; counted when reassembled or expired
        res = ip_payload(whole.version, whole.src_ip, whole.dst_ip, whole.protocol, whole.payload)
        if isinstance(res, Packet):
            yield from self._packet(res, tuple(whole.frames), whole.ts)
        elif isinstance(res, Fragment):
            self.skipped["fragment_in_fragment"] += 1
        else:
            self.skipped[res] += 1

    # -- time and end -----------------------------------------------------------------------

    def _expire(self, now: int) -> Iterator[Datagram]:
        self.findings.extend(self.frag.expire(now))
        yield from self.tls.route(self.tcp.expire(now))
        self._drain_tcp_findings()
        # Connections the reassembler has let go (FIN/RST, idle) are forgotten here too: a
        # long live capture meets endless short connections (health checks, registrations).
        self.tracked = {k for k in self.tracked if self.tcp.holds(self.source, *k)}

    def _flush(self) -> Iterator[Datagram]:
        self.findings.extend(self.frag.flush())
        self.findings.extend(self.sctp.flush())
        yield from self.tls.route(self.tcp.flush())
        yield from self.tls.flush()  # WSS: a WebSocket message cut by the end is reported
        self._drain_tcp_findings()

    def _drain_tcp_findings(self) -> None:
        if self.tcp.findings:
            self.findings.extend(self.tcp.findings)
            self.tcp.findings.clear()


class _FastUdp:
    """The UDP candidates of a chunk as Python lists, read one by one in capture order."""

    def __init__(
        self, chunk: RecordChunk, dec: ChunkDecode, cand: npt.NDArray[np.intp], cap: Capture
    ) -> None:
        u = dec.udp
        rec = u.index[cand]
        self.mm = cap.mapped()
        self.frame = chunk.frame[rec].tolist()
        self.ts = chunk.ts[rec].tolist()
        self.alen = np.where(u.version[cand] == 4, 4, 16).tolist()
        self.src, self.dst = u.src[cand].tolist(), u.dst[cand].tolist()
        self.sport, self.dport = u.sport[cand].tolist(), u.dport[cand].tolist()
        self.off, self.size = u.payload[cand].tolist(), u.length[cand].tolist()

    def item(self, j: int) -> tuple[Endpoint, Endpoint, bytes, int, int]:
        mm, off, alen, s, d = self.mm, self.off[j], self.alen[j], self.src[j], self.dst[j]
        src = _endpoint(mm[s : s + alen], self.sport[j])
        dst = _endpoint(mm[d : d + alen], self.dport[j])
        return src, dst, mm[off : off + self.size[j]], self.frame[j], self.ts[j]


# one per SIP datagram: the frozen dataclass __init__ costs twice as much (sipflow.frozen)
_new_datagram = builder(Datagram)

_ENDPOINTS: dict[tuple[bytes, int], Endpoint] = {}


def _endpoint(raw: bytes, port: int) -> Endpoint:
    """Endpoints are frozen values: one per (address, port), shared."""
    ep = _ENDPOINTS.get((raw, port))
    if ep is None:
        ep = Endpoint(addr_text(raw), port)
        if len(_ENDPOINTS) < 65536:
            _ENDPOINTS[(raw, port)] = ep
    return ep


def _slow_batch(source: int, items: list[tuple[int, int, Endpoint, Endpoint, bytes]]) -> MediaBatch:
    """The slow path's non-SIP UDP payloads of a chunk as one small batch of columns."""
    payloads = [it[4] for it in items]
    sizes = np.array([len(p) for p in payloads], np.int64)
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    buf = np.frombuffer(b"".join(payloads) + bytes(16), np.uint8)
    raw = [(ipaddress.ip_address(it[2].ip).packed, ipaddress.ip_address(it[3].ip).packed)
           for it in items]  # fmt: skip
    version = np.array([4 if len(s) == 4 else 6 for s, _ in raw], np.int64)
    src = np.frombuffer(b"".join(s.ljust(16, b"\0") for s, _ in raw), np.uint8).reshape(-1, 16)
    dst = np.frombuffer(b"".join(d.ljust(16, b"\0") for _, d in raw), np.uint8).reshape(-1, 16)
    return MediaBatch(
        source,
        buf,
        np.array([it[0] for it in items], np.int64),
        np.array([it[1] for it in items], np.int64),
        version,
        src,
        dst,
        np.array([it[2].port for it in items], np.int64),
        np.array([it[3].port for it in items], np.int64),
        offsets,
        sizes,
        window(buf, offsets, 16),
    )


def _with_frames(dg: Datagram, frames: tuple[int, ...]) -> Datagram:
    return Datagram(dg.src, dg.dst, dg.transport, dg.payload, frames, dg.ts, dg.source)
