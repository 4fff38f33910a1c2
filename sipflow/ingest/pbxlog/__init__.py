"""PBX debug logs as sources: FreeSWITCH, Asterisk, Kamailio/OpenSIPS, ngrep text.

How this works: :func:`detect` names a log's format from its first bytes (None: not a log
we read, treat it as a capture). :func:`read_log` reads the whole log once with that
format's :class:`~sipflow.ingest.pbxlog.common.Spec` and yields :class:`LogMessage` (SIP
bytes + :class:`~sipflow.sip.message.Origin` whose ``frames`` are log LINE numbers) and
:class:`ChannelEvent` values in time order. A trace line usually gives only the far end of
a message (``recv ... from tcp/[1.2.3.4]:5060``); the logging host's own address is taken
from the messages of the same flow (its Via on requests it sends and responses it gets,
its Contact on responses it sends), else a placeholder named after the PBX.
:func:`link_channels` ties channels to SIP Call-IDs, recording the rule that did it.
Importing this package is cheap: the parsers load when a name below is first used (PEP
562), so a capture-only run does not pay for them (``sipflow.ingest.pbxlog.types``, which
the correlation imports, is imported alone).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

# The function, bound over the submodule of the same name (which importing it binds here).
from sipflow.ingest.pbxlog.detect import detect
from sipflow.lazy import lazy_names

if TYPE_CHECKING:
    from sipflow.ingest.pbxlog.link import link_channels
    from sipflow.ingest.pbxlog.reader import read_log, read_log_bytes
    from sipflow.ingest.pbxlog.types import ChannelEvent, EventKind, LogMessage

__all__ = [
    "ChannelEvent",
    "EventKind",
    "LogMessage",
    "detect",
    "link_channels",
    "read_log",
    "read_log_bytes",
]

_WHERE = {
    "ChannelEvent": "sipflow.ingest.pbxlog.types",
    "EventKind": "sipflow.ingest.pbxlog.types",
    "LogMessage": "sipflow.ingest.pbxlog.types",
    "link_channels": "sipflow.ingest.pbxlog.link",
    "read_log": "sipflow.ingest.pbxlog.reader",
    "read_log_bytes": "sipflow.ingest.pbxlog.reader",
}
__getattr__ = lazy_names(__name__, globals(), _WHERE)
