"""Streaming analysis: call stories are written out as they finish, so memory holds only
what is still open (``sipflow analyze --stream``, issue 10).

How this works: the one-process loop (:func:`sipflow.api.analyze_stream`) feeds the
CallBuilder as usual; every call it releases (a leg: record, SDP media, leg facts) and
every RTP stream idle for :attr:`StreamOptions.window_s` (``RtpCollector.release``)
comes here to wait. A :class:`Finalizer` pass runs every ``window_s / 2`` of capture
time: it correlates the waiting legs (:func:`sipflow.correlate.legs.correlate`, the
same rules as the whole-capture run) and writes out each call story that can no longer
change:

* every leg of it ended more than ``window_s`` (plus the media slack) ago, so a leg
  that starts now cannot be its child (host windows close at the parent's final
  response) and its media has been released;
* no call still open started while the story was being set up (``max_setup_s`` before
  its first leg to its last message): an open call there could be its parent or child.

A story that waited :attr:`StreamOptions.horizon_s` is written anyway, so one call that
never ends cannot hold everything after it. Streams are mapped to the waiting legs
(:func:`sipflow.rtp.mapping.place_streams`); those mapped to a story being written go
with it, unmapped ones once no open call could still claim them. Rows go to a
:class:`RowSink` and are forgotten.

What differs from the whole-capture run (docs/scale.md, "Streaming"): calls come in
the order they were finished, not sorted by start; RTP stream ids are given as streams
are released; a stream silent for ``window_s`` and then resumed is two streams; legs of
one story further apart than the window (the late-parent rule's hour, a Call-ID token
shared hours later) are not tied; SRTP is not decrypted (that reads the capture twice:
the ``srtp`` stage given marks such streams and says why, ``srtp.not_decrypted``).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from sipflow.correlate.evidence import REFER_WINDOW
from sipflow.correlate.legs import CorrelateOptions, correlate, subset
from sipflow.findings import Finding
from sipflow.trace import ActivitySummary, Trace

if TYPE_CHECKING:
    from sipflow.checks.sdp import CallMedia
    from sipflow.correlate.calls import CallRecord
    from sipflow.correlate.facts import LegFacts
    from sipflow.rtp.dtmf import Digit
    from sipflow.rtp.mapping import SrtpStage
    from sipflow.rtp.streams import RtpStream

NS = 1_000_000_000
MEDIA_SLACK = 10 * NS
"""Media may outlive the BYE (``sipflow.rtp.mapping.SLACK``, 5 s) and is released
``window_s`` after its last packet: a leg waits this much longer than its media."""

Leg = tuple["CallRecord", "CallMedia", "LegFacts"]


@dataclass(frozen=True, slots=True)
class StreamOptions:
    """How long finished calls wait before they are written (capture time)."""

    window_s: float = 30.0
    """A finished leg waits this long (plus :data:`MEDIA_SLACK`) for legs and media that may
    still join its story; an RTP stream silent this long is finished. A leg's children
    start before its final response (the host windows of sipflow.correlate.legs), a
    transfer target within 32 s of the REFER (RFC 3515; checked apart, below)."""
    horizon_s: float = 900.0
    """A story waiting longer than this (an open call overlaps its setup) is written anyway."""


class RowSink(Protocol):
    """Where finished rows go (``sipflow.report.stream_out`` writes JSON or CSV)."""

    def calls(self, rows: list[dict[str, Any]]) -> None: ...

    def streams(self, rows: list[dict[str, Any]]) -> None: ...

    def findings(self, rows: list[dict[str, Any]]) -> None: ...


class Finalizer:
    """Sans-IO: ``add_legs``, ``add_streams``, then ``flush(now, open_starts)`` whenever
    :meth:`due`, and ``flush(None, [])`` at the end of input (everything goes)."""

    def __init__(
        self,
        sink: RowSink,
        options: StreamOptions | None = None,
        sources_with_rtp: Callable[[], set[int]] | None = None,
        srtp: SrtpStage | None = None,
    ) -> None:
        self._sink = sink
        self._srtp = srtp
        self._opts = options or StreamOptions()
        self._corr = CorrelateOptions()
        self._with_rtp = sources_with_rtp or set
        self._legs: list[Leg] = []
        self._streams: list[RtpStream] = []
        self._next: int | None = None
        self.calls_out = 0
        """Call stories written so far (the next story's index in ``calls[]``)."""
        self.legs_out = 0
        """Legs written so far (``quality.call`` numbers legs in the order written)."""
        self.streams_out = 0
        self.retransmissions = 0
        """Retransmissions of the calls written (``stats.retransmissions`` adds them)."""
        self.waiting_peak = 0
        """Most legs waiting at once (what memory held)."""
        self._media_seen = False

    def add_legs(self, legs: list[Leg]) -> None:
        self._legs.extend(legs)
        self.waiting_peak = max(self.waiting_peak, len(self._legs))

    def add_streams(self, streams: list[RtpStream]) -> None:
        self._streams.extend(streams)

    def due(self, now: int) -> bool:
        """Whether a pass is due at capture time ``now`` (every half window)."""
        if self._next is None:
            self._next = now + int(self._opts.window_s * NS / 2)
            return False
        if now < self._next:
            return False
        self._next = now + int(self._opts.window_s * NS / 2)
        return True

    def flush(self, now: int | None, open_starts: list[int], media: int | None = None) -> None:
        """Write every story that can no longer change at ``now`` (None: all of them),
        with its streams and findings; ``open_starts``: first-message times of the calls
        the CallBuilder still holds; ``media``: the time up to which the RTP collector has
        been fed (None: nothing yet), which a story's media must be behind."""
        legs = self._legs
        corr = correlate([f for _r, _m, f in legs], [], self._corr) if legs else None
        opens = sorted(open_starts)
        groups = corr.groups if corr is not None else []
        if now is not None:
            now = min(now, media if media is not None else -(2**62))
        ready = [g for g in groups if now is None or self._ready(g, now, opens)]
        keep = [i for g in ready for i in g]
        if not keep and not self._streams:
            return
        streams = self._streams_for(set(keep), now, opens)
        self._write(keep, corr, streams)
        gone = set(keep)
        self._legs = [leg for i, leg in enumerate(legs) if i not in gone]

    # -- what is ready ------------------------------------------------------------------

    def _ready(self, members: list[int], now: int, opens: list[int]) -> bool:
        records = [self._legs[i][0] for i in members]
        first = min(r.start for r in records)
        if first < now - int(self._opts.horizon_s * NS):
            return True
        last = max(_last(r) for r in records)
        if last >= now - int(self._opts.window_s * NS) - MEDIA_SLACK:
            return False
        lo = first - int(self._corr.max_setup_s * NS)
        hi = last + int(self._corr.skew_ms * 1_000_000)
        if any(self._legs[i][2].refers for i in members):
            hi = max(hi, last + REFER_WINDOW)  # a transfer target may still be open
        k = bisect_left(opens, lo)
        return k == len(opens) or opens[k] > hi

    def _streams_for(self, keep: set[int], now: int | None, opens: list[int]) -> list[RtpStream]:
        """The waiting streams that go out now: mapped to a story being written, or
        mapped to none and out of reach of every open call (or waiting too long)."""
        if not self._streams:
            return []
        from sipflow.rtp.mapping import SLACK, place_streams

        records = [r for r, _m, _f in self._legs]
        media = [m for _r, m, _f in self._legs]
        out: list[RtpStream] = []
        rest: list[RtpStream] = []
        horizon = None if now is None else now - int(self._opts.horizon_s * NS)
        for st, a, _note in place_streams(self._streams, records, media):
            if a is not None:
                go = a.call in keep
            else:
                go = horizon is None or st.end < horizon or not opens or opens[0] > st.start + SLACK
            (out if go else rest).append(st)
        self._streams = rest
        return out

    # -- writing ------------------------------------------------------------------------

    def _write(self, keep: list[int], corr: Any, streams: list[RtpStream]) -> None:
        from sipflow.rtp.dtmf import calls_rtp_digits
        from sipflow.rtp.mapping import map_streams, media_extended

        legs = [self._legs[i] for i in keep]
        records = [r for r, _m, _f in legs]
        media = [m for _r, m, _f in legs]
        facts = [f for _r, _m, f in legs]
        found: list[Finding] = []
        quality: list[dict[str, Any]] = []
        mapped: list[RtpStream] = []
        with_rtp = self._with_rtp()
        self._media_seen = self._media_seen or bool(streams) or bool(with_rtp)
        if self._media_seen:  # as the whole-capture run: quality only when there is RTP
            # a leg's number (quality.call, findings) counts every leg written before it
            mapped, quality, found = map_streams(
                streams, records, media, with_rtp, self._srtp, first=self.legs_out
            )
        digits: list[list[Digit]] = []
        if mapped:
            records = media_extended(records, mapped)
            digits, dtmf_found = calls_rtp_digits(mapped, media)  # call: the batch's index
            found += dtmf_found
        part = subset(corr, keep) if corr is not None else None
        trace = Trace(
            sources=[],
            counts_requests={},
            counts_responses={},
            transports={},
            sip_messages=0,
            malformed=0,
            start=None,
            end=None,
            call_records=records,
            activity=ActivitySummary(keep_records=False),
            finding_list=[],
            call_media=media,
            leg_facts=facts,
            correlation=part,
            rtp_stream_list=mapped,
            call_quality=quality,
            call_rtp_digits=digits,
        )
        rows = trace.call_dicts() if records else []
        stream_rows = [trace.story_stream(s.to_dict()) for s in mapped]
        for row in stream_rows:
            if row.get("call") is not None:
                row["call"] += self.calls_out
        findings = (part.findings if part is not None else []) + found
        self.calls_out += len(rows)
        self.legs_out += len(records)
        self.streams_out += len(stream_rows)
        self.retransmissions += sum(r.retransmissions for r in records)
        if rows:
            self._sink.calls(rows)
        if stream_rows:
            self._sink.streams(stream_rows)
        if findings:
            self._sink.findings([f.to_dict() for f in findings])


def _last(r: CallRecord) -> int:
    """The last moment the record knows of: its end, answer or start."""
    return max(t for t in (r.start, r.answer, r.end) if t is not None)
