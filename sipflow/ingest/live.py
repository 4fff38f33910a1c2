"""Live capture and a HEP collector, feeding the same pipeline as ``sipflow analyze``.

How this works: :class:`RawCapture` reads frames from an ``AF_PACKET`` socket bound to one
interface (or all, ``any``), with the BPF filter compiled by libpcap (through scapy) and
attached in the kernel, and kernel timestamps (``SO_TIMESTAMPNS``). :class:`HepCollector`
receives HEP v1/v2/v3 on UDP and HEP3 on TCP (framed by :class:`~sipflow.ingest.hep.HepStream`).
:class:`LiveSession` is the sans-IO middle: frames go through the per-record decoder and
reassemblers of :mod:`sipflow.ingest.capture`, HEP through
:class:`~sipflow.ingest.hep.HepDecapsulator`; stream bytes are framed (RFC 3261 §18.3), every
message is parsed, re-ordered within ``REORDER_NS``, de-duplicated as the offline merge does,
and fed to :class:`~sipflow.correlate.calls.CallBuilder` with ``now`` taken from packet times
(advanced by the monotonic clock while the wire is idle, so calls still end). Finished calls
leave as the same dicts as ``analyze --format json`` ``calls[]`` and are released, so memory
stays flat: only open calls and the last ``retain`` finished rows are held.

:func:`run_live` is the I/O loop: one selector over the sockets, a tick every 250 ms, the
capture written as it arrives (:class:`PcapWriter`, with rotation), SIGINT/SIGTERM ending
the loop cleanly with everything flushed. HEP packets are written to the same file as UDP
datagrams from the agent to the collector, so ``sipflow analyze`` of the file finds the
same calls.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import heapq
import selectors
import signal
import socket
import struct
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from itertools import count
from pathlib import Path
from types import FrameType
from typing import Any, Protocol, cast

from sipflow.errors import SipflowError
from sipflow.findings import Finding
from sipflow.ingest.capture import _Pipeline
from sipflow.ingest.decode import Fragment, Packet, decode_frame
from sipflow.ingest.hep import HepDecapsulator, HepStream
from sipflow.ingest.pcap import Capture
from sipflow.ingest.types import Datagram, Endpoint, SourceStats, Transport
from sipflow.sip.framing import StreamFramer
from sipflow.sip.message import SipMessage, SipRequest, SipResponse
from sipflow.sip.uri import NameAddr

__all__ = [
    "CallRow",
    "HepCollector",
    "LiveError",
    "LiveOptions",
    "LiveSession",
    "PcapWriter",
    "RawCapture",
    "parse_listen",
    "parse_size",
    "run_live",
]

NS = 1_000_000_000
REORDER_NS = 300_000_000  # HEP agents send with some delay; frames from one socket are ordered
DUPLICATE_WINDOW_NS = 100_000_000  # as sipflow.engine.merge: copies of one packet
TICK_S = 0.25
MAX_STREAMS = 10_000  # stream framers held; the oldest is flushed to make room
SNAPLEN = 262_144
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101

# Linux <linux/if_packet.h>, <asm-generic/socket.h>, <linux/if_arp.h>
ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
SO_ATTACH_FILTER = 26
SO_TIMESTAMPNS = 35
SOL_PACKET = 263
PACKET_STATISTICS = 6
ARPHRD_ETHER = 1
ARPHRD_LOOPBACK = 772
DLT_EN10MB = 1
DLT_RAW = 12
_ETH_V4 = b"\0" * 12 + b"\x08\x00"
_ETH_V6 = b"\0" * 12 + b"\x86\xdd"


class LiveError(SipflowError):
    """Live capture cannot start: permissions, interface, filter or address problems."""


# ----------------------------------------------------------------------------- options


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


_UNITS = {"": 1, "K": 1000, "M": 1000**2, "G": 1000**3, "KB": 1000, "MB": 1000**2, "GB": 1000**3}


def parse_size(text: str) -> int:
    """``10M``, ``500k``, ``1G`` or plain bytes -> bytes (decimal units, as tcpdump -C)."""
    t = text.strip().upper()
    digits = t.rstrip("KMGB")
    if not digits.isdigit() or t[len(digits) :] not in _UNITS or int(digits) == 0:
        raise LiveError(f"bad size {text!r}: use bytes or a number with K, M or G")
    return int(digits) * _UNITS[t[len(digits) :]]


def parse_listen(text: str) -> tuple[str, int]:
    """``[ADDR]:PORT`` -> (address, port); ``:9060`` and ``9060`` listen on 0.0.0.0."""
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = "", text
    host = host.strip("[]") or "0.0.0.0"
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise LiveError(f"bad listen address {text!r}: use [ADDR]:PORT, e.g. 127.0.0.1:9060")
    return host, int(port)


# ----------------------------------------------------------------------------- capture


def _compile_bpf(expr: str, dlt: int) -> bytes:
    """libpcap's compiler (through scapy) -> ``struct sock_filter`` instructions."""
    try:
        from scapy.arch.common import compile_filter
        from scapy.error import Scapy_Exception
    except ImportError as exc:  # pragma: no cover - scapy is a dependency
        raise LiveError(f"capture filters need scapy/libpcap: {exc}") from None
    try:
        prog = compile_filter(expr, linktype=dlt)
    except Scapy_Exception as exc:
        raise LiveError(f"bad capture filter {expr!r}: {_pcap_reason(str(exc))}") from None
    n = int(prog.bf_len)
    return ctypes.string_at(ctypes.addressof(prog.bf_insns.contents), 8 * n)


def _pcap_reason(text: str) -> str:
    return text[text.rfind("(") + 1 : -1] if text.endswith(")") else text


class RawCapture:
    """An AF_PACKET socket on one interface (``any``: all of them), BPF attached."""

    def __init__(self, iface: str, bpf: str = "") -> None:
        self.iface = iface
        index = 0 if iface == "any" else _if_index(iface)
        hatype = _if_type(iface)
        cooked = iface == "any" or hatype not in (ARPHRD_ETHER, ARPHRD_LOOPBACK)
        self.link_type = LINKTYPE_RAW if cooked else LINKTYPE_ETHERNET
        kind = socket.SOCK_DGRAM if cooked else socket.SOCK_RAW
        code = _compile_bpf(bpf, DLT_RAW if cooked else DLT_EN10MB) if bpf else b""
        try:
            self.sock = socket.socket(socket.AF_PACKET, kind, socket.htons(ETH_P_ALL))
        except PermissionError:
            raise LiveError(
                "live capture needs root or the CAP_NET_RAW capability "
                "(e.g. sudo setcap cap_net_raw+eip $(readlink -f $(which python3)))"
            ) from None
        try:
            self._setup(index, code)
        except OSError as exc:
            self.sock.close()
            raise LiveError(f"cannot capture on {iface}: {exc.strerror or exc}") from None
        self._buf = bytearray(SNAPLEN)
        self.truncated = 0

    def _setup(self, index: int, code: bytes) -> None:
        s = self.sock
        with contextlib.suppress(OSError):  # SO_RCVBUFFORCE needs CAP_NET_ADMIN
            s.setsockopt(socket.SOL_SOCKET, 33, 8 << 20)  # SO_RCVBUFFORCE
        s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        if code:
            self._filter = ctypes.create_string_buffer(code, len(code))
            prog = struct.pack("HL", len(code) // 8, ctypes.addressof(self._filter))
            s.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, prog)
        if index:  # "any": an unbound ETH_P_ALL socket hears every interface
            s.bind((self.iface, ETH_P_ALL))
        s.setblocking(False)
        self._drain_prefilter()

    def _drain_prefilter(self) -> None:
        """Packets queued between socket() and the filter/bind are not ours: drop them."""
        while True:
            try:
                self.sock.recv(1)
            except BlockingIOError:
                return

    def fileno(self) -> int:
        return self.sock.fileno()

    def read(self, limit: int = 1000) -> list[tuple[int, bytes]]:
        """Up to ``limit`` queued frames as (kernel time ns, bytes); never blocks."""
        out: list[tuple[int, bytes]] = []
        buf, cspace = self._buf, socket.CMSG_SPACE(16)
        for _ in range(limit):
            try:
                n, anc, flags, addr = self.sock.recvmsg_into([buf], cspace)
            except BlockingIOError:
                break
            if addr[2] == PACKET_OUTGOING and addr[3] == ARPHRD_LOOPBACK:
                continue  # loopback: each packet is seen leaving and arriving; keep one
            if self.link_type == LINKTYPE_RAW and addr[1] not in (0x0800, 0x86DD):
                continue  # cooked socket: not IP (ARP, ...); nothing SIP can be in it
            if flags & socket.MSG_TRUNC:
                self.truncated += 1
            out.append((_timestamp(anc), bytes(buf[:n])))
        return out

    def drops(self) -> int:
        """Packets the kernel dropped since the last call (tpacket_stats)."""
        raw = self.sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8)
        return int(struct.unpack("II", raw)[1])

    def close(self) -> None:
        self.sock.close()


def _timestamp(anc: list[tuple[int, int, bytes]]) -> int:
    for level, kind, data in anc:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= 16:
            sec, nsec = struct.unpack("qq", data[:16])
            return int(sec) * NS + int(nsec)
    return time.time_ns()


def _if_index(iface: str) -> int:
    try:
        return socket.if_nametoindex(iface)
    except OSError:
        names = ", ".join(sorted(n for _, n in socket.if_nameindex()))
        raise LiveError(f"no such interface: {iface} (available: {names}, any)") from None


def _if_type(iface: str) -> int:
    try:
        return int(Path("/sys/class/net", iface, "type").read_text())
    except (OSError, ValueError):
        return -1


# ----------------------------------------------------------------------------- HEP collector


class HepCollector:
    """HEP over UDP (v1/v2/v3) and TCP (HEP3) on one address and port."""

    def __init__(self, host: str, port: int) -> None:
        fam = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.addr = Endpoint(host, port)
        self.udp = socket.socket(fam, socket.SOCK_DGRAM)
        self.tcp = socket.socket(fam, socket.SOCK_STREAM)
        self.tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.udp.bind((host, port))
            self.tcp.bind((host, port))
            self.tcp.listen(16)
        except OSError as exc:
            self.close()
            why = "address in use" if exc.errno == errno.EADDRINUSE else exc.strerror or str(exc)
            raise LiveError(f"cannot listen for HEP on {self.addr}: {why}") from None
        with contextlib.suppress(OSError):
            self.udp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        self.udp.setblocking(False)
        self.tcp.setblocking(False)
        self.conns: dict[socket.socket, tuple[Endpoint, HepStream]] = {}
        self.stream_skipped = 0

    def read_udp(self, limit: int = 1000) -> list[tuple[int, Endpoint, bytes]]:
        out = []
        for _ in range(limit):
            try:
                data, peer = self.udp.recvfrom(65535)
            except BlockingIOError:
                break
            out.append((time.time_ns(), Endpoint(peer[0], peer[1]), data))
        return out

    def accept(self) -> socket.socket | None:
        try:
            conn, peer = self.tcp.accept()
        except BlockingIOError:
            return None
        conn.setblocking(False)
        self.conns[conn] = (Endpoint(peer[0], peer[1]), HepStream())
        return conn

    def read_tcp(self, conn: socket.socket) -> tuple[list[tuple[int, Endpoint, bytes]], bool]:
        """Whole HEP packets received on a connection; True when it closed."""
        peer, stream = self.conns[conn]
        try:
            data = conn.recv(65536)
        except BlockingIOError:
            return [], False
        except OSError:
            data = b""
        if not data:
            self.stream_skipped += stream.skipped_bytes + stream.pending
            del self.conns[conn]
            conn.close()
            return [], True
        now = time.time_ns()
        return [(now, peer, p) for p in stream.feed(data)], False

    def close(self) -> None:
        for s in (self.udp, self.tcp, *getattr(self, "conns", {})):
            s.close()


# ----------------------------------------------------------------------------- pcap out


class PcapWriter:
    """A classic pcap (ns resolution) written as frames arrive; with ``rotate`` a new
    file is started once one reaches that many bytes: ``out.pcap``, ``out-1.pcap``, ..."""

    def __init__(self, path: str, link_type: int, rotate: int | None = None) -> None:
        self.path = Path(path)
        self.link_type = link_type
        self.rotate = rotate
        self.files: list[Path] = []
        self.frames = 0
        self._open()

    def _open(self) -> None:
        n = len(self.files)
        p = self.path if n == 0 else self.path.with_name(f"{self.path.stem}-{n}{self.path.suffix}")
        p.parent.mkdir(parents=True, exist_ok=True)
        self.f = p.open("wb")
        self.f.write(struct.pack("<IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, SNAPLEN, self.link_type))
        self.size = 24
        self.files.append(p)

    def write(self, ts: int, frame: bytes) -> None:
        if self.rotate is not None and self.size + 16 + len(frame) > self.rotate and self.size > 24:
            self.f.close()
            self._open()
        sec, ns = divmod(max(ts, 0), NS)
        self.f.write(struct.pack("<IIII", sec & 0xFFFFFFFF, ns, len(frame), len(frame)) + frame)
        self.size += 16 + len(frame)
        self.frames += 1

    def flush(self) -> None:
        self.f.flush()

    def close(self) -> None:
        self.f.close()


def hep_frame(link_type: int, src: Endpoint, dst: Endpoint, payload: bytes) -> bytes:
    """A HEP packet as the UDP datagram agent -> collector, for the written capture."""
    from sipflow.ingest.pcapwrite import _udp

    packet = _udp(src, dst, payload[:65_000])
    if link_type == LINKTYPE_ETHERNET:
        return (_ETH_V6 if ":" in src.ip else _ETH_V4) + packet
    return packet


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


class LiveSession:
    """Sans-IO: frames and HEP packets in (with their times), finished calls out."""

    def __init__(self, on_call: CallSink, retain: int = 50, source: int = 0) -> None:
        from sipflow.correlate.calls import CallBuilder

        self.on_call = on_call
        self.source = source
        self.stats = SessionStats()
        self.src_stats = SourceStats(path="live", format="live")
        self.findings: list[Finding] = []
        # Per-record decode and reassembly exactly as read_capture's slow path (no file).
        self.pipe = _Pipeline(cast(Capture, None), source, self.src_stats, self.findings)
        self.hep = HepDecapsulator(source, self.src_stats.skipped, self.findings)
        self.framers: dict[int, StreamFramer] = {}
        self._last_dg: dict[int, Datagram] = {}
        self.builder = CallBuilder()
        self._heap: list[tuple[int, int, SipMessage]] = []
        self._seq = count()
        self._recent: dict[tuple[object, ...], int] = {}
        self._order: deque[tuple[int, tuple[object, ...]]] = deque()
        self.rows: dict[str, CallRow] = {}
        self.done: deque[CallRow] = deque(maxlen=retain)
        self.now = 0
        self._last_expire = 0
        from sipflow.engine.local import SourceResult

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
        from sipflow.engine.local import drain_framer_problems, origin_of, parse_payload

        for dg in dgs:
            if dg.transport is Transport.TCP or dg.transport is Transport.TLS:
                if dg.stream not in self.framers and len(self.framers) >= MAX_STREAMS:
                    self._flush_stream(next(iter(self.framers)))  # oldest connection
                framer = self.framers.setdefault(dg.stream, StreamFramer())
                self._last_dg[dg.stream] = dg  # endpoints for what a flush releases
                for fm in framer.feed(dg):
                    self._message(
                        parse_payload(fm.data, origin_of(dg, fm.frames, fm.ts), self.result)
                    )
                drain_framer_problems(framer, self.source, self.result)
            else:
                self._message(
                    parse_payload(dg.payload, origin_of(dg, dg.frames, dg.ts), self.result)
                )

    def _message(self, msg: SipMessage | None) -> None:
        if msg is not None:
            heapq.heappush(self._heap, (msg.ts, next(self._seq), msg))

    # -- time -----------------------------------------------------------------------------

    def tick(self, now: int) -> None:
        """Time passes: release re-ordered messages, expire reassembly and calls."""
        self._advance(now)
        self._release(self.now - REORDER_NS)
        if self.now - self._last_expire >= NS:
            self._last_expire = self.now
            self._datagrams(self.pipe._expire(self.now))
            self._calls(self.builder.expire(self.now))

    def finish(self) -> None:
        """End of input: everything held is released, open calls end as they are."""

        self._datagrams(self.pipe._flush())
        for stream in list(self.framers):
            self._flush_stream(stream)
        self._release(None)
        self._calls(self.builder.finish())

    def _flush_stream(self, stream: int) -> None:
        from sipflow.engine.local import drain_framer_problems, origin_of, parse_payload

        framer, last = self.framers.pop(stream), self._last_dg.pop(stream)
        for fm in framer.flush():
            self._message(parse_payload(fm.data, origin_of(last, fm.frames, fm.ts), self.result))
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
        from sipflow.engine.merge import _key

        horizon = msg.ts - DUPLICATE_WINDOW_NS
        while self._order and self._order[0][0] < horizon:
            self._recent.pop(self._order.popleft()[1], None)
        key = _key(msg)
        if key in self._recent:
            self.stats.duplicates += 1
            self.src_stats.duplicates += 1
            return True
        self._recent[key] = msg.ts
        self._order.append((msg.ts, key))
        return False

    # -- output -------------------------------------------------------------------------

    def _calls(self, out: Any) -> None:
        from sipflow.checks.sdp import media_for_call
        from sipflow.trace import call_to_dict

        self.findings.extend(out.findings)
        del self.findings[: max(0, len(self.findings) - 1000)]  # bounded: recent only
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
            if row is None and msg.method == "INVITE" and not msg.to_tag:
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

    def _row_done(self, call: Any, d: dict[str, Any], findings: int) -> None:
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

    Raises :class:`LiveError` (before anything runs) when a source cannot be opened;
    ``on_ready`` is told, in words, once every source is open and listening."""
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
