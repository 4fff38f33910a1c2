"""Calls from transactions and dialogs: grouping, hops, auth retries, outcomes, timings.

How this works: :class:`CallBuilder` is sans-IO. Each message fed goes first to a
:class:`~sipflow.sip.transaction.TransactionTracker` (timers fired at ``msg.ts``), then to
its owner: a call (an INVITE without To tag starts or continues one) or non-call activity
(REGISTER, OPTIONS, ...; released as :data:`ActivityRecord` when the transaction ends).
A call is one Call-ID attempt by one caller (From tag): the same INVITE seen at several
hops (more Vias each hop) or forked serially by a proxy stays one call with ``hops``; a
401/407 challenge followed by a new INVITE (new CSeq) is one attempt with
``auth_challenges`` (also when an SBC gives the retry a new From tag: a tag no call of
the Call-ID has, credentials, a higher CSeq, no dialog yet); a new INVITE with another
From tag, after a call that ended, or long after, is a new call. Calls of one Call-ID can
be open together (an SBC that keeps the Call-ID but rewrites the From tag: one call per
side); an in-dialog request goes to the call whose dialog it names. Timings and outcome
come from the hop nearest the caller (the INVITEs with the fewest Vias). A call is
released once its transactions are over and its dialogs ended (or the input ended), so
memory is bounded by the calls still open.
"""

from __future__ import annotations

import enum
from collections import Counter
from dataclasses import dataclass, field

from sipflow.findings import Finding, Severity
from sipflow.frozen import builder
from sipflow.rtp.dtmf import Digit, sip_info_digits
from sipflow.sip.dialog import DialogRecord, Dialogs
from sipflow.sip.message import SipMessage, SipRequest, SipResponse
from sipflow.sip.transaction import (
    Disposition,
    TransactionRecord,
    TransactionTracker,
    TxFeed,
    TxKey,
    ref_of,
)

NS = 1_000_000_000
RETRY_WINDOW = 180 * NS  # how long a challenged (401/407) or redirected call waits for a retry
IDLE_TIMEOUT = 4 * 3600 * NS  # an answered call with no message for this long is released
SCAN_EVERY = NS  # time-based release checks run at most once per second of input time
RETRY_FINALS = frozenset({401, 407, 422, 423})  # RFC 3261 §22.2/§22.3, RFC 4028 §6, §10.2.8

ActivityRecord = TransactionRecord
"""A non-call transaction (REGISTER, OPTIONS, SUBSCRIBE, NOTIFY, MESSAGE, ...)."""


class Outcome(enum.Enum):
    """How a call attempt ended, judged at the hop nearest the caller."""

    ANSWERED = "answered"
    BUSY = "busy"  # 486, 600
    REJECTED = "rejected"  # any other 3xx-6xx
    CANCELLED = "cancelled"  # CANCEL before the final response, or 487
    NO_ANSWER = "no-answer"  # 408/480, or Timer B with no final
    AUTH_FAILED = "auth-failed"  # 401/407 with no retry, or 403 after a challenge
    IN_PROGRESS = "in-progress"  # no final response when the input ended


class EndedBy(enum.Enum):
    CALLER = "caller"
    CALLEE = "callee"
    NONE = "none"


@dataclass(frozen=True, slots=True)
class CallRecord:
    """One call attempt; field names as docs/json.md ``calls[]``. Times are ns."""

    call_ids: tuple[str, ...]
    caller: str | None
    """From URI of the first INVITE."""
    callee: str | None
    """To URI of the first INVITE."""
    request_uri: str | None
    start: int
    """First INVITE at the hop nearest the caller."""
    answer: int | None
    """First 2xx to the INVITE there."""
    end: int | None
    """First BYE of an answered call; the final response of a failed one."""
    outcome: Outcome
    final_code: int | None
    final_reason: str | None
    setup_ms: float | None
    pdd_ms: float | None
    duration_s: float | None
    """2xx to BYE, or to the call's last message when no BYE was seen (the analysis then
    runs it on to the call's last RTP packet when later: ``rtp.mapping.media_extended``)."""
    ended_by: EndedBy
    hops: tuple[str, ...]
    """Distinct ``src -> dst`` paths its INVITE took, in order of appearance."""
    messages: int
    retransmissions: int
    auth_challenges: int
    caller_tag: str | None
    dialogs: tuple[DialogRecord, ...]
    transactions: tuple[TransactionRecord, ...]
    findings: tuple[Finding, ...]
    info_digits: tuple[Digit, ...] = ()
    """DTMF sent in INFO requests (application/dtmf-relay, application/dtmf), time order."""


@dataclass(slots=True)
class BuilderOutput:
    """What one ``feed``/``expire``/``finish`` released."""

    calls: list[CallRecord] = field(default_factory=list)
    activity: list[TransactionRecord] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)

    def extend(self, other: BuilderOutput) -> None:
        self.calls.extend(other.calls)
        self.activity.extend(other.activity)
        self.findings.extend(other.findings)


@dataclass(eq=False, slots=True)
class _Call:
    call_id: str
    caller_tag: str
    first: SipRequest
    dialogs: Dialogs
    last_ts: int
    initial: set[TxKey] = field(default_factory=set)
    open_keys: set[TxKey] = field(default_factory=set)
    records: list[TransactionRecord] = field(default_factory=list)
    hops: dict[str, None] = field(default_factory=dict)
    messages: int = 0
    findings: list[Finding] = field(default_factory=list)
    last_final: int | None = None
    last_cseq: int = -1
    closed: bool = False


class _Activity:
    """Owner marker for non-call transactions."""


_ACTIVITY = _Activity()
_Owner = _Call | _Activity


class CallBuilder:
    """Sans-IO: ``feed(msg)``, ``expire(now)``, ``finish()`` each return a BuilderOutput."""

    def __init__(self) -> None:
        self._tracker = TransactionTracker()
        self._by_cid: dict[str, list[_Call]] = {}  # every open call of a Call-ID, oldest first
        self._calls: dict[int, _Call] = {}  # open calls by id(), in order of creation
        self._dirty: dict[int, _Call] = {}  # calls touched since the last release check
        self._owner: dict[TxKey, _Owner] = {}
        self._last_scan = 0
        self._now = 0
        self.skipped: Counter[str] = Counter()

    # -- public API --------------------------------------------------------------------

    def feed(self, msg: SipMessage) -> BuilderOutput:
        now = msg.ts
        if now > self._now:
            self._now = now
        out = BuilderOutput()
        due = self._tracker.next_deadline()
        if due is not None and due <= now:
            self._expire_due(now, out)  # timers first, so the tracker fires none below
        tf = self._tracker.feed(msg, now)
        if tf.finished:
            self._take_records(tf.finished, out)
        owner = self._route(msg, tf, out)
        if tf.findings:
            self._findings(owner, list(tf.findings), out)
        if isinstance(owner, _Call):
            self._on_call_message(owner, msg, tf, out)
        self._release_ready(out, now)
        return out

    def expire(self, now: int) -> BuilderOutput:
        """Time passed to ``now`` with no message of ours (live idle, another shard's)."""
        out = BuilderOutput()
        self._now = max(self._now, now)
        self._expire_due(now, out)
        self._release_ready(out, now)
        return out

    def _expire_due(self, now: int, out: BuilderOutput) -> None:
        """Fire the §17 timers due by ``now``; what a timer finds (Timer B, F: no final
        response) goes to the call of its own transaction, whichever message's time
        made it fire."""
        records, findings = self._tracker.expire(now)
        if findings:
            owners = {ref_of(r.request): self._owner.get(r.key) for r in records if r.request}
            for f in findings:
                self._findings(owners.get(f.refs), [f], out)
        self._take_records(records, out)

    def finish(self) -> BuilderOutput:
        """End of input: release every transaction and call still open."""
        out = BuilderOutput()
        self._take_records(self._tracker.finish(), out)
        for call in list(self._calls.values()):
            self._release(call, out, final=True)
        return out

    def open_calls(self) -> int:
        return len(self._calls)

    def open_starts(self) -> list[int]:
        """Time of the first message of each call still open, in order of creation (what
        the streaming analysis waits for before writing a call story out)."""
        return [call.first.ts for call in self._calls.values()]

    # -- routing -----------------------------------------------------------------------

    def _route(self, msg: SipMessage, tf: TxFeed, out: BuilderOutput) -> _Owner | None:
        if tf.key is None:
            self.skipped[tf.disposition.value] += 1
            for call in self._newest_first(msg.call_id):
                if _same_parties(call, msg):
                    call.messages += 1
                    call.last_ts = max(call.last_ts, msg.ts)
                    return call
            return None
        known = self._owner.get(tf.key)
        if known is not None:
            return known
        owner = self._new_owner(msg, tf, out)
        self._owner[tf.key] = owner
        if isinstance(owner, _Call):
            owner.open_keys.add(tf.key)
        return owner

    def _new_owner(self, msg: SipMessage, tf: TxFeed, out: BuilderOutput) -> _Owner:
        if not isinstance(msg, SipRequest):
            return _ACTIVITY  # not reached: a response's transaction always has an owner
        method = msg.method.upper()
        if method == "INVITE" and not msg.to_tag:
            return self._invite_owner(msg, tf, out)
        # Several calls of one Call-ID can be open at once: an SBC or B2BUA that keeps the
        # Call-ID but rewrites the From tag (each hop is a call, tied later by
        # same_call_id), or a new attempt while the previous one's dialog still lives. An
        # in-dialog request belongs to the call whose dialog it names (RFC 3261 §12.2.2).
        calls = self._newest_first(msg.call_id)
        if method == "CANCEL":
            for call in calls:
                if msg.from_tag == call.caller_tag:
                    return call
        if msg.to_tag:
            # an ACK goes to the call whose 2xx it acknowledges (RFC 3261 §13.2.2.4); other
            # requests to the oldest call whose dialog still lives (the hop or attempt
            # that created it), else to any call that knows the dialog
            seq = msg.cseq.seq if msg.cseq else -1
            for call in calls:
                if method == "ACK" and call.dialogs.awaits_ack(msg.from_tag, msg.to_tag, seq):
                    return call
            for call in calls[::-1]:
                if call.dialogs.live(msg.from_tag, msg.to_tag):
                    return call
            for call in calls:
                if call.dialogs.resolve(msg.from_tag, msg.to_tag):
                    return call
        if method == "ACK":
            # RFC 3261 §17.1.1.3: the ACK to a non-2xx final; on a reliable transport Timer D
            # is 0, so the INVITE transaction may already be gone when the ACK is seen.
            for call in calls:
                if msg.from_tag == call.caller_tag:
                    return call
        if method in ("ACK", "BYE", "INVITE") and msg.to_tag:
            # RFC 3261 §12.2.2: a UAS answers a request for an unknown dialog with 481
            text = f"{method} for a dialog not seen in the input (Call-ID {msg.call_id})"
            f = Finding(
                "sip.unknown_dialog", Severity.WARNING, text, "RFC 3261 §12.2.2", ref_of(msg)
            )
            out.findings.append(f)
        return _ACTIVITY

    def _invite_owner(self, msg: SipRequest, tf: TxFeed, out: BuilderOutput) -> _Call:
        cid = msg.call_id or ""
        tag = msg.from_tag or ""
        calls = self._newest_first(cid)
        for call in calls:
            if self._continues(call, msg):
                call.initial.add(tf.key)  # type: ignore[arg-type]
                return call
            if call.caller_tag == tag:
                call.closed = True  # the same caller starts a new attempt
        if all(call.caller_tag != tag for call in calls):
            for call in calls:
                if _retagged_retry(call, msg):
                    call.caller_tag = tag
                    call.dialogs.retag(tag)
                    call.initial.add(tf.key)  # type: ignore[arg-type]
                    return call
        call = _Call(cid, tag, msg, Dialogs(cid, tag), msg.ts)
        call.initial.add(tf.key)  # type: ignore[arg-type]
        self._by_cid.setdefault(cid, []).append(call)
        self._calls[id(call)] = call
        return call

    def _newest_first(self, call_id: str | None) -> list[_Call]:
        return self._by_cid.get(call_id or "", [])[::-1]

    def _continues(self, call: _Call, msg: SipRequest) -> bool:
        """Is this new INVITE (no To tag) part of the open attempt ``call``?"""
        if call.closed or msg.from_tag != call.caller_tag:
            return False
        cseq = msg.cseq.seq if msg.cseq else -1
        if cseq == call.last_cseq or call.last_final is None:
            return True  # the same INVITE at another hop, or a fork, or no final yet
        if msg.ts - call.last_ts > RETRY_WINDOW:
            return False
        # RFC 3261 §22.2/§22.3 auth retry, §8.1.3.4 redirect, RFC 4028 422: a new CSeq
        return call.last_final in RETRY_FINALS or 300 <= call.last_final < 400

    # -- per-call events ---------------------------------------------------------------

    def _on_call_message(
        self, call: _Call, msg: SipMessage, tf: TxFeed, out: BuilderOutput
    ) -> None:
        key = tf.key
        if key is None:
            return
        call.messages += 1
        now = msg.ts
        if now > call.last_ts:  # max(), without the call: this runs once per message
            call.last_ts = now
        initial = key in call.initial
        if initial and tf.disposition is Disposition.NEW_REQUEST:
            self._initial_request(call, msg)
        if tf.disposition in _NOT_FOR_DIALOGS or _late_ack(call, msg):
            return
        found: list[Finding] = []
        if isinstance(msg, SipResponse):
            found = self._call_response(call, msg, initial)
        elif msg.to_tag and not initial:
            did, found = call.dialogs.request(msg, now)
            if did is None and msg.method.upper() in ("ACK", "BYE"):
                found.append(_unknown_dialog(msg))
        if found:
            self._findings(call, found, out)

    def _initial_request(self, call: _Call, msg: SipMessage) -> None:
        o = msg.origin
        if o is not None and o.src is not None and o.dst is not None:
            call.hops.setdefault(f"{o.src} -> {o.dst}", None)
        cseq = msg.cseq
        if cseq is not None and cseq.seq != call.last_cseq:
            call.last_cseq = cseq.seq
            call.last_final = None

    def _call_response(self, call: _Call, msg: SipResponse, initial: bool) -> list[Finding]:
        if initial:
            if msg.status >= 200:
                call.last_final = msg.status
            return call.dialogs.invite_response(msg, msg.ts)
        return call.dialogs.response(msg, msg.ts)

    # -- records and release -----------------------------------------------------------

    def _take_records(
        self, records: tuple[TransactionRecord, ...] | list[TransactionRecord], out: BuilderOutput
    ) -> None:
        for rec in records:
            owner = self._owner.pop(rec.key, _ACTIVITY)
            if isinstance(owner, _Call):
                self._dirty[id(owner)] = owner
                owner.open_keys.discard(rec.key)
                owner.records.append(rec)
                if rec.method == "BYE" and rec.timed_out and rec.request is not None:
                    req = rec.request
                    found = owner.dialogs.bye_timed_out(req.from_tag, req.to_tag, rec.last_ts)
                    self._findings(owner, found, out)
            else:
                out.activity.append(rec)

    def _release_ready(self, out: BuilderOutput, now: int) -> None:
        """A call can only become releasable when a record arrives (its last transaction
        ended) or time passes (retry window, idle timeout): check those, not every call."""
        scan = now - self._last_scan >= SCAN_EVERY
        if not scan and not self._dirty:
            return
        if scan:
            self._last_scan = now
        calls = list((self._calls if scan else self._dirty).values())
        self._dirty.clear()
        for call in calls:
            if call.open_keys:
                continue
            if scan:
                self._findings(call, call.dialogs.check_acks(now, final=False), out)
            if _done(call, now):
                self._release(call, out, final=False)

    def _release(self, call: _Call, out: BuilderOutput, final: bool) -> None:
        self._findings(call, call.dialogs.check_acks(self._now, final=True), out)
        if final:
            self._findings(call, _pending_invites(call), out)
        self._calls.pop(id(call), None)
        self._dirty.pop(id(call), None)
        same = self._by_cid.get(call.call_id, [])
        if call in same:
            same.remove(call)
        if not same:
            self._by_cid.pop(call.call_id, None)
        for key in call.open_keys:
            self._owner.pop(key, None)
        out.calls.append(build_record(call))

    def _findings(self, owner: _Owner | None, found: list[Finding], out: BuilderOutput) -> None:
        if not found:
            return
        out.findings.extend(found)
        if isinstance(owner, _Call):
            owner.findings.extend(found)


# Retransmissions, and the ACK to a non-2xx (part of its INVITE transaction, §17.1.1.3)
_NOT_FOR_DIALOGS = frozenset(
    {
        Disposition.REQUEST_RETRANSMISSION,
        Disposition.RESPONSE_RETRANSMISSION,
        Disposition.ACK_NON2XX,
    }
)


def _late_ack(call: _Call, msg: SipMessage) -> bool:
    """An ACK to the call's last non-2xx final seen after its INVITE transaction ended
    (Timer D is 0 on reliable transports, RFC 3261 §17.1.1.2): not a dialog request."""
    if not isinstance(msg, SipRequest) or msg.method.upper() != "ACK":
        return False
    cseq = msg.cseq
    final = call.last_final
    return cseq is not None and cseq.seq == call.last_cseq and final is not None and final >= 300


def _done(call: _Call, now: int) -> bool:
    """Can this call be released? Its transactions are all over when this is asked."""
    if now - call.last_ts >= IDLE_TIMEOUT:
        return True
    if not call.dialogs.all_ended():
        return False
    waiting = call.last_final is not None and (
        call.last_final in RETRY_FINALS or 300 <= call.last_final < 400
    )
    return not waiting or now - call.last_ts > RETRY_WINDOW or call.closed


def _same_parties(call: _Call, msg: SipMessage) -> bool:
    return call.caller_tag in (msg.from_tag, msg.to_tag)


def _unknown_dialog(msg: SipRequest) -> Finding:
    text = f"{msg.method} for a dialog not seen in the input (Call-ID {msg.call_id})"
    return Finding("sip.unknown_dialog", Severity.WARNING, text, "RFC 3261 §12.2.2", ref_of(msg))


def _pending_invites(call: _Call) -> list[Finding]:
    """INVITEs still without a final response when the input ended."""
    out = []
    for rec in call.records:
        if rec.method == "INVITE" and rec.final_status is None and not rec.timed_out:
            refs = ref_of(rec.request) if rec.request is not None else ()
            text = f"INVITE had no final response when the input ended (Call-ID {rec.call_id})"
            out.append(
                Finding("sip.invite_timeout", Severity.WARNING, text, "RFC 3261 §17.1.1.2", refs)
            )
    return out


# -- the record ---------------------------------------------------------------------------


def _ms(a: int | None, b: int | None) -> float | None:
    return None if a is None or b is None else round((b - a) / 1e6, 3)


def _primary(call: _Call) -> list[TransactionRecord]:
    """Initial INVITE transactions at the hop nearest the caller, oldest first."""
    invites = [r for r in call.records if r.key in call.initial]
    if not invites:
        return []
    nearest = min(r.via_count for r in invites)
    return sorted((r for r in invites if r.via_count == nearest), key=lambda r: r.first_ts)


def _final(
    prim: list[TransactionRecord], others: list[TransactionRecord]
) -> TransactionRecord | None:
    """The transaction whose final decides the outcome: a 2xx first, else the last final."""
    for pool in (prim, others):
        ok = [r for r in pool if r.final_status is not None and r.final_status < 300]
        if ok:
            return min(ok, key=lambda r: r.final_ts or 0)
        done = [r for r in pool if r.final_status is not None]
        if done:
            return max(done, key=lambda r: r.final_ts or 0)
    return None


def _outcome(
    final: TransactionRecord | None, prim: list[TransactionRecord], challenges: int
) -> Outcome:
    code = final.final_status if final else None
    cancelled = any(r.cancelled_ts is not None for r in prim)
    if code is not None and code < 300:
        return Outcome.ANSWERED
    if cancelled or code == 487:
        return Outcome.CANCELLED
    if code in (401, 407) or (code == 403 and challenges):
        return Outcome.AUTH_FAILED
    if code in (486, 600):
        return Outcome.BUSY
    if code in (408, 480):
        return Outcome.NO_ANSWER
    if code is not None:
        return Outcome.REJECTED
    if prim and prim[-1].timed_out:
        return Outcome.NO_ANSWER
    return Outcome.IN_PROGRESS


_new_call_record = builder(CallRecord)
_ENDED_BY = {e.value: e for e in EndedBy}  # EndedBy(value) is a slow Python-level call


def _retagged_retry(call: _Call, msg: SipRequest) -> bool:
    """Is this INVITE, with a From tag no call of its Call-ID has, the authenticated retry
    of the challenged attempt ``call``? RFC 3261 §22.2 wants the retry to keep the From tag
    (§8.1.3.5), but some SBCs make a new one per transaction: same Call-ID, a higher CSeq,
    credentials, within the retry window, and no dialog started under the old tag."""
    cseq = msg.cseq.seq if msg.cseq else -1
    return (
        not call.closed
        and call.last_final in (401, 407)
        and cseq > call.last_cseq
        and msg.ts - call.last_ts <= RETRY_WINDOW
        and not call.dialogs.started
        and bool(msg.headers.count("Authorization") or msg.headers.count("Proxy-Authorization"))
    )


def build_record(call: _Call) -> CallRecord:
    prim = _primary(call)
    in_prim = {id(r) for r in prim}  # by identity: record equality compares every field
    others = [r for r in call.records if r.key in call.initial and id(r) not in in_prim]
    final = _final(prim, others)
    challenges = sum(1 for r in prim[:-1] if r.final_status in (401, 407))
    outcome = _outcome(final, prim, challenges)
    start = prim[0].first_ts if prim else call.first.ts
    answer = final.final_ts if final and outcome is Outcome.ANSWERED else None
    bye = call.dialogs.first_bye()
    if answer is not None:
        end = bye[0] if bye else None
        duration = round(((end or call.last_ts) - answer) / NS, 6)
    else:
        end, duration = (final.final_ts if final else None), None
    # setup and PDD run from the INVITE that got the final (after a challenge: the retry),
    # so the time a user takes to answer a credentials prompt is not counted as PDD.
    attempt = final if final is not None and id(final) in in_prim else (prim[-1] if prim else None)
    base = attempt.first_ts if attempt is not None else start
    first_18x = attempt.first_18x_ts if attempt is not None else None
    req = prim[0].request if prim and prim[0].request else call.first
    return _new_call_record(
        call_ids=(call.call_id,),
        caller=req.from_.uri if req.from_ else None,
        callee=req.to.uri if req.to else None,
        request_uri=req.uri,
        start=start,
        answer=answer,
        end=end,
        outcome=outcome,
        final_code=final.final_status if final else None,
        final_reason=final.final_reason if final else None,
        setup_ms=_ms(base, answer),
        pdd_ms=_ms(base, first_18x),
        duration_s=duration,
        ended_by=_ENDED_BY[bye[1]] if bye and answer is not None else EndedBy.NONE,
        hops=tuple(call.hops),
        messages=call.messages,
        retransmissions=sum(r.retransmissions for r in call.records),
        auth_challenges=challenges,
        caller_tag=call.caller_tag or None,
        dialogs=call.dialogs.records(),
        transactions=tuple(sorted(call.records, key=lambda r: r.first_ts)),
        findings=tuple(call.findings),
        info_digits=tuple(
            sip_info_digits(r.request for r in call.records if r.method == "INFO" and r.request)
        ),
    )
