"""SIP transactions (RFC 3261 §17, RFC 6026): identity, the four machines as tables, a tracker.

How this works: a transaction is identified as in §17.1.3 / §17.2.3: the top Via branch
(when it starts with the magic cookie ``z9hG4bK``) plus the Via sent-by plus the method,
where an ACK is looked up under its INVITE and a CANCEL is its own transaction sharing the
INVITE's branch (§9.1). Without the cookie the RFC 2543 fallback key is used (Call-ID,
From tag, CSeq number, method, top Via). The four machines (INVITE client, non-INVITE
client, INVITE server, non-INVITE server) are the dict ``TRANSITIONS`` of
``(kind, state, event) -> state``, written from the §17 figures with the RFC 6026
``Accepted`` state. A passive observer drives the client machines with what it sees on
the wire (the request, its retransmissions, 1xx, 2xx, 3xx-6xx, the ACK) and with timers
computed from the ``now`` passed in: a transaction still Calling/Trying at Timer B/F
(64*T1) has timed out. Rows that only an observer needs (a retransmission that crossed a
response on the wire) are in ``OBSERVED``, kept apart so ``TRANSITIONS`` stays §17.
Anything else is an illegal transition: it is recorded as a Finding, never raised, and the
state does not change. :class:`TransactionTracker` is sans-IO: ``feed(msg, now)`` and
``expire(now)`` return values; nothing here reads a clock. Timers sit in one heap; an
entry whose transaction moved to another state or ended is stale and skipped when popped,
and stale entries are dropped in bulk once they outnumber the live ones
(:func:`compact_timers`), so the heap is bounded by the open transactions, not by the
message rate times the longest timer (Timer C: 3 min).

A live user agent (the B2BUA) runs the same ``TRANSITIONS`` in :class:`LiveTransactions`,
as client or server: it keeps the bytes it last sent per transaction and returns
:class:`Retransmit` actions for Timers A, E and G (and the UAS core's 2xx retransmission,
§13.3.1.4), :class:`TxTerminated` when a machine ends (Timer B/F/H timeouts and transport
errors named), and ``next_deadline()`` for the one timer of the asyncio layer.
"""

from __future__ import annotations

import enum
import heapq
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple, TypeVar

from sipflow.findings import Finding, Ref, Severity
from sipflow.frozen import builder
from sipflow.ingest.types import Endpoint, Transport
from sipflow.memo import remember
from sipflow.sip.message import SipMessage, SipRequest, SipResponse

MAGIC_COOKIE = "z9hG4bK"  # RFC 3261 §8.1.1.7
MS = 1_000_000
T1 = 500 * MS  # RFC 3261 §17.1.1.1: RTT estimate, default 500 ms
T2 = 4000 * MS  # RFC 3261 §17.1.2.2: maximum retransmit interval for non-INVITE
T4 = 5000 * MS  # RFC 3261 §17.1.2.2: maximum duration a message remains in the network
TIMER_C = 180_000 * MS  # RFC 3261 §16.6 step 11: proxy INVITE timer, > 3 min


class TxKind(enum.StrEnum):
    """Which of the four §17 machines (plus the observer's end-to-end ACK, see ``ACK_2XX``)."""

    INVITE_CLIENT = "invite-client"  # RFC 3261 §17.1.1, RFC 6026 §8.4
    NON_INVITE_CLIENT = "non-invite-client"  # RFC 3261 §17.1.2
    INVITE_SERVER = "invite-server"  # RFC 3261 §17.2.1, RFC 6026 §8.7
    NON_INVITE_SERVER = "non-invite-server"  # RFC 3261 §17.2.2
    ACK_2XX = "ack-2xx"  # §13.2.2.4: ACK to a 2xx is sent by the UAC core, no machine


class TxState(enum.StrEnum):
    INIT = "init"
    CALLING = "calling"
    TRYING = "trying"
    PROCEEDING = "proceeding"
    COMPLETED = "completed"
    ACCEPTED = "accepted"  # RFC 6026 §7.1 / §7.2
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


class TxEvent(enum.StrEnum):
    """What drives a machine: a message sent or received, or a timer firing."""

    REQUEST = "request"
    REQUEST_RETRANSMIT = "request-retransmit"
    PROVISIONAL = "1xx"
    SUCCESS = "2xx"
    FAILURE = "3xx-6xx"
    ACK = "ack"
    TRANSPORT_ERROR = "transport-error"
    TIMER_A = "timer-a"
    TIMER_B = "timer-b"
    TIMER_C = "timer-c"
    TIMER_D = "timer-d"
    TIMER_E = "timer-e"
    TIMER_F = "timer-f"
    TIMER_G = "timer-g"
    TIMER_H = "timer-h"
    TIMER_I = "timer-i"
    TIMER_J = "timer-j"
    TIMER_K = "timer-k"
    TIMER_L = "timer-l"
    TIMER_M = "timer-m"


_K = TxKind
_S = TxState
_E = TxEvent

# (kind, state, event) -> next state, as drawn in RFC 3261 Figures 5-8 and RFC 6026 §7.
TRANSITIONS: dict[tuple[TxKind, TxState, TxEvent], TxState] = {
    # INVITE client, §17.1.1.2 (Figure 5) + RFC 6026 §8.4 (2xx -> Accepted, Timer M)
    (_K.INVITE_CLIENT, _S.INIT, _E.REQUEST): _S.CALLING,
    (_K.INVITE_CLIENT, _S.CALLING, _E.TIMER_A): _S.CALLING,
    (_K.INVITE_CLIENT, _S.CALLING, _E.REQUEST_RETRANSMIT): _S.CALLING,  # what Timer A sends
    (_K.INVITE_CLIENT, _S.CALLING, _E.TIMER_B): _S.TERMINATED,
    (_K.INVITE_CLIENT, _S.CALLING, _E.TRANSPORT_ERROR): _S.TERMINATED,
    (_K.INVITE_CLIENT, _S.CALLING, _E.PROVISIONAL): _S.PROCEEDING,
    (_K.INVITE_CLIENT, _S.CALLING, _E.SUCCESS): _S.ACCEPTED,
    (_K.INVITE_CLIENT, _S.CALLING, _E.FAILURE): _S.COMPLETED,
    (_K.INVITE_CLIENT, _S.PROCEEDING, _E.PROVISIONAL): _S.PROCEEDING,
    (_K.INVITE_CLIENT, _S.PROCEEDING, _E.SUCCESS): _S.ACCEPTED,
    (_K.INVITE_CLIENT, _S.PROCEEDING, _E.FAILURE): _S.COMPLETED,
    (_K.INVITE_CLIENT, _S.PROCEEDING, _E.TIMER_C): _S.TERMINATED,  # §16.6/§16.8 proxy
    (_K.INVITE_CLIENT, _S.COMPLETED, _E.FAILURE): _S.COMPLETED,  # retransmitted final
    (_K.INVITE_CLIENT, _S.COMPLETED, _E.ACK): _S.COMPLETED,  # §17.1.1.3: ACK sent
    (_K.INVITE_CLIENT, _S.COMPLETED, _E.TRANSPORT_ERROR): _S.TERMINATED,
    (_K.INVITE_CLIENT, _S.COMPLETED, _E.TIMER_D): _S.TERMINATED,
    (_K.INVITE_CLIENT, _S.ACCEPTED, _E.SUCCESS): _S.ACCEPTED,  # RFC 6026 §8.4
    (_K.INVITE_CLIENT, _S.ACCEPTED, _E.TIMER_M): _S.TERMINATED,
    # non-INVITE client, §17.1.2.2 (Figure 6)
    (_K.NON_INVITE_CLIENT, _S.INIT, _E.REQUEST): _S.TRYING,
    (_K.NON_INVITE_CLIENT, _S.TRYING, _E.TIMER_E): _S.TRYING,
    (_K.NON_INVITE_CLIENT, _S.TRYING, _E.REQUEST_RETRANSMIT): _S.TRYING,  # what Timer E sends
    (_K.NON_INVITE_CLIENT, _S.TRYING, _E.TIMER_F): _S.TERMINATED,
    (_K.NON_INVITE_CLIENT, _S.TRYING, _E.TRANSPORT_ERROR): _S.TERMINATED,
    (_K.NON_INVITE_CLIENT, _S.TRYING, _E.PROVISIONAL): _S.PROCEEDING,
    (_K.NON_INVITE_CLIENT, _S.TRYING, _E.SUCCESS): _S.COMPLETED,
    (_K.NON_INVITE_CLIENT, _S.TRYING, _E.FAILURE): _S.COMPLETED,
    (_K.NON_INVITE_CLIENT, _S.PROCEEDING, _E.TIMER_E): _S.PROCEEDING,
    (_K.NON_INVITE_CLIENT, _S.PROCEEDING, _E.REQUEST_RETRANSMIT): _S.PROCEEDING,
    (_K.NON_INVITE_CLIENT, _S.PROCEEDING, _E.PROVISIONAL): _S.PROCEEDING,
    (_K.NON_INVITE_CLIENT, _S.PROCEEDING, _E.SUCCESS): _S.COMPLETED,
    (_K.NON_INVITE_CLIENT, _S.PROCEEDING, _E.FAILURE): _S.COMPLETED,
    (_K.NON_INVITE_CLIENT, _S.PROCEEDING, _E.TIMER_F): _S.TERMINATED,
    (_K.NON_INVITE_CLIENT, _S.PROCEEDING, _E.TRANSPORT_ERROR): _S.TERMINATED,
    (_K.NON_INVITE_CLIENT, _S.COMPLETED, _E.SUCCESS): _S.COMPLETED,  # absorbed
    (_K.NON_INVITE_CLIENT, _S.COMPLETED, _E.FAILURE): _S.COMPLETED,  # absorbed
    (_K.NON_INVITE_CLIENT, _S.COMPLETED, _E.TIMER_K): _S.TERMINATED,
    # INVITE server, §17.2.1 (Figure 7) + RFC 6026 §7.1 (Accepted, Timer L)
    (_K.INVITE_SERVER, _S.INIT, _E.REQUEST): _S.PROCEEDING,
    (_K.INVITE_SERVER, _S.PROCEEDING, _E.REQUEST_RETRANSMIT): _S.PROCEEDING,
    (_K.INVITE_SERVER, _S.PROCEEDING, _E.PROVISIONAL): _S.PROCEEDING,
    (_K.INVITE_SERVER, _S.PROCEEDING, _E.SUCCESS): _S.ACCEPTED,
    (_K.INVITE_SERVER, _S.PROCEEDING, _E.FAILURE): _S.COMPLETED,
    (_K.INVITE_SERVER, _S.PROCEEDING, _E.TRANSPORT_ERROR): _S.TERMINATED,
    (_K.INVITE_SERVER, _S.COMPLETED, _E.REQUEST_RETRANSMIT): _S.COMPLETED,
    (_K.INVITE_SERVER, _S.COMPLETED, _E.TIMER_G): _S.COMPLETED,
    (_K.INVITE_SERVER, _S.COMPLETED, _E.FAILURE): _S.COMPLETED,  # what Timer G sends
    (_K.INVITE_SERVER, _S.COMPLETED, _E.ACK): _S.CONFIRMED,
    (_K.INVITE_SERVER, _S.COMPLETED, _E.TIMER_H): _S.TERMINATED,
    (_K.INVITE_SERVER, _S.COMPLETED, _E.TRANSPORT_ERROR): _S.TERMINATED,
    (_K.INVITE_SERVER, _S.CONFIRMED, _E.ACK): _S.CONFIRMED,  # absorbed
    (_K.INVITE_SERVER, _S.CONFIRMED, _E.TIMER_I): _S.TERMINATED,
    (_K.INVITE_SERVER, _S.ACCEPTED, _E.REQUEST_RETRANSMIT): _S.ACCEPTED,  # absorbed
    (_K.INVITE_SERVER, _S.ACCEPTED, _E.SUCCESS): _S.ACCEPTED,  # TU retransmits the 2xx
    (_K.INVITE_SERVER, _S.ACCEPTED, _E.ACK): _S.ACCEPTED,  # passed to the TU
    (_K.INVITE_SERVER, _S.ACCEPTED, _E.TIMER_L): _S.TERMINATED,
    # non-INVITE server, §17.2.2 (Figure 8)
    (_K.NON_INVITE_SERVER, _S.INIT, _E.REQUEST): _S.TRYING,
    (_K.NON_INVITE_SERVER, _S.TRYING, _E.REQUEST_RETRANSMIT): _S.TRYING,  # discarded
    (_K.NON_INVITE_SERVER, _S.TRYING, _E.PROVISIONAL): _S.PROCEEDING,
    (_K.NON_INVITE_SERVER, _S.TRYING, _E.SUCCESS): _S.COMPLETED,
    (_K.NON_INVITE_SERVER, _S.TRYING, _E.FAILURE): _S.COMPLETED,
    (_K.NON_INVITE_SERVER, _S.TRYING, _E.TRANSPORT_ERROR): _S.TERMINATED,
    (_K.NON_INVITE_SERVER, _S.PROCEEDING, _E.REQUEST_RETRANSMIT): _S.PROCEEDING,
    (_K.NON_INVITE_SERVER, _S.PROCEEDING, _E.PROVISIONAL): _S.PROCEEDING,
    (_K.NON_INVITE_SERVER, _S.PROCEEDING, _E.SUCCESS): _S.COMPLETED,
    (_K.NON_INVITE_SERVER, _S.PROCEEDING, _E.FAILURE): _S.COMPLETED,
    (_K.NON_INVITE_SERVER, _S.PROCEEDING, _E.TRANSPORT_ERROR): _S.TERMINATED,
    (_K.NON_INVITE_SERVER, _S.COMPLETED, _E.REQUEST_RETRANSMIT): _S.COMPLETED,
    (_K.NON_INVITE_SERVER, _S.COMPLETED, _E.TIMER_J): _S.TERMINATED,
    (_K.NON_INVITE_SERVER, _S.COMPLETED, _E.TRANSPORT_ERROR): _S.TERMINATED,
    # ACK to 2xx (§13.2.2.4): no transaction machine; the observer keeps it for 64*T1 so
    # a re-sent ACK (one per retransmitted 2xx, §13.3.1.4) is counted, not a new request.
    (_K.ACK_2XX, _S.INIT, _E.REQUEST): _S.COMPLETED,
    (_K.ACK_2XX, _S.COMPLETED, _E.REQUEST_RETRANSMIT): _S.COMPLETED,
    (_K.ACK_2XX, _S.COMPLETED, _E.TIMER_M): _S.TERMINATED,
}

# Rows only a passive observer needs: a request retransmission sent before the response
# that ended Calling/Trying reached its sender crosses that response on the wire.
OBSERVED: dict[tuple[TxKind, TxState, TxEvent], TxState] = {
    (_K.INVITE_CLIENT, _S.PROCEEDING, _E.REQUEST_RETRANSMIT): _S.PROCEEDING,
    (_K.INVITE_CLIENT, _S.COMPLETED, _E.REQUEST_RETRANSMIT): _S.COMPLETED,
    (_K.INVITE_CLIENT, _S.ACCEPTED, _E.REQUEST_RETRANSMIT): _S.ACCEPTED,
    (_K.NON_INVITE_CLIENT, _S.COMPLETED, _E.REQUEST_RETRANSMIT): _S.COMPLETED,
}

# What the observer steps by: both tables in one, so a transition is one dict lookup.
_OBSERVER_STEPS = {**TRANSITIONS, **OBSERVED}

# The timer that ends a state, and how long after entering it (unreliable, reliable).
# RFC 3261 §17.1.1.2 (B = 64*T1, D >= 32 s / 0), §17.1.2.2 (F = 64*T1, K = T4 / 0),
# §17.2.1 (H = 64*T1, I = T4 / 0), §17.2.2 (J = 64*T1 / 0), RFC 6026 §8.4/§8.7 (L, M = 64*T1).
TIMEOUTS: dict[tuple[TxKind, TxState], tuple[TxEvent, int, int]] = {
    (_K.INVITE_CLIENT, _S.CALLING): (_E.TIMER_B, 64 * T1, 64 * T1),
    (_K.INVITE_CLIENT, _S.PROCEEDING): (_E.TIMER_C, TIMER_C, TIMER_C),
    (_K.INVITE_CLIENT, _S.COMPLETED): (_E.TIMER_D, 32_000 * MS, 0),
    (_K.INVITE_CLIENT, _S.ACCEPTED): (_E.TIMER_M, 64 * T1, 64 * T1),
    (_K.NON_INVITE_CLIENT, _S.TRYING): (_E.TIMER_F, 64 * T1, 64 * T1),
    (_K.NON_INVITE_CLIENT, _S.PROCEEDING): (_E.TIMER_F, 64 * T1, 64 * T1),
    (_K.NON_INVITE_CLIENT, _S.COMPLETED): (_E.TIMER_K, T4, 0),
    (_K.INVITE_SERVER, _S.COMPLETED): (_E.TIMER_H, 64 * T1, 64 * T1),
    (_K.INVITE_SERVER, _S.CONFIRMED): (_E.TIMER_I, T4, 0),
    (_K.INVITE_SERVER, _S.ACCEPTED): (_E.TIMER_L, 64 * T1, 64 * T1),
    (_K.NON_INVITE_SERVER, _S.COMPLETED): (_E.TIMER_J, 64 * T1, 0),
    (_K.ACK_2XX, _S.COMPLETED): (_E.TIMER_M, 64 * T1, 64 * T1),
}
# Timers B and F run from the first request, not from entering the state (§17.1.1.2).
FROM_START = frozenset({_E.TIMER_B, _E.TIMER_F})
# Timers that end a transaction with no final response: the request timed out.
_TIMEOUT_EVENTS = frozenset({_E.TIMER_B, _E.TIMER_C, _E.TIMER_F})
# TIMEOUTS as the tracker arms them: (unreliable, reliable, runs from the first request)
_ARM = {ks: (u, r, ev in FROM_START) for ks, (ev, u, r) in TIMEOUTS.items()}
LATE_WINDOW = 64 * T1
"""How long a timed-out transaction's key is kept to name a late response as such."""
MAX_TIMED_OUT = 4096
"""At most this many timed-out keys kept (a flood of unanswered requests)."""


COMPACT_SLACK = 64
"""Stale timer entries tolerated beyond the live ones before the heap is rebuilt."""

_Entry = TypeVar("_Entry", bound=tuple[Any, ...])


def compact_timers(heap: list[_Entry], live: Callable[[_Entry], bool], bound: int) -> None:
    """Drop stale entries from a timer heap (in place) once it holds more than
    ``2 * bound + COMPACT_SLACK`` entries, ``bound`` being how many can be live.

    Each rebuild removes more than ``bound + COMPACT_SLACK`` entries, each pushed once, so
    the cost is amortised O(1) per push; called after every push and release, the heap never
    holds more than ``2 * bound + COMPACT_SLACK`` entries."""
    if len(heap) > 2 * bound + COMPACT_SLACK:
        heap[:] = [e for e in heap if live(e)]
        heapq.heapify(heap)


def step(kind: TxKind, state: TxState, event: TxEvent, observer: bool = True) -> TxState | None:
    """The next state, or None when the transition is illegal (the caller records it)."""
    nxt = TRANSITIONS.get((kind, state, event))
    if nxt is None and observer:
        nxt = OBSERVED.get((kind, state, event))
    return nxt


def response_event(status: int) -> TxEvent:
    """1xx / 2xx / 3xx-6xx as a machine event (RFC 3261 §17.1.1.2)."""
    if status < 200:
        return TxEvent.PROVISIONAL
    return TxEvent.SUCCESS if status < 300 else TxEvent.FAILURE


def kind_for(method: str, role: str = "client") -> TxKind:
    """The machine for a method: INVITE or non-INVITE (ACK never starts one), per role."""
    if method == "INVITE":
        return TxKind.INVITE_CLIENT if role == "client" else TxKind.INVITE_SERVER
    return TxKind.NON_INVITE_CLIENT if role == "client" else TxKind.NON_INVITE_SERVER


def is_reliable(transport: Transport) -> bool:
    """Stream transports: Timers D, I, J, K are zero (RFC 3261 §17.1.1.2, §17.1.2.2)."""
    return transport is not Transport.UDP


# -- identity -------------------------------------------------------------------------


class TxKey(NamedTuple):
    """Transaction identity. RFC 3261 §17.2.3: branch + sent-by + method (ACK -> INVITE).

    For an RFC 2543 peer (no magic cookie) ``branch`` holds the fallback identity:
    Call-ID, From tag, CSeq number and the raw top Via (the Request-URI and To tag of the
    §17.2.3 rule are not in responses, so an observer cannot match on them).
    """

    branch: str
    sent_by: str
    method: str
    rfc2543: bool = False


# TxKey built straight from a tuple (one per message): the NamedTuple __new__ is a Python call
_new_key = tuple.__new__


def key_of(msg: SipMessage) -> TxKey | None:
    """The transaction key of a request or a response; None without Via or CSeq."""
    vias = msg.vias
    cseq = msg.cseq
    if not vias or cseq is None:
        return None
    via = vias[0]
    method = msg.method if isinstance(msg, SipRequest) else cseq.method
    method = method.upper()
    if method == "ACK":  # RFC 3261 §17.1.3: an ACK is looked up under its INVITE
        method = "INVITE"
    branch = via.params.get("branch") or ""
    sent_by = _sent_by(via.host, via.port, via.transport)
    if branch.startswith(MAGIC_COOKIE):
        return _new_key(TxKey, (branch, sent_by, method, False))
    # RFC 3261 §17.2.3 / §17.1.3: RFC 2543 fallback
    ident = f"{msg.call_id}|{msg.from_tag or ''}|{cseq.seq}|{branch}"
    return TxKey(ident, sent_by, method, rfc2543=True)


# (host, port, transport) -> sent-by text; bounded, the values come from the wire
_SENT_BY: dict[tuple[str, int | None, str], str] = {}


def _sent_by(host: str, port: int | None, transport: str) -> str:
    """sent-by with the default port filled in (RFC 3261 §18.2.1: 5060, 5061 for TLS), so
    a CANCEL whose Via left out the port still names its INVITE (seen in real captures)."""
    try:
        return _SENT_BY[host, port, transport]
    except KeyError:
        text = _sent_by_text(host, port, transport)
    return remember(_SENT_BY, (host, port, transport), text, 4096)


def _sent_by_text(host: str, port: int | None, transport: str) -> str:
    if port is None:
        port = 5061 if transport in ("TLS", "WSS") else 5060
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


def ref_of(msg: SipMessage) -> tuple[Ref, ...]:
    """The frame a message came from (the last one when it spans several)."""
    o = msg.origin
    if o is None or not o.frames:
        return ()
    return (Ref(o.source, o.frames[-1]),)


# -- records --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TransactionRecord:
    """One transaction as observed, released when its machine reaches Terminated."""

    key: TxKey
    """Identity (§17.1.3 / §17.2.3)."""
    kind: TxKind
    """Which machine tracked it."""
    method: str
    """Request method (ACK for an end-to-end ACK to a 2xx)."""
    branch: str | None
    """Top Via branch of the request (None when it had none)."""
    call_id: str | None
    cseq: int | None
    request: SipRequest | None
    """The first copy of the request seen."""
    hop: tuple[Endpoint | None, Endpoint | None]
    """(src, dst) of the request on the wire."""
    via_count: int
    """Number of Via values in the request: fewer means nearer the originator."""
    first_ts: int
    last_ts: int
    final_status: int | None
    final_reason: str | None
    final_ts: int | None
    provisional: tuple[int, ...]
    """Provisional statuses in order of arrival, retransmissions left out."""
    first_18x_ts: int | None
    to_tags: tuple[str, ...]
    """Distinct To tags in responses (several: forking, §13.2.2.4)."""
    request_retransmissions: int
    response_retransmissions: int
    states: tuple[tuple[int, TxState], ...]
    """(ts, state) entered, in order, from the first state after Init."""
    messages: tuple[SipMessage, ...]
    """Every message of the transaction (request copies, responses, ACK to non-2xx)."""
    timed_out: bool
    """Timer B / F fired with no final response (RFC 3261 §17.1.1.2, §17.1.2.2)."""
    cancelled_ts: int | None
    """When a CANCEL for this INVITE was first seen (§9.1)."""
    ended: str
    """Why the record was released: a timer name, ``end-of-input``."""

    @property
    def retransmissions(self) -> int:
        return self.request_retransmissions + self.response_retransmissions

    @property
    def state(self) -> TxState:
        return self.states[-1][1] if self.states else TxState.INIT


@dataclass(slots=True)
class _Tx:
    key: TxKey
    kind: TxKind
    method: str
    request: SipRequest | None
    first_ts: int
    reliable: bool
    state: TxState = TxState.INIT
    entered: int = 0
    last_ts: int = 0
    final: SipResponse | None = None
    provisional: list[int] = field(default_factory=list)
    first_18x_ts: int | None = None
    to_tags: list[str] = field(default_factory=list)
    seen_responses: set[tuple[int, str | None]] = field(default_factory=set)
    req_rtx: int = 0
    resp_rtx: int = 0
    states: list[tuple[int, TxState]] = field(default_factory=list)
    messages: list[SipMessage] = field(default_factory=list)
    timed_out: bool = False
    cancelled_ts: int | None = None
    acked: bool = False
    generation: int = 0


class Disposition(enum.StrEnum):
    """What one fed message was to its transaction."""

    NEW_REQUEST = "new-request"
    REQUEST_RETRANSMISSION = "request-retransmission"
    ACK_NON2XX = "ack-non-2xx"  # part of the INVITE transaction (§17.1.1.3)
    ACK_2XX = "ack-2xx"  # its own end-to-end request (§13.2.2.4)
    RESPONSE = "response"
    RESPONSE_RETRANSMISSION = "response-retransmission"
    ORPHAN_RESPONSE = "orphan-response"  # no request seen for it
    UNMATCHABLE = "unmatchable"  # no Via or CSeq to build a key from


@dataclass(frozen=True, slots=True)
class TxFeed:
    """The result of feeding one message to the tracker."""

    key: TxKey | None
    """The transaction the message belongs to (None for orphans and unmatchable)."""
    disposition: Disposition
    state: TxState | None
    """State of that transaction after the message."""
    finished: tuple[TransactionRecord, ...] = ()
    """Transactions that reached Terminated (timers up to ``now``, or this message)."""
    findings: tuple[Finding, ...] = ()


# TxFeed(...) / TransactionRecord(...) without the frozen __init__ (sipflow.frozen): one
# per message, one per transaction
_new_feed = builder(TxFeed)
_new_record = builder(TransactionRecord)


@dataclass(frozen=True, slots=True)
class TrackerStats:
    """Messages the tracker could not attach to a transaction, by reason."""

    orphan_responses: int
    unmatchable: int
    illegal_transitions: int
    open: int


class TransactionTracker:
    """Sans-IO transaction tracking for one observation point (or one live endpoint).

    ``feed(msg, now)`` first fires timers due at ``now``, then applies the message;
    ``expire(now)`` fires timers only; ``finish()`` releases what is still open at the
    end of input. ``next_deadline()`` is the earliest pending timer (for a live B2BUA).
    """

    def __init__(self, role: str = "client", observer: bool = True) -> None:
        self.role = role
        self.observer = observer
        self._open: dict[TxKey, _Tx] = {}
        # (deadline, seq, key, the transaction's generation when armed); stale once that
        # transaction moved to another state or was released (keys only: a stale entry must
        # not keep a released transaction's messages alive)
        self._timers: list[tuple[int, int, TxKey, int]] = []
        self._steps = _OBSERVER_STEPS if observer else TRANSITIONS
        self._seq = 0
        self._timed_out: dict[TxKey, tuple[int, str]] = {}  # key -> (time, timer), oldest first
        self.orphan_responses = 0
        self.unmatchable = 0
        self.illegal_transitions = 0

    # -- public API --------------------------------------------------------------------

    def feed(self, msg: SipMessage, now: int) -> TxFeed:
        timers = self._timers
        if timers and timers[0][0] <= now:
            finished, findings = self._fire(now)
        else:
            finished, findings = [], []
        key = key_of(msg)
        if key is None:
            self.unmatchable += 1
            findings.append(_finding_unmatchable(msg))
            return TxFeed(None, Disposition.UNMATCHABLE, None, tuple(finished), tuple(findings))
        if isinstance(msg, SipRequest):
            disp, tx = self._request(key, msg, now, findings)
        else:
            disp, tx = self._response(key, msg, now, findings)
        if tx is None:
            return _new_feed(None, disp, None, tuple(finished), tuple(findings))
        if tx.state is TxState.TERMINATED:
            finished.append(self._release(tx, "message"))
        done = tuple(finished) if finished else ()
        return _new_feed(tx.key, disp, tx.state, done, tuple(findings) if findings else ())

    def expire(self, now: int) -> tuple[list[TransactionRecord], list[Finding]]:
        """Fire every timer due at or before ``now``."""
        return self._fire(now)

    def finish(self) -> list[TransactionRecord]:
        """Release every open transaction (end of input), oldest first."""
        self._timers.clear()  # first: no heap upkeep while everything is released
        out = [self._release(tx, "end-of-input") for tx in list(self._open.values())]
        return sorted(out, key=lambda r: r.first_ts)

    def next_deadline(self) -> int | None:
        timers = self._timers
        while timers and not self._live(timers[0]):
            heapq.heappop(timers)
        return timers[0][0] if timers else None

    def state_of(self, key: TxKey) -> TxState | None:
        tx = self._open.get(key)
        return tx.state if tx else None

    def open_count(self) -> int:
        return len(self._open)

    def held_timers(self) -> int:
        """Timer entries held, live or stale (at most ``2 * open_count() + COMPACT_SLACK``)."""
        return len(self._timers)

    def stats(self) -> TrackerStats:
        return TrackerStats(
            self.orphan_responses, self.unmatchable, self.illegal_transitions, len(self._open)
        )

    # -- requests ----------------------------------------------------------------------

    def _request(
        self, key: TxKey, msg: SipRequest, now: int, findings: list[Finding]
    ) -> tuple[Disposition, _Tx | None]:
        method = msg.method.upper()
        if method == "ACK":
            return self._ack(key, msg, now, findings)
        tx = self._open.get(key)
        if tx is not None:
            tx.req_rtx += 1
            self._apply(tx, TxEvent.REQUEST_RETRANSMIT, msg, now, findings)
            return Disposition.REQUEST_RETRANSMISSION, tx
        tx = self._start(key, kind_for(method, self.role), method, msg, now, findings)
        if method == "CANCEL":
            self._mark_cancel(key, msg, now, findings)
        return Disposition.NEW_REQUEST, tx

    def _ack(
        self, key: TxKey, msg: SipRequest, now: int, findings: list[Finding]
    ) -> tuple[Disposition, _Tx | None]:
        invite = self._open.get(key)
        if invite is not None and invite.final is not None and invite.final.status >= 300:
            # RFC 3261 §17.1.1.3: the ACK to a non-2xx final is part of the transaction
            if invite.acked:
                invite.req_rtx += 1  # re-sent for a retransmitted final
            invite.acked = True
            self._apply(invite, TxEvent.ACK, msg, now, findings)
            return Disposition.ACK_NON2XX, invite
        # RFC 3261 §13.2.2.4 / §17.1.1.3: ACK to 2xx is its own request (own branch)
        ack_key = TxKey(key.branch, key.sent_by, "ACK", key.rfc2543)
        tx = self._open.get(ack_key)
        if tx is not None:
            tx.req_rtx += 1  # §13.3.1.4: re-sent for a retransmitted 2xx
            self._apply(tx, TxEvent.REQUEST_RETRANSMIT, msg, now, findings)
            return Disposition.REQUEST_RETRANSMISSION, tx
        tx = self._start(ack_key, TxKind.ACK_2XX, "ACK", msg, now, findings)
        return Disposition.ACK_2XX, tx

    def _mark_cancel(self, key: TxKey, msg: SipRequest, now: int, findings: list[Finding]) -> None:
        """RFC 3261 §9.1: a CANCEL names its INVITE by the same branch and sent-by."""
        invite = self._open.get(TxKey(key.branch, key.sent_by, "INVITE", key.rfc2543))
        if invite is None:
            findings.append(
                _finding(
                    "sip.cancel_unknown",
                    Severity.WARNING,
                    msg,
                    "CANCEL for an INVITE not seen in the input",
                    "RFC 3261 §9.2",
                )
            )
            return
        if invite.final is None:
            if invite.cancelled_ts is None:
                invite.cancelled_ts = now
        else:
            text = f"CANCEL sent after the INVITE's final response {invite.final.status}"
            findings.append(
                _finding("sip.cancel_after_final", Severity.WARNING, msg, text, "RFC 3261 §9.1")
            )

    def _start(
        self,
        key: TxKey,
        kind: TxKind,
        method: str,
        msg: SipRequest,
        now: int,
        findings: list[Finding],
    ) -> _Tx:
        reliable = is_reliable(msg.origin.transport) if msg.origin else False
        tx = _Tx(key, kind, method, msg, now, reliable, last_ts=now)
        self._open[key] = tx
        self._apply(tx, TxEvent.REQUEST, msg, now, findings)
        return tx

    # -- responses ---------------------------------------------------------------------

    def _response(
        self, key: TxKey, msg: SipResponse, now: int, findings: list[Finding]
    ) -> tuple[Disposition, _Tx | None]:
        tx = self._open.get(key)
        if tx is None and key in self._timed_out:
            findings.append(self._late(key, msg, now))
            return Disposition.ORPHAN_RESPONSE, None
        if tx is None or tx.kind is TxKind.ACK_2XX:
            self.orphan_responses += 1
            findings.append(
                _finding(
                    "sip.orphan_response",
                    Severity.WARNING,
                    msg,
                    f"{msg.status} response with no matching request seen",
                    "RFC 3261 §17.1.3",
                )
            )
            return Disposition.ORPHAN_RESPONSE, None
        ident = (msg.status, msg.to_tag)
        if ident in tx.seen_responses:
            # same status and To tag again for the same transaction: a retransmission
            tx.resp_rtx += 1
            self._apply(tx, response_event(msg.status), msg, now, findings)
            return Disposition.RESPONSE_RETRANSMISSION, tx
        tx.seen_responses.add(ident)
        self._note_response(tx, msg, now)
        self._apply(tx, response_event(msg.status), msg, now, findings)
        return Disposition.RESPONSE, tx

    @staticmethod
    def _note_response(tx: _Tx, msg: SipResponse, now: int) -> None:
        tag = msg.to_tag
        if tag and tag not in tx.to_tags:
            tx.to_tags.append(tag)
        if msg.status < 200:
            tx.provisional.append(msg.status)
            if msg.status >= 180 and tx.first_18x_ts is None:
                tx.first_18x_ts = now
        elif tx.final is None:
            tx.final = msg

    # -- machine -----------------------------------------------------------------------

    def _apply(
        self, tx: _Tx, event: TxEvent, msg: SipMessage | None, now: int, findings: list[Finding]
    ) -> None:
        if msg is not None:
            tx.messages.append(msg)
            if now > tx.last_ts:  # max(), without the call: once per message
                tx.last_ts = now
        nxt = self._steps.get((tx.kind, tx.state, event))  # step(), inlined: once per message
        if nxt is None:
            self.illegal_transitions += 1
            findings.append(_finding_illegal(tx, event, msg))
            return
        if event in _TIMEOUT_EVENTS:
            tx.timed_out = True
        if nxt is not tx.state:
            self._enter(tx, nxt, now)

    def _enter(self, tx: _Tx, state: TxState, now: int) -> None:
        tx.state = state
        tx.entered = now
        tx.states.append((now, state))
        tx.generation += 1
        arm = _ARM.get((tx.kind, state))
        if arm is None:
            return
        unreliable, reliable, from_start = arm
        base = tx.first_ts if from_start else now
        deadline = base + (reliable if tx.reliable else unreliable)
        self._seq += 1
        heapq.heappush(self._timers, (deadline, self._seq, tx.key, tx.generation))
        compact_timers(self._timers, self._live, len(self._open))  # one live entry per tx

    def _live(self, entry: tuple[int, int, TxKey, int]) -> bool:
        tx = self._open.get(entry[2])
        return tx is not None and tx.generation == entry[3]

    def _fire(self, now: int) -> tuple[list[TransactionRecord], list[Finding]]:
        finished: list[TransactionRecord] = []
        findings: list[Finding] = []
        timers = self._timers
        while timers and timers[0][0] <= now:
            deadline, _, key, gen = heapq.heappop(timers)
            tx = self._open.get(key)
            if tx is None or tx.generation != gen:
                continue
            event = TIMEOUTS[(tx.kind, tx.state)][0]
            self._apply(tx, event, None, deadline, findings)
            if event in _TIMEOUT_EVENTS and tx.state is TxState.TERMINATED:
                findings.append(_finding_timeout(tx, event))
                self._remember_timeout(key, deadline, event.value)
            if tx.state is TxState.TERMINATED:
                finished.append(self._release(tx, event.value))
        return finished, findings

    def _remember_timeout(self, key: TxKey, at: int, timer: str) -> None:
        """Keep a timed-out client transaction's key for LATE_WINDOW, so a response that
        comes after all is named as late, not as a response to nothing; bounded by time
        and by MAX_TIMED_OUT."""
        timed_out = self._timed_out
        timed_out[key] = (at, timer)
        while timed_out:
            oldest = next(iter(timed_out))
            if timed_out[oldest][0] >= at - LATE_WINDOW and len(timed_out) <= MAX_TIMED_OUT:
                break
            del timed_out[oldest]

    def _late(self, key: TxKey, msg: SipResponse, now: int) -> Finding:
        at, timer = self._timed_out[key]
        late = (now - at) / (1000 * MS)
        text = (
            f"{msg.status} response to {key.method} came {late:.1f} s after its transaction"
            f" had timed out ({timer}): no client transaction was left to take it"
        )
        return _finding("sip.late_response", Severity.WARNING, msg, text, "RFC 3261 §17.1.2.2")

    def _release(self, tx: _Tx, why: str) -> TransactionRecord:
        self._open.pop(tx.key, None)
        compact_timers(self._timers, self._live, len(self._open))
        return _record(tx, why)


def _record(tx: _Tx, why: str) -> TransactionRecord:
    req = tx.request
    origin = req.origin if req is not None else None
    via = req.top_via if req is not None else None
    cseq = req.cseq if req is not None else None
    final = tx.final
    return _new_record(
        key=tx.key,
        kind=tx.kind,
        method=tx.method,
        branch=via.branch if via else None,
        call_id=req.call_id if req is not None else None,
        cseq=cseq.seq if cseq else None,
        request=req,
        hop=(origin.src, origin.dst) if origin else (None, None),
        via_count=len(req.vias) if req is not None else 0,
        first_ts=tx.first_ts,
        last_ts=tx.last_ts,
        final_status=final.status if final else None,
        final_reason=final.reason if final else None,
        final_ts=final.ts if final else None,
        provisional=tuple(tx.provisional),
        first_18x_ts=tx.first_18x_ts,
        to_tags=tuple(tx.to_tags),
        request_retransmissions=tx.req_rtx,
        response_retransmissions=tx.resp_rtx,
        states=tuple(tx.states),
        messages=tuple(tx.messages),
        timed_out=tx.timed_out,
        cancelled_ts=tx.cancelled_ts,
        ended=why,
    )


# -- findings -------------------------------------------------------------------------


def _finding(code: str, sev: Severity, msg: SipMessage, text: str, rfc: str | None) -> Finding:
    return Finding(code, sev, f"{text} (Call-ID {msg.call_id})", rfc, ref_of(msg))


def _finding_unmatchable(msg: SipMessage) -> Finding:
    return _finding(
        "sip.unmatchable",
        Severity.WARNING,
        msg,
        "message without a usable Via or CSeq cannot join a transaction",
        "RFC 3261 §17.1.3",
    )


def _finding_illegal(tx: _Tx, event: TxEvent, msg: SipMessage | None) -> Finding:
    text = f"{tx.method} {tx.kind.value} transaction got {event.value} in state {tx.state.value}"
    refs = ref_of(msg) if msg is not None else ()
    return Finding("sip.transaction_unexpected", Severity.WARNING, text, "RFC 3261 §17", refs)


def _finding_timeout(tx: _Tx, event: TxEvent) -> Finding:
    refs = ref_of(tx.request) if tx.request is not None else ()
    cid = tx.request.call_id if tx.request is not None else None
    if event is TxEvent.TIMER_C:
        text = f"INVITE got no final response within Timer C (3 min) (Call-ID {cid})"
        return Finding("sip.invite_timeout", Severity.ERROR, text, "RFC 3261 §16.6", refs)
    if tx.kind is TxKind.INVITE_CLIENT:
        text = f"INVITE got no final response within Timer B (64*T1) (Call-ID {cid})"
        return Finding("sip.invite_timeout", Severity.ERROR, text, "RFC 3261 §17.1.1.2", refs)
    text = f"{tx.method} got no final response within Timer F (64*T1) (Call-ID {cid})"
    return Finding("sip.non_invite_timeout", Severity.WARNING, text, "RFC 3261 §17.1.2.2", refs)


# -- retransmissions of live transactions (sipflow.sip.live_tx) ------------------------

# Retransmission timers while a state lasts, on unreliable transports only: (event, first
# interval, cap). RFC 3261 §17.1.1.2 Timer A: T1 doubling, no cap (Timer B ends it);
# §17.1.2.2 Timer E: T1 doubling to T2, T2 in Proceeding; §17.2.1 Timer G: T1 doubling to
# T2; §13.3.1.4: the UAS core re-sends a 2xx at T1 doubling to T2 until ACK. The event is
# what a retransmission is to the machine: Timer A/E re-send the request, Timer G the final
# response, the 2xx timer the 2xx (all self-loops in TRANSITIONS).
RETRANSMIT: dict[tuple[TxKind, TxState], tuple[TxEvent, int, int]] = {
    (_K.INVITE_CLIENT, _S.CALLING): (_E.TIMER_A, T1, 64 * T1),
    (_K.NON_INVITE_CLIENT, _S.TRYING): (_E.TIMER_E, T1, T2),
    (_K.NON_INVITE_CLIENT, _S.PROCEEDING): (_E.TIMER_E, T2, T2),
    (_K.INVITE_SERVER, _S.COMPLETED): (_E.TIMER_G, T1, T2),
    (_K.INVITE_SERVER, _S.ACCEPTED): (_E.SUCCESS, T1, T2),
}
