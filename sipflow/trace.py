"""The result of an analysis: sources, counts, calls, activity, findings, DataFrames.

How this works: :class:`Trace` holds plain values built by :func:`sipflow.api.analyze`.
``to_dict`` gives the versioned JSON object documented in docs/json.md. The pandas
DataFrames (``messages``, ``transactions``, ``dialogs``, ``calls``, ``findings``) are
built on first access, so a command-line run that only prints a summary never imports
pandas.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sipflow import __version__
from sipflow.findings import Finding
from sipflow.ingest.types import SourceStats
from sipflow.rtp.dtmf import Digit, dtmf_to_dict
from sipflow.sip.message import SipMessage
from sipflow.timestamps import seconds

if TYPE_CHECKING:
    import pandas as pd

    from sipflow.checks.sdp import CallMedia
    from sipflow.correlate.calls import CallRecord
    from sipflow.correlate.facts import LegFacts
    from sipflow.correlate.legs import Correlation
    from sipflow.ingest.pbxlog.types import ChannelEvent
    from sipflow.ingest.tls import TlsSessionFacts
    from sipflow.report.view import CallView
    from sipflow.rtp.streams import RtpStream
    from sipflow.sip.transaction import TransactionRecord

SCHEMA_VERSION = 1


@dataclass
class MethodActivity:
    """Non-call transactions of one method: how many, their final codes, retransmissions."""

    transactions: int = 0
    responses: Counter[str] = field(default_factory=Counter)
    no_final: int = 0
    retransmissions: int = 0


@dataclass
class ActivitySummary:
    """REGISTER, OPTIONS, SUBSCRIBE/NOTIFY, MESSAGE, PUBLISH, ... summarised per method."""

    methods: dict[str, MethodActivity] = field(default_factory=dict)
    records: list[TransactionRecord] = field(default_factory=list)
    keep_records: bool = True

    def add(self, tx: TransactionRecord) -> None:
        m = self.methods.setdefault(tx.method, MethodActivity())
        m.transactions += 1
        if tx.final_status is None:
            m.no_final += 1
        else:
            m.responses[str(tx.final_status)] += 1
        m.retransmissions += tx.retransmissions
        if self.keep_records:
            self.records.append(tx)

    def merge(self, other: ActivitySummary) -> None:
        """Add another shard's activity (:mod:`sipflow.engine.shard`)."""
        for method, theirs in other.methods.items():
            m = self.methods.setdefault(method, MethodActivity())
            m.transactions += theirs.transactions
            m.no_final += theirs.no_final
            m.responses.update(theirs.responses)
            m.retransmissions += theirs.retransmissions
        self.records.extend(other.records)

    @property
    def retransmissions(self) -> int:
        return sum(m.retransmissions for m in self.methods.values())

    def to_list(self) -> list[dict[str, Any]]:
        return [
            {
                "method": method,
                "transactions": m.transactions,
                "responses": dict(sorted(m.responses.items())),
                "no_final": m.no_final,
                "retransmissions": m.retransmissions,
            }
            for method, m in sorted(self.methods.items())
        ]


def event_to_dict(e: ChannelEvent) -> dict[str, Any]:
    """One PBX channel event as in docs/json.md ``channel_events[]``."""
    return {
        "ts": seconds(e.ts),
        "channel": e.channel,
        "uuid": e.uuid,
        "kind": e.kind.value,
        "old": e.old,
        "new": e.new,
        "call_id": e.call_id,
        "peer": e.peer,
        "link": e.link,
        "ref": {"source": e.source, "line": e.line},
    }


# Event kinds whose old -> new values make a channel's state sequence.
_STATE_KINDS = frozenset({"state_change", "callstate_change", "sofia_state", "hangup"})


def channel_sequences(
    events: list[ChannelEvent], call_ids: tuple[str, ...]
) -> list[dict[str, Any]]:
    """Per channel tied to one of ``call_ids``: its state transitions in time order."""
    return ChannelIndex(events).sequences(call_ids)


_ChannelKey = tuple[int, str]


class ChannelIndex:
    """:func:`channel_sequences` for many calls from one pass over the events (a pass per
    call made the JSON of a PBX log calls x events)."""

    def __init__(self, events: list[ChannelEvent]) -> None:
        self._by_call: dict[str | None, set[_ChannelKey]] = {}
        # per channel: (order of its first state event, channel, uuid, state transitions)
        self._states: dict[_ChannelKey, tuple[int, str, str | None, list[str]]] = {}
        for n, e in enumerate(events):
            key = (e.source, e.uuid or e.channel)
            self._by_call.setdefault(e.call_id, set()).add(key)
            if e.kind.value not in _STATE_KINDS:
                continue
            found = self._states.get(key)
            if found is None:
                found = self._states[key] = (n, e.channel, e.uuid, [])
            found[3].append(f"{e.kind.value}:{e.old or ''}->{e.new or ''}")

    def sequences(self, call_ids: tuple[str, ...]) -> list[dict[str, Any]]:
        """Per channel tied to one of ``call_ids``, in order of its first state event."""
        if not self._states:
            return []  # no PBX log among the sources (nearly always)
        tied: dict[_ChannelKey, str] = {}  # channel -> the first of call_ids it is tied to
        for cid in call_ids:
            for k in self._by_call.get(cid, ()):
                tied.setdefault(k, cid)
        found = sorted((self._states[k], tied[k]) for k in tied if k in self._states)
        return [
            {"channel": ch, "uuid": uuid, "call_id": cid, "states": list(st)}
            for (_, ch, uuid, st), cid in found
        ]


def _leg_summary(d: dict[str, Any]) -> dict[str, Any]:
    """What each leg of a call story shows of its own call record."""
    media = d.get("media") or {}
    return {
        "start": d["start"],
        "outcome": d["outcome"],
        "final_code": d["final_code"],
        "final_reason": d["final_reason"],
        "messages": d["messages"],
        "media": media.get("summary"),
    }


CALL_FIELDS = (
    "call_ids",
    "caller",
    "callee",
    "request_uri",
    "start",
    "answer",
    "end",
    "outcome",
    "final_code",
    "final_reason",
    "setup_ms",
    "pdd_ms",
    "duration_s",
    "ended_by",
    "hops",
    "messages",
    "retransmissions",
    "auth_challenges",
)


def call_to_dict(call: CallRecord) -> dict[str, Any]:
    """One call as in docs/json.md ``calls[]``: the keys of CALL_FIELDS, in that order
    (written out rather than looped over: this runs once per call of a capture)."""
    return {
        "call_ids": list(call.call_ids),
        "caller": call.caller,
        "callee": call.callee,
        "request_uri": call.request_uri,
        "start": seconds(call.start),
        "answer": seconds(call.answer),
        "end": seconds(call.end),
        "outcome": call.outcome.value,
        "final_code": call.final_code,
        "final_reason": call.final_reason,
        "setup_ms": call.setup_ms,
        "pdd_ms": call.pdd_ms,
        "duration_s": call.duration_s,
        "ended_by": call.ended_by.value,
        "hops": list(call.hops),
        "messages": call.messages,
        "retransmissions": call.retransmissions,
        "auth_challenges": call.auth_challenges,
    }


@dataclass
class Trace:
    """Everything one analysis found."""

    sources: list[SourceStats]
    counts_requests: dict[str, int]
    counts_responses: dict[str, int]
    transports: dict[str, int]
    sip_messages: int
    malformed: int
    start: int | None
    end: int | None
    call_records: list[CallRecord]
    activity: ActivitySummary
    finding_list: list[Finding]
    message_list: list[SipMessage] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)
    channel_event_list: list[ChannelEvent] = field(default_factory=list)
    call_media: list[CallMedia] = field(default_factory=list)
    """SDP negotiation of each call, aligned with ``call_records``."""
    leg_facts: list[LegFacts] = field(default_factory=list)
    """What leg correlation used of each call record (aligned with ``call_records``)."""
    correlation: Correlation | None = None
    """Call records grouped into call stories (B2BUA legs), with the evidence of each link."""
    rtp_stream_list: list[RtpStream] = field(default_factory=list)
    tls_sessions: list[TlsSessionFacts] = field(default_factory=list)
    """Every TLS connection followed: version, suite, SNI, certificate, decrypted or why not."""
    call_quality: list[dict[str, Any]] = field(default_factory=list)
    """Media quality per direction of each call (empty when no RTP was seen)."""
    call_rtp_digits: list[list[Digit]] = field(default_factory=list)
    """RFC 4733 DTMF digits of each call's RTP streams (aligned with ``call_records``;
    empty when no RTP was seen); SIP INFO digits are on the record (``info_digits``)."""
    _frames: dict[str, pd.DataFrame] = field(default_factory=dict, repr=False)
    _story: dict[int, int] | None = field(default=None, repr=False)

    @property
    def retransmissions(self) -> int:
        return sum(c.retransmissions for c in self.call_records) + self.activity.retransmissions

    def stats(self) -> dict[str, Any]:
        return {
            "sip_messages": self.sip_messages,
            "sip_requests": dict(sorted(self.counts_requests.items())),
            "sip_responses": dict(sorted(self.counts_responses.items())),
            "retransmissions": self.retransmissions,
            "malformed": self.malformed,
            "transports": dict(sorted(self.transports.items())),
            "start": seconds(self.start),
            "end": seconds(self.end),
        }

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of docs/json.md (schema 1)."""
        sources = []
        for s in self.sources:
            d = s.to_dict()
            d["first_ts"] = seconds(s.first_ts)
            d["last_ts"] = seconds(s.last_ts)
            sources.append(d)
        return {
            "schema": SCHEMA_VERSION,
            "sipflow": __version__,
            "sources": sources,
            "stats": self.stats(),
            "calls": self.call_dicts(),
            "activity": self.activity.to_list(),
            "findings": [f.to_dict() for f in self.finding_list],
            "channel_events": [event_to_dict(e) for e in self.channel_event_list],
            "rtp_streams": [self.story_stream(s.to_dict()) for s in self.rtp_stream_list],
            "tls_sessions": [s.to_dict() for s in self.tls_sessions],
        }

    def groups(self) -> list[list[int]]:
        """Call stories as lists of indexes into ``call_records`` (one leg each without
        correlation)."""
        if self.correlation is None:
            return [[i] for i in range(len(self.call_records))]
        return self.correlation.groups

    def story_stream(self, row: dict[str, Any]) -> dict[str, Any]:
        """An RTP stream's ``call`` as the index of its call story in ``calls[]`` (the
        stream was mapped to one leg, a ``call_records`` index), and that leg's Call-ID."""
        leg = row.get("call")
        if leg is not None:
            if self._story is None:
                self._story = {i: g for g, members in enumerate(self.groups()) for i in members}
            row["call"] = self._story.get(leg)
            row["call_id"] = self.call_records[leg].call_ids[0]
        return row

    def call_dicts(self) -> list[dict[str, Any]]:
        """One JSON call per call story: the first leg's view (the caller's), every leg's
        Call-ID in ``call_ids``, message counts over all legs, and ``legs`` with evidence."""
        out = []
        channels = ChannelIndex(self.channel_event_list)
        corr = self.correlation if self.leg_facts else None
        if corr is not None:
            from sipflow.correlate.legs import group_to_dict

            by_child = corr.links_by_child()
        for g, members in enumerate(self.groups()):
            legs = [self._call_dict(i, self.call_records[i], channels) for i in members]
            root = dict(legs[0])  # the first leg's own view, built once
            if corr is not None:
                extra = group_to_dict(corr, self.leg_facts, g, by_child)
                root["call_ids"] = extra["call_ids"]
                for leg, d in zip(extra["legs"], legs, strict=True):
                    leg.update(_leg_summary(d))
                root["legs"] = extra["legs"]
            else:
                root["legs"] = []
            if len(members) > 1:
                # the caller's leg's digits, else those of the first leg that has any (the
                # capture may hold only the far side's media)
                root["dtmf"] = next((d["dtmf"] for d in legs if d["dtmf"]["digits"]), root["dtmf"])
                root["messages"] = sum(d["messages"] for d in legs)
                root["retransmissions"] = sum(d["retransmissions"] for d in legs)
                root["auth_challenges"] = sum(d["auth_challenges"] for d in legs)
                root["hops"] = list(dict.fromkeys(h for d in legs for h in d["hops"]))
                root["channels"] = channels.sequences(tuple(root["call_ids"]))
            out.append(root)
        return out

    def _call_dict(self, index: int, call: CallRecord, channels: ChannelIndex) -> dict[str, Any]:
        out = call_to_dict(call)
        out["channels"] = channels.sequences(call.call_ids)
        out["media"] = self.call_media[index].to_dict() if self.call_media else None
        out["quality"] = self.call_quality[index] if self.call_quality else None
        rtp = self.call_rtp_digits[index] if self.call_rtp_digits else ()
        out["dtmf"] = dtmf_to_dict(rtp, call.info_digits)
        return out

    # -- DataFrames (pandas imported on first use) -------------------------------------

    def _frame(self, name: str) -> pd.DataFrame:
        if name not in self._frames:
            from sipflow.report import frames

            self._frames[name] = getattr(frames, f"{name}_frame")(self)
        return self._frames[name]

    @property
    def messages(self) -> pd.DataFrame:
        """One row per SIP message on the wire (needs ``Options(keep_messages=True)``)."""
        return self._frame("messages")

    @property
    def calls(self) -> pd.DataFrame:
        """One row per call, columns as docs/json.md ``calls[]``."""
        return self._frame("calls")

    @property
    def transactions(self) -> pd.DataFrame:
        """One row per transaction (calls' and non-call activity's)."""
        return self._frame("transactions")

    @property
    def dialogs(self) -> pd.DataFrame:
        """One row per dialog (Call-ID, From tag, To tag)."""
        return self._frame("dialogs")

    @property
    def rtp_streams(self) -> pd.DataFrame:
        """One row per RTP stream (5-tuple + SSRC), docs/media-quality.md."""
        return self._frame("rtp_streams")

    @property
    def channel_events(self) -> pd.DataFrame:
        """One row per PBX channel event from logs (docs/json.md ``channel_events``)."""
        return self._frame("channel_events")

    @property
    def legs(self) -> pd.DataFrame:
        """One row per leg: its call story, role, hop, linked-to, rule, confidence, evidence."""
        return self._frame("legs")

    @property
    def sdp(self) -> pd.DataFrame:
        """One row per m-line per offer/answer exchange (docs/json.md ``media``)."""
        return self._frame("sdp")

    @property
    def findings(self) -> pd.DataFrame:
        """One row per Finding."""
        return self._frame("findings")

    # -- notebooks (sipflow/report/view.py, html.py) -------------------------------------

    def call(self, ident: str | int) -> CallView:
        """One call by Call-ID, unique Call-ID prefix or number; ``.ladder()`` draws it."""
        from sipflow.report.view import CallView

        return CallView.find(self, ident)

    def _repr_html_(self) -> str:
        from sipflow.report.html import trace_html

        return trace_html(self)
