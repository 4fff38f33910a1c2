"""``sipflow live``: captured frames and HEP packets through the analyser, calls out as they end.

How this works: :class:`LiveSession` is the sans-IO middle. Frames go through the
per-record decoder and reassemblers of :mod:`sipflow.ingest.capture`, HEP through
:class:`~sipflow.ingest.hep.HepDecapsulator`; stream bytes are framed (RFC 3261 §18.3),
every message is parsed, re-ordered within ``REORDER_NS``, de-duplicated as the offline
merge does, and fed to :class:`~sipflow.correlate.calls.CallBuilder` with ``now`` taken
from packet times (advanced by the monotonic clock while the wire is idle, so calls still
end). Finished calls leave as the same dicts as ``analyze --format json`` ``calls[]`` and
are released. Memory is bounded by what is open, not by how long the run lasts: open
calls and their transactions (the transaction timer heap is compacted, see
:func:`~sipflow.sip.transaction.compact_timers`), one table row per open call, the last
``retain`` finished rows, messages of the last ``REORDER_NS`` and ``DUPLICATE_WINDOW_NS``,
and one stream framer per TCP connection direction heard from within the reassembler's
idle timeout (``MAX_STREAMS`` at most).

:func:`run_live` is the I/O loop over the sockets of :mod:`sipflow.ingest.live`: one
selector, a tick every 250 ms, the capture written as it arrives (with rotation),
SIGINT/SIGTERM ending the loop cleanly with everything flushed. HEP packets are written to
the same file as UDP datagrams from the agent to the collector, so ``sipflow analyze`` of
the file finds the same calls.
"""

from __future__ import annotations

import contextlib
import heapq
import selectors
import signal
import socket
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from itertools import count
from types import FrameType
from typing import Any, Protocol, cast

from sipflow.correlate.calls import BuilderOutput, CallBuilder, CallRecord
from sipflow.engine.local import SourceResult, drain_framer_problems, origin_of, parse_payload
from sipflow.engine.merge import _key as duplicate_key
from sipflow.findings import Finding
from sipflow.ingest.capture import _Pipeline
from sipflow.ingest.decode import Fragment, Packet, decode_frame
from sipflow.ingest.hep import HepDecapsulator
from sipflow.ingest.live import (
    LINKTYPE_RAW,
    HepCollector,
    LiveError,
    PcapWriter,
    RawCapture,
    hep_frame,
)
from sipflow.ingest.pcap import Capture
from sipflow.ingest.types import Datagram, Endpoint, SourceStats, Transport
from sipflow.sip.framing import StreamFramer
from sipflow.sip.message import SipMessage, SipRequest, SipResponse
from sipflow.sip.transaction import key_of
from sipflow.sip.uri import NameAddr

__all__ = [
    "CallRow",
    "LiveOptions",
    "LiveSession",
    "SessionStats",
    "View",
    "iter_json_lines",
    "run_live",
]

NS = 1_000_000_000
REORDER_NS = 300_000_000  # HEP agents send with some delay; frames from one socket are ordered
DUPLICATE_WINDOW_NS = 100_000_000  # as sipflow.engine.merge: copies of one packet
TICK_S = 0.25
MAX_STREAMS = 10_000  # stream framers held; the least recently used is flushed to make room


@dataclass
class LiveOptions:
    """What ``sipflow live`` was asked to do."""

    iface: str | None = None
    bpf: str = ""
    write: str | None = None
    rotate: int | None = None
    hep_listen: tuple[str, int] | None = None
    duration: float | None = None
    max_calls: int | None = None
    retain: int = 50
    """Finished calls kept in the table (the oldest is dropped first)."""


# ----------------------------------------------------------------------------- the session


@dataclass
class CallRow:
    """One line of the live call table."""

    call_id: str
    caller: str
    callee: str
    start: int
    state: str = "calling"
    last: str = "INVITE"
    messages: int = 0
    answer: int | None = None
    end: int | None = None
    outcome: str | None = None
    findings: int = 0


@dataclass
class SessionStats:
    frames: int = 0
    hep_packets: int = 0
    messages: int = 0
    duplicates: int = 0
    calls: int = 0
    kernel_drops: int = 0
    truncated: int = 0


class CallSink(Protocol):
    def __call__(self, call: dict[str, Any], findings: list[Finding]) -> None: ...


# Response classes to the INVITE -> table state (RFC 3261 §21).
_STATES = {1: "ringing", 2: "answered", 3: "redirected", 4: "failed", 5: "failed", 6: "failed"}
MAX_FINDINGS = 1000  # session findings kept (the recent ones); each call carries its own


class LiveSession:
    """Sans-IO: frames and HEP packets in (with their times), finished calls out."""

    def __init__(self, on_call: CallSink, retain: int = 50, source: int = 0) -> None:
        self.on_call = on_call
        self.source = source
        self.stats = SessionStats()
        self.src_stats = SourceStats(path="live", format="live")
        self.findings: list[Finding] = []
        # Per-record decode and reassembly exactly as read_capture's slow path (no file).
        self.pipe = _Pipeline(cast(Capture, None), source, self.src_stats, self.findings)
        self.hep = HepDecapsulator(source, self.src_stats.skipped, self.findings)
        self.framers: dict[int, StreamFramer] = {}
        self._last_dg: dict[int, Datagram] = {}  # per stream, least recently fed first
        self.builder = CallBuilder()
        self._heap: list[tuple[int, int, SipMessage]] = []
        self._seq = count()
        self._recent: dict[tuple[object, ...], int] = {}
        self._order: deque[tuple[int, tuple[object, ...]]] = deque()
        self.rows: dict[str, CallRow] = {}
        self.done: deque[CallRow] = deque(maxlen=retain)
        self.now = 0
        self._last_expire = 0
        self.result = SourceResult(self.src_stats, self.findings)

    # -- input --------------------------------------------------------------------------

    def feed_frame(self, link_type: int, data: bytes, ts: int) -> None:
        self.stats.frames += 1
        frame = self.stats.frames
        self._advance(ts)
        res = decode_frame(link_type, data)
        if isinstance(res, Fragment):
            self._datagrams(self.pipe._fragment(res, frame, ts))
        elif isinstance(res, Packet):
            self._datagrams(self.pipe._packet(res, (frame,), ts))
        else:
            self.src_stats.skipped[res] += 1

    def feed_hep(self, data: bytes, ts: int) -> None:
        """One HEP packet received by the collector at ``ts`` (counted as one frame)."""
        self.stats.frames += 1
        self.stats.hep_packets += 1
        dg = self.hep.datagram(data, self.stats.frames, ts)
        self._advance(ts if dg is None else max(ts, dg.ts))
        if dg is not None:
            self._datagrams((dg,))

    def _advance(self, ts: int) -> None:
        if ts > self.now:
            self.now = ts

    def _datagrams(self, dgs: Iterable[Datagram]) -> None:
        for dg in dgs:
            if dg.transport is Transport.TCP or dg.transport is Transport.TLS:
                self._stream_bytes(dg)
            else:
                self._parse(dg.payload, dg, dg.frames, dg.ts)

    def _stream_bytes(self, dg: Datagram) -> None:
        framer = self.framers.get(dg.stream)
        if framer is None:
            if len(self.framers) >= MAX_STREAMS:
                self._flush_stream(next(iter(self._last_dg)))  # least recently fed
            framer = self.framers[dg.stream] = StreamFramer()
        self._last_dg.pop(dg.stream, None)
        self._last_dg[dg.stream] = dg  # endpoints for what a flush releases; LRU order
        for fm in framer.feed(dg):
            self._parse(fm.data, dg, fm.frames, fm.ts)
        drain_framer_problems(framer, self.source, self.result)

    def _parse(self, data: bytes, dg: Datagram, frames: tuple[int, ...], ts: int) -> None:
        msg = parse_payload(data, origin_of(dg, frames, ts), self.result)
        if msg is not None:
            heapq.heappush(self._heap, (msg.ts, next(self._seq), msg))

    # -- time -----------------------------------------------------------------------------

    def tick(self, now: int) -> None:
        """Time passes: release re-ordered messages, expire reassembly, streams and calls."""
        self._advance(now)
        self._release(self.now - REORDER_NS)
        if self.now - self._last_expire >= NS:
            self._last_expire = self.now
            self._datagrams(self.pipe._expire(self.now))
            self._prune_streams(self.now - self.pipe.tcp.idle_timeout_ns)
            self._calls(self.builder.expire(self.now))

    def finish(self) -> None:
        """End of input: everything held is released, open calls end as they are."""
        self._datagrams(self.pipe._flush())
        for stream in list(self.framers):
            self._flush_stream(stream)
        self._release(None)
        self._calls(self.builder.finish())

    def _prune_streams(self, horizon: int) -> None:
        """Framers of streams not fed since ``horizon`` (the TCP reassembler has released
        those directions as idle; a closed one's number never comes back) are flushed."""
        while self._last_dg:
            stream, last = next(iter(self._last_dg.items()))
            if last.ts >= horizon:
                return
            self._flush_stream(stream)

    def _flush_stream(self, stream: int) -> None:
        framer, last = self.framers.pop(stream), self._last_dg.pop(stream)
        for fm in framer.flush():
            self._parse(fm.data, last, fm.frames, fm.ts)
        drain_framer_problems(framer, self.source, self.result)

    def _release(self, until: int | None) -> None:
        heap = self._heap
        while heap and (until is None or heap[0][0] <= until):
            msg = heapq.heappop(heap)[2]
            if self._duplicate(msg):
                continue
            self.stats.messages += 1
            self._row(msg)
            self._calls(self.builder.feed(msg))

    def _duplicate(self, msg: SipMessage) -> bool:
        """The same packet captured twice (as sipflow.engine.merge.drop_duplicates)."""
        horizon = msg.ts - DUPLICATE_WINDOW_NS
        while self._order and self._order[0][0] < horizon:
            self._recent.pop(self._order.popleft()[1], None)
        key = duplicate_key(msg)
        if key in self._recent:
            self.stats.duplicates += 1
            self.src_stats.duplicates += 1
            return True
        self._recent[key] = msg.ts
        self._order.append((msg.ts, key))
        return False

    # -- output -------------------------------------------------------------------------

    def _calls(self, out: BuilderOutput) -> None:
        from sipflow.checks.sdp import media_for_call
        from sipflow.trace import call_to_dict

        self.findings.extend(out.findings)
        del self.findings[: max(0, len(self.findings) - MAX_FINDINGS)]  # bounded: recent only
        for call in out.calls:
            media = media_for_call(call)
            d = call_to_dict(call)
            d["channels"] = []
            d["media"] = media.to_dict()
            found = [*call.findings, *media.findings]
            self.stats.calls += 1
            self._row_done(call, d, len(found))
            self.on_call(d, found)

    def _row(self, msg: SipMessage) -> None:
        cid = msg.call_id or ""
        row = self.rows.get(cid)
        if isinstance(msg, SipRequest):
            if row is None and msg.method == "INVITE" and not msg.to_tag and key_of(msg):
                # only an INVITE the builder can start a call with: its row leaves with it
                row = self.rows[cid] = CallRow(cid, _uri(msg.from_), _uri(msg.to), msg.ts)
            if row is not None:
                row.last = msg.method
                if msg.method in ("BYE", "CANCEL"):
                    row.state = "ending"
        elif row is not None and isinstance(msg, SipResponse):
            row.last = f"{msg.status} {msg.reason}"
            if msg.cseq is not None and msg.cseq.method == "INVITE" and row.state != "ending":
                row.state = _STATES.get(msg.status // 100, row.state)
        if row is not None:
            row.messages += 1

    def _row_done(self, call: CallRecord, d: dict[str, Any], findings: int) -> None:
        for cid in call.call_ids:
            row = self.rows.pop(cid, None)
            if row is not None:
                self.done.append(
                    replace(
                        row, state="done", outcome=d["outcome"], end=call.end, findings=findings
                    )
                )

    def table(self) -> tuple[list[CallRow], list[CallRow]]:
        """(open calls, recently finished calls) for the view."""
        return list(self.rows.values()), list(self.done)


def _uri(value: NameAddr | None) -> str:
    return value.uri if value is not None else "?"


# ----------------------------------------------------------------------------- the loop


class View(Protocol):
    def call(self, call: dict[str, Any], findings: list[Finding]) -> None: ...
    def update(self, session: LiveSession) -> None: ...
    def close(self, session: LiveSession, lines: list[str]) -> None: ...


@dataclass
class _Loop:
    opts: LiveOptions
    view: View
    session: LiveSession = field(init=False)
    capture: RawCapture | None = None
    collector: HepCollector | None = None
    writer: PcapWriter | None = None
    stop: bool = False
    reason: str = "stopped"

    def on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self.stop = True
        self.reason = signal.Signals(signum).name


def run_live(
    opts: LiveOptions, view: View, on_ready: Callable[[str], None] | None = None
) -> SessionStats:
    """Capture and/or collect until Ctrl-C, SIGTERM, ``duration`` or ``max_calls``.

    Raises :class:`~sipflow.ingest.live.LiveError` (before anything runs) when a source
    cannot be opened; ``on_ready`` is told, in words, once every source is open."""
    if opts.iface is None and opts.hep_listen is None:
        raise LiveError("nothing to listen to: give -i IFACE and/or --hep-listen [ADDR]:PORT")
    loop = _Loop(opts, view)
    loop.session = LiveSession(view.call, opts.retain)
    with contextlib.ExitStack() as stack:
        _open_sources(loop, stack)
        old = {s: signal.signal(s, loop.on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        stack.callback(lambda: [signal.signal(s, h) for s, h in old.items()])
        if on_ready is not None:
            on_ready(_ready_text(loop))
        _serve(loop)
        loop.session.finish()
        _close(loop)
    return loop.session.stats


def _open_sources(loop: _Loop, stack: contextlib.ExitStack) -> None:
    opts = loop.opts
    if opts.iface is not None:
        loop.capture = RawCapture(opts.iface, opts.bpf)
        stack.callback(loop.capture.close)
    if opts.hep_listen is not None:
        loop.collector = HepCollector(*opts.hep_listen)
        stack.callback(loop.collector.close)
    if opts.write:
        link = loop.capture.link_type if loop.capture else LINKTYPE_RAW
        loop.writer = PcapWriter(opts.write, link, opts.rotate)
        stack.callback(loop.writer.close)


def _ready_text(loop: _Loop) -> str:
    parts = []
    if loop.capture:
        bpf = f" (filter {loop.opts.bpf!r})" if loop.opts.bpf else ""
        parts.append(f"capturing on {loop.capture.iface}{bpf}")
    if loop.collector:
        parts.append(f"HEP collector on {loop.collector.addr} (UDP, TCP)")
    if loop.writer:
        parts.append(f"writing {loop.writer.path}")
    return "; ".join(parts)


def _serve(loop: _Loop) -> None:
    sel = selectors.DefaultSelector()
    if loop.capture:
        sel.register(loop.capture.fileno(), selectors.EVENT_READ, _read_capture)
    if loop.collector:
        sel.register(loop.collector.udp, selectors.EVENT_READ, _read_hep_udp)
        sel.register(loop.collector.tcp, selectors.EVENT_READ, _accept_hep)
    start = time.monotonic()
    idle_base = (time.time_ns(), start)
    try:
        while not loop.stop:
            for key, _ in sel.select(TICK_S):
                key.data(loop, sel, key.fileobj)
            mono = time.monotonic()
            now = idle_base[0] + int((mono - idle_base[1]) * NS)
            loop.session.tick(now)
            loop.view.update(loop.session)
            if loop.writer:
                loop.writer.flush()
            _check_limits(loop, mono - start)
        _read_capture(loop, sel, None)  # what arrived before the stop is still ours
    finally:
        sel.close()


def _check_limits(loop: _Loop, elapsed: float) -> None:
    o = loop.opts
    if o.duration is not None and elapsed >= o.duration:
        loop.stop, loop.reason = True, f"duration {o.duration:g} s reached"
    if o.max_calls is not None and loop.session.stats.calls >= o.max_calls:
        loop.stop, loop.reason = True, f"{o.max_calls} calls finished"


def _read_capture(loop: _Loop, _sel: selectors.BaseSelector, _obj: object) -> None:
    if loop.capture is None:
        return
    link = loop.capture.link_type
    for ts, data in loop.capture.read():
        if loop.writer:
            loop.writer.write(ts, data)
        loop.session.feed_frame(link, data, ts)


def _read_hep_udp(loop: _Loop, _sel: selectors.BaseSelector, _obj: object) -> None:
    assert loop.collector is not None
    for ts, peer, data in loop.collector.read_udp():
        _take_hep(loop, ts, peer, data)


def _take_hep(loop: _Loop, ts: int, peer: Endpoint, data: bytes) -> None:
    if loop.writer and loop.collector:
        loop.writer.write(ts, hep_frame(loop.writer.link_type, peer, loop.collector.addr, data))
    loop.session.feed_hep(data, ts)


def _accept_hep(loop: _Loop, sel: selectors.BaseSelector, _obj: object) -> None:
    assert loop.collector is not None
    conn = loop.collector.accept()
    if conn is not None:
        sel.register(conn, selectors.EVENT_READ, _read_hep_tcp)


def _read_hep_tcp(loop: _Loop, sel: selectors.BaseSelector, obj: object) -> None:
    assert loop.collector is not None
    conn = cast(socket.socket, obj)
    if conn not in loop.collector.conns:
        return
    packets, closed = loop.collector.read_tcp(conn)
    if closed:
        with contextlib.suppress(KeyError, ValueError):
            sel.unregister(conn)
    for ts, peer, data in packets:
        _take_hep(loop, ts, peer, data)


def _close(loop: _Loop) -> None:
    st = loop.session.stats
    if loop.capture:
        st.kernel_drops = loop.capture.drops()
        st.truncated = loop.capture.truncated
    lines = [
        f"sipflow live: {loop.reason}; {st.frames} frames ({st.hep_packets} HEP), "
        f"{st.messages} SIP messages, {st.calls} calls finished, {st.duplicates} duplicates",
    ]
    if loop.capture:
        lines.append(f"kernel drops: {st.kernel_drops}, truncated frames: {st.truncated}")
    if loop.writer:
        loop.writer.flush()
        files = ", ".join(str(p) for p in loop.writer.files)
        lines.append(f"wrote {loop.writer.frames} frames to {files}")
    skipped = loop.session.src_stats.skipped
    if skipped:
        lines.append("skipped: " + ", ".join(f"{k}={v}" for k, v in sorted(skipped.items())))
    loop.view.close(loop.session, lines)


def iter_json_lines(path: str) -> Iterator[dict[str, Any]]:
    """Read back a ``--json-lines`` output (for tests and tools)."""
    import json

    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)
