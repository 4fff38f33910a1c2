"""Reading a PBX log: the format's Spec applied to the whole text, the logging host's own
address learnt from its messages (see the package docstring, :mod:`sipflow.ingest.pbxlog`)."""

from __future__ import annotations

import datetime as _dt
import os
import re
from collections import Counter
from collections.abc import Iterator

from sipflow.errors import InputError
from sipflow.findings import Finding, Ref, Severity
from sipflow.ingest.pbxlog import asterisk, freeswitch, generic, kamailio
from sipflow.ingest.pbxlog.common import (
    MONTH_NAMES,
    Engine,
    Spec,
    YearRef,
    host_port,
    prepare,
    read_year,
)
from sipflow.ingest.pbxlog.detect import detect
from sipflow.ingest.pbxlog.types import ChannelEvent, LogMessage
from sipflow.ingest.types import Endpoint, SourceStats, Transport
from sipflow.sip.message import Origin

_SPECS = {
    "freeswitch": freeswitch.spec,
    "asterisk-pjsip": asterisk.pjsip_spec,
    "asterisk-chansip": asterisk.chansip_spec,
    "asterisk": asterisk.pjsip_spec,
    "kamailio": kamailio.kamailio_spec,
    "ngrep": kamailio.ngrep_spec,
    "pjsip": generic.pjsip_spec,
    "avaya-ipo": generic.ipo_spec,
    "blink": generic.blink_spec,
    "sip-text": generic.text_spec,
}

# Where the logging host's address shows in a message it sent or got (RFC 3261 §18.2.1:
# the top Via sent-by of a request is the sender; §20.10 Contact of a response).
_VIA = re.compile(r"^(?:via|v)[ \t]*:[ \t]*SIP/2\.0/\w+[ \t]+([^;,\s]+)", re.I | re.M)
_CONTACT = re.compile(
    r"^(?:contact|m)[ \t]*:[^\r\n]*?sips?:(?:[^@>;\r\n]*@)?(\[[^\]]+\](?::\d+)?|[^;>\s]+)",
    re.I | re.M,
)


SET_BY_OPTION = "set with --log-year"


def read_log(
    path: str,
    source: int,
    stats: SourceStats,
    findings: list[Finding],
    year: int | None = None,
) -> Iterator[LogMessage | ChannelEvent]:
    """Messages and channel events of one log, in time order (see the module docstring).
    Syslog-style times (no year) are read in ``year``, else in the year the file was last
    modified (:func:`year_of_file`).

    Raises :class:`~sipflow.errors.InputError` (on the first ``next``) when ``path`` cannot
    be read; damage inside the log becomes Findings appended to ``findings``.
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
            mtime = os.fstat(f.fileno()).st_mtime
    except OSError as e:
        raise InputError(f"{path}: {e.strerror or e}") from e
    ref = YearRef(year, 12, SET_BY_OPTION) if year else year_of_file(mtime)
    yield from read_log_bytes(data, source, stats, findings, year=ref)


def year_of_file(mtime: float) -> YearRef:
    """A log is written up to when it was last modified: its yearless times are of the
    twelve months before (the month of ``mtime`` and earlier in its year, later months in
    the year before)."""
    day = _dt.datetime.fromtimestamp(mtime, _dt.UTC)
    return YearRef(day.year, day.month, f"the file was last modified {day:%Y-%m-%d}")


def read_log_bytes(
    data: bytes,
    source: int,
    stats: SourceStats,
    findings: list[Finding],
    fmt: str | None = None,
    year: YearRef | None = None,
) -> Iterator[LogMessage | ChannelEvent]:
    """:func:`read_log` on bytes already in memory (``fmt`` forces a format; ``year``: the
    year of syslog-style times, 1970 when not given)."""
    fmt = fmt or detect(data[:65536]) or "sip-text"
    spec: Spec = _SPECS.get(fmt, generic.text_spec)()
    text = prepare(data)
    stats.format = fmt
    stats.frames = text.total_lines
    stats.bytes = len(data)
    engine = Engine(text, spec, source, stats, findings)
    with read_year(year or YearRef(1970)) as ref:
        engine.run()
        items = _with_local(engine, spec)
    _notes(text.html, text.doubled, source, findings)
    if ref.used:
        findings.append(_year_finding(ref, source))
    items.sort(key=lambda t: (t[0], t[1]))
    if items:
        stats.first_ts = items[0][0] if stats.first_ts is None else stats.first_ts
        stats.last_ts = items[-1][0]
    for _, _, item in items:
        yield item


def _year_finding(ref: YearRef, source: int) -> Finding:
    years = f"{ref.year}"
    if ref.month < 12:
        years += f", those after {MONTH_NAMES[ref.month - 1]} in {ref.year - 1}"
    text = f"{ref.used} times in this log have no year (syslog style): read in {years} ({ref.why})"
    if ref.why != SET_BY_OPTION:
        text += "; --log-year sets the year"
    return Finding("log.year_assumed", Severity.INFO, text, None, (Ref(source, 1),))


def _notes(html: bool, doubled: bool, source: int, findings: list[Finding]) -> None:
    if html:
        findings.append(
            Finding(
                "log.html_escaped",
                Severity.INFO,
                "the log was HTML-escaped (&lt; &gt; &amp;); it was unescaped before reading",
                None,
                (Ref(source, 1),),
            )
        )
    if doubled:
        findings.append(
            Finding(
                "log.doubled_lines",
                Severity.INFO,
                "every line was followed by a blank line (a ticket paste); they were removed",
                None,
                (Ref(source, 1),),
            )
        )


def _learn(msg: LogMessage, send: bool) -> Endpoint | None:
    """The logging host's own address as the message shows it, or None."""
    text = msg.data[:4096].decode("utf-8", "replace")
    request = not text.startswith("SIP/2.0 ")
    if request == send:
        m = _VIA.search(text)
    elif send:
        m = _CONTACT.search(text)
    else:
        return None
    if m is None:
        return None
    tls = msg.origin.transport in (Transport.TLS, Transport.WSS)
    return host_port(m[1], 5061 if tls else 5060)


def _with_local(engine: Engine, spec: Spec) -> list[tuple[int, int, LogMessage | ChannelEvent]]:
    """Fill the logging host's side of messages whose trace line named only the far end."""
    flows: dict[tuple[Transport, Endpoint], Counter[Endpoint]] = {}
    by_transport: dict[Transport, Counter[Endpoint]] = {}
    msgs = [(x, it) for x, (_, _, it) in enumerate(engine.items) if isinstance(it, LogMessage)]
    for _, msg in msgs:
        o = msg.origin
        remote = o.src if o.dst is None else o.dst if o.src is None else None
        if remote is None or (o.src is None and o.dst is None):
            continue
        local = _learn(msg, send=o.src is None)
        if local is not None and local != remote:
            flows.setdefault((o.transport, remote), Counter())[local] += 1
            by_transport.setdefault(o.transport, Counter())[local] += 1
    out = list(engine.items)
    for x, msg in msgs:
        o = msg.origin
        if (o.src is None) == (o.dst is None):
            continue
        remote = o.src or o.dst
        assert remote is not None
        local = _pick(flows.get((o.transport, remote)), by_transport.get(o.transport))
        if local is None:
            tls = o.transport in (Transport.TLS, Transport.WSS)
            local = Endpoint(spec.local_name, 5061 if tls else 5060)
        src, dst = (remote, local) if o.dst is None else (local, remote)
        origin = Origin(o.source, o.frames, o.ts, src, dst, o.transport)
        out[x] = (o.ts, x, LogMessage(msg.data, origin, msg.declared))
    return out


def _pick(*counters: Counter[Endpoint] | None) -> Endpoint | None:
    for c in counters:
        if c:
            return c.most_common(1)[0][0]
    return None
