"""SIP dialogs (RFC 3261 §12): identity, early dialogs, forks, in-dialog requests, BYE.

How this works: a dialog is identified by Call-ID, local tag and remote tag (§12). An
observer has no "local" side, so it names them by role: the caller's tag (From tag of
the initial INVITE) and the callee's tag (To tag of a response that created the dialog);
an in-dialog request from either side resolves to the same dialog. A 1xx with a To tag
creates an early dialog, a 2xx confirms one (§12.1.2); when one INVITE forks, each To tag
is its own dialog: the first answered one is confirmed and the other early ones end
(§13.2.2.4 keeps later 2xx as confirmed dialogs too). A non-2xx final ends every early
dialog of the INVITE (§12.3). BYE moves a dialog to Terminating, its final response (or
timeout) to Terminated (§15); a 481 or 408 to any in-dialog request ends it (§12.2.1.2).
All of this is the table ``TRANSITIONS``; an event that the table does not allow is
recorded as a Finding and changes nothing. :class:`Dialogs` holds the dialogs of one call
attempt (one Call-ID and caller tag). Sans-IO: times are passed in.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from sipflow.findings import Finding, Severity
from sipflow.frozen import builder
from sipflow.sip.message import SipRequest, SipResponse
from sipflow.sip.transaction import T1, ref_of


class DialogState(enum.StrEnum):
    INIT = "init"
    EARLY = "early"
    CONFIRMED = "confirmed"
    TERMINATING = "terminating"
    TERMINATED = "terminated"


class DialogEvent(enum.StrEnum):
    EARLY_RESPONSE = "1xx-with-tag"  # §12.1.2: 101-199 with a To tag
    ANSWER = "2xx"  # §12.1.2: 2xx to the initial INVITE
    REJECT = "3xx-6xx"  # §12.3: non-2xx final to the initial INVITE
    OTHER_FORK_ANSWERED = "other-fork-2xx"  # §13.2.2.4: another To tag was answered
    REQUEST = "request"  # any in-dialog request but BYE (ACK, re-INVITE, UPDATE, INFO ...)
    BYE = "bye"  # §15
    BYE_DONE = "bye-final"  # final response to BYE (or its timeout), §15.1.2
    GONE = "481-or-408"  # §12.2.1.2: 481 or 408 to an in-dialog request


_S = DialogState
_E = DialogEvent

TRANSITIONS: dict[tuple[DialogState, DialogEvent], DialogState] = {
    (_S.INIT, _E.EARLY_RESPONSE): _S.EARLY,
    (_S.INIT, _E.ANSWER): _S.CONFIRMED,
    (_S.EARLY, _E.EARLY_RESPONSE): _S.EARLY,
    (_S.EARLY, _E.ANSWER): _S.CONFIRMED,
    (_S.EARLY, _E.REJECT): _S.TERMINATED,
    (_S.EARLY, _E.OTHER_FORK_ANSWERED): _S.TERMINATED,
    (_S.EARLY, _E.REQUEST): _S.EARLY,  # PRACK (RFC 3262), UPDATE (RFC 3311), INFO
    (_S.EARLY, _E.BYE): _S.TERMINATING,  # §15: the caller may BYE an early dialog
    (_S.EARLY, _E.GONE): _S.TERMINATED,
    (_S.CONFIRMED, _E.EARLY_RESPONSE): _S.CONFIRMED,  # a 1xx seen at a later hop
    (_S.CONFIRMED, _E.ANSWER): _S.CONFIRMED,  # the same 2xx seen at another hop
    (_S.CONFIRMED, _E.OTHER_FORK_ANSWERED): _S.CONFIRMED,  # §13.2.2.4: both stay, one BYEd
    (_S.CONFIRMED, _E.REQUEST): _S.CONFIRMED,
    (_S.CONFIRMED, _E.BYE): _S.TERMINATING,
    (_S.CONFIRMED, _E.GONE): _S.TERMINATED,
    (_S.TERMINATING, _E.BYE): _S.TERMINATING,  # BYE retried (auth) or seen at another hop
    (_S.TERMINATING, _E.BYE_DONE): _S.TERMINATED,
    (_S.TERMINATING, _E.REQUEST): _S.TERMINATING,  # an ACK or re-INVITE crossing the BYE
    (_S.TERMINATING, _E.ANSWER): _S.TERMINATING,  # 2xx crossing a BYE of an early dialog
    (_S.TERMINATING, _E.OTHER_FORK_ANSWERED): _S.TERMINATING,
    (_S.TERMINATING, _E.EARLY_RESPONSE): _S.TERMINATING,
    (_S.TERMINATING, _E.GONE): _S.TERMINATED,
    (_S.TERMINATED, _E.BYE_DONE): _S.TERMINATED,  # the final to BYE seen at another hop
}


def step(state: DialogState, event: DialogEvent) -> DialogState | None:
    """The next state, or None when the table does not allow the event."""
    return TRANSITIONS.get((state, event))


@dataclass(frozen=True, slots=True, order=True)
class DialogId:
    """§12: Call-ID + the two tags, named by role (caller = From tag of the INVITE)."""

    call_id: str
    caller_tag: str
    callee_tag: str


@dataclass(frozen=True, slots=True)
class DialogRecord:
    """One dialog as observed."""

    id: DialogId
    state: DialogState
    states: tuple[tuple[int, DialogState], ...]
    """(ts, state) entered, in order."""
    created: int
    confirmed: int | None
    """Time of the first 2xx that confirmed it."""
    ended: int | None
    """Time it reached Terminated."""
    ended_why: str | None
    """``bye``, ``rejected``, ``fork-lost``, ``481``, ``408``, or None while open."""
    bye_ts: int | None
    bye_by: str | None
    """``caller`` or ``callee``: whose From tag the first BYE carried."""
    requests: tuple[tuple[str, int], ...]
    """In-dialog requests by method (retransmissions left out), e.g. (("ACK", 1), ("BYE", 1))."""
    reinvites: int


@dataclass(slots=True)
class _Dialog:
    id: DialogId
    created: int
    state: DialogState = DialogState.INIT
    states: list[tuple[int, DialogState]] = field(default_factory=list)
    confirmed: int | None = None
    ended: int | None = None
    ended_why: str | None = None
    bye_ts: int | None = None
    bye_by: str | None = None
    requests: dict[str, int] = field(default_factory=dict)
    reinvites: int = 0
    unacked: dict[int, SipResponse] = field(default_factory=dict)
    last_ts: int = 0


# DialogId(...) / DialogRecord(...) without the frozen __init__ (sipflow.frozen)
_new_id = builder(DialogId)
_new_record = builder(DialogRecord)


class Dialogs:
    """The dialogs of one call attempt: one Call-ID and the caller's From tag."""

    def __init__(self, call_id: str, caller_tag: str) -> None:
        self.call_id = call_id
        self.caller_tag = caller_tag
        self._by_tag: dict[str, _Dialog] = {}
        self._reported_acks: set[tuple[str, int]] = set()

    @property
    def started(self) -> bool:
        """Has any dialog (early or confirmed) been created?"""
        return bool(self._by_tag)

    def retag(self, caller_tag: str) -> None:
        """The caller's From tag changed before any dialog was created (an authenticated
        retry sent with a new tag): later dialogs are made with this one."""
        assert not self._by_tag, "a dialog already carries the old tag"
        self.caller_tag = caller_tag

    # -- responses to the initial INVITE ------------------------------------------------

    def invite_response(self, resp: SipResponse, now: int) -> list[Finding]:
        """A response to the INVITE that starts the call (retransmissions not fed)."""
        tag = resp.to_tag
        findings: list[Finding] = []
        if resp.status >= 300:
            for d in self._by_tag.values():
                if d.state is DialogState.EARLY:
                    self._event(d, DialogEvent.REJECT, now, findings, "rejected", resp)
            return findings
        if resp.status == 100 or not tag:
            if resp.status >= 200:
                findings.append(_missing_tag(resp))
            return findings  # §12.1.1: only 101-199 with a To tag create a dialog
        dialog = self._get_or_create(tag, now)
        if resp.status < 200:
            self._event(dialog, DialogEvent.EARLY_RESPONSE, now, findings, msg=resp)
            return findings
        self._answer(dialog, resp, now, findings)
        return findings

    def _answer(self, dialog: _Dialog, resp: SipResponse, now: int, out: list[Finding]) -> None:
        self._event(dialog, DialogEvent.ANSWER, now, out, msg=resp)
        if dialog.confirmed is None:
            dialog.confirmed = now
        self._expect_ack(dialog, resp)
        for other in self._by_tag.values():
            if other is not dialog and other.state is DialogState.EARLY:
                self._event(other, DialogEvent.OTHER_FORK_ANSWERED, now, out, "fork-lost", resp)

    # -- in-dialog requests and their responses ----------------------------------------

    def resolve(self, from_tag: str | None, to_tag: str | None) -> DialogId | None:
        """The dialog an in-dialog request or response belongs to, from either side."""
        if from_tag == self.caller_tag and to_tag in self._by_tag:
            return self._by_tag[to_tag].id
        if to_tag == self.caller_tag and from_tag in self._by_tag:
            return self._by_tag[from_tag].id
        return None

    def live(self, from_tag: str | None, to_tag: str | None) -> bool:
        """Does an in-dialog message with these tags name a dialog not yet terminated?"""
        did = self.resolve(from_tag, to_tag)
        return did is not None and self._by_tag[did.callee_tag].state is not DialogState.TERMINATED

    def awaits_ack(self, from_tag: str | None, to_tag: str | None, seq: int) -> bool:
        """Does the dialog these tags name wait for the ACK of its 2xx to CSeq ``seq``?"""
        did = self.resolve(from_tag, to_tag)
        return did is not None and seq in self._by_tag[did.callee_tag].unacked

    def request(self, req: SipRequest, now: int) -> tuple[DialogId | None, list[Finding]]:
        """An in-dialog request (not a retransmission). None when no dialog matches."""
        did = self.resolve(req.from_tag, req.to_tag)
        if did is None:
            return None, []
        dialog = self._by_tag[did.callee_tag]
        findings: list[Finding] = []
        method = req.method.upper()
        dialog.requests[method] = dialog.requests.get(method, 0) + 1
        if method == "BYE":
            if dialog.bye_ts is None:
                dialog.bye_ts = now
                dialog.bye_by = "caller" if req.from_tag == self.caller_tag else "callee"
            self._event(dialog, DialogEvent.BYE, now, findings, msg=req)
            return did, findings
        if method == "ACK":
            cseq = req.cseq
            dialog.unacked.pop(cseq.seq if cseq else -1, None)
        elif method == "INVITE":
            dialog.reinvites += 1
        self._event(dialog, DialogEvent.REQUEST, now, findings, msg=req)
        return did, findings

    def response(self, resp: SipResponse, now: int) -> list[Finding]:
        """A final or provisional response to an in-dialog request (not retransmitted)."""
        did = self.resolve(resp.from_tag, resp.to_tag)
        cseq = resp.cseq
        if did is None or cseq is None or resp.status < 200:
            return []
        dialog = self._by_tag[did.callee_tag]
        findings: list[Finding] = []
        if resp.status in (481, 408):
            # RFC 3261 §12.2.1.2: the dialog is gone
            if resp.status == 481:
                findings.append(_gone(resp, cseq.method))
            self._event(dialog, DialogEvent.GONE, now, findings, str(resp.status), resp)
        elif cseq.method == "BYE" and resp.status not in (401, 407):
            self._event(dialog, DialogEvent.BYE_DONE, now, findings, "bye", resp)
        elif cseq.method == "INVITE" and resp.status < 300:
            self._expect_ack(dialog, resp)
        return findings

    def bye_timed_out(self, from_tag: str | None, to_tag: str | None, now: int) -> list[Finding]:
        """The BYE transaction ended with no final response (Timer F): the dialog is over."""
        did = self.resolve(from_tag, to_tag)
        findings: list[Finding] = []
        if did is not None:
            dialog = self._by_tag[did.callee_tag]
            if dialog.state is DialogState.TERMINATING:
                self._event(dialog, DialogEvent.BYE_DONE, now, findings, "bye")
        return findings

    # -- state ------------------------------------------------------------------------

    def all_ended(self) -> bool:
        """No dialog left that can still carry requests."""
        return all(d.state is DialogState.TERMINATED for d in self._by_tag.values())

    def any_confirmed(self) -> bool:
        return any(d.confirmed is not None for d in self._by_tag.values())

    def first_bye(self) -> tuple[int, str] | None:
        byes = [
            (d.bye_ts, d.bye_by or "none") for d in self._by_tag.values() if d.bye_ts is not None
        ]
        return min(byes) if byes else None

    def check_acks(self, now: int, final: bool) -> list[Finding]:
        """RFC 3261 §13.3.1.4: a 2xx not ACKed within 64*T1 (or by the end) is reported."""
        out: list[Finding] = []
        for d in self._by_tag.values():
            for seq, resp in list(d.unacked.items()):
                if final or now - resp.ts >= 64 * T1 or d.state is DialogState.TERMINATED:
                    del d.unacked[seq]
                    out.append(_no_ack(resp))
        return out

    def records(self) -> tuple[DialogRecord, ...]:
        return tuple(_record(d) for d in sorted(self._by_tag.values(), key=lambda d: d.created))

    # -- helpers ------------------------------------------------------------------------

    def _get_or_create(self, tag: str, now: int) -> _Dialog:
        dialog = self._by_tag.get(tag)
        if dialog is None:
            dialog = _Dialog(_new_id(self.call_id, self.caller_tag, tag), now)
            self._by_tag[tag] = dialog
        return dialog

    @staticmethod
    def _expect_ack(dialog: _Dialog, resp: SipResponse) -> None:
        cseq = resp.cseq
        if cseq is not None and cseq.seq not in dialog.unacked:
            dialog.unacked[cseq.seq] = resp

    @staticmethod
    def _event(
        d: _Dialog,
        event: DialogEvent,
        now: int,
        out: list[Finding],
        why: str | None = None,
        msg: SipRequest | SipResponse | None = None,
    ) -> None:
        d.last_ts = now
        nxt = TRANSITIONS.get((d.state, event))  # step(), inlined: once per dialog message
        if nxt is None:
            text = f"dialog {d.id.call_id} got {event.value} in state {d.state.value}"
            if d.ended_why:
                text += f" (it ended: {d.ended_why})"
            refs = ref_of(msg) if msg is not None else ()
            out.append(
                Finding("sip.dialog_unexpected", Severity.WARNING, text, "RFC 3261 §12", refs)
            )
            return
        if nxt is d.state:
            return
        d.state = nxt
        d.states.append((now, nxt))
        if nxt is DialogState.TERMINATED:
            d.ended = now
            d.ended_why = why


def _record(d: _Dialog) -> DialogRecord:
    return _new_record(
        id=d.id,
        state=d.state,
        states=tuple(d.states),
        created=d.created,
        confirmed=d.confirmed,
        ended=d.ended,
        ended_why=d.ended_why,
        bye_ts=d.bye_ts,
        bye_by=d.bye_by,
        requests=tuple(sorted(d.requests.items())),
        reinvites=d.reinvites,
    )


def _missing_tag(resp: SipResponse) -> Finding:
    text = f"{resp.status} to INVITE has no To tag (Call-ID {resp.call_id})"
    return Finding("sip.missing_to_tag", Severity.ERROR, text, "RFC 3261 §8.2.6.2", ref_of(resp))


def _gone(resp: SipResponse, method: str) -> Finding:
    text = f"481 to in-dialog {method}: the peer has no such dialog (Call-ID {resp.call_id})"
    return Finding("sip.dialog_481", Severity.WARNING, text, "RFC 3261 §12.2.1.2", ref_of(resp))


def _no_ack(resp: SipResponse) -> Finding:
    cseq = resp.cseq
    seq = cseq.seq if cseq else "?"
    text = f"{resp.status} to INVITE (CSeq {seq}) was never ACKed (Call-ID {resp.call_id})"
    return Finding("sip.no_ack", Severity.ERROR, text, "RFC 3261 §13.3.1.4", ref_of(resp))
