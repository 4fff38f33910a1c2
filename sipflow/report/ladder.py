"""LadderModel: one call's messages as lanes and arrows, pure data for every renderer.

How this works: :class:`TraceIndex` indexes a Trace once (message positions, findings by
frame, SDP exchanges by frame, channel events by Call-ID). :func:`build_ladder` then
collects the messages of a call's whole story (:mod:`sipflow.report.story`): every leg
leg correlation tied to it (B2BUA legs with other Call-IDs; each link's rule, confidence
and evidence kept as a :class:`~sipflow.report.story.LegNote`) and the legs a PBX log ties
to it (``originate``/``bridge`` naming the peer channel), with each leg's transactions'
messages plus messages of its Call-IDs that no transaction took. Each endpoint becomes a
lane; an endpoint that sent a request whose top Via names the same IP with another port
(RFC 3261 §18.2.2: responses go to the sent-by) is merged into that lane as an alias, so
a TCP client port and the element's listening port are one lane; so is the endpoint a
correlated leg's INVITE came from into the lane its parent's INVITE went to (the two
sides of one B2BUA: lanes caller, B2BUA, callee). Lanes
are labelled from the User-Agent (requests) or Server (responses) header the lane sent.
A message is marked as a retransmission when its transaction saw the same request, or
the same status with the same To tag, before it (the rule of
:class:`~sipflow.sip.transaction.TransactionTracker`). PBX channel state transitions of
the legs' channels become marks on the lane of the host that wrote the log. Renderers
(ladder_text, svg, mermaid, html) read only this model.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sipflow.findings import Finding
from sipflow.ingest.pbxlog.types import ChannelEvent
from sipflow.report.story import LegNote, Stories
from sipflow.report.story import groups as story_groups
from sipflow.sip.message import SipMessage, SipRequest, SipResponse

if TYPE_CHECKING:
    from sipflow.correlate.calls import CallRecord
    from sipflow.sip.transaction import TransactionRecord
    from sipflow.trace import Trace

MARK_KINDS = frozenset({"state_change", "callstate_change", "answer", "hangup", "originate"})
"""Channel event kinds drawn on lanes (dialplan lines and sofia internals are left out)."""


# -- values -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Lane:
    """One network element: ``host:port``, the other endpoints merged into it, a label."""

    index: int
    key: str
    """``host:port`` as :class:`~sipflow.ingest.types.Endpoint` prints it."""
    label: str
    """User-Agent or Server of what the lane sent ('' when none)."""
    aliases: tuple[str, ...] = ()
    """Other endpoints judged to be this element (by the Via sent-by rule)."""


@dataclass(frozen=True, slots=True)
class Badge:
    """A Finding shown on the message it refers to."""

    code: str
    severity: str
    message: str


@dataclass(frozen=True, slots=True)
class Arrow:
    """One message on the wire."""

    index: int
    src: int
    """Lane index of the sender."""
    dst: int
    ts: int
    """Time, ns since the epoch."""
    delta: int
    """ns since the previous arrow (0 for the first)."""
    label: str
    """Method (requests) or ``code reason`` (responses)."""
    is_request: bool
    method: str
    """Request method, or the CSeq method of a response."""
    status: int | None
    call_id: str | None
    leg: int
    """Index of ``call_id`` in :attr:`LadderModel.call_ids`."""
    retransmission: bool
    message: int
    """Index in ``Trace.message_list`` (-1 when the trace did not keep messages)."""
    source: int
    frames: tuple[int, ...]
    """Frame numbers (captures) or line numbers (logs) in source ``source``."""
    transport: str
    badges: tuple[Badge, ...]
    sdp: str | None
    """``offer: ...`` / ``answer: ...`` summary when the message carried SDP."""
    text: str
    """The whole message as it was on the wire (decoded as UTF-8, bad bytes replaced)."""


@dataclass(frozen=True, slots=True)
class Mark:
    """A PBX channel state transition, drawn on the lane of the host that logged it."""

    lane: int
    ts: int
    channel: str
    kind: str
    text: str
    """e.g. ``CS_INIT -> CS_ROUTING``."""
    line: int
    """Log line number."""


@dataclass(frozen=True, slots=True)
class Row:
    """One row of the diagram, in time order: an arrow or a mark."""

    kind: str
    """``arrow`` or ``mark``."""
    index: int
    """Index into :attr:`LadderModel.arrows` or :attr:`LadderModel.marks`."""


@dataclass(frozen=True)
class LadderModel:
    """Everything a renderer needs for one call's diagram."""

    title: str
    call_ids: tuple[str, ...]
    """The Call-IDs of the call story's legs (the caller's first), then those of legs
    tied only by channel events."""
    lanes: tuple[Lane, ...]
    arrows: tuple[Arrow, ...]
    marks: tuple[Mark, ...]
    rows: tuple[Row, ...]
    start: int
    """ns of the first row (0 when empty)."""
    evidence: tuple[str, ...] = ()
    """How extra legs were tied to the call, one line each (``LegNote.text()``)."""
    skipped: dict[str, int] = field(default_factory=dict)
    """Things left out of the diagram, counted by reason."""
    legs: tuple[LegNote, ...] = ()
    """How each leg after the first was tied: rule, confidence, evidence."""

    @property
    def retransmissions(self) -> int:
        return sum(1 for a in self.arrows if a.retransmission)


# -- indexing a trace ------------------------------------------------------------------------


class TraceIndex:
    """Look-ups over one Trace, built once and shared by every call's ladder."""

    def __init__(self, trace: Trace) -> None:
        self.trace = trace
        self.position = {id(m): i for i, m in enumerate(trace.message_list)}
        self.findings = _findings_by_frame(trace)
        self.sdp = _sdp_by_frame(trace)
        self.events: dict[str, list[ChannelEvent]] = {}
        for e in trace.channel_event_list:
            if e.call_id:
                self.events.setdefault(e.call_id, []).append(e)
        self.stories = Stories(trace)
        self.calls_by_id = self.stories.calls_by_id
        self._by_call_id: dict[str, list[SipMessage]] | None = None
        self._taken: set[int] | None = None

    def messages_of(self, call_id: str) -> list[SipMessage]:
        """Every kept message with this Call-ID, in time order."""
        if self._by_call_id is None:
            self._by_call_id = {}
            for m in self.trace.message_list:
                self._by_call_id.setdefault(m.call_id or "", []).append(m)
        return self._by_call_id.get(call_id, [])

    def in_calls(self) -> set[int]:
        """ids of messages some call's transactions hold (a message of the same Call-ID
        that only non-call activity took, e.g. a stray ACK, still belongs in the ladder)."""
        if self._taken is None:
            taken: set[int] = set()
            for c in self.trace.call_records:
                taken.update(id(m) for tx in c.transactions for m in tx.messages)
            self._taken = taken
        return self._taken


def _findings_by_frame(trace: Trace) -> dict[tuple[int, int], list[Finding]]:
    out: dict[tuple[int, int], list[Finding]] = {}
    for f in trace.finding_list:
        for r in f.refs:
            out.setdefault((r.source, r.frame), []).append(f)
    return out


def _sdp_by_frame(trace: Trace) -> dict[tuple[int, int], str]:
    out: dict[tuple[int, int], str] = {}
    for media in trace.call_media:
        for x in media.exchanges:
            for r in x.offer_frames:
                offered = ", ".join(dict.fromkeys(c.label for ln in x.lines for c in ln.offered))
                out.setdefault((r.source, r.frame), f"offer: {offered or 'no formats'}")
            for r in x.answer_frames:
                out.setdefault((r.source, r.frame), f"answer: {x.summary()}")
    return out


# -- building one call's ladder --------------------------------------------------------------


def build_ladder(trace: Trace, call: int, index: TraceIndex | None = None) -> LadderModel:
    """The ladder of the call story ``trace.call_records[call]`` belongs to: every leg."""
    idx = index or TraceIndex(trace)
    story = idx.stories.of(call)
    legs = [trace.call_records[i] for i in story.records]
    skipped: Counter[str] = Counter()
    msgs = _leg_messages(idx, legs, story.call_ids, skipped)
    rtx = retransmission_ids(tx for c in legs for tx in c.transactions)
    lanes, lane_of = _lanes(msgs, story.same_element)
    arrows = _arrows(idx, msgs, lane_of, story.call_ids, rtx)
    marks = _marks(idx, msgs, story.call_ids, lane_of, skipped)
    rows = _rows(arrows, marks)
    root = legs[0]
    title = f"{root.caller or '?'} -> {root.callee or '?'} ({root.outcome.value})"
    start = min([a.ts for a in arrows] + [m.ts for m in marks], default=0)
    evidence = tuple(n.text() for n in story.notes)
    return LadderModel(
        title,
        story.call_ids,
        lanes,
        arrows,
        marks,
        rows,
        start,
        evidence,
        dict(sorted(skipped.items())),
        story.notes,
    )


def ladder_of_messages(messages: Iterable[SipMessage], title: str = "") -> LadderModel:
    """A ladder of loose messages (no trace): lanes and arrows only, nothing marked."""
    msgs = sorted(messages, key=lambda m: m.ts)
    lanes, lane_of = _lanes(msgs)
    call_ids = tuple(dict.fromkeys(m.call_id or "" for m in msgs))
    arrows = _arrows(None, msgs, lane_of, call_ids, set())
    rows = tuple(Row("arrow", a.index) for a in arrows)
    start = arrows[0].ts if arrows else 0
    return LadderModel(title, call_ids, lanes, arrows, (), rows, start)


def find_call(trace: Trace, ident: str) -> int | None:
    """Index into ``trace.call_records`` of the call named by a Call-ID of any of its legs
    (or a unique prefix of one) or by its number (its row in ``trace.calls``, the call
    story; the first leg is returned)."""
    if ident.isdigit():
        groups = story_groups(trace)
        return groups[int(ident)][0] if int(ident) < len(groups) else None
    exact = [i for i, c in enumerate(trace.call_records) if ident in c.call_ids]
    if exact:
        return exact[0]
    prefixed = [
        i for i, c in enumerate(trace.call_records) if any(x.startswith(ident) for x in c.call_ids)
    ]
    return prefixed[0] if len(prefixed) == 1 else None


def _leg_messages(
    idx: TraceIndex, legs: list[CallRecord], call_ids: tuple[str, ...], skipped: Counter[str]
) -> list[SipMessage]:
    """Messages of the legs' transactions, plus stray ones of their Call-IDs."""
    chosen: dict[int, SipMessage] = {}
    for c in legs:
        for tx in c.transactions:
            for m in tx.messages:
                chosen[id(m)] = m
    lo = min(c.start for c in legs)
    if chosen:
        hi = max([m.ts for m in chosen.values()] + [c.end or 0 for c in legs])
    else:  # records not kept: up to the next call attempt with one of these Call-IDs
        hi = _next_start(idx, legs, call_ids, lo)
    taken = idx.in_calls() if chosen else set()
    for cid in call_ids:
        for m in idx.messages_of(cid):
            if id(m) in chosen or id(m) in taken:
                continue
            if m.ts < lo or m.ts > hi:
                skipped["same Call-ID outside the call's time"] += 1
                continue
            chosen[id(m)] = m
    if not chosen:
        skipped["no messages kept (Options(keep_messages/keep_records))"] += 1
    return sorted(chosen.values(), key=lambda m: (m.ts, idx.position.get(id(m), 0)))


def _next_start(idx: TraceIndex, legs: list[CallRecord], call_ids: tuple[str, ...], lo: int) -> int:
    calls = idx.trace.call_records
    ours = {id(c) for c in legs}
    later = [
        calls[i].start - 1
        for cid in call_ids
        for i in idx.calls_by_id.get(cid, ())
        if id(calls[i]) not in ours and calls[i].start > lo
    ]
    return min(later, default=2**63)


def retransmission_ids(records: Iterable[TransactionRecord]) -> set[int]:
    """ids of the messages that repeat an earlier request or response of their transaction."""
    out: set[int] = set()
    for tx in records:
        seen: set[tuple[str, int, str | None]] = set()
        for m in tx.messages:
            key = _copy_key(m)
            if key in seen:
                out.add(id(m))
            seen.add(key)
    return out


def _copy_key(m: SipMessage) -> tuple[str, int, str | None]:
    if isinstance(m, SipRequest):
        return (m.method.upper(), 0, None)
    return ("", m.status, m.to_tag)


# -- lanes -----------------------------------------------------------------------------------


def _endpoints(m: SipMessage) -> tuple[str, str]:
    o = m.origin
    src = str(o.src) if o is not None and o.src is not None else "?"
    dst = str(o.dst) if o is not None and o.dst is not None else "?"
    return src, dst


def _sent_by_alias(m: SipMessage) -> tuple[str, str] | None:
    """(src, sent-by) when a request came from another port of the host its Via names."""
    o = m.origin
    via = m.top_via
    if not isinstance(m, SipRequest) or o is None or o.src is None or via is None:
        return None
    host = via.host.strip("[]")
    port = via.port or (5061 if via.transport.upper() in ("TLS", "WSS") else 5060)
    if host != o.src.ip or port == o.src.port:
        return None
    sent_by = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return str(o.src), sent_by


def _lanes(
    msgs: list[SipMessage], same_element: Iterable[tuple[str, str]] = ()
) -> tuple[tuple[Lane, ...], dict[str, int]]:
    alias: dict[str, str] = {}
    for m in msgs:
        pair = _sent_by_alias(m)
        if pair is not None:
            alias.setdefault(pair[0], pair[1])
    for member, element in same_element:
        _merge(alias, member, element)
    order: dict[str, list[str]] = {}
    for m in msgs:
        for ep in _endpoints(m):
            canon = alias.get(ep, ep)
            members = order.setdefault(canon, [])
            if ep != canon and ep not in members:
                members.append(ep)
    labels = _labels(msgs, alias)
    lanes = tuple(
        Lane(i, key, labels.get(key, ""), tuple(members))
        for i, (key, members) in enumerate(order.items())
    )
    lane_of = {key: lane.index for lane in lanes for key in (lane.key, *lane.aliases)}
    return lanes, lane_of


def _merge(alias: dict[str, str], member: str, element: str) -> None:
    """Make ``member``'s lane part of ``element``'s (and everything already in it)."""
    src, dst = alias.get(member, member), alias.get(element, element)
    if src == dst:
        return
    for key, canon in alias.items():
        if canon == src:
            alias[key] = dst
    alias[src] = dst


def _labels(msgs: list[SipMessage], alias: dict[str, str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for m in msgs:
        src = _endpoints(m)[0]
        key = alias.get(src, src)
        if key in out:
            continue
        name = m.headers.get("User-Agent" if isinstance(m, SipRequest) else "Server")
        if name:
            out[key] = name.strip()
    return out


# -- arrows, marks, rows ---------------------------------------------------------------------


def _label(m: SipMessage) -> str:
    if isinstance(m, SipResponse):
        return f"{m.status} {m.reason}".strip()
    return m.method


def _method(m: SipMessage) -> str:
    if isinstance(m, SipRequest):
        return m.method
    cseq = m.cseq
    return cseq.method if cseq else ""


def _badges(idx: TraceIndex | None, m: SipMessage) -> tuple[Badge, ...]:
    o = m.origin
    if idx is None or o is None:
        return ()
    seen: dict[tuple[str, str], Badge] = {}
    for frame in o.frames:
        for f in idx.findings.get((o.source, frame), ()):
            seen.setdefault((f.code, f.message), Badge(f.code, f.severity.value, f.message))
    return tuple(seen.values())


def _sdp(idx: TraceIndex | None, m: SipMessage) -> str | None:
    o = m.origin
    if idx is not None and o is not None and o.frames:
        found = idx.sdp.get((o.source, o.frames[-1]))
        if found:
            return found
    ctype = (m.headers.get("Content-Type") or "").lower()
    return "sdp" if m.body and "application/sdp" in ctype else None


def _arrows(
    idx: TraceIndex | None,
    msgs: list[SipMessage],
    lane_of: dict[str, int],
    call_ids: tuple[str, ...],
    rtx: set[int],
) -> tuple[Arrow, ...]:
    out: list[Arrow] = []
    prev = msgs[0].ts if msgs else 0
    leg_of = {cid: i for i, cid in enumerate(call_ids)}
    for i, m in enumerate(msgs):
        src, dst = _endpoints(m)
        o = m.origin
        out.append(
            Arrow(
                index=i,
                src=lane_of[src],
                dst=lane_of[dst],
                ts=m.ts,
                delta=m.ts - prev,
                label=_label(m),
                is_request=isinstance(m, SipRequest),
                method=_method(m),
                status=m.status if isinstance(m, SipResponse) else None,
                call_id=m.call_id,
                leg=leg_of.get(m.call_id or "", 0),
                retransmission=id(m) in rtx,
                message=idx.position.get(id(m), -1) if idx is not None else -1,
                source=o.source if o is not None else 0,
                frames=o.frames if o is not None else (),
                transport=o.transport.value if o is not None else "",
                badges=_badges(idx, m),
                sdp=_sdp(idx, m),
                text=m.raw.decode("utf-8", errors="replace"),
            )
        )
        prev = m.ts
    return tuple(out)


def _log_lane(msgs: list[SipMessage], sources: set[int], lane_of: dict[str, int]) -> dict[int, int]:
    """Per log source: the one lane at one end of every message of the log (the element
    that wrote it, e.g. the B2BUA between both legs; on loopback every host is one IP)."""
    common: dict[int, set[int]] = {}
    for m in msgs:
        o = m.origin
        if o is None or o.source not in sources:
            continue
        src, dst = _endpoints(m)
        ends = {lane_of[src], lane_of[dst]}
        common[o.source] = common[o.source] & ends if o.source in common else ends
    return {source: next(iter(lanes)) for source, lanes in common.items() if len(lanes) == 1}


def _log_host(msgs: list[SipMessage], sources: set[int]) -> dict[int, str]:
    """Per log source: the IP every one of its messages has at one end (the logging host)."""
    out: dict[int, str] = {}
    for source in sources:
        common: set[str] | None = None
        for m in msgs:
            o = m.origin
            if o is None or o.source != source or o.src is None or o.dst is None:
                continue
            ips = {o.src.ip, o.dst.ip}
            common = ips if common is None else common & ips
        if common and len(common) == 1:
            out[source] = common.pop()
    return out


def _marks(
    idx: TraceIndex,
    msgs: list[SipMessage],
    call_ids: tuple[str, ...],
    lane_of: dict[str, int],
    skipped: Counter[str],
) -> tuple[Mark, ...]:
    events = [e for cid in call_ids for e in idx.events.get(cid, ())]
    if not events:
        return ()
    sources = {e.source for e in events}
    hosts = _log_host(msgs, sources)
    element = _log_lane(msgs, sources, lane_of)
    lane_for: dict[tuple[int, str], int | None] = {}
    out: list[Mark] = []
    for e in sorted(events, key=lambda e: (e.ts, e.line)):
        if e.kind.value not in MARK_KINDS:
            continue
        key = (e.source, e.call_id or "")
        if key not in lane_for:
            lane_for[key] = element.get(e.source)
            if lane_for[key] is None:
                lane_for[key] = _event_lane(msgs, e, hosts.get(e.source), lane_of)
        lane = lane_for[key]
        if lane is None:
            skipped["channel event with no lane (logging host unknown)"] += 1
            continue
        out.append(Mark(lane, e.ts, e.channel, e.kind.value, _mark_text(e), e.line))
    return tuple(out)


def _event_lane(
    msgs: list[SipMessage], e: ChannelEvent, host: str | None, lane_of: dict[str, int]
) -> int | None:
    if host is None:
        return None
    for m in msgs:
        o = m.origin
        if m.call_id != e.call_id or o is None or o.src is None or o.dst is None:
            continue
        for ep in (o.src, o.dst):
            if ep.ip == host:
                return lane_of.get(str(ep))
    return None


def _mark_text(e: ChannelEvent) -> str:
    if e.old and e.new:
        return f"{e.old} -> {e.new}"
    return f"{e.kind.value} {e.new or e.old or ''}".strip()


def _rows(arrows: tuple[Arrow, ...], marks: tuple[Mark, ...]) -> tuple[Row, ...]:
    items = [(a.ts, 0, a.index, Row("arrow", a.index)) for a in arrows]
    items += [(m.ts, 1, i, Row("mark", i)) for i, m in enumerate(marks)]
    items.sort(key=lambda t: (t[0], t[1], t[2]))
    return tuple(t[3] for t in items)
