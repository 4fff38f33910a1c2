"""Values of the B2BUA core: actions, events, calls and legs, ids, and small helpers.

How this works: the core (:mod:`sipflow.b2bua.core`) returns :class:`Send` and
:class:`CallEvent` actions and keeps each call as a :class:`Call` with an A and a B
:class:`Leg` (one dialog each). :class:`Ids` makes tags, branches and Call-IDs from a
seeded generator, so a run can be repeated; nothing here does I/O or reads a clock.
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


Action = Send | CallEvent


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

    @property
    def confirmed(self) -> bool:
        return self.state is LegState.ACTIVE


@dataclass(eq=False, slots=True)
class Call:
    uuid: str
    start: int
    route: Route | None = None
    a: Leg | None = None
    b: Leg | None = None
    b_call_ids: list[str] = field(default_factory=list)
    answer: int | None = None
    end: int | None = None
    final_code: int | None = None
    final_reason: str = ""
    outcome: str = "in-progress"
    cancelled: bool = False
    ended_by: str = "none"
    deadline: int | None = None
    """No-answer timer (core level; 408 to the caller)."""
    srtp_offer: list[media.Crypto] = field(default_factory=list)
    """SDES suites we offered on the B leg (RFC 4568)."""
    b_offer: bytes = b""
    """The body of our INVITE on the B leg (re-sent with credentials)."""
    srtp_answer: media.Crypto | None = None
    """The suite the B leg's answer selected."""
    done: bool = False


@dataclass(slots=True)
class _Client:
    """A request we sent: which leg, and which server transaction waits for its answer."""

    leg: Leg
    method: str
    relay: tuple[Leg, SipRequest, TxKey] | None = None


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
