"""The legs of one call as a ladder and a CDR row see them: the call story.

How this works: leg correlation (:mod:`sipflow.correlate.legs`) groups the trace's call
records into call stories (``trace.correlation``: groups in time order, the caller's leg
first) and keeps, for every leg after the first, the link that tied it: the rule that
carried it, its confidence and the evidence. :func:`build_story` takes the story a call
record belongs to, one :class:`LegNote` per link, and the Call-IDs of channels a PBX log
ties to the story (``originate``/``bridge`` lines naming the peer channel) that the
correlation did not already hold. A link that went through a host (the ``hop`` rule: the
parent's INVITE went to the host the child's INVITE came from) names two endpoints of one
element (a B2BUA's two sides); the ladder draws them as one lane. Transfers (Replaces,
REFER) come from another party, so they merge nothing.

Without correlation (a Trace built by hand, or records not aligned with it) every call
record is a story of its own.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sipflow.correlate.evidence import STRONG

if TYPE_CHECKING:
    from sipflow.correlate.evidence import Evidence
    from sipflow.correlate.facts import Addr
    from sipflow.correlate.legs import LegLink
    from sipflow.ingest.pbxlog.types import ChannelEvent
    from sipflow.trace import Trace

LINK_KINDS = frozenset({"originate", "bridge"})
"""Channel event kinds whose ``peer`` ties two channels (two legs of one call)."""
MAX_LINK_ROUNDS = 8
"""How many originate/bridge steps away from the call a log tie may be."""


@dataclass(frozen=True, slots=True)
class LegNote:
    """How one leg was tied into the call: a correlation link, or a PBX log line alone."""

    call_id: str
    role: str
    """``b-leg``, ``hop n``, ``transfer`` (correlation roles) or ``log`` (a channel tie)."""
    linked_to: str | None
    """Call-ID of the leg it continues (None for a log tie)."""
    rule: str
    """The rule that carried the link (``final_mirror``, ``pbx_log``...; for a log tie the
    event kind, ``originate`` or ``bridge``)."""
    confidence: float | None
    """Share of the odds the link holds (docs/correlation.md); None for a log tie."""
    evidence: tuple[str, ...]
    """Every non-zero piece of evidence as ``rule: field: a ~ b (+w)``, or the log line."""
    short: str
    """The evidence in one line: ``rule +w`` per piece (decisive pieces with their field)."""

    def head(self) -> str:
        """Which leg, and which it continues."""
        if self.confidence is None:
            return f"{self.call_id}: tied by a PBX log"
        return f"{self.call_id}: {self.role} of {self.linked_to}"

    def detail(self) -> str:
        """The rule, the confidence and the evidence in short."""
        if self.confidence is None:
            return self.short
        return f"rule {self.rule}, confidence {self.confidence:.2f} ({self.short})"

    def text(self) -> str:
        """One line for a ladder's header."""
        return f"{self.head()}; {self.detail()}"


@dataclass(frozen=True, slots=True)
class Story:
    """One call story: its legs, their Call-IDs, how they were tied."""

    records: tuple[int, ...]
    """Indexes into ``trace.call_records``; the caller's leg first."""
    call_ids: tuple[str, ...]
    notes: tuple[LegNote, ...]
    same_element: tuple[tuple[str, str], ...]
    """(child INVITE source, parent INVITE destination): two endpoints of one element."""


# -- call stories as groups of call records --------------------------------------------------


def groups(trace: Trace) -> list[list[int]]:
    """Call stories as lists of indexes into ``trace.call_records``."""
    corr = trace.correlation
    if corr is None or len(corr.group_of) != len(trace.call_records):
        return [[i] for i in range(len(trace.call_records))]
    return corr.groups


def story_index(trace: Trace, record: int) -> int:
    """The number of the call story that call record ``record`` belongs to."""
    corr = trace.correlation
    if corr is None or len(corr.group_of) != len(trace.call_records):
        return record
    return corr.group_of[record]


# -- correlation links -----------------------------------------------------------------------


def _addr_text(addr: Addr | None) -> str | None:
    if addr is None:
        return None
    return f"[{addr[0]}]:{addr[1]}" if ":" in addr[0] else f"{addr[0]}:{addr[1]}"


def _piece(e: Evidence) -> str:
    return f"{e.rule}: {e.field}: {e.a} ~ {e.b} ({e.weight:+g})"


def _short(evidence: tuple[Evidence, ...]) -> str:
    parts = []
    for e in evidence:
        if e.weight == 0:
            continue
        field = f" [{e.field}]" if abs(e.weight) >= STRONG else ""
        parts.append(f"{e.rule}{field} {e.weight:+g}")
    return ", ".join(parts)


def link_note(trace: Trace, link: LegLink) -> LegNote:
    """The note of one correlation link (``link.b`` continues ``link.a``)."""
    corr = trace.correlation
    facts = trace.leg_facts
    role = corr.roles[link.b] if corr is not None and corr.roles else "b-leg"
    return LegNote(
        call_id=facts[link.b].call_id,
        role=role,
        linked_to=facts[link.a].call_id,
        rule=link.rule,
        confidence=link.confidence,
        evidence=tuple(_piece(e) for e in link.evidence if e.weight != 0),
        short=_short(link.evidence),
    )


def _same_element(trace: Trace, link: LegLink, role: str) -> tuple[str, str] | None:
    """(child's INVITE source, parent's INVITE destination) when the link went through
    that host (the ``hop`` rule fired) and is not a transfer."""
    if role == "transfer" or not any(e.rule == "hop" for e in link.evidence):
        return None
    src = _addr_text(trace.leg_facts[link.b].near.src)
    dst = _addr_text(trace.leg_facts[link.a].far.dst)
    if src is None or dst is None or src == dst:
        return None
    return src, dst


# -- PBX log ties ----------------------------------------------------------------------------


class ChannelLinks:
    """Call-IDs tied by PBX ``originate``/``bridge`` lines, indexed once per trace."""

    def __init__(self, events: list[ChannelEvent]) -> None:
        self.channel_call: dict[str, str] = {}
        self.channels_of: dict[str, set[str]] = defaultdict(set)
        for e in events:
            if e.call_id:
                self.channel_call[e.channel] = e.call_id
                self.channels_of[e.call_id].add(e.channel)
        self.adjacent: dict[str, list[tuple[str | None, ChannelEvent]]] = defaultdict(list)
        for e in events:
            if e.kind.value not in LINK_KINDS or not e.peer:
                continue
            other = _channel_named(e.peer, self.channel_call)
            self.adjacent[e.channel].append((other, e))
            if other is not None:
                self.adjacent[other].append((e.channel, e))

    def linked(self, call_ids: tuple[str, ...]) -> list[LegNote]:
        """Notes for the Call-IDs the log ties to ``call_ids`` (which are left out)."""
        if not self.adjacent:
            return []
        known = set(call_ids)
        frontier = {ch for cid in call_ids for ch in self.channels_of.get(cid, ())}
        seen: set[str] = set()
        out: list[LegNote] = []
        for _ in range(MAX_LINK_ROUNDS):
            found: set[str] = set()
            for ch in frontier - seen:
                seen.add(ch)
                for other, e in self.adjacent.get(ch, ()):
                    for c in (ch, other):
                        cid = self.channel_call.get(c or "")
                        if cid and cid not in known:
                            known.add(cid)
                            out.append(_log_note(cid, e))
                            found |= self.channels_of.get(cid, set())
                    if other is not None:
                        found.add(other)
            frontier = found - seen
            if not frontier:
                break
        return out


def _log_note(call_id: str, e: ChannelEvent) -> LegNote:
    text = f"{e.kind.value} {e.channel} -> {e.peer} (log line {e.line})"
    return LegNote(call_id, "log", None, e.kind.value, None, (text,), text)


def _channel_named(peer: str, channel_call: dict[str, str]) -> str | None:
    """The channel a log's ``peer`` text names (FreeSWITCH logs the name or a prefix)."""
    if peer in channel_call:
        return peer
    found = [ch for ch in channel_call if ch.startswith(peer) or peer.startswith(ch)]
    return found[0] if len(found) == 1 else None


# -- the story of one call record ------------------------------------------------------------


class Stories:
    """Look-ups over one Trace (links by child, log ties, records by Call-ID), built once
    and shared by every call's story."""

    def __init__(self, trace: Trace) -> None:
        self.trace = trace
        self.groups = groups(trace)
        corr = trace.correlation
        self.link_of: dict[int, LegLink] = {}
        if corr is not None and len(corr.group_of) == len(trace.call_records):
            self.link_of = {link.b: link for link in corr.links}
        self.channels = ChannelLinks(trace.channel_event_list)
        self.calls_by_id: dict[str, list[int]] = {}
        for i, c in enumerate(trace.call_records):
            for cid in c.call_ids:
                self.calls_by_id.setdefault(cid, []).append(i)

    def of(self, record: int) -> Story:
        """The call story of ``trace.call_records[record]``: every leg, how each was tied."""
        trace = self.trace
        members = self.groups[story_index(trace, record)]
        records = list(members)
        call_ids = dict.fromkeys(cid for i in members for cid in trace.call_records[i].call_ids)
        notes: list[LegNote] = []
        merges: list[tuple[str, str]] = []
        for i in members:
            link = self.link_of.get(i)
            if link is None:
                continue
            note = link_note(trace, link)
            notes.append(note)
            pair = _same_element(trace, link, note.role)
            if pair is not None:
                merges.append(pair)
        for note in self.channels.linked(tuple(call_ids)):
            call_ids[note.call_id] = None
            notes.append(note)
            records += [i for i in self.calls_by_id.get(note.call_id, ()) if i not in records]
        return Story(tuple(records), tuple(call_ids), tuple(notes), tuple(merges))


def build_story(trace: Trace, record: int) -> Story:
    """The call story of one call record (indexes the trace; use :class:`Stories` for many)."""
    return Stories(trace).of(record)
