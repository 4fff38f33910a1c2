"""The per-source stage: one capture -> time-ordered SIP messages, with findings.

How this works: :func:`sipflow.ingest.capture.read_capture` yields Datagrams. Datagram
transports (UDP, WS, SCTP) carry whole messages; TCP Datagrams are stream bytes, framed
into messages per connection direction by :class:`sipflow.sip.framing.StreamFramer`
(RFC 3261 §18.3). Every message is parsed; a payload that is not SIP after all becomes a
``sip.malformed`` Finding and is counted, never an exception. Messages leave in time
order through a small reorder buffer (captures from several interfaces are not always
sorted), so memory stays bounded by the buffer, not the file.
"""

from __future__ import annotations

import heapq
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import count
from typing import TYPE_CHECKING, Any, TypeVar

from sipflow.engine.shard import Shard, Tick
from sipflow.errors import InputError, ParseError
from sipflow.findings import Finding, Ref, Severity
from sipflow.frozen import builder
from sipflow.ingest.capture import MediaSink, read_capture
from sipflow.ingest.tls import TlsStats
from sipflow.ingest.types import Datagram, Endpoint, SourceStats, Transport
from sipflow.rtp.streams import RtpCollector
from sipflow.sip.framing import StreamFramer
from sipflow.sip.message import Origin, ProblemCode, SipMessage, parse_message

if TYPE_CHECKING:
    from sipflow.engine.shard import Feed
    from sipflow.ingest.pbxlog import ChannelEvent
    from sipflow.ingest.tls_facts import TlsKeys

_Timed = TypeVar("_Timed", SipMessage, SipMessage | Tick)

# Messages may arrive up to this much out of time order and still be sorted (ns).
REORDER_WINDOW_NS = 2_000_000_000


@dataclass
class SourceResult:
    """What one source produced besides its messages (filled while iterating)."""

    stats: SourceStats
    findings: list[Finding] = field(default_factory=list)
    malformed: int = 0
    channel_events: list[ChannelEvent] = field(default_factory=list)
    log_messages: list[SipMessage] = field(default_factory=list)
    """A log's messages, kept to tie its channels to dialogs (logs are small)."""
    rtp: RtpCollector = field(default_factory=RtpCollector)
    """RTP/RTCP statistics of the source, fed column-wise by ingest (RFC 3550)."""
    tls_keys: TlsKeys | None = None
    """Key logs / RSA keys to decrypt SIP over TLS with (docs/tls.md)."""
    tls: TlsStats = field(default_factory=TlsStats)
    """Every TLS connection followed, and what its decryption found."""
    on_chunk: Callable[[], None] | None = field(default=None, repr=False, compare=False)
    """Called after each chunk of records is read (progress, :mod:`sipflow.engine.progress`)."""
    shard: Shard | None = None
    """Parse only this shard's messages (:mod:`sipflow.engine.shard`); None: all of them."""
    feed: Feed | None = None
    """Shard 0 feeding the worker shards this source (:mod:`sipflow.engine.shard`): says
    which messages are shard 0's, and sends the others to their worker."""
    log_year: int | None = None
    """The year of a PBX log's syslog-style times (no year written); None: the year the
    file was last modified (:func:`sipflow.ingest.pbxlog.read_log`)."""


# First bytes of the capture formats we read (pcap both resolutions/orders, pcapng, gzip).
_CAPTURE_MAGIC = (
    b"\xd4\xc3\xb2\xa1",
    b"\xa1\xb2\xc3\xd4",
    b"\x4d\x3c\xb2\xa1",
    b"\xa1\xb2\x3c\x4d",
    b"\x0a\x0d\x0d\x0a",
    b"\x1f\x8b",
)


def source_messages(path: str, source: int, result: SourceResult) -> Iterator[SipMessage | Tick]:
    """Parsed SIP messages of one source (capture or PBX log), in time order; with a
    ``result.shard``, other shards' messages as :class:`Tick` (their time only)."""
    if is_log(path):
        return _reorder(_parse_log(path, source, result))
    return _reorder(_parse_all(path, source, result))


def _head(path: str, size: int) -> bytes | None:
    """The first ``size`` bytes of a file; None for stdin or a file that cannot be read."""
    if path == "-":
        return None
    try:
        with open(path, "rb") as f:
            return f.read(size)
    except OSError:
        return None


def first_record_ts(path: str) -> int | None:
    """Time of the first record of a pcap/pcapng file (ns), to open rotated files only when
    the timeline reaches them (:func:`sipflow.engine.merge.merge_timeline`); None for stdin,
    gzip (reading it means decompressing it), logs and anything unreadable."""
    magic = _head(path, 4)
    if magic is None or magic not in _CAPTURE_MAGIC or magic == b"\x1f\x8b":
        return None
    from sipflow.ingest.pcap import open_capture

    try:
        with open_capture(path) as cap:
            chunk = next(iter(cap.chunks(1)), None)
            return int(chunk.ts.min()) if chunk is not None and len(chunk) else None
    except (InputError, OSError):
        return None


def is_log(path: str) -> bool:
    """A text log we read (by content); anything else goes to the capture reader."""
    head = _head(path, 65536)
    if head is None:
        return False  # stdin, or the capture reader reports the error
    if head.startswith(_CAPTURE_MAGIC):
        return False
    from sipflow.ingest.pbxlog import detect  # imported only for non-capture input

    return detect(head) is not None


def _parse_log(path: str, source: int, result: SourceResult) -> Iterator[SipMessage]:
    from sipflow.ingest import pbxlog

    placeholders: set[str] = set()
    for item in pbxlog.read_log(path, source, result.stats, result.findings, result.log_year):
        if isinstance(item, pbxlog.ChannelEvent):
            result.channel_events.append(item)
            continue
        _learn_placeholders(item.origin, placeholders)
        msg = parse_payload(item.data, item.origin, result, placeholders)
        if msg is not None:
            result.log_messages.append(msg)
            yield msg


FRAMER_IDLE_NS = 32_000_000_000
"""A TCP/TLS stream's framer that is empty (at a message boundary, nothing buffered) and
not fed for this long is dropped: a new one would frame the stream's next bytes the same
way, and a capture of many short connections keeps only the recent ones."""


def _parse_all(path: str, source: int, result: SourceResult) -> Iterator[SipMessage | Tick]:
    framers: dict[int, StreamFramer] = {}
    transports: dict[int, Transport] = {}
    fed: dict[int, int] = {}  # stream -> time its framer was last fed, least recent first
    shard = result.shard
    keep = _keeper(result)
    # A worker shard reading every packet itself only parses; shard 0 counts and reports.
    packets = shard is None or shard.keeps_packets
    for dg in read_capture(
        path,
        source,
        result.stats if packets else SourceStats(path=path),
        result.findings if packets else [],
        media_sink=result.rtp if packets else None,
        tls=result.tls_keys,
        tls_stats=result.tls,
        on_chunk=result.on_chunk,
    ):
        if dg.transport is Transport.TCP or dg.transport is Transport.TLS:
            framer = framers.get(dg.stream)
            if framer is None:
                framer = framers[dg.stream] = StreamFramer()
                transports[dg.stream] = dg.transport
            fed.pop(dg.stream, None)
            fed[dg.stream] = dg.ts
            _drop_idle_framers(framers, transports, fed, dg.ts - FRAMER_IDLE_NS)
            for fm in framer.feed(dg):
                if keep is not None and not keep(
                    fm.data, fm.ts, fm.frames, dg.src, dg.dst, dg.transport
                ):
                    yield Tick(fm.ts)
                    continue
                msg = parse_payload(fm.data, origin_of(dg, fm.frames, fm.ts), result)
                if msg is not None:
                    yield msg
            drain_framer_problems(framer, source, result)
        elif keep is None or keep(dg.payload, dg.ts, dg.frames, dg.src, dg.dst, dg.transport):
            msg = parse_payload(dg.payload, origin_of(dg, dg.frames, dg.ts), result)
            if msg is not None:
                yield msg
        else:
            yield Tick(dg.ts)
    yield from _flush_framers(framers, transports, source, result)
    if result.feed is not None:  # now, not after the reorder heap: the workers go on
        result.feed.end()


Keep = Callable[[bytes, int, tuple[int, ...], Endpoint | None, Endpoint | None, Transport], bool]
"""Is a message (bytes, time, frames, src, dst, transport) this process's to parse?"""


def _keeper(result: SourceResult) -> Keep | None:
    """Which messages to parse: all (None), a shard's (:meth:`Shard.mine` on the bytes), or
    shard 0's while it feeds the workers the others (``result.feed``)."""
    if result.feed is not None:
        return result.feed.keep
    if result.shard is None:
        return None
    mine = result.shard.mine
    return lambda data, *_: mine(data)


def fed_messages(
    items: Iterator[tuple[Any, ...]], result: SourceResult
) -> Iterator[SipMessage | Tick]:
    """A worker shard's messages of one source from what shard 0 read and sent
    (:class:`sipflow.engine.shard.Inbox` items): its own parsed here, the others' as
    :class:`Tick`; in time order, as :func:`source_messages` would give them."""
    return _reorder(_parse_fed(items, result))


_new_tick = builder(Tick)  # one per other shard's message: the frozen __init__ costs more


def _parse_fed(
    items: Iterator[tuple[Any, ...]], result: SourceResult
) -> Iterator[SipMessage | Tick]:
    for item in items:
        if len(item) == 2:
            yield _new_tick(item[1])
            continue
        source, ts, data, frames, src, dst, transport = item
        msg = parse_payload(data, _new_origin(source, frames, ts, src, dst, transport), result)
        if msg is not None:
            yield msg


def _drop_idle_framers(
    framers: dict[int, StreamFramer],
    transports: dict[int, Transport],
    fed: dict[int, int],
    horizon: int,
) -> None:
    """Forget the empty framers not fed since ``horizon`` (FRAMER_IDLE_NS); one holding part
    of a message is kept (flushed at the end, its incomplete message reported)."""
    while fed:
        stream = next(iter(fed))
        if fed[stream] >= horizon:
            return
        del fed[stream]  # tracked again when it is fed again
        if framers[stream].empty:
            del framers[stream], transports[stream]


def _flush_framers(
    framers: dict[int, StreamFramer],
    transports: dict[int, Transport],
    source: int,
    result: SourceResult,
) -> Iterator[SipMessage | Tick]:
    keep = _keeper(result)
    for stream, framer in framers.items():
        for fm in framer.flush():
            if keep is not None and not keep(
                fm.data, fm.ts, fm.frames, None, None, transports[stream]
            ):
                yield Tick(fm.ts)
                continue
            origin = Origin(source, fm.frames, fm.ts, None, None, transports[stream])
            msg = parse_payload(fm.data, origin, result)
            if msg is not None:
                yield msg
        drain_framer_problems(framer, source, result)


def reread_media(path: str, source: int, sink: MediaSink) -> None:
    """Read one capture again only to feed ``sink`` (SIP and findings are dropped): the
    SRTP stage's second pass (:class:`sipflow.rtp.decrypt.Srtp`)."""
    for _ in read_capture(path, source, SourceStats(path=path), [], sink):
        pass


def drain_framer_problems(framer: StreamFramer, source: int, result: SourceResult) -> None:
    if result.shard is not None and not result.shard.keeps_packets:
        framer.problems.clear()  # stream problems are shard 0's to report
        return
    for frames, text in framer.problems:
        result.findings.append(
            Finding(
                "sip.stream_framing",
                Severity.WARNING,
                text,
                "RFC 3261 §18.3",
                tuple(Ref(source, f) for f in frames),
            )
        )
    framer.problems.clear()


_new_origin = builder(Origin)  # one per message: the frozen __init__ costs twice as much


def origin_of(dg: Datagram, frames: tuple[int, ...], ts: int) -> Origin:
    return _new_origin(dg.source, frames, ts, dg.src, dg.dst, dg.transport)


def _learn_placeholders(origin: Origin, seen: set[str]) -> None:
    """Names pasted in place of addresses (the seed's ``caller_ip``): not an IP, no dot."""
    for ep in (origin.src, origin.dst):
        if ep is not None and "." not in ep.ip and ":" not in ep.ip:
            seen.add(ep.ip)


# Problems a hand-edited paste causes when real addresses were replaced by names: the
# names are not IP addresses, and shorter text leaves Content-Length too large.
_EDIT_PROBLEMS = frozenset(
    {
        ProblemCode.BAD_VIA,
        ProblemCode.BAD_ADDRESS,
        ProblemCode.BAD_URI,
        ProblemCode.CONTENT_LENGTH_MISMATCH,
    }
)


def parse_payload(
    data: bytes, origin: Origin, result: SourceResult, placeholders: set[str] | None = None
) -> SipMessage | None:
    """One payload parsed into a SipMessage, its problems filed as Findings on ``result``
    (shared with the live session, which frames packets the same way)."""
    try:
        msg = parse_message(data, origin)
    except ParseError as exc:
        result.malformed += 1
        result.findings.append(
            Finding(
                "sip.malformed",
                Severity.ERROR,
                f"not a SIP message: {exc}",
                "RFC 3261 §25",
                _refs(origin),
            )
        )
        return None
    if msg.problems:  # the refs are made only for a message with findings
        edited = _placeholders_in(data, placeholders) if placeholders else ()
        worst = _add_problems(msg, _refs(origin), result.findings, edited)
        if worst is Severity.ERROR:
            result.malformed += 1
    return msg


def _refs(origin: Origin) -> tuple[Ref, ...]:
    return tuple(Ref(origin.source, f) for f in origin.frames)


# How bad each parse problem is. ERROR: the message breaks the grammar or a MUST and
# counts as malformed; WARNING: a SHOULD or a tolerated deviation; INFO: worth knowing.
PROBLEM_SEVERITY: dict[ProblemCode, Severity] = {
    ProblemCode.START_LINE: Severity.ERROR,
    ProblemCode.VERSION: Severity.ERROR,
    ProblemCode.HEADER_LINE: Severity.ERROR,
    ProblemCode.UNTERMINATED: Severity.ERROR,
    ProblemCode.MISSING_HEADER: Severity.ERROR,
    ProblemCode.BAD_CSEQ: Severity.ERROR,
    ProblemCode.BAD_CALL_ID: Severity.ERROR,
    ProblemCode.BAD_VIA: Severity.ERROR,
    ProblemCode.BAD_ADDRESS: Severity.ERROR,
    ProblemCode.BAD_URI: Severity.ERROR,
    ProblemCode.BAD_CONTENT_LENGTH: Severity.ERROR,
    ProblemCode.CONTENT_LENGTH_MISMATCH: Severity.ERROR,
    ProblemCode.DUPLICATE_HEADER: Severity.WARNING,
    ProblemCode.CSEQ_METHOD: Severity.ERROR,
    ProblemCode.BAD_MAX_FORWARDS: Severity.WARNING,
    ProblemCode.TRAILING_OCTETS: Severity.WARNING,
    ProblemCode.MISSING_CONTENT_LENGTH: Severity.WARNING,
    ProblemCode.SCALAR_RANGE: Severity.WARNING,
    ProblemCode.BAD_DATE: Severity.WARNING,
    ProblemCode.MISSING_MAX_FORWARDS: Severity.INFO,
}
_RANK = {Severity.INFO: 0, Severity.WARNING: 1, Severity.ERROR: 2}
_RFC = re.compile(r"RFC \d+(?: §[\d.]+)?")


def _placeholders_in(data: bytes, placeholders: set[str]) -> tuple[str, ...]:
    return tuple(sorted(p for p in placeholders if p.encode() in data))


def _add_problems(
    msg: SipMessage, refs: tuple[Ref, ...], out: list[Finding], edited: tuple[str, ...] = ()
) -> Severity:
    """One Finding per parse problem; returns the worst severity. In a message whose
    addresses were replaced by names (``edited``), the problems that causes are INFO."""
    worst = Severity.INFO
    for code, text in zip(msg.problem_codes, msg.problems, strict=True):
        severity = PROBLEM_SEVERITY.get(code, Severity.WARNING)
        if edited and code in _EDIT_PROBLEMS:
            severity = Severity.INFO
            text = f"{text}; the paste has placeholder addresses ({', '.join(edited)})"
        if _RANK[severity] > _RANK[worst]:
            worst = severity
        rfc = _RFC.search(text)
        out.append(Finding(code.value, severity, text, rfc.group(0) if rfc else None, refs))
    return worst


def _reorder(messages: Iterator[_Timed]) -> Iterator[_Timed]:
    """Sort a nearly-sorted stream with a heap holding at most REORDER_WINDOW_NS of messages."""
    heap: list[tuple[int, int, _Timed]] = []
    seq = count()
    for msg in messages:
        heapq.heappush(heap, (msg.ts, next(seq), msg))
        while heap and heap[0][0] < msg.ts - REORDER_WINDOW_NS:
            yield heapq.heappop(heap)[2]
    while heap:
        yield heapq.heappop(heap)[2]
