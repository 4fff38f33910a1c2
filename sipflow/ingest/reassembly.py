"""IP fragment and TCP stream reassembly (sans-IO: values in, values out, time passed in).

How this works:

* :class:`FragmentReassembler` collects IPv4 (RFC 791) and IPv6 (RFC 8200 §4.5)
  fragments per (source, version, src, dst, protocol, identification). Each fragment's
  bytes are trimmed against what the set already holds, so the first data wins; an
  overlap is reported (RFC 5722 §4 makes overlapping IPv6 fragments invalid; RFC 1858
  warns of the same trick in IPv4). A set is returned once its last fragment is known
  and no hole is left. Sets older than the timeout, and the oldest sets beyond a cap,
  are given up with an ``ingest.fragments_incomplete`` finding naming their frames.

* :class:`TcpReassembler` keeps one state per connection direction, keyed by
  (source, src endpoint, dst endpoint). The first byte is ISN+1 after a SYN, or the first
  segment seen when the capture starts mid-connection (delivered with ``gap=True``).
  Bytes already delivered are trimmed from retransmitted and overlapping segments;
  segments ahead of the next expected byte are held until the hole fills. When more than
  ``max_out_of_order`` bytes are held, or at the end, the hole is skipped: the next bytes
  go out with ``gap=True`` and an ``ingest.tcp_gap`` finding gives the missing byte
  count. FIN (once reached in order) and RST release the state; a later SYN on the same
  endpoints is a new connection with a new stream number. Sequence numbers wrap modulo
  2^32 (RFC 9293 §3.4), compared with :func:`seq_diff` and friends. Each direction's bytes
  pass through a :class:`~sipflow.ingest.websocket.UpgradeSniffer`, which turns a
  WebSocket upgrade into one ``Transport.WS`` datagram per message.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sipflow.findings import Finding, Ref, Severity
from sipflow.ingest.types import (
    TCP_FIN,
    TCP_RST,
    TCP_SYN,
    Datagram,
    Endpoint,
    IpFragment,
    ReassembledIp,
    TcpSegment,
    Transport,
)
from sipflow.ingest.websocket import Piece, UpgradeSniffer

SEQ_MOD = 1 << 32
_HALF = 1 << 31
MAX_IP_PAYLOAD = 65535  # RFC 791 total length / RFC 8200 payload length are 16-bit
MAX_REFS = 64  # frames kept on one finding


# -- sequence number arithmetic (RFC 9293 §3.4: all comparisons modulo 2^32) -------------


def seq_add(a: int, n: int) -> int:
    return (a + n) % SEQ_MOD


def seq_diff(a: int, b: int) -> int:
    """Signed distance a - b modulo 2^32, in [-2^31, 2^31)."""
    return (a - b + _HALF) % SEQ_MOD - _HALF


def seq_gt(a: int, b: int) -> bool:
    return seq_diff(a, b) > 0


def seq_ge(a: int, b: int) -> bool:
    return seq_diff(a, b) >= 0


def _refs(source: int, frames: list[int] | tuple[int, ...]) -> tuple[Ref, ...]:
    return tuple(Ref(source, f) for f in sorted(set(frames))[:MAX_REFS])


# -- IP fragments ------------------------------------------------------------------------

_FragKey = tuple[int, int, str, str, int, int]


@dataclass(slots=True)
class _FragSet:
    first_ts: int
    last_ts: int
    frames: list[int] = field(default_factory=list)
    pieces: list[tuple[int, bytes]] = field(default_factory=list)  # disjoint (offset, data)
    total: int | None = None  # known once the fragment with MF=0 arrived


class FragmentReassembler:
    """IPv4/IPv6 fragments in, whole IP payloads out (RFC 791 §3.2, RFC 8200 §4.5).

    ``findings`` collects overlaps, bad fragments and sets evicted by the cap; ``expire``
    and ``flush`` return the findings of the sets they give up. ``duplicates`` counts
    fragments received twice with the same bytes.
    """

    def __init__(self, timeout_ns: int = 30_000_000_000, max_pending: int = 1024) -> None:
        self.timeout_ns = timeout_ns
        self.max_pending = max_pending
        self.findings: list[Finding] = []
        self.duplicates = 0
        self.completed = 0
        self._sets: dict[_FragKey, _FragSet] = {}

    def feed(self, frag: IpFragment) -> ReassembledIp | None:
        if frag.offset == 0 and not frag.more:  # not actually fragmented
            return self._result(frag, [frag.frame], frag.payload)
        key = (frag.source, frag.version, frag.src_ip, frag.dst_ip, frag.protocol, frag.ident)
        fs = self._sets.get(key)
        if fs is None:
            if len(self._sets) >= self.max_pending:
                oldest = next(iter(self._sets))
                self.findings.append(self._give_up(oldest, "too many pending fragment sets"))
            fs = self._sets[key] = _FragSet(frag.ts, frag.ts)
        fs.frames.append(frag.frame)
        fs.last_ts = frag.ts
        if not self._check(frag, fs):
            return None
        self._insert(frag, fs)
        data = self._complete(fs)
        if data is None:
            return None
        del self._sets[key]
        self.completed += 1
        return self._result(frag, fs.frames, data)

    def expire(self, now_ns: int) -> list[Finding]:
        """Give up sets whose first fragment is older than the timeout (RFC 8200 §4.5: 60 s)."""
        old = [k for k, fs in self._sets.items() if now_ns - fs.first_ts > self.timeout_ns]
        return [self._give_up(k, "reassembly timeout") for k in old]

    def flush(self) -> list[Finding]:
        """End of input: every pending set is incomplete."""
        return [self._give_up(k, "end of capture") for k in list(self._sets)]

    def _check(self, frag: IpFragment, fs: _FragSet) -> bool:
        """Reject fragments that cannot be placed; note odd but usable ones."""
        end = frag.offset + len(frag.payload)
        rfc = "RFC 791 §3.2" if frag.version == 4 else "RFC 8200 §4.5"
        if end > MAX_IP_PAYLOAD:
            self._note(
                frag, "ingest.fragment_invalid", f"fragment ends at byte {end}, beyond 65535", rfc
            )
            return False
        if not frag.more:
            if fs.total is not None and fs.total != end:
                text = f"last fragments disagree on the length ({fs.total} vs {end}); first kept"
                self._note(frag, "ingest.fragment_overlap", text, rfc)
                return False
            fs.total = end
        elif len(frag.payload) % 8:
            # RFC 791 / RFC 8200 §4.5: every fragment but the last is a multiple of 8 bytes.
            text = f"non-last fragment of {len(frag.payload)} bytes (not a multiple of 8)"
            self._note(frag, "ingest.fragment_invalid", text, rfc)
        return True

    def _insert(self, frag: IpFragment, fs: _FragSet) -> None:
        """Add the parts of the fragment no earlier fragment covered (first data wins)."""
        start, data = frag.offset, frag.payload
        end = start + len(data)
        cursor, overlap, same = start, 0, True
        new: list[tuple[int, bytes]] = []
        for o, d in sorted(fs.pieces):
            e = o + len(d)
            if e <= cursor or o >= end:
                continue
            if o > cursor:
                new.append((cursor, data[cursor - start : o - start]))
            lo, hi = max(o, cursor), min(e, end)
            overlap += hi - lo
            same = same and d[lo - o : hi - o] == data[lo - start : hi - start]
            cursor = hi
        if cursor < end:
            new.append((cursor, data[cursor - start :]))
        fs.pieces.extend(p for p in new if p[1])
        if overlap == len(data) and same:
            self.duplicates += 1
        elif overlap:
            kind = "the same" if same else "different"
            rfc = "RFC 5722 §4" if frag.version == 6 else "RFC 1858 §4"
            text = f"fragment overlaps {overlap} bytes already received ({kind} data); first kept"
            self._note(frag, "ingest.fragment_overlap", text, rfc)

    def _complete(self, fs: _FragSet) -> bytes | None:
        if fs.total is None:
            return None
        total = fs.total
        if sum(min(o + len(d), total) - o for o, d in fs.pieces if o < total) < total:
            return None
        return b"".join(d for o, d in sorted(fs.pieces) if o < total)[:total]

    def _give_up(self, key: _FragKey, why: str) -> Finding:
        fs = self._sets.pop(key)
        source, version, src, dst, proto, ident = key
        have = sum(len(d) for _, d in fs.pieces)
        of = f"{fs.total}" if fs.total is not None else "unknown"
        text = (
            f"IPv{version} datagram {src} -> {dst} (protocol {proto}, id {ident:#x}) never "
            f"completed: {have} of {of} bytes in {len(fs.frames)} fragments ({why})"
        )
        rfc = "RFC 791 §3.2" if version == 4 else "RFC 8200 §4.5"
        return Finding(
            "ingest.fragments_incomplete", Severity.WARNING, text, rfc, _refs(source, fs.frames)
        )

    def _note(self, frag: IpFragment, code: str, text: str, rfc: str) -> None:
        refs = (Ref(frag.source, frag.frame),)
        self.findings.append(Finding(code, Severity.WARNING, text, rfc, refs))

    @staticmethod
    def _result(frag: IpFragment, frames: list[int], data: bytes) -> ReassembledIp:
        return ReassembledIp(
            frag.source,
            tuple(sorted(set(frames))),
            frag.ts,
            frag.version,
            frag.src_ip,
            frag.dst_ip,
            frag.protocol,
            data,
        )


# -- TCP streams -------------------------------------------------------------------------

_TcpKey = tuple[int, str, int, str, int]  # source, src ip, src port, dst ip, dst port


@dataclass(slots=True)
class _Direction:
    """One direction of one TCP connection."""

    stream: int
    source: int
    src: Endpoint
    dst: Endpoint
    next_seq: int
    last_ts: int
    syn_seq: int | None = None
    fin_seq: int | None = None
    gap_next: bool = False  # the next delivered bytes follow a hole
    pending: dict[int, tuple[bytes, int]] = field(default_factory=dict)  # seq -> (data, frame)
    pending_bytes: int = 0
    sniffer: UpgradeSniffer = field(default_factory=UpgradeSniffer)


class TcpReassembler:
    """TCP segments in, in-order stream bytes (and WebSocket messages) out.

    Counters: ``streams`` opened, ``retransmitted_bytes`` (bytes seen again and dropped),
    ``gap_bytes`` (never captured), ``handshake_bytes`` (WebSocket HTTP upgrades),
    ``ws_control_frames``, ``ws_skipped_bytes``. ``findings`` collects gaps and WebSocket
    problems.
    """

    def __init__(
        self,
        max_out_of_order: int = 256 * 1024,
        idle_timeout_ns: int = 600_000_000_000,
        max_streams: int = 65536,
    ) -> None:
        self.max_out_of_order = max_out_of_order
        self.idle_timeout_ns = idle_timeout_ns
        self.max_streams = max_streams
        self.findings: list[Finding] = []
        self.streams = 0
        self.retransmitted_bytes = 0
        self.gap_bytes = 0
        self.handshake_bytes = 0
        self.ws_control_frames = 0
        self.ws_skipped_bytes = 0
        self._dirs: dict[_TcpKey, _Direction] = {}
        self._closed: dict[_TcpKey, tuple[int, int]] = {}  # key -> (end seq, ts) after FIN/RST

    # -- public ------------------------------------------------------------------------

    def feed(self, seg: TcpSegment) -> list[Datagram]:
        src, dst = seg.src, seg.dst
        key = (seg.source, src.ip, src.port, dst.ip, dst.port)
        out: list[Datagram] = []
        d = self._dirs.pop(key, None)  # re-inserted below: dict order is least recently used
        if seg.flags & TCP_SYN:
            d = self._on_syn(key, d, seg, out)
            seq = seq_add(seg.seq, 1)  # RFC 9293 §3.4: the SYN occupies ISN
        else:
            seq = seg.seq
            if d is None:
                d = self._first_seen(key, seg)
                if d is None:
                    return out
        self._dirs[key] = d
        d.last_ts = seg.ts
        if seg.flags & TCP_RST:
            out += self._release(key, seg.ts, remember=True)
            back = (seg.source, dst.ip, dst.port, src.ip, src.port)
            out += self._release(back, seg.ts, remember=True)
            return out
        if seg.payload:
            out += self._accept(d, seq, seg.payload, seg.frame, seg.ts)
        if seg.flags & TCP_FIN:
            d.fin_seq = seq_add(seq, len(seg.payload))
        if d.fin_seq is not None and d.next_seq == d.fin_seq:
            out += self._release(key, seg.ts, remember=True)
        if len(self._dirs) > self.max_streams:
            out += self._release(next(iter(self._dirs)), seg.ts, why="too many streams")
        return out

    def expire(self, now_ns: int) -> list[Datagram]:
        """Release directions idle for longer than ``idle_timeout_ns`` (holes become gaps)."""
        limit = now_ns - self.idle_timeout_ns
        out: list[Datagram] = []
        for key in [k for k, d in self._dirs.items() if d.last_ts < limit]:
            out += self._release(key, now_ns, why="idle")
        for key in [k for k, (_, ts) in self._closed.items() if ts < limit]:
            del self._closed[key]
        return out

    def holds(self, source: int, a: Endpoint, b: Endpoint) -> bool:
        """Is either direction between ``a`` and ``b`` still open here?"""
        forward = (source, a.ip, a.port, b.ip, b.port)
        back = (source, b.ip, b.port, a.ip, a.port)
        return forward in self._dirs or back in self._dirs

    def flush(self) -> list[Datagram]:
        """End of input: deliver everything held, holes as gaps, and release all state."""
        out: list[Datagram] = []
        for key in list(self._dirs):
            out += self._release(key, self._dirs[key].last_ts, why="end of capture")
        self._closed.clear()
        return out

    # -- opening -----------------------------------------------------------------------

    def _on_syn(
        self, key: _TcpKey, d: _Direction | None, seg: TcpSegment, out: list[Datagram]
    ) -> _Direction:
        if d is not None and d.syn_seq == seg.seq:
            return d  # retransmitted SYN
        if d is not None:  # a new connection on the same endpoints: the old one is over
            self._dirs[key] = d
            out += self._release(key, seg.ts, why="connection reused")
        self._closed.pop(key, None)
        d = self._open(seg, seq_add(seg.seq, 1), gap=False)
        d.syn_seq = seg.seq
        return d

    def _first_seen(self, key: _TcpKey, seg: TcpSegment) -> _Direction | None:
        """A segment of a direction without state: late retransmission or mid-stream start."""
        closed = self._closed.get(key)
        end = seq_add(seg.seq, len(seg.payload))
        if closed is not None and not seq_gt(end, closed[0]):
            self.retransmitted_bytes += len(seg.payload)
            return None  # after FIN/RST: a late retransmission or the final ACK
        if not seg.payload and not seg.flags & (TCP_FIN | TCP_RST):
            return None  # a pure ACK tells nothing worth keeping state for
        self._closed.pop(key, None)
        return self._open(seg, seg.seq, gap=True)  # capture began mid-connection

    def _open(self, seg: TcpSegment, next_seq: int, gap: bool) -> _Direction:
        self.streams += 1
        return _Direction(
            self.streams, seg.source, seg.src, seg.dst, next_seq, seg.ts, gap_next=gap
        )

    # -- bytes -------------------------------------------------------------------------

    def _accept(self, d: _Direction, seq: int, data: bytes, frame: int, ts: int) -> list[Datagram]:
        done = seq_diff(d.next_seq, seq)  # bytes of this segment already delivered
        if done >= len(data):
            self.retransmitted_bytes += len(data)
            return []
        if done < 0:
            self._hold(d, seq, data, frame)
            if d.pending_bytes > self.max_out_of_order:
                return self._skip_hole(d, ts)
            return []
        if done:
            self.retransmitted_bytes += done
        out = self._deliver(d, data[done:], frame, ts)
        return out + self._drain(d, ts) if d.pending else out

    def _hold(self, d: _Direction, seq: int, data: bytes, frame: int) -> None:
        held = d.pending.get(seq)
        if held is not None and len(held[0]) >= len(data):
            self.retransmitted_bytes += len(data)
            return
        if held is not None:
            d.pending_bytes -= len(held[0])
        d.pending[seq] = (data, frame)
        d.pending_bytes += len(data)

    def _drain(self, d: _Direction, ts: int) -> list[Datagram]:
        """Deliver held segments that became in-order; ``ts`` is that of the completing one."""
        out: list[Datagram] = []
        while d.pending:
            seq = d.next_seq if d.next_seq in d.pending else self._overlapping(d)
            if seq is None:
                break
            data, frame = d.pending.pop(seq)
            d.pending_bytes -= len(data)
            done = seq_diff(d.next_seq, seq)
            self.retransmitted_bytes += done
            out += self._deliver(d, data[done:], frame, ts)
        return out

    def _overlapping(self, d: _Direction) -> int | None:
        """A held segment that starts before the next byte and reaches past it; drop stale ones."""
        found = None
        for seq, (data, _) in list(d.pending.items()):
            done = seq_diff(d.next_seq, seq)
            if done >= len(data):
                del d.pending[seq]
                d.pending_bytes -= len(data)
                self.retransmitted_bytes += len(data)
            elif done > 0 and found is None:
                found = seq
        return found

    def _skip_hole(self, d: _Direction, ts: int) -> list[Datagram]:
        """Give up on the bytes before the first held segment: they were never captured."""
        first = min(d.pending, key=lambda s: seq_diff(s, d.next_seq))
        missing = seq_diff(first, d.next_seq)
        if missing > 0:
            frame = d.pending[first][1]
            self._gap_finding(d, missing, f"before frame {frame}", [frame])
            d.next_seq = first
            d.gap_next = True
        return self._drain(d, ts)

    def _deliver(self, d: _Direction, data: bytes, frame: int, ts: int) -> list[Datagram]:
        gap, d.gap_next = d.gap_next, False
        d.next_seq = (d.next_seq + len(data)) % SEQ_MOD
        if d.sniffer.plain:  # fast path: plain TCP bytes
            return [
                Datagram(d.src, d.dst, Transport.TCP, data, (frame,), ts, d.source, d.stream, gap)
            ]
        pieces = d.sniffer.feed(data, frame, ts, gap)
        if d.sniffer.problems or (d.sniffer.decoder is not None and d.sniffer.decoder.problems):
            self._sniffer_findings(d)
        return [self._datagram(d, p) for p in pieces]

    @staticmethod
    def _datagram(d: _Direction, p: Piece) -> Datagram:
        return Datagram(
            d.src, d.dst, p.transport, p.payload, p.frames, p.ts, d.source, d.stream, p.gap
        )

    # -- closing -----------------------------------------------------------------------

    def _release(
        self, key: _TcpKey, ts: int, why: str = "", remember: bool = False
    ) -> list[Datagram]:
        """Deliver what is held (holes as gaps), flush the sniffer and forget the direction."""
        d = self._dirs.pop(key, None)
        if d is None:
            return []
        out: list[Datagram] = []
        while d.pending:
            out += self._skip_hole(d, ts)
        if d.fin_seq is not None and seq_gt(d.fin_seq, d.next_seq):
            missing = seq_diff(d.fin_seq, d.next_seq)
            self._gap_finding(d, missing, f"before the FIN ({why or 'closed'})", [])
        out += [self._datagram(d, p) for p in d.sniffer.flush()]
        self._sniffer_findings(d)
        self.handshake_bytes += d.sniffer.handshake_bytes
        if d.sniffer.decoder is not None:
            self.ws_control_frames += d.sniffer.decoder.control_frames
            self.ws_skipped_bytes += d.sniffer.decoder.skipped_bytes
        if remember:  # closed by FIN/RST: later segments up to here are retransmissions
            self._closed[key] = (d.next_seq, ts)
        return out

    def _gap_finding(self, d: _Direction, missing: int, where: str, frames: list[int]) -> None:
        self.gap_bytes += missing
        text = f"{missing} bytes of TCP stream {d.src} -> {d.dst} never captured ({where})"
        self.findings.append(
            Finding("ingest.tcp_gap", Severity.WARNING, text, None, _refs(d.source, frames))
        )

    def _sniffer_findings(self, d: _Direction) -> None:
        problems = d.sniffer.problems
        if d.sniffer.decoder is not None:
            problems = problems + d.sniffer.decoder.problems
            d.sniffer.decoder.problems.clear()
        d.sniffer.problems.clear()
        for frames, text in problems:
            refs = _refs(d.source, frames)
            msg = f"{text} (TCP {d.src} -> {d.dst})"
            self.findings.append(
                Finding("ingest.websocket", Severity.WARNING, msg, "RFC 6455 §5", refs)
            )
