"""Kamailio / OpenSIPS logs that carry whole messages, and ngrep text.

How this works: two forms are read.

* ngrep (``ngrep -W byline port 5060``), the usual way a proxy's traffic lands in a ticket::

      U 2016/09/06 15:14:03.123456 209.105.251.200:5060 -> 10.0.4.29:5062
      SIP/2.0 200 OK.
      Via: SIP/2.0/UDP 10.0.4.29:5062;branch=z9hG4bKQxqIGabk.

  ``U``/``T`` is UDP/TCP; the time is there with ``-t`` (absolute) or ``-T`` (relative, read
  as seconds from the epoch). ngrep prints the CR of each CRLF as ``.``, which is removed.
* ``xlog("... $mb")`` from the routing script (Kamailio ``INFO: <script>: ...``, or an
  OpenSIPS ``opensips[pid]: ...`` line): the message starts on the log line after the
  prefix and continues on the following raw lines, or, through rsyslog, stays on one line
  with ``#015#012`` for CRLF. Addresses come from the prefix text when it shows them
  (``from udp:1.2.3.4:5060``, ``to ...``, or ``1.2.3.4:5060 -> 5.6.7.8:5060``).

Kamailio's debug lines that only describe a message (``receive_msg(): --- received sip
message``) carry no message and are not read as one.
"""

from __future__ import annotations

import re

from sipflow.ingest.pbxlog.common import (
    NS,
    Head,
    Spec,
    host_port,
    iso_ts,
    sip_start_in,
    syslog_ts,
    transport_of,
)

_NGREP = re.compile(
    r"^(?P<proto>[UT]) (?:(?P<date>\d{4}/\d\d/\d\d \d\d:\d\d:\d\d\.\d+) |\+(?P<rel>\d+\.\d+) )?"
    r"(?P<src>\S+) -> (?P<dst>\S+?)(?: \[[A-Z]+\])?\s*$"
)
_HOSTPORT = r"\[[^\]]+\]:\d+|[\w.\-]+:\d+"
_PROTO = r"(?:(?P<p>udp|tcp|tls|wss?|sctp):)?"
_FROM = re.compile(rf"\b(?:from|src)\b[ =:]*{_PROTO}(?P<a>{_HOSTPORT})", re.I)
_TO = re.compile(rf"\b(?:to|dst)\b[ =:]*{_PROTO}(?P<a>{_HOSTPORT})", re.I)
_ARROW = re.compile(rf"(?P<s>{_HOSTPORT}) *-+> *(?P<d>{_HOSTPORT})")
_RECORD = re.compile(
    r"^(?:[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d |\d{4}-\d\d-\d\d[ T]\d\d:\d\d|\s*\d+\(\d+\) [A-Z]+:)"
)


def _split_addr(text: str) -> str:
    """ngrep writes IPv6 as ``2001:db8::1:5060``: bracket the address before the port."""
    if text.count(":") > 1 and not text.startswith("["):
        ip, _, port = text.rpartition(":")
        return f"[{ip}]:{port}"
    return text


def ngrep_header(line: str) -> Head | None:
    if not line.startswith(("U ", "T ")) or " -> " not in line:
        return None
    m = _NGREP.match(line)
    if m is None:
        return None
    ts = None
    if m["date"]:
        ts = iso_ts(m["date"])
    elif m["rel"]:
        secs, _, frac = m["rel"].partition(".")
        ts = int(secs) * NS + int(frac.ljust(9, "0")[:9])
    return Head(
        transport=transport_of("UDP" if m["proto"] == "U" else "TCP"),
        src=host_port(_split_addr(m["src"])),
        dst=host_port(_split_addr(m["dst"])),
        ts=ts,
        dots=True,
    )


def _prefix_addresses(prefix: str) -> tuple[Head, bool]:
    a = _ARROW.search(prefix)
    if a:
        return Head(src=host_port(a["s"]), dst=host_port(a["d"])), True
    f, t = _FROM.search(prefix), _TO.search(prefix)
    proto = (f and f["p"]) or (t and t["p"]) or "UDP"
    return (
        Head(
            transport=transport_of(proto),
            src=host_port(f["a"]) if f else None,
            dst=host_port(t["a"]) if t else None,
        ),
        bool(f or t),
    )


def xlog_header(line: str) -> Head | None:
    """A script log line whose text after the prefix starts a SIP message."""
    if "SIP/2.0" not in line:
        return None
    off = sip_start_in(line)
    if off <= 0:
        return None
    prefix = line[:off]
    if "<script>" not in prefix and not prefix.rstrip().endswith("]:"):
        return None
    if not prefix.endswith((": ", ":", " ", "\t")):
        return None
    base, _ = _prefix_addresses(prefix)
    ts = iso_ts(prefix) or syslog_ts(prefix)
    return Head(transport=base.transport, src=base.src, dst=base.dst, ts=ts, inline=line[off:])


def line_ts(line: str) -> int | None:
    if line[:1].isdigit() and line[4:5] == "-":
        return iso_ts(line[:32])
    if line[:3].isalpha() and line[3:4] == " ":
        return syslog_ts(line[:16])
    return None


def kamailio_spec() -> Spec:
    return Spec(
        name="kamailio",
        header=xlog_header,
        record=_RECORD,
        line_ts=line_ts,
        local_name="kamailio",
        scan=("SIP/2.0",),
    )


def ngrep_spec() -> Spec:
    return Spec(
        name="ngrep",
        header=ngrep_header,
        end=re.compile(r"^#+\s*$"),
        local_name="proxy",
        scan=("\nU ", "\nT ", "SIP/2.0"),
    )
