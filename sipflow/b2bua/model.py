"""Values of the B2BUA core: actions, events, calls and legs, ids, and small helpers.

How this works: the core (:mod:`sipflow.b2bua.core`) returns :class:`Send` and
:class:`CallEvent` actions and keeps each call as a :class:`Call` with an A and a B
:class:`Leg` (one dialog each); a blind transfer (:class:`Transfer`) adds a B-side leg
that becomes the call's B leg when the target answers. :class:`Ids` makes tags,
branches and Call-IDs from a seeded generator, so a run can be repeated; nothing here
does I/O or reads a clock.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass, field

from sipflow.b2bua import media
from sipflow.b2bua.config import Route
from sipflow.errors import ParseError
from sipflow.ingest.types import Endpoint, Transport
from sipflow.sip.message import SipRequest
from sipflow.sip.transaction import TxKey
from sipflow.sip.uri import Uri, parse_uri


@dataclass(frozen=True, slots=True)
class Send:
    """Bytes to send to ``dst`` over ``transport``."""

    data: bytes
    dst: Endpoint
    transport: Transport


class EventKind(enum.StrEnum):
    NEW_CHANNEL = "new-channel"
    STATE = "state"  # CS_* channel state
    CALLSTATE = "callstate"  # DOWN / RINGING / EARLY / ACTIVE / HANGUP
    ORIGINATE = "originate"  # B leg result, on the A leg
    ANSWER = "answer"
    HANGUP = "hangup"
    CALL_END = "call-end"


@dataclass(frozen=True, slots=True)
class CallEvent:
    """Something a channel did (FreeSWITCH vocabulary, so the log reads like one)."""

    kind: EventKind
    ts: int
    call: str
    """Call uuid."""
    leg: str
    """Leg (channel) uuid."""
    channel: str
    """Channel name, e.g. ``sofia/internal/100@127.0.0.1``."""
    old: str = ""
    new: str = ""
    detail: str = ""


Action = Send | CallEvent | media.MediaAction


class Ids:
    """Tags, branches, Call-IDs and uuids from a seeded generator (sans-IO, repeatable)."""

    def __init__(self, seed: int | None) -> None:
        self._rnd = random.Random(seed)

    def token(self, n: int = 10) -> str:
        return "".join(self._rnd.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(n))

    def uuid(self) -> str:
        h = f"{self._rnd.getrandbits(128):032x}"
        return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:]}"

    def bytes(self, n: int) -> bytes:
        return self._rnd.randbytes(n)

    def branch(self) -> str:
        return "z9hG4bK" + self.token(16)


class LegState(enum.StrEnum):
    DOWN = "DOWN"
    RINGING = "RINGING"
    EARLY = "EARLY"
    ACTIVE = "ACTIVE"
    HANGUP = "HANGUP"


@dataclass(eq=False, slots=True)
class Leg:
    """One side of a call: a dialog with one peer."""

    uuid: str
    call: Call
    role: str  # "a": we are UAS; "b": we are UAC
    channel: str
    transport: Transport
    peer: Endpoint
    """Where this leg's messages go (the flow the dialog started on)."""
    call_id: str
    local_tag: str
    local_uri: str
    remote_uri: str
    remote_tag: str | None = None
    remote_target: str = ""
    route_set: tuple[str, ...] = ()
    cseq: int = 1
    invite: SipRequest | None = None
    """A leg: the caller's INVITE. B leg: our last INVITE."""
    invite_key: TxKey | None = None
    invite_data: bytes = b""
    ack_data: bytes = b""
    """The ACK we sent for the last 2xx (re-sent for each retransmitted 2xx, §13.2.2.4)."""
    state: LegState = LegState.DOWN
    auth_tries: int = 0
    provisional: bool = False
    route: Route | None = None
    """B side: the route this leg was sent by (target, transport, credentials, SRTP)."""
    offer: bytes = b""
    """B side: the body of our INVITE (re-sent with credentials)."""
    srtp_offer: list[media.Crypto] = field(default_factory=list)
    """B side: the SDES suites we offered on this leg (RFC 4568)."""
    srtp_answer: media.Crypto | None = None
    """B side: the suite the answer selected."""
    sdp: bytes = b""
    """The last SDP this leg's peer sent (an offer or an answer)."""
    referred: Transfer | None = None
    """B side: the transfer this leg was INVITEd for (its target)."""

    @property
    def confirmed(self) -> bool:
        return self.state is LegState.ACTIVE


@dataclass(eq=False, slots=True)
class Transfer:
    """A blind transfer asked by a REFER on ``by`` (RFC 3515; RFC 5589 §6.1)."""

    by: Leg
    """The transferor's leg: the REFER came on it; the NOTIFYs go on it."""
    refer_to: str
    """The Refer-To URI (RFC 3515 §2.1)."""
    referred_by: str
    """The Referred-By value put on the new INVITE (RFC 3892 §3)."""
    event: str
    """The Event of the NOTIFYs: ``refer;id=<CSeq of the REFER>`` (RFC 3515 §2.4.6)."""
    at: int
    """When the REFER came (ns)."""
    leg: Leg | None = None
    """The new leg to the target (None when the Refer-To user has no route)."""
    final_code: int | None = None
    """The target's final answer, as the last NOTIFY reported it; None while pending."""
    final_reason: str = ""
    abandoned: bool = False
    """The call ended, or the no-answer timer fired, before the target answered."""


@dataclass(eq=False, slots=True)
class Call:
    uuid: str
    start: int
    route: Route | None = None
    a: Leg | None = None
    b: Leg | None = None
    b_legs: list[Leg] = field(default_factory=list)
    """Every B-side leg in the order they were INVITEd: the first, then transfer targets."""
    answer: int | None = None
    end: int | None = None
    final_code: int | None = None
    final_reason: str = ""
    outcome: str = "in-progress"
    cancelled: bool = False
    ended_by: str = "none"
    deadline: int | None = None
    """No-answer timer (core level; 408 to the caller)."""
    transfer: Transfer | None = None
    """The transfer in progress (its target not answered yet)."""
    transfers: list[Transfer] = field(default_factory=list)
    done: bool = False
    anchor: media.Anchor | None = None
    """Anchored media (``media = "anchor"``): this call's RTP relay."""

    @property
    def b_call_ids(self) -> list[str]:
        return [leg.call_id for leg in self.b_legs]

    def peer_of(self, leg: Leg) -> Leg | None:
        """The leg bridged to ``leg`` (None for a leg no longer bridged, e.g. a
        transferor after the transfer)."""
        if leg is self.a:
            return self.b
        return self.a if leg is self.b else None

    def legs(self) -> list[Leg]:
        return ([self.a] if self.a is not None else []) + self.b_legs


@dataclass(slots=True)
class _Client:
    """A request we sent: which leg, and which server transaction waits for its answer."""

    leg: Leg
    method: str
    relay: tuple[Leg, SipRequest, TxKey] | None = None
    reinvite: bool = False
    """Our own re-INVITE (hold from a UA, media update after a transfer): ACK and done."""


@dataclass(slots=True)
class Stats:
    received: int = 0
    sent: int = 0
    dropped: dict[str, int] = field(default_factory=dict)

    def drop(self, why: str) -> None:
        self.dropped[why] = self.dropped.get(why, 0) + 1


def _outcome(code: int | None, cancelled: bool) -> str:
    """Same vocabulary as sipflow.correlate.calls.Outcome."""
    if code is not None and code < 300:
        return "answered"
    if cancelled or code == 487:
        return "cancelled"
    if code in (401, 407):
        return "auth-failed"
    if code in (486, 600):
        return "busy"
    if code in (408, 480):
        return "no-answer"
    return "rejected" if code is not None else "in-progress"


def _strip_tag(value: str) -> str:
    """A From/To value without its tag parameter."""
    parts = value.split(";")
    return ";".join(p for p in parts if not p.strip().lower().startswith("tag="))


def _uri_of(value: str) -> str:
    """The URI inside a name-addr (``"x" <sip:a@b>;p`` -> ``sip:a@b``)."""
    if "<" in value and ">" in value:
        return value[value.index("<") + 1 : value.index(">")]
    return value.split(";", 1)[0].strip()


def _parsed_uri(uri: str | None) -> Uri | None:
    if uri is None:
        return None
    try:
        return parse_uri(uri)
    except ParseError:
        return None


def _hostport(uri: str) -> Endpoint | None:
    u = _parsed_uri(uri)
    if u is None or not u.host:
        return None
    default = 5061 if u.scheme == "sips" or u.params.get("transport") == "tls" else 5060
    return Endpoint(u.host.strip("[]"), u.port or default)
