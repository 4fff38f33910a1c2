"""Shared machinery of the log readers: text preparation, times, and message framing.

How this works: a log is decoded once (UTF-8, undecodable bytes kept by
``surrogateescape``) and split into lines; a trailing CR is dropped from each line (Windows
line endings). Two paste artefacts are undone for the whole file before reading:

* HTML escaping (``&lt;`` ``&gt;`` ``&quot;`` ``&#39;`` ``&amp;``), when the text has
  ``&lt;``/``&gt;`` and no raw ``<...>`` SIP URI brackets, i.e. a page copied from a blog;
* a blank line after every line (a ticket paste): lines are paired again with their blank
  partner, keeping each kept line's ORIGINAL number.

A format module gives a :class:`Spec`: ``header(line)`` recognises a trace line that
announces a message (direction, addresses, time) and ``event(...)`` a channel event. The
:class:`Engine` walks the lines once; for every trace line it frames the message that
follows (:meth:`Engine.frame`): separators and blank lines are skipped, the first line must
be a SIP start line (RFC 3261 §7.1/§7.2), the header block runs to the first empty line
(§7), and the body to the format's end marker, or to Content-Length bytes (§20.14) when the
format has no end marker. A SIP start line with no trace line before it is framed the same
way, without addresses. A trace line with no SIP message after it becomes a
``log.unframed_sip`` Finding with its line numbers. Lines that are neither are counted as
``non_sip_lines``.
"""

from __future__ import annotations

import bisect
import datetime as _dt
import itertools
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field, replace

from sipflow.findings import Finding, Ref, Severity
from sipflow.ingest.pbxlog.types import ChannelEvent, LogMessage
from sipflow.ingest.types import Endpoint, SourceStats, Transport
from sipflow.sip.message import Origin

# RFC 3261 §25.1 Request-Line / Status-Line, as they appear at the start of a logged line.
# Methods are upper-case tokens in practice; requiring it keeps prose out.
START = re.compile(r"(?:[A-Z][A-Z_\-]* [^ \t]+ SIP/2\.0|SIP/2\.0 [1-6][0-9]{2}(?: .*)?)[ \t]*$")
_START_ANY = re.compile(r"(?:[A-Z][A-Z_\-]* [^ \t]+ SIP/2\.0|SIP/2\.0 [1-6][0-9]{2}\b)")
# RFC 3261 §20.14, compact form "l" (§7.3.3).
_CLEN = re.compile(r"^(?:content-length|l)[ \t]*:[ \t]*([0-9]+)", re.I)
_HTML = (("&lt;", "<"), ("&gt;", ">"), ("&quot;", '"'), ("&#39;", "'"), ("&amp;", "&"))
MAX_HEAD_LINES = 200  # a header block longer than this is not a SIP header block
MAX_BODY_LINES = 2000
TRANSPORTS = {t.value: t for t in Transport}

# Times: "2019-03-22 09:55:08.041945", "2021/09/06 12:34:56.123456" (ngrep),
# "[Jan 22 13:35:21]" / "Jan  1 01:06:04" (syslog, no year), "09:55:07.936234" (time only).
_ISO = re.compile(r"(\d{4})[-/](\d\d)[-/](\d\d)[ T](\d\d):(\d\d):(\d\d)(?:[.,](\d{1,9}))?")
_SYSLOG = re.compile(r"\b([A-Z][a-z]{2}) +(\d{1,2}) (\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?")
_TIME = re.compile(r"(\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?")
MONTH_NAMES = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_MONTHS = {m: i for i, m in enumerate(MONTH_NAMES, 1)}
_EPOCH_DAY = _dt.date(1970, 1, 1).toordinal()
NS = 1_000_000_000
DAY_NS = 86_400 * NS


def _frac_ns(text: str | None) -> int:
    return int((text or "0").ljust(9, "0")[:9])


def day_ns(year: int, month: int, day: int) -> int | None:
    """Nanoseconds from the epoch to the start of a (UTC) day; None for an invalid date."""
    try:
        return (_dt.date(year, month, day).toordinal() - _EPOCH_DAY) * DAY_NS
    except ValueError:
        return None


def iso_ts(text: str) -> int | None:
    """The first ISO-like date+time in ``text`` as ns (read as UTC), or None."""
    m = _ISO.search(text)
    if not m:
        return None
    base = day_ns(int(m[1]), int(m[2]), int(m[3]))
    if base is None:
        return None
    secs = int(m[4]) * 3600 + int(m[5]) * 60 + int(m[6])
    return base + secs * NS + _frac_ns(m[7])


@dataclass(slots=True)
class YearRef:
    """The year a log's syslog-style times (``Jan 22 13:35:21``: no year) are read in:
    ``year`` for months up to ``month``, the year before for later ones (a log last
    written in January holds the December before). ``why`` names where the year came
    from; ``used`` counts the times read with it (a finding says so when any were)."""

    year: int
    month: int = 12
    why: str = "no date known for the log"
    used: int = 0

    def year_of(self, month: int) -> int:
        return self.year - 1 if month > self.month else self.year


_YEAR: ContextVar[YearRef | None] = ContextVar("sipflow_log_year", default=None)
"""The YearRef of the log being read (set by :func:`read_year`): the format's line
parsers, which see one line at a time, read syslog times with it (1970 outside)."""


@contextmanager
def read_year(ref: YearRef) -> Iterator[YearRef]:
    """Syslog-style times read inside the block use ``ref``."""
    token = _YEAR.set(ref)
    try:
        yield ref
    finally:
        _YEAR.reset(token)


def syslog_ts(text: str) -> int | None:
    """A syslog ``Mon dd HH:MM:SS`` time in the year of the log being read (:class:`YearRef`),
    or None."""
    m = _SYSLOG.search(text)
    if not m or m[1] not in _MONTHS:
        return None
    ref, month = _YEAR.get(), _MONTHS[m[1]]
    base = day_ns(ref.year_of(month) if ref else 1970, month, int(m[2]))
    if base is None:
        return None
    if ref is not None:
        ref.used += 1
    return base + (int(m[3]) * 3600 + int(m[4]) * 60 + int(m[5])) * NS + _frac_ns(m[6])


def time_of_day(text: str) -> int | None:
    """``HH:MM:SS[.ffffff]`` as ns since midnight, or None."""
    m = _TIME.fullmatch(text)
    if not m:
        return None
    return (int(m[1]) * 3600 + int(m[2]) * 60 + int(m[3])) * NS + _frac_ns(m[4])


def host_port(text: str, default_port: int = 5060) -> Endpoint | None:
    """``1.2.3.4:5060``, ``[2001:db8::1]:5060``, ``host`` -> Endpoint (placeholders kept)."""
    text = text.strip()
    if text.startswith("["):
        ip, _, rest = text[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif text.count(":") == 1:
        ip, _, port = text.partition(":")
    else:
        ip, port = text, ""
    if not ip:
        return None
    if port and not port.isdigit():
        return None
    return Endpoint(ip, int(port) if port else default_port)


def transport_of(text: str) -> Transport:
    """Transport from a log's protocol word (udp, TCP, tls, ws, wss, sctp); UDP if unknown."""
    return TRANSPORTS.get(text.upper(), Transport.UDP)


# --- text preparation --------------------------------------------------------------------


@dataclass(slots=True)
class Text:
    """A log's lines after preparation; ``numbers`` maps to original 1-based line numbers."""

    lines: list[str]
    numbers: list[int] | None = None
    html: bool = False
    doubled: bool = False
    total_lines: int = 0
    cr: frozenset[int] = frozenset()
    """Lines that ended in CR, when the log mixes CRLF and LF line ends (Blink keeps each
    SIP line's own CRLF and writes its own lines with LF): a body's exact bytes."""

    def no(self, i: int) -> int:
        return self.numbers[i] if self.numbers is not None else i + 1


def decode(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")


def split_lines(text: str) -> list[str]:
    """Lines without their ending; CRLF, LF and a lone trailing CR all handled."""
    lines = text.replace("\r\n", "\n").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def looks_html_escaped(text: str) -> bool:
    """A SIP paste whose angle brackets were HTML-escaped (e.g. ``<sip:a@b&gt;``)."""
    return ("&gt;" in text or "&lt;" in text) and ("sip:" in text or "SIP/2.0" in text)


def unescape_html(text: str) -> str:
    for a, b in _HTML:
        text = text.replace(a, b)
    return text


def looks_doubled(lines: list[str]) -> bool:
    """Every non-empty line followed by an empty one: a paste with doubled line breaks."""
    nonempty = pairs = 0
    for a, b in itertools.pairwise(lines):
        if a.strip():
            nonempty += 1
            pairs += not b.strip()
    return nonempty >= 6 and pairs >= nonempty * 0.97


def undouble(lines: list[str]) -> tuple[list[str], list[int]]:
    """Drop the blank line that follows every line; an original blank line shows as three
    blank lines in a row and is kept as one. Returns the lines and their 1-based numbers."""
    out: list[str] = []
    numbers: list[int] = []
    i, n = 0, len(lines)
    while i < n:
        out.append(lines[i])
        numbers.append(i + 1)
        i += 2 if i + 1 < n and not lines[i + 1].strip() else 1
    return out, numbers


def prepare(data: bytes) -> Text:
    """Decode, split and undo paste artefacts (see the module docstring)."""
    text = decode(data)
    html = looks_html_escaped(text)
    if html:
        text = unescape_html(text)
    cr: frozenset[int] = frozenset()
    if "\r" in text:
        lines = text.split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        cr = frozenset(x for x, s in enumerate(lines) if s.endswith("\r"))
        lines = [s[:-1] if s.endswith("\r") else s for s in lines]
        lines = [s[:-1] if s.endswith("\r") else s for s in lines]  # a lone CR before CRLF
        if len(cr) == len(lines):
            cr = frozenset()  # CRLF throughout: nothing to tell
    else:
        lines = split_lines(text)
    total = len(lines)
    if looks_doubled(lines[:4000]):
        kept, numbers = undouble(lines)
        return Text(kept, numbers, html, True, total)
    return Text(lines, None, html, False, total, cr)


# --- heads, specs and the engine ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Head:
    """What a trace line says about the message after it."""

    direction: str | None = None  # "recv" / "send" seen from the logging host
    transport: Transport = Transport.UDP
    remote: Endpoint | None = None
    src: Endpoint | None = None
    dst: Endpoint | None = None
    ts: int | None = None  # full time, when the line has a date
    tod: int | None = None  # time of day only (ns since midnight)
    declared: int | None = None  # announced size in bytes
    dots: bool = False  # ngrep: a '.' stands for the CR at each line end
    inline: str | None = None  # the message starts on the trace line itself, from here


@dataclass
class Spec:
    """How one log format is read. Functions get a line and return a value or None."""

    name: str
    header: Callable[[str], Head | None]
    end: re.Pattern[str] | None = None  # a line that ends a message block
    record: re.Pattern[str] | None = None  # a line that starts a new log record
    strip: re.Pattern[str] | None = None  # a per-line prefix to remove inside blocks
    event: Callable[[str, int], ChannelEvent | None] | None = None
    """An event from a line and its number; ``ts=-1`` asks the engine for the line's time."""
    line_ts: Callable[[str], int | None] | None = None  # time of an ordinary log line
    scan: tuple[str, ...] | None = None
    """Literal text found on every line the reader must look at (trace lines, SIP start
    lines, event lines); other lines are skipped without a Python step each (the search
    runs in C, str.find). A literal starting with a newline matches at a line start.
    None: look at every line."""
    local_name: str = "local"
    wrap: int | None = None
    """The log cuts lines at this many characters and goes on at column 0 on the next
    line (Avaya IP Office's monitor at 255): inside an indented message such a line is
    the rest of the line above, not a header of its own."""


_SEP = re.compile(r"^\s*(?:-{8,}|={8,}|<-{3,}>)\s*$")


@dataclass
class Engine:
    """One pass over a prepared log; collects messages, events, skipped counts, findings."""

    text: Text
    spec: Spec
    source: int
    stats: SourceStats
    findings: list[Finding]
    items: list[tuple[int, int, LogMessage | ChannelEvent]] = field(default_factory=list)
    heads: list[Head | None] = field(default_factory=list)
    last_ts: int | None = None
    seen_ts: int | None = None  # the time last given to a message or event
    last_line: int = -1
    last_end: int = -1
    last_head: Head | None = None
    _date_cache: dict[int, int | None] = field(default_factory=dict)
    unframed: list[int] = field(default_factory=list)
    orphans: list[int] = field(default_factory=list)
    _scanned: tuple[int, int, int, int] = (-1, -1, -1, 0)
    """The last dated-line look-up: (from line, down to (exclusive), dated line found or
    -1, its time)."""

    def candidates(self) -> Iterator[int]:
        """Indexes of lines that match ``spec.scan``, ascending (all lines without one)."""
        lines = self.text.lines
        if self.spec.scan is None:
            yield from range(len(lines))
            return
        starts = [0, *itertools.accumulate(map((1).__add__, map(len, lines)))]
        text = "\n" + "\n".join(lines)  # the leading newline lets "\nU " match line 0
        found: set[int] = set()
        for literal in self.spec.scan:
            shift = 0 if literal.startswith("\n") else -1  # text offset -> offset in lines
            at = text.find(literal)
            while at >= 0:
                found.add(bisect.bisect_right(starts, max(at + shift, 0)) - 1)
                end = text.find("\n", at + 1)
                at = text.find(literal, end) if end >= 0 else -1
        yield from sorted(found)

    def run(self) -> None:
        i, n = 0, len(self.text.lines)
        for x in self.candidates():
            if x < i:
                continue
            self.stats.skipped["non_sip_lines"] += x - i
            i = self.step(x)
        self.stats.skipped["non_sip_lines"] += n - i
        if not self.stats.skipped["non_sip_lines"]:
            del self.stats.skipped["non_sip_lines"]
        self.report()

    def step(self, i: int) -> int:
        """Read the line at ``i`` (and the message it starts); return the next index."""
        lines, spec = self.text.lines, self.spec
        line = lines[i]
        head = spec.header(line)
        if head is not None:
            return self.frame(i, head)
        if "SIP/2.0" in line and START.match(self.unprefixed(line)):
            if i == self.last_end and self.last_head is not None:
                # another message right after one (several in one TCP segment)
                return self.frame(i - 1, self.last_head, first=i)
            self.orphans.append(self.text.no(i))
            return self.frame(i - 1, Head(), first=i)
        if spec.event is not None:
            ev = spec.event(line, self.text.no(i))
            if ev is not None:
                if ev.ts < 0:
                    ev = replace(ev, ts=self.ts_at(i), source=self.source)
                self.items.append((ev.ts, len(self.items), ev))
                return i + 1
        self.stats.skipped["non_sip_lines"] += 1
        return i + 1

    def ts_at(self, i: int) -> int:
        """Time of line ``i``: its own date, else the nearest dated line above it (not
        further back than the last message nor 200 lines), else the time last given to a
        message or event above it (a long run of undated lines keeps the time before it),
        else, above the log's first date (an excerpt that starts inside a message), the
        nearest dated line below it."""
        if self.spec.line_ts is not None:
            found = self._dated_above(i, max(self.last_line, i - 200))
            if found is not None:
                self.seen_ts = found
                return found
        if self.seen_ts is not None or self.last_ts is not None:
            return self.seen_ts if self.seen_ts is not None else self.last_ts or 0
        return self._dated_below(i) or 0

    def _dated_below(self, i: int) -> int | None:
        """Time of the first dated line in ``(i, i + 200]``, or None."""
        lines, line_ts = self.text.lines, self.spec.line_ts
        if line_ts is None:
            return None
        for x in range(i + 1, min(len(lines), i + 201)):
            t = line_ts(lines[x])
            if t is not None:
                return t
        return None

    def _dated_above(self, i: int, bound: int) -> int | None:
        """Time of the nearest dated line in ``(bound, i]``, or None. The lines a previous
        look-up scanned are not read again (:attr:`_scanned`): undated lines between the
        events of a channel dump would be read once per event."""
        lines, line_ts = self.text.lines, self.spec.line_ts
        assert line_ts is not None
        top, low, at, ts = self._scanned
        # (at, top] held no dated line (nor (low, top] when none was found): only the
        # lines above ``top`` are new
        reuse = top <= i and (at >= 0 or low <= bound)
        stop = max(top, bound) if reuse else bound
        for x in range(i, stop, -1):
            t = line_ts(lines[x])
            if t is not None:
                self._scanned = (i, bound, x, t)
                return t
        if reuse and at > bound:
            self._scanned = (i, bound, at, ts)
            return ts
        self._scanned = (i, bound, -1, 0)
        return None

    def unprefixed(self, line: str) -> str:
        if self.spec.strip is not None:
            m = self.spec.strip.match(line)
            if m:
                return line[m.end() :]
        return line

    # -- framing ------------------------------------------------------------------------

    def frame(self, i: int, head: Head, first: int | None = None) -> int:
        """Frame the message announced on line ``i``; return the index of the next line."""
        lines, n = self.text.lines, len(self.text.lines)
        j = i + 1 if first is None else first
        inline = head.inline
        if inline is not None and "#012" in inline:
            return self.frame_escaped(i, head, inline)
        marked = False
        if inline is None:
            while j < n and j - i <= 3 and (not lines[j].strip() or _SEP.match(lines[j])):
                marked = marked or bool(_SEP.match(lines[j]))
                j += 1
            if j >= n or not START.match(self.clean(lines[j], head).strip()):
                self.unframed.append(self.text.no(i))
                self.stats.skipped["unframed_trace_lines"] += 1
                return i + 1
        start = self.clean(lines[j], head) if inline is None else inline
        indent = len(start) - len(start.lstrip(" \t"))
        head_lines = [start.strip()]
        k = j + 1 if inline is None else i + 1
        k, terminated = self._headers(k, head, indent, head_lines)
        body_lines: list[str] = []
        if terminated:
            k = self._body(k, head, indent, head_lines, body_lines, marked)
        self.emit(i, j if inline is None else i, k, head, head_lines, body_lines, terminated)
        self.last_end, self.last_head = k, head
        if not terminated:
            self.stats.skipped["truncated_messages"] += 1
        return k

    def clean(self, line: str, head: Head) -> str:
        line = self.unprefixed(line)
        if head.dots and line.endswith("."):
            line = line[:-1]
        return line

    def _stop(self, line: str) -> bool:
        spec = self.spec
        if spec.end is not None and spec.end.match(line):
            return True
        if spec.record is not None and spec.record.match(line):
            return True
        return spec.header(line) is not None

    def _headers(self, k: int, head: Head, indent: int, out: list[str]) -> tuple[int, bool]:
        lines, n = self.text.lines, len(self.text.lines)
        while k < n and len(out) < MAX_HEAD_LINES:
            raw = lines[k]
            if self._stop(raw):
                # FreeSWITCH closes a bodyless message's block without the empty line:
                # with Content-Length 0 the message is whole (RFC 3261 §20.14).
                return k, content_length(out) == 0
            text = self.clean(raw, head)
            if not text.strip():
                return k + 1, True
            if START.match(text.strip()):  # a new message without an empty line before
                return k, False
            if out and self._wrapped(lines[k - 1], text, indent):
                out[-1] += text
            else:
                out.append(_unindent(text, indent))
            k += 1
        return k, False

    def _wrapped(self, above: str, line: str, indent: int) -> bool:
        """``line`` is the rest of ``above``, cut by the log at ``spec.wrap`` characters."""
        wrap = self.spec.wrap
        return wrap is not None and indent > 0 and len(above) >= wrap and line[:1] not in " \t"

    def _body(
        self, k: int, head: Head, indent: int, heads: list[str], out: list[str], marked: bool
    ) -> int:
        """Body lines: up to the end marker when the block opened with a separator line,
        else Content-Length bytes (RFC 3261 §20.14; none when absent or 0)."""
        lines, n = self.text.lines, len(self.text.lines)
        clen = content_length(heads)
        marked = marked and self.spec.end is not None
        if not marked and not clen:
            return k
        size = 0
        while k < n and len(out) < MAX_BODY_LINES:
            raw = lines[k]
            if self._stop(raw):
                break
            text = self.clean(raw, head)
            if not marked and START.match(text.strip()):
                break
            out.append(_unindent(text, indent) + ("\r" if k in self.text.cr else ""))
            size += len(out[-1]) + 1
            k += 1
            if not marked and clen is not None and size >= clen:
                break  # even with LF line ends the body is complete
        exact = False
        if not marked and clen:
            keep = _body_lines(out, clen)
            exact = clen in _sizes(out, keep)
            k -= len(out) - keep
            del out[keep:]
        if k >= n and clen and max(_sizes(out, len(out))) < clen:
            self.stats.skipped["truncated_messages"] += 1  # the log ends inside the body
        if self.spec.end is not None and k < n and self.spec.end.match(lines[k]):
            k += 1
        while out and not exact and not out[-1].strip():
            out.pop()
        return k

    def frame_escaped(self, i: int, head: Head, inline: str) -> int:
        """A message logged on one line with rsyslog control escapes (#015 CR, #012 LF)."""
        text = inline.replace("#015", "").replace("#011", "\t")
        parts = text.split("#012")
        if "" in parts:
            cut = parts.index("")
            heads, body = parts[:cut], [p for p in parts[cut + 1 :]]
            while body and not body[-1]:
                body.pop()
            terminated = True
        else:
            heads, body, terminated = parts, [], False
        self.emit(i, i, i + 1, head, [h.strip() for h in heads], body, terminated)
        return i + 1

    def emit(
        self,
        i: int,
        j: int,
        k: int,
        head: Head,
        heads: list[str],
        body: list[str],
        terminated: bool,
    ) -> None:
        data = _assemble(heads, body, content_length(heads), terminated)
        lead = (self.text.no(i),) if 0 <= i < j else ()
        frames = lead + tuple(self.text.no(x) for x in range(j, max(k, j + 1)))
        ts = self.time_of(i, head)
        src, dst = head.src, head.dst
        if head.remote is not None:
            src, dst = (head.remote, None) if head.direction == "recv" else (None, head.remote)
        origin = Origin(self.source, frames, ts, src, dst, head.transport)
        msg = LogMessage(data, origin, head.declared)
        self.items.append((ts, len(self.items), msg))
        self.heads.append(head)

    # -- time ---------------------------------------------------------------------------

    def time_of(self, i: int, head: Head) -> int:
        ts = self._time_of(i, head)
        self.last_ts, self.seen_ts, self.last_line = ts, ts, i
        return ts

    def _time_of(self, i: int, head: Head) -> int:
        if head.ts is not None:
            return head.ts
        if head.tod is not None:
            ts = self.date_near(i) + head.tod
            if self.last_ts is not None and ts < self.last_ts - DAY_NS // 2:
                ts += DAY_NS  # midnight passed since the last dated line
            return ts
        return self.ts_at(max(i, 0))

    def date_near(self, i: int) -> int:
        """Start of the day (ns) of the nearest line with a full date, before or after."""
        if self.last_ts is not None:
            return self.last_ts - self.last_ts % DAY_NS
        if i in self._date_cache:
            return self._date_cache[i] or 0
        lines = self.text.lines
        for x in list(range(i, max(-1, i - 5000), -1)) + list(range(i, min(len(lines), i + 5000))):
            if "-" in lines[x] or "/" in lines[x]:
                ts = iso_ts(lines[x])
                if ts is not None:
                    self._date_cache[i] = ts - ts % DAY_NS
                    return ts - ts % DAY_NS
        self._date_cache[i] = None
        return 0

    # -- findings -----------------------------------------------------------------------

    def report(self) -> None:
        if self.unframed:
            self.findings.append(
                Finding(
                    "log.unframed_sip",
                    Severity.WARNING,
                    f"{len(self.unframed)} trace line(s) announce a SIP message that is not "
                    "in the log after them (cut paste or mixed-up lines)",
                    None,
                    tuple(Ref(self.source, x) for x in self.unframed[:50]),
                )
            )
        if self.orphans:
            self.findings.append(
                Finding(
                    "log.untraced_sip",
                    Severity.INFO,
                    f"{len(self.orphans)} SIP message(s) without a trace line: addresses "
                    "and time are unknown or taken from nearby lines",
                    None,
                    tuple(Ref(self.source, x) for x in self.orphans[:50]),
                )
            )


def _unindent(line: str, indent: int) -> str:
    if indent and line[:indent].strip() == "":
        return line[indent:]
    return line.lstrip(" \t") if indent else line


def _sizes(body: list[str], lines: int) -> set[int]:
    """Byte sizes of the first ``lines`` body lines joined as :func:`_assemble` may join
    them: CRLF or LF after each line, with or without a final one."""
    chars = sum(len(x.encode("utf-8", "surrogateescape")) for x in body[:lines])
    if _own_ends(body):
        return {chars + lines, chars + lines - 1}
    return {chars + 2 * lines, chars + 2 * lines - 2, chars + lines, chars + lines - 1}


def _own_ends(body: list[str]) -> bool:
    """Body lines carry their CR (:attr:`Text.cr`): only LF is added between them."""
    return any(x.endswith("\r") for x in body)


def _body_lines(body: list[str], clen: int) -> int:
    """How many of ``body``'s lines make Content-Length bytes (RFC 3261 §20.14): the fewest
    whose size in one line-end form is exactly ``clen``, else the fewest that reach it with
    CRLF line ends, else all (a cut body)."""
    chars, reach, crlf = 0, 0, 0 if _own_ends(body) else 1
    for lines, line in enumerate(body, 1):
        chars += len(line.encode("utf-8", "surrogateescape"))
        if clen in (chars + lines, chars + lines - 1) or (
            crlf and clen in (chars + 2 * lines, chars + 2 * lines - 2)
        ):
            return lines
        if not reach and chars + (1 + crlf) * lines >= clen:
            reach = lines
    return reach or len(body)


def content_length(heads: list[str]) -> int | None:
    for h in heads:
        m = _CLEN.match(h)
        if m:
            return int(m[1])
    return None


def _assemble(heads: list[str], body: list[str], clen: int | None, terminated: bool) -> bytes:
    """The message bytes with CRLF line endings (RFC 3261 §7: CRLF after each header and
    an empty line before the body). The body's line endings are not SIP's business: the
    form (CRLF or LF, with or without a final one) whose size equals Content-Length is
    taken, CRLF after every line when none does."""
    head = ("\r\n".join(heads) + ("\r\n\r\n" if terminated else "\r\n")).encode(
        "utf-8", "surrogateescape"
    )
    if not body:
        return head
    if _own_ends(body):  # the log's own line ends (Text.cr)
        for final in ("\n", ""):
            raw = ("\n".join(body) + final).encode("utf-8", "surrogateescape")
            if clen is None or len(raw) == clen:
                return head + raw
        body = [x[:-1] if x.endswith("\r") else x for x in body]
    default = ("\r\n".join(body) + "\r\n").encode("utf-8", "surrogateescape")
    if clen is None or len(default) == clen:
        return head + default
    for eol, final in (("\r\n", ""), ("\n", "\n"), ("\n", "")):
        raw = (eol.join(body) + final).encode("utf-8", "surrogateescape")
        if len(raw) == clen:
            return head + raw
    return head + default


def sip_start_in(text: str) -> int:
    """Offset of a SIP start line inside ``text`` (for messages logged after a prefix)."""
    m = _START_ANY.search(text)
    return m.start() if m else -1
