"""Offer/answer exchanges of one call (RFC 3264, RFC 3261 §13, RFC 3262, RFC 3311).

How this works: :func:`track` takes a call's transaction records, puts their messages on
one timeline and runs each message with a body through a handler chosen from a table by
what it is (INVITE/UPDATE/PRACK request, ACK, response to an INVITE, other response):

- an SDP in an INVITE, UPDATE or PRACK that answers nothing is an **offer**; its answer is
  the SDP in a 1xx/2xx of the same transaction (RFC 3261 §13.2.1, RFC 3311 §5.1,
  RFC 3262 §5). Forked early dialogs answer one offer several times: each distinct answer
  (by To tag and bytes) is its own exchange.
- an INVITE without SDP (late offer) gets its offer in a reliable 1xx (RFC 3262 §5) or the
  2xx; the answer is then in the PRACK or the ACK of that dialog (RFC 3261 §13.2.1).
- a final 3xx-6xx to a transaction that carried an offer ends it unanswered (``rejected``),
  a 2xx without SDP to an unanswered offer, or an ACK without SDP to a 2xx offer, ends it
  ``unanswered``.

Exchanges are kept per leg: the unordered pair of addresses a transaction travelled
between (``Call-ID`` included), so the same INVITE relayed by a proxy is one exchange per
hop. Repeated copies (retransmissions) join the exchange they repeat. SDP seen where no
offer/answer can be (an ACK with nothing pending, a MESSAGE) is counted in ``skipped``.
Bodies whose multipart framing cannot be followed are listed in ``unreadable``.
"""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from sipflow.errors import ParseError
from sipflow.frozen import builder
from sipflow.ingest.types import Endpoint
from sipflow.sdp.model import Sdp, parse_sdp
from sipflow.sdp.multipart import sdp_body
from sipflow.sip.message import SipMessage, SipRequest, SipResponse
from sipflow.sip.transaction import TransactionRecord, TxKey

LegKey = tuple[str, frozenset[Endpoint | None]]
DialogKey = tuple[str, str, str]  # Call-ID, From tag, To tag


class Party(enum.Enum):
    """Which end of the dialog sent an SDP: the one that sent the initial INVITE or not."""

    CALLER = "caller"
    CALLEE = "callee"


class Status(enum.Enum):
    ANSWERED = "answered"
    REJECTED = "rejected"  # 3xx-6xx final with no answer (488/606: media not acceptable)
    UNANSWERED = "unanswered"  # 2xx/ACK that should have carried the answer did not
    PENDING = "pending"  # no answer yet when the input ended


@dataclass(frozen=True, slots=True)
class Exchange:
    """One offer and its answer (or why there is none)."""

    leg: str
    """``src -> dst`` of the first request seen on this leg."""
    leg_key: LegKey
    method: str
    """Method of the transaction that carried the offer (INVITE, UPDATE, PRACK)."""
    offer_in: str
    """``INVITE``/``UPDATE``/``PRACK`` for a request-borne offer, else the status (``200``)."""
    answer_in: str | None
    offerer: Party
    offer: Sdp
    answer: Sdp | None
    offer_msgs: tuple[SipMessage, ...]
    answer_msgs: tuple[SipMessage, ...]
    status: Status
    final: SipResponse | None
    """The final response of the offer's transaction (the 488 of a rejection)."""
    via_count: int
    """Vias of the INVITE on this leg: fewer means nearer the caller."""
    to_tag: str | None = None
    peer_sdp: Sdp | None = None
    """The last SDP the other party sent on this leg before this offer (its known formats)."""


_new_exchange = builder(Exchange)  # one per offer/answer: without the frozen __init__


@dataclass(slots=True)
class _Pending:
    leg: str
    leg_key: LegKey
    method: str
    offer_in: str
    offerer: Party
    offer_bytes: bytes
    offer_msgs: list[SipMessage]
    via_count: int
    answers: dict[tuple[str, bytes], tuple[str, list[SipMessage]]] = field(default_factory=dict)
    final: SipResponse | None = None
    unanswered: bool = False


@dataclass(slots=True)
class Tracking:
    """What :func:`track` found: exchanges in offer order, plus what it could not use."""

    exchanges: list[Exchange] = field(default_factory=list)
    skipped: Counter[str] = field(default_factory=Counter)
    unreadable: list[tuple[SipMessage, ParseError]] = field(default_factory=list)


class _Tracker:
    def __init__(self, caller_tag: str | None) -> None:
        self.caller_tag = caller_tag
        self.order: list[_Pending] = []
        self.by_tx: dict[TxKey, _Pending] = {}  # offers carried by a request
        self.by_dialog: dict[tuple[LegKey, DialogKey], _Pending] = {}  # carried by a response
        self.legs: dict[LegKey, tuple[str, int]] = {}
        self.out = Tracking()

    # -- helpers ---------------------------------------------------------------------------

    def party(self, msg: SipMessage) -> Party:
        """The sender: a request from the caller's From tag, or a response to the callee's."""
        from_caller = self.caller_tag is None or msg.from_tag == self.caller_tag
        return Party.CALLER if msg.is_request == from_caller else Party.CALLEE

    def leg(self, rec: TransactionRecord) -> tuple[LegKey, str, int]:
        key: LegKey = (rec.call_id or "", frozenset(rec.hop))
        if key not in self.legs:
            src, dst = rec.hop
            vias = rec.via_count if rec.method == "INVITE" else 1_000
            self.legs[key] = (f"{src or '?'} -> {dst or '?'}", vias)
        elif rec.method == "INVITE" and rec.via_count < self.legs[key][1]:
            self.legs[key] = (self.legs[key][0], rec.via_count)
        label, vias = self.legs[key]
        return key, label, vias

    def new_offer(
        self, msg: SipMessage, rec: TransactionRecord, body: bytes, where: str
    ) -> _Pending:
        key, label, vias = self.leg(rec)
        p = _Pending(label, key, rec.method, where, self.party(msg), body, [msg], vias)
        self.order.append(p)
        return p

    # -- handlers --------------------------------------------------------------------------

    def offer_request(self, msg: SipRequest, rec: TransactionRecord, body: bytes | None) -> None:
        known = self.by_tx.get(rec.key)
        if known is not None:  # another copy of the same request
            if body == known.offer_bytes:
                known.offer_msgs.append(msg)
            return
        if body is None:
            return
        if rec.method == "PRACK" and self._answer_dialog(msg, rec, body, "PRACK"):
            return
        self.by_tx[rec.key] = self.new_offer(msg, rec, body, rec.method)

    def ack(self, msg: SipRequest, rec: TransactionRecord, body: bytes | None) -> None:
        if body is not None:
            if not self._answer_dialog(msg, rec, body, "ACK"):
                self.out.skipped["SDP in an ACK with no offer pending"] += 1
            return
        pending = self._dialog_pending(msg, rec)
        if pending is not None and pending.offer_in.startswith("2") and not pending.answers:
            pending.unanswered = True  # RFC 3261 §13.2.1: the ACK must carry the answer

    def response(self, msg: SipResponse, rec: TransactionRecord, body: bytes | None) -> None:
        pending = self.by_tx.get(rec.key)
        if pending is not None:
            self._answer_in_response(pending, msg, body)
            return
        if body is None:
            return
        if rec.method == "INVITE" and (msg.status >= 200 or _reliable(msg)) and msg.status < 300:
            self._late_offer(msg, rec, body)
        elif rec.method == "INVITE" and msg.status < 200:
            self.out.skipped["SDP in an unreliable 1xx to an INVITE without offer"] += 1
        else:
            self.out.skipped[f"SDP in a {msg.status} with no offer pending"] += 1

    def other(self, msg: SipMessage, rec: TransactionRecord, body: bytes | None) -> None:
        if body is not None:
            self.out.skipped[f"SDP in {rec.method} (not an offer/answer method)"] += 1

    # -- answers ---------------------------------------------------------------------------

    def _answer_in_response(self, pending: _Pending, msg: SipResponse, body: bytes | None) -> None:
        if msg.status >= 200 and pending.final is None:
            pending.final = msg
        if msg.status >= 300:
            return
        if body is not None:
            _add_answer(pending, msg, body, str(msg.status))
        elif msg.status >= 200 and not pending.answers:
            pending.unanswered = True  # RFC 3261 §13.2.1: a 2xx to an offer carries the answer

    def _late_offer(self, msg: SipResponse, rec: TransactionRecord, body: bytes) -> None:
        key, _, _ = self.leg(rec)
        dkey = (key, _dialog(msg))
        known = self.by_dialog.get(dkey)
        if known is not None and known.offer_bytes == body:
            known.offer_msgs.append(msg)  # the same offer again (1xx then 2xx, or a copy)
            return
        if known is not None and known.answers:
            self.out.skipped[f"SDP in a {msg.status} after the offer was answered"] += 1
            return
        self.by_dialog[dkey] = self.new_offer(msg, rec, body, str(msg.status))

    def _dialog_pending(self, msg: SipRequest, rec: TransactionRecord) -> _Pending | None:
        key, _, _ = self.leg(rec)
        found = self.by_dialog.get((key, _dialog(msg)))
        if found is None:  # the request took another path (no Record-Route)
            same = [p for (_, d), p in self.by_dialog.items() if d == _dialog(msg)]
            found = same[-1] if len(same) == 1 else None
        return found

    def _answer_dialog(
        self, msg: SipRequest, rec: TransactionRecord, body: bytes, where: str
    ) -> bool:
        pending = self._dialog_pending(msg, rec)
        if pending is None:
            return False
        if pending.answers and (msg.to_tag or "", body) not in pending.answers:
            return False
        _add_answer(pending, msg, body, where)
        return True

    # -- result ----------------------------------------------------------------------------

    def exchanges(self) -> list[Exchange]:
        out: list[Exchange] = []
        latest: dict[tuple[LegKey, Party], Sdp] = {}  # last SDP each party sent, per leg
        for p in self.order:
            offer = parse_sdp(p.offer_bytes)
            other = Party.CALLEE if p.offerer is Party.CALLER else Party.CALLER
            peer = latest.get((p.leg_key, other))
            for answer, where, msgs, tag in self._answers(p):
                status = Status.ANSWERED if answer is not None else _unanswered(p)
                out.append(
                    _new_exchange(
                        p.leg, p.leg_key, p.method, p.offer_in, where, p.offerer, offer,
                        answer, tuple(p.offer_msgs), tuple(msgs), status, p.final,
                        p.via_count, tag, peer,
                    )
                )  # fmt: skip
                if answer is not None:
                    latest[(p.leg_key, other)] = answer
            latest[(p.leg_key, p.offerer)] = offer
        return out

    @staticmethod
    def _answers(p: _Pending) -> list[tuple[Sdp | None, str | None, list[SipMessage], str | None]]:
        if not p.answers:
            return [(None, None, [], None)]
        return [
            (parse_sdp(body), where, msgs, tag or None)
            for (tag, body), (where, msgs) in p.answers.items()
        ]


def _unanswered(p: _Pending) -> Status:
    if p.unanswered:
        return Status.UNANSWERED
    if p.final is not None and p.final.status >= 300:
        return Status.REJECTED
    return Status.PENDING


def _add_answer(pending: _Pending, msg: SipMessage, body: bytes, where: str) -> None:
    key = (msg.to_tag or "", body)
    if key in pending.answers:
        pending.answers[key][1].append(msg)
    else:
        pending.answers[key] = (where, [msg])


def _dialog(msg: SipMessage) -> DialogKey:
    return (msg.call_id or "", msg.from_tag or "", msg.to_tag or "")


def _reliable(msg: SipResponse) -> bool:
    """A reliable provisional response carries RSeq (RFC 3262 §7.1)."""
    return msg.headers.get("rseq") is not None


_Handler = Callable[[_Tracker, SipMessage, TransactionRecord, "bytes | None"], None]


def _handler(msg: SipMessage, rec: TransactionRecord) -> _Handler:
    if isinstance(msg, SipResponse):
        return _Tracker.response  # type: ignore[return-value]
    return _REQUEST_HANDLERS.get(msg.method.upper(), _Tracker.other)


_REQUEST_HANDLERS: dict[str, Callable[..., None]] = {
    "INVITE": _Tracker.offer_request,
    "UPDATE": _Tracker.offer_request,
    "PRACK": _Tracker.offer_request,
    "ACK": _Tracker.ack,
}


def message_sdp(msg: SipMessage) -> bytes | None:
    """The SDP bytes a message carries (None when none). Raises ParseError (multipart)."""
    if not msg.body:
        return None
    return sdp_body(msg.headers.get("content-type"), msg.body)


def _timeline(records: Iterable[TransactionRecord]) -> list[tuple[SipMessage, TransactionRecord]]:
    items = [(m, r) for r in records for m in r.messages]
    items.sort(key=_when)
    return items


def _when(item: tuple[SipMessage, TransactionRecord]) -> tuple[int, int]:
    o = item[0].origin
    return (o.ts, o.frames[-1] if o.frames else 0) if o is not None else (0, 0)


def track(records: Iterable[TransactionRecord], caller_tag: str | None) -> Tracking:
    """Pair offers and answers in a call's transactions (see the module note)."""
    t = _Tracker(caller_tag)
    for msg, rec in _timeline(records):
        try:
            body = message_sdp(msg)
        except ParseError as e:
            t.out.unreadable.append((msg, e))
            body = None
        _handler(msg, rec)(t, msg, rec, body)
    t.out.exchanges = t.exchanges()
    return t.out
