"""Streams mapped to the SDP that announced them; one-way / no audio; NAT notes; quality.

How this works: every answered audio m-line of every offer/answer exchange
(:class:`~sipflow.sdp.media.MediaLine`) announces two receive addresses: the offerer's
(``offer_addr``) and the answerer's (``answer_addr``). A stream whose destination is one
of them, and which runs while the call does, belongs to that call, leg and direction
(``to-offerer`` / ``to-answerer``). A stream that matches no destination but comes *from*
an announced address is mapped by its source (symmetric RTP, RFC 4961) with a
``rtp.nat_latching`` note: the media went to an address other than announced (a NAT or
latching SBC rewrote it). The other way round - the destination announced, the source
not - is noted too (media arrives from an address other than announced).

Between placing (:func:`place_streams`) and scoring, an optional SRTP stage
(:class:`~sipflow.rtp.decrypt.Srtp`) decrypts the SRTP streams whose SDES keys the SDP
showed, so their decrypted RTCP (round trip time) feeds the MOS.

Per call and direction :func:`map_streams` gives a ``quality`` dict: packets, lost, loss %,
jitter, MOS (:mod:`sipflow.rtp.mos`), and ``one_way``. A direction the SDP expects
(RFC 3264 §6.1 directions) without any stream is ``rtp.one_way_audio`` (one direction
missing) or ``rtp.no_audio`` (both), judged only for answered calls, on the leg nearest
the caller, and only when the source carried RTP at all (a SIP-only capture filter is not
one-way audio).
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Protocol

from sipflow.findings import Finding, Ref, Severity
from sipflow.frozen import builder
from sipflow.rtp import mos as mos_mod
from sipflow.rtp.streams import RtpStream

if TYPE_CHECKING:
    from sipflow.correlate.calls import CallRecord
    from sipflow.sdp.media import CallMedia, MediaExchange, MediaLine

__all__ = ["Announced", "Placed", "SrtpStage", "map_streams", "place_streams", "rtp_rows"]

NS = 1_000_000_000
SLACK = 5 * NS  # media may start before the 200 OK (early media) and outlive the BYE


@dataclass(frozen=True, slots=True)
class Announced:
    """One receive address announced in SDP: which call, exchange, m-line, and side."""

    call: int
    exchange: MediaExchange
    line: MediaLine
    receiver: str
    """``offerer`` or ``answerer``."""
    start: int
    end: int


AddrTable = dict[tuple[str, int], list[Announced]]
_new_announced = builder(Announced)  # one per announced address: without the frozen __init__


def _split(addr: str | None) -> tuple[str, int] | None:
    if not addr or addr.endswith(":0"):
        return None
    host, _, port = addr.rpartition(":")
    if not port.isdigit():
        return None
    return host.strip("[]"), int(port)


def _announced(calls: list[CallRecord], media: list[CallMedia]) -> AddrTable:
    table: AddrTable = {}
    for ci, (call, cm) in enumerate(zip(calls, media, strict=True)):
        start = call.start - SLACK
        end = (call.end or call.start + 24 * 3600 * NS) + SLACK
        for x in cm.exchanges:
            for ln in x.lines:
                if ln.rejected or ln.media != "audio":
                    continue
                for side, addr in (("offerer", ln.offer_addr), ("answerer", ln.answer_addr)):
                    key = _split(addr)
                    if key is not None:
                        a = _new_announced(ci, x, ln, side, start, end)
                        table.setdefault(key, []).append(a)
    for cands in table.values():
        cands.sort(key=_start)  # stable: ties keep the calls' order
    return table


def _start(a: Announced) -> int:
    return a.start


def _pick(cands: list[Announced], st: RtpStream) -> Announced | None:
    """The call whose window holds the stream's start. Ports are reused call after call
    (SIPp, most PBXs): prefer the latest call that had already started (its INVITE before
    the first packet), and only then one that starts within the slack after it.

    ``cands`` are in order of start (:func:`_announced`), so both are found by bisection
    and a short walk: every call of a SIPp run may announce the same address."""
    t = st.start
    began = bisect_right(cands, t, key=_start)  # cands[:began] started by t
    settled = bisect_right(cands, t - SLACK, hi=began, key=_start)  # ... SLACK before t
    for i in range(settled - 1, -1, -1):  # the latest of those still live
        if cands[i].end >= t:
            first = bisect_left(cands, cands[i].start, hi=i, key=_start)
            return next(a for a in cands[first : i + 1] if a.end >= t)  # first of a tie
    return next((a for a in cands[settled:began] if a.end >= t), None)


def _codec(line: MediaLine, st: RtpStream) -> tuple[str | None, int | None, float | None]:
    """Codec label, clock and ptime of the negotiated format the stream mostly carries
    (the last format of that payload type, should the m-line list one twice)."""
    pts = st.pt_packets
    main_pt = (pts[0] if len(pts) == 1 else max(pts, key=_packets))[0] if pts else None
    for c in reversed(line.codecs or line.offered):
        if c.pt == main_pt:
            return c.encoding, c.clock, line.ptime
    return st.codec, None, line.ptime


def _packets(pt_count: tuple[int, int]) -> int:
    return pt_count[1]


def _at_clock(st: RtpStream, clock: int | None) -> dict[str, Any]:
    """The stream's jitter fields at the negotiated clock, when it was measured at several
    (else no field: the stream keeps its own)."""
    if clock is None or not st.jitter_by_clock:
        return {}
    for c, jmax, jmean in st.jitter_by_clock:
        if c == clock:
            return {"clock": c, "clock_known": True, "max_jitter_ms": jmax, "mean_jitter_ms": jmean}
    return {}


def _direction(a: Announced) -> str:
    return "to-" + a.receiver


Placed = tuple[RtpStream, Announced | None, str | None]
"""A stream, the SDP address it was mapped to (None: unmapped) and the NAT note, if any."""


class SrtpStage(Protocol):
    """Decrypts the placed streams that SDES keys allow (:class:`sipflow.rtp.decrypt.Srtp`):
    returns them with ``srtp``/``rtcp`` filled in, and its findings."""

    def __call__(
        self, placed: list[Placed], media: list[CallMedia]
    ) -> tuple[list[Placed], list[Finding]]: ...


def place_streams(
    streams: list[RtpStream], calls: list[CallRecord], media: list[CallMedia]
) -> list[Placed]:
    """Each stream with the announced address it belongs to (by destination, else by
    source with a NAT note), in the order given."""
    table = _announced(calls, media)
    out: list[Placed] = []
    for st in streams:
        a = _pick(table.get((st.dst.ip, st.dst.port), []), st)
        note = None
        if a is None:
            a = _pick_by_source(table, st)
            if a is not None:
                note = "sent to an address other than announced"
        elif not _source_announced(a, st):
            note = "arrives from an address other than announced"
        out.append((st, a, note))
    return out


def map_streams(
    streams: list[RtpStream],
    calls: list[CallRecord],
    media: list[CallMedia],
    sources_with_rtp: set[int] | None = None,
    srtp: SrtpStage | None = None,
    first: int = 0,
) -> tuple[list[RtpStream], list[dict[str, Any]], list[Finding]]:
    """Streams with call/leg/direction/codec/MOS filled in, one ``quality`` dict per call
    (same order as ``calls``), and the findings (one-way, no audio, NAT/latching, and the
    ``srtp`` stage's). ``srtp`` runs between placing and scoring, so the RTCP figures it
    decrypts feed the MOS. ``first``: the number of ``calls[0]`` in quality and findings
    (the streaming analysis maps a batch of calls at a time)."""
    placed = place_streams(streams, calls, media)
    findings: list[Finding] = []
    if srtp is not None:
        placed, found = srtp(placed, media)
        findings.extend(found)
    out: list[RtpStream] = []
    mapped: dict[int, list[tuple[RtpStream, Announced]]] = {}
    for st, a, note in placed:
        if a is None:
            out.append(st)
            continue
        st = _scored(st, a)
        out.append(st)
        mapped.setdefault(a.call, []).append((st, a))
        if note:
            findings.append(_nat_finding(st, a, note))
    to: ByDst = {}  # where the mapped streams went, for legs that share media (below)
    for st in out:
        if st.call is not None:
            to.setdefault((st.dst.ip, st.dst.port), []).append(st)
    quality = [
        _quality(first + i, c, m, mapped.get(i, []), sources_with_rtp, findings, (i, to))
        for i, (c, m) in enumerate(zip(calls, media, strict=True))
    ]
    return out, quality, findings


def media_extended(calls: list[CallRecord], streams: list[RtpStream]) -> list[CallRecord]:
    """``calls`` where an answered call with no BYE seen (the capture ended mid-call) has
    its duration run to its last RTP packet when that came after its last SIP message:
    26 s of media were not a 0.05 s call. Streams' ``call`` index ``calls``."""
    last: dict[int, int] = {}
    for st in streams:
        if st.call is not None and st.end > last.get(st.call, 0):
            last[st.call] = st.end
    out = list(calls)
    for i, t in last.items():
        c = calls[i]
        if c.answer is None or c.end is not None or c.duration_s is None:
            continue
        duration = round((t - c.answer) / NS, 6)
        if duration > c.duration_s:
            out[i] = replace(c, duration_s=duration)
    return out


def _scored(st: RtpStream, a: Announced) -> RtpStream:
    """The stream with its call, leg, direction, codec, clock and MOS (one copy)."""
    codec, clock, ptime = _codec(a.line, st)
    jitter = _at_clock(st, clock)
    mean_jitter = jitter.get("mean_jitter_ms", st.mean_jitter_ms)
    rtt = (st.rtcp or {}).get("rtt_ms") or {}
    score = mos_mod.mos(codec, st.loss_pct, mean_jitter, ptime, rtt.get("max"))
    return st.evolve(
        call=a.call, leg=a.exchange.leg, direction=_direction(a), codec=codec, mos=score, **jitter
    )


def _pick_by_source(by_addr: AddrTable, st: RtpStream) -> Announced | None:
    """Symmetric RTP: the stream leaves from an announced address; it goes to the other
    side of the same m-line."""
    a = _pick(by_addr.get((st.src.ip, st.src.port), []), st)
    if a is None:
        return None
    other = "answerer" if a.receiver == "offerer" else "offerer"
    return _new_announced(a.call, a.exchange, a.line, other, a.start, a.end)


def _source_announced(a: Announced, st: RtpStream) -> bool:
    other = a.line.answer_addr if a.receiver == "offerer" else a.line.offer_addr
    key = _split(other)
    return key is None or key[0] == st.src.ip


def _nat_finding(st: RtpStream, a: Announced, note: str) -> Finding:
    text = (
        f"RTP {st.src} -> {st.dst} (SSRC 0x{st.ssrc:08X}) {note} in the SDP of leg "
        f"{a.exchange.leg} (offer {a.line.offer_addr}, answer {a.line.answer_addr}): "
        "NAT or media latching"
    )
    refs = (Ref(st.source, st.first_frame),)
    return Finding("rtp.nat_latching", Severity.INFO, text, "RFC 4961", refs)


_RECEIVED = (("to-answerer", "offerer"), ("to-offerer", "answerer"))
"""Each direction and who sends it, in the order directions are judged (by name)."""


def _expects(line: MediaLine, sender: str) -> bool:
    """The SDP lets ``sender`` (offerer/answerer) send on this m-line (RFC 3264 §6.1)."""
    offer, answer = line.direction_offer, line.direction_answer or "sendrecv"
    if sender == "offerer":
        return offer in ("sendrecv", "sendonly") and answer in ("sendrecv", "recvonly")
    return answer in ("sendrecv", "sendonly")


def _quality(
    ci: int,
    call: CallRecord,
    cm: CallMedia,
    got: list[tuple[RtpStream, Announced]],
    sources_with_rtp: set[int] | None,
    findings: list[Finding],
    shared: tuple[int, ByDst] | None = None,
) -> dict[str, Any]:
    dirs: dict[str, dict[str, Any]] = {}
    for st, a in got:
        key = _direction(a)
        d = dirs.get(key)
        if d is None:  # the direction's first stream (nearly always its only one)
            dirs[key] = _direction_of(st)
            continue
        d["streams"] += 1
        d["packets"] += st.packets
        d["expected"] += st.expected
        d["lost"] += st.lost
        d["max_jitter_ms"] = max(d["max_jitter_ms"], round(st.max_jitter_ms, 3))
        d["mean_jitter_ms"] = max(d["mean_jitter_ms"], round(st.mean_jitter_ms, 3))
        if st.mos is not None:
            d["mos"] = round(min(d["mos"] or 5.0, st.mos), 2)
    for d in dirs.values():
        d["loss_pct"] = round(100.0 * d["lost"] / d["expected"], 3) if d["expected"] else 0.0
    _judge(ci, call, cm, dirs, sources_with_rtp, findings, shared)
    return {"call": ci, "directions": dirs}


def _direction_of(st: RtpStream) -> dict[str, Any]:
    """A direction's quality from its first stream: what :func:`_quality` adds up, from
    zeros (a jitter of 0.0, a MOS from 5.0), written out in one step."""
    return {
        "streams": 1,
        "packets": st.packets,
        "expected": st.expected,
        "lost": st.lost,
        "max_jitter_ms": max(0.0, round(st.max_jitter_ms, 3)),
        "mean_jitter_ms": max(0.0, round(st.mean_jitter_ms, 3)),
        "mos": None if st.mos is None else round(min(5.0, st.mos), 2),
        "one_way": False,
    }


ByDst = dict[tuple[str, int], list[RtpStream]]
"""Mapped streams by destination address."""


def _elsewhere(
    call: CallRecord, line: MediaLine, direction: str, shared: tuple[int, ByDst] | None
) -> int:
    """Packets that reached the address this leg's SDP announced for ``direction`` while
    it was up, on streams mapped to another leg: legs of one call through a B2BUA that
    re-INVITEs to direct media (Asterisk ``directmedia``) announce the same endpoints, and
    each stream is mapped to one of them."""
    if shared is None or call.answer is None:
        return 0
    index, to = shared
    key = _split(line.offer_addr if direction == "to-offerer" else line.answer_addr)
    if key is None:
        return 0
    end = call.end if call.end is not None else float("inf")
    found = [
        st
        for st in to.get(key, [])
        if st.call != index and st.end >= call.answer and st.start <= end
    ]
    return sum(st.packets for st in found)


MIN_JUDGED_NS = 150_000_000
"""A call whose BYE came less than this after its answer is not judged for one-way or no
audio: endpoints start sending some tens of milliseconds after the answer or the ACK, and
a call hung up at once (goffinet's phone-to-phone: 32 ms) would be flagged for media it
never had time to send. From 150 ms on, seven 20 ms packets at least are due."""


def _judge(
    ci: int,
    call: CallRecord,
    cm: CallMedia,
    dirs: dict[str, dict[str, Any]],
    sources_with_rtp: set[int] | None,
    findings: list[Finding],
    shared: tuple[int, ByDst] | None = None,
) -> None:
    if call.answer is None or not cm.exchanges:
        return
    if call.end is not None and call.end - call.answer < MIN_JUDGED_NS:
        return  # hung up right after the answer: media may never have started
    near = [x for x in cm.exchanges if x.nearest and x.status == "answered"]
    if not near:
        return
    x = near[-1]
    lines = [ln for ln in x.lines if not ln.rejected and ln.media == "audio"]
    if not lines:
        return
    refs = x.offer_frames[:1] + x.answer_frames[:1]
    if sources_with_rtp is not None and not ({r.source for r in refs} & sources_with_rtp):
        return  # no RTP captured in this source at all: nothing to judge
    want = [w for w, sender in _RECEIVED if _expects(lines[0], sender)]
    missing = [w for w in want if w not in dirs]
    for w in list(missing):
        n = _elsewhere(call, lines[0], w, shared)
        if n:  # a B2BUA's legs with direct media: the stream was mapped to the other leg
            dirs[w] = {"streams": 0, "packets": n, "one_way": False, "mos": None}
            dirs[w]["on_other_leg"] = True
            missing.remove(w)
    if not missing:
        return
    for w in missing:
        dirs[w] = {"streams": 0, "packets": 0, "one_way": True, "mos": None}
    code = "rtp.no_audio" if len(missing) == len(want) else "rtp.one_way_audio"
    what = "no RTP in either direction" if code == "rtp.no_audio" else f"no RTP {missing[0]}"
    text = (
        f"call {ci} ({', '.join(call.call_ids)}): {what} on leg {x.leg}, although the SDP "
        f"expects it ({lines[0].offer_addr} <-> {lines[0].answer_addr})"
    )
    findings.append(Finding(code, Severity.WARNING, text, "RFC 3264 §6.1", refs))
    for d in dirs.values():
        d["one_way"] = code == "rtp.one_way_audio"


RTP_COLUMNS = (
    "stream",
    "source",
    "ssrc",
    "src",
    "dst",
    "payload_types",
    "codec",
    "clock",
    "packets",
    "expected",
    "lost",
    "loss_pct",
    "duplicates",
    "out_of_order",
    "seq_wraps",
    "max_jitter_ms",
    "mean_jitter_ms",
    "max_delta_ms",
    "mean_delta_ms",
    "start",
    "end",
    "first_frame",
    "last_frame",
    "call",
    "leg",
    "direction",
    "mos",
    "srtp",
    "srtp_authenticated",
    "srtp_auth_failed",
)


def rtp_rows(streams: list[RtpStream]) -> list[dict[str, Any]]:
    """Rows of ``trace.rtp_streams`` (columns :data:`RTP_COLUMNS`; times in ns)."""
    return [
        {
            "stream": s.id,
            "source": s.source,
            "ssrc": s.ssrc,
            "src": str(s.src),
            "dst": str(s.dst),
            "payload_types": ",".join(map(str, s.payload_types)),
            "codec": s.codec,
            "clock": s.clock,
            "packets": s.packets,
            "expected": s.expected,
            "lost": s.lost,
            "loss_pct": s.loss_pct,
            "duplicates": s.duplicates,
            "out_of_order": s.out_of_order,
            "seq_wraps": s.seq_wraps,
            "max_jitter_ms": s.max_jitter_ms,
            "mean_jitter_ms": s.mean_jitter_ms,
            "max_delta_ms": s.max_delta_ms,
            "mean_delta_ms": s.mean_delta_ms,
            "start": s.start,
            "end": s.end,
            "first_frame": s.first_frame,
            "last_frame": s.last_frame,
            "call": s.call,
            "leg": s.leg,
            "direction": s.direction,
            "mos": s.mos,
            "srtp": s.srtp["method"] if s.srtp else None,
            "srtp_authenticated": s.srtp["authenticated"] if s.srtp else None,
            "srtp_auth_failed": s.srtp["auth_failed"] if s.srtp else None,
        }
        for s in streams
    ]
