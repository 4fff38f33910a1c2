"""Values that leave the PBX log readers: SIP messages as logged, and channel events.

How this works: a log reader yields :class:`LogMessage` (the bytes of one SIP message,
un-escaped and un-indented, CRLF line endings restored, with an
:class:`~sipflow.sip.message.Origin` whose ``frames`` are 1-based LOG LINE numbers) and
:class:`ChannelEvent` (one PBX state transition or decision, e.g. a FreeSWITCH
``State Change CS_INIT -> CS_ROUTING``), in time order. Times are integer nanoseconds.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from sipflow.sip.message import Origin


class EventKind(enum.Enum):
    """What a channel event reports; values are the names used in tables and JSON."""

    NEW_CHANNEL = "new_channel"
    """A channel was created (FreeSWITCH ``New Channel``, Asterisk ``... allocated``)."""
    STATE_CHANGE = "state_change"
    """Core state machine: FreeSWITCH ``CS_X -> CS_Y``."""
    CALLSTATE_CHANGE = "callstate_change"
    """Call state: FreeSWITCH ``Callstate Change DOWN -> RINGING``."""
    SOFIA_STATE = "sofia_state"
    """SIP stack state: sofia ``entering state [calling][0]`` (new = state, old = status)."""
    DIALPLAN = "dialplan"
    """Routing decision: ``Processing ... in context``, ``Regex (PASS)``, ``Action ...``."""
    APP_EXEC = "app_exec"
    """A dialplan application ran (FreeSWITCH ``EXECUTE``, Asterisk ``Executing [...]``)."""
    ORIGINATE = "originate"
    """Outbound leg result: ``Originate Resulted in Success`` (peer = the new channel)."""
    BRIDGE = "bridge"
    """Two channels bridged (peer = the other channel)."""
    ANSWER = "answer"
    """``Channel [...] has been answered``."""
    HANGUP = "hangup"
    """Hangup with cause (new = cause, old = state at hangup when logged)."""
    CLOSE = "close"
    """Channel closed / destroyed."""
    SIP_CALL_ID = "sip_call_id"
    """The log names the SIP Call-ID of the channel (``sending invite call-id: ...``)."""


@dataclass(frozen=True, slots=True)
class ChannelEvent:
    """One channel state transition or decision read from a PBX log."""

    ts: int
    """Time (ns since the Unix epoch; log times are read as UTC)."""
    channel: str
    """Channel name, e.g. ``sofia/internal/1001@10.0.0.1`` or ``PJSIP/1001-0000001e``."""
    uuid: str | None
    """Channel uuid when the log gives one (FreeSWITCH)."""
    kind: EventKind
    """What happened."""
    old: str | None
    """State before (or the first value of the event), None when not logged."""
    new: str | None
    """State after (or the event's main value: cause, application, decision)."""
    call_id: str | None
    """SIP Call-ID of the channel's dialog when the log ties it (see ``link``)."""
    line: int
    """1-based line number of the event in the log."""
    text: str
    """The log line as read (HTML-unescaped)."""
    source: int = 0
    """Index of the log among the analysed sources."""
    peer: str | None = None
    """Other channel named by the event (originate, bridge, dialplan bridge target)."""
    link: str | None = None
    """Which rule tied ``call_id`` (evidence, e.g. ``callid_line``, ``uuid_near_trace``)."""


@dataclass(frozen=True, slots=True)
class LogMessage:
    """The bytes of one SIP message as logged, ready for ``parse_message(data, origin)``."""

    data: bytes
    origin: Origin
    declared: int | None = None
    """Size the trace line announced (``recv 823 bytes``), None when not logged."""
