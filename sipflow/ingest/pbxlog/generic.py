"""Other SIP traces met in tickets: pjsip-based phones, Avaya IP Office, Blink, bare text.

How this works: each is one more trace-line form for the shared engine.

* pjsip library log (Avaya B179/B199 phones, pjsua)::

      RX 640 bytes Response msg 401/REGISTER/cseq=31564 (rdata0x342af4) from tls 1.2.3.4:5061:
      TX 1350 bytes Request msg INVITE/cseq=15118 (tdta0x53f345c) to TLS 135.64.253.72

  each message line possibly behind a syslog prefix (``<142>Jan  1 01:06:04 konfsip[1:2]: ``,
  or a Kiwi ``date\\tfacility\\thost\\t`` line), ended by ``--end msg--``.
* Avaya IP Office SysMonitor: ``3309492437mS SIP Rx: TCP 1.2.3.4:5060 -> 10.0.0.1:23588``,
  message indented; the time is the monitor's millisecond counter (relative).
* Blink / python-sipsimple: ``SENDING: Packet 169, +0:00:41.495327`` then
  ``192.168.8.104:54907 -(SIP over TLS)-> 81.23.228.150:443`` and the message.
* ``sip-text``: anything else with SIP messages at line starts (no addresses).
"""

from __future__ import annotations

import re

from sipflow.ingest.pbxlog.common import (
    Head,
    Spec,
    host_port,
    iso_ts,
    syslog_ts,
    transport_of,
)

_SYSLOG_PREFIX = re.compile(
    r"^(?:\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d\t[^\t]*\t[^\t]*\t)?(?:<\d+>)?"
    r"(?:[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d )?(?:\S+ )?[\w./\-]+\[[\d:]+\]:(?: |$)"
)
_PJ = re.compile(
    r"\b(?P<dir>RX|TX) (?P<n>\d+) bytes (?:Request|Response) msg \S+ \([^)]*\) "
    r"(?:from|to) (?P<proto>[A-Za-z]+) (?P<addr>\S+?):?\s*$"
)
_IPO = re.compile(
    r"^\s*(?P<ms>\d+)mS SIP (?P<dir>Rx|Tx): (?P<proto>[A-Za-z]+) (?P<src>\S+) -> (?P<dst>\S+)\s*$"
)
_BLINK = re.compile(r"^(?P<src>\S+) -\(SIP over (?P<proto>[A-Za-z]+)\)-> (?P<dst>\S+)\s*$")


def pjsip_header(line: str) -> Head | None:
    if " bytes " not in line:
        return None
    m = _PJ.search(line)
    if m is None:
        return None
    tls = m["proto"].upper() == "TLS"
    return Head(
        direction="recv" if m["dir"] == "RX" else "send",
        transport=transport_of(m["proto"]),
        remote=host_port(m["addr"], 5061 if tls else 5060),
        declared=int(m["n"]),
    )


def pjsip_ts(line: str) -> int | None:
    if line[:1].isdigit() and line[4:5] == "-":
        return iso_ts(line[:19])
    start = line.find(">")
    if line.startswith("<") and start > 0:
        return syslog_ts(line[start + 1 : start + 17])
    return None


def ipo_header(line: str) -> Head | None:
    if "mS SIP " not in line:
        return None
    m = _IPO.match(line)
    if m is None:
        return None
    return Head(
        transport=transport_of(m["proto"]),
        src=host_port(m["src"]),
        dst=host_port(m["dst"]),
        ts=int(m["ms"]) * 1_000_000,
    )


def blink_header(line: str) -> Head | None:
    if "-(SIP over " not in line:
        return None
    m = _BLINK.match(line)
    if m is None:
        return None
    return Head(
        transport=transport_of(m["proto"]), src=host_port(m["src"]), dst=host_port(m["dst"])
    )


def _iso_line(line: str) -> int | None:
    return iso_ts(line[:32]) if line[:1].isdigit() and line[4:5] == "-" else None


def _none(line: str) -> Head | None:
    return None


def pjsip_spec() -> Spec:
    return Spec(
        name="pjsip",
        header=pjsip_header,
        end=re.compile(r"^.*--end msg--\s*$"),
        strip=_SYSLOG_PREFIX,
        line_ts=pjsip_ts,
        local_name="phone",
        scan=(" bytes ", "SIP/2.0"),
    )


def ipo_spec() -> Spec:
    return Spec(
        name="avaya-ipo",
        header=ipo_header,
        record=re.compile(r"^\s*\d+mS "),
        local_name="ipo",
        wrap=255,
        scan=("mS SIP ", "SIP/2.0"),
    )


def blink_spec() -> Spec:
    return Spec(
        name="blink",
        header=blink_header,
        record=re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d"),
        line_ts=_iso_line,
        local_name="blink",
        scan=("-(SIP over ", "SIP/2.0"),
    )


def text_spec() -> Spec:
    return Spec(name="sip-text", header=_none, line_ts=_iso_line, scan=("SIP/2.0",))
