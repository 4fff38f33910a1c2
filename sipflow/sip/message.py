"""SIP requests and responses: parse, serialise, raw bytes kept.

How this works: :func:`parse_message` splits the start line, the header block and the
body (RFC 3261 §7), keeping every header in wire order and case (folded lines joined for
``value``, kept as received in ``raw``). A start line that is not SIP raises
:class:`~sipflow.errors.ParseError`. Everything else that still leaves a usable message
(a Content-Length that disagrees with the body, a missing mandatory header, an
unparseable Via, a CSeq whose method is not the request's) is recorded twice, in step:
``problems`` holds precise sentences naming the rule and RFC section, ``problem_codes``
the matching :class:`ProblemCode` (the Finding code). ``serialise`` rebuilds the bytes
from the parsed fields: ``serialise(parse_message(x)) == x`` for every input that parses.

The headers the analyser always needs (From, To, CSeq, Via, Contact) are parsed once,
while validating, and their results cached on the message; other headers stay text.
Time and origin are not the parser's business: the caller passes an :class:`Origin`.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from typing import Any

from sipflow.errors import ParseError
from sipflow.ingest.types import Endpoint, Transport
from sipflow.memo import remember
from sipflow.sip import grammar as g
from sipflow.sip.headers import Header, Headers, canonical, split_commas
from sipflow.sip.uri import NameAddr, Via, parse_name_addr, parse_uri, parse_via

# RFC 3261 §8.1.1: the minimum header set of a request; responses echo all but
# Max-Forwards (§8.2.6.2).
MANDATORY = ("call-id", "cseq", "from", "to", "via")
# Headers allowed once (RFC 3261 §7.3.1), in the order problems are reported.
_SINGLE = ("call-id", "cseq", "from", "to", "max-forwards", "content-length", "content-type")
_PRETTY = {"call-id": "Call-ID", "cseq": "CSeq", "max-forwards": "Max-Forwards"}
_UINT32_MAX = 2**32 - 1
_STREAM = (Transport.TCP, Transport.TLS, Transport.WS, Transport.WSS, Transport.SCTP)


class ProblemCode(enum.Enum):
    """Kinds of problem a parsed message can carry; values are Finding codes."""

    START_LINE = "sip.bad_start_line"
    VERSION = "sip.unsupported_version"
    HEADER_LINE = "sip.bad_header_line"
    UNTERMINATED = "sip.unterminated_headers"
    MISSING_HEADER = "sip.missing_header"
    MISSING_MAX_FORWARDS = "sip.missing_max_forwards"
    DUPLICATE_HEADER = "sip.duplicate_header"
    BAD_CSEQ = "sip.bad_cseq"
    CSEQ_METHOD = "sip.cseq_method_mismatch"
    BAD_MAX_FORWARDS = "sip.bad_max_forwards"
    BAD_CALL_ID = "sip.bad_call_id"
    BAD_VIA = "sip.bad_via"
    BAD_ADDRESS = "sip.bad_address"
    BAD_URI = "sip.bad_request_uri"
    BAD_CONTENT_LENGTH = "sip.bad_content_length"
    CONTENT_LENGTH_MISMATCH = "sip.content_length_mismatch"
    TRAILING_OCTETS = "sip.trailing_octets"
    MISSING_CONTENT_LENGTH = "sip.missing_content_length"
    SCALAR_RANGE = "sip.scalar_out_of_range"
    BAD_DATE = "sip.bad_date"


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a message's bytes came from: source index, 1-based frames, time (ns), 5-tuple."""

    source: int
    frames: tuple[int, ...]
    ts: int
    src: Endpoint | None = None
    dst: Endpoint | None = None
    transport: Transport = Transport.UDP


@dataclass(frozen=True, slots=True)
class CSeq:
    """CSeq header value: sequence number and method, case kept (RFC 3261 §20.16)."""

    seq: int
    method: str


@dataclass(frozen=True)
class _Message:
    version: str
    headers: Headers
    body: bytes
    raw: bytes
    eol: str = "\r\n"
    problems: tuple[str, ...] = ()
    origin: Origin | None = field(default=None, compare=False)
    problem_codes: tuple[ProblemCode, ...] = field(default=(), compare=False)
    start: str = field(default="", compare=False)
    """The start line exactly as received ("" for messages built in code)."""

    @cached_property
    def call_id(self) -> str | None:
        return self.headers.get("call-id")

    @cached_property
    def cseq(self) -> CSeq | None:
        value = self.headers.get("cseq")
        return _parse_cseq(value)[0] if value is not None else None

    @cached_property
    def from_(self) -> NameAddr | None:
        value = self.headers.get("from")
        return _name_addr(value)[0] if value is not None else None

    @cached_property
    def to(self) -> NameAddr | None:
        value = self.headers.get("to")
        return _name_addr(value)[0] if value is not None else None

    # cached: read several times per message by the transaction, dialog and call layers
    @cached_property
    def from_tag(self) -> str | None:
        return self.from_.tag if self.from_ else None

    @cached_property
    def to_tag(self) -> str | None:
        return self.to.tag if self.to else None

    @cached_property
    def vias(self) -> tuple[Via, ...]:
        """Every parseable via-parm, top first (unparseable ones are in ``problems``)."""
        return tuple(v for h in self.headers if h.key == "via" for v in _vias(h.value)[0])

    @property
    def top_via(self) -> Via | None:
        return self.vias[0] if self.vias else None

    @cached_property
    def contacts(self) -> tuple[NameAddr, ...]:
        """Every parseable Contact value (``*`` excluded)."""
        found = [h for h in self.headers if h.key == "contact"]
        return tuple(c for h in found for c in _contacts(h.value)[0])

    @cached_property
    def ts(self) -> int:
        """Time of the message (ns), from its origin; 0 without one."""
        return self.origin.ts if self.origin else 0


@dataclass(frozen=True)
class SipRequest(_Message):
    """A SIP request (RFC 3261 §7.1)."""

    method: str = ""
    uri: str = ""

    @property
    def is_request(self) -> bool:
        return True

    def start_line(self) -> str:
        return f"{self.method} {self.uri} {self.version}"


@dataclass(frozen=True)
class SipResponse(_Message):
    """A SIP response (RFC 3261 §7.2)."""

    status: int = 0
    reason: str = ""

    @property
    def is_request(self) -> bool:
        return False

    def start_line(self) -> str:
        return f"{self.version} {self.status} {self.reason}"


SipMessage = SipRequest | SipResponse


class _Problems(list[tuple[ProblemCode, str]]):
    """Collects (code, sentence) pairs in order (a list: made once per message, in C)."""

    __slots__ = ()

    def add(self, code: ProblemCode, text: str) -> None:
        self.append((code, text))


# --- framing and start line -------------------------------------------------------------


def _split_head(data: bytes) -> tuple[bytes, bytes, str, bool]:
    """Header block, body, the line ending the sender used, and whether an empty line
    ended the header block (RFC 3261 §7: CRLF CRLF; bare LF accepted from logs)."""
    crlf = data.find(b"\r\n\r\n")
    # only a bare-LF end before the CRLF one matters: the body is not searched
    lf = data.find(b"\n\n", 0, crlf) if crlf >= 0 else data.find(b"\n\n")
    if crlf >= 0 and lf < 0:
        return data[:crlf], data[crlf + 4 :], "\r\n", True
    if lf >= 0:
        return data[:lf], data[lf + 2 :], "\n", True
    eol = "\r\n" if b"\r\n" in data else "\n"
    end = len(data)
    while end and data[end - 1] in b"\r\n":
        end -= 1
    return data[:end], b"", eol, False


def _parse_start(line: str, problems: _Problems) -> tuple[str, str, str, bool]:
    """(a, b, c, is_request) for ``Method SP URI SP Version`` or ``Version SP Code SP Reason``."""
    if not line.startswith("SIP/"):  # a Method is a token, and a token has no "/"
        m = g.request_line.fullmatch(line)
        if m is not None:
            return _check_version(m.group(1), m.group(2), m.group(3), True, problems)
        return _lenient_request_line(line, problems)
    m = g.status_line.fullmatch(line)
    if m is not None:
        code = m.group(2)
        if not "100" <= code <= "699":
            raise ParseError(
                "Status-Line",
                f"status code {code} outside 100-699 (RFC 3261 §7.2, §21)",
                len(m.group(1)) + 1,
            )
        return _check_version(m.group(1), code, m.group(3), False, problems)
    raise ParseError(
        "Status-Line",
        f"expected 'SIP-Version SP 3DIGIT SP Reason-Phrase' in {line[:80]!r} (RFC 3261 §7.2)",
        0,
    )


def _check_version(
    a: str, b: str, c: str, is_request: bool, problems: _Problems
) -> tuple[str, str, str, bool]:
    version = c if is_request else a
    if version != "SIP/2.0":
        problems.add(
            ProblemCode.VERSION,
            f"SIP-Version {version!r} is not SIP/2.0; a server "
            "answers 505 (RFC 3261 §7.1, §8.2.2; RFC 4475 §3.1.2.16)",
        )
    return a, b, c, is_request


def _lenient_request_line(line: str, problems: _Problems) -> tuple[str, str, str, bool]:
    """A Request-Line with extra whitespace: understood, and reported (RFC 4475 §3.1.2.8-10)."""
    parts = line.split()
    if len(parts) < 3 or not g.method.fullmatch(parts[0]):
        raise ParseError(
            "Request-Line",
            f"expected 'Method SP Request-URI SP SIP-Version' in {line[:80]!r} (RFC 3261 §7.1)",
            0,
        )
    if not g.sip_version.fullmatch(parts[-1]):
        raise ParseError(
            "Request-Line",
            f"not a SIP version {parts[-1][:20]!r} (RFC 3261 §7.1)",
            max(0, line.rfind(parts[-1])),
        )
    if len(parts) > 3:
        what = "LWS inside the Request-URI"
    elif line != line.rstrip(" \t"):
        what = "whitespace after SIP-Version"
    else:
        what = "more than one SP between elements"
    problems.add(
        ProblemCode.START_LINE,
        f"Request-Line: {what}; elements are separated by exactly one SP (RFC 3261 §7.1, §25.1)",
    )
    return _check_version(parts[0], " ".join(parts[1:-1]), parts[-1], True, problems)


# --- header block -------------------------------------------------------------------------

# header text before ':' (as written, e.g. "Via", "Content-Length   ") -> (name, key);
# None for text that is not a header name. Bounded: the text comes from the wire.
_NAMES: dict[str, tuple[str, str] | None] = {}
# whole header line -> Header (immutable, so shared between messages); bounded
_LINES: dict[str, Header] = {}
_LINES_MAX = 1024  # emptied when full: most lines recur within a transaction (Via, From, To)


def _name_key(text: str) -> tuple[str, str] | None:
    try:
        return _NAMES[text]
    except KeyError:
        name = text.rstrip(" \t")
        found = (name, canonical(name)) if g.header_name.fullmatch(name) else None
        if len(_NAMES) < 4096:
            _NAMES[text] = found
        return found


def _parse_headers(lines: list[str], eol: str, problems: _Problems) -> Headers:
    """Header lines (``lines[1:]``), folded continuations joined with one SP (§7.3.1), and
    the look-up index built in the same pass (one loop over the lines, not two)."""
    known = _LINES
    out: list[Header] = []
    append = out.append
    index: dict[str, list[Header]] = {}
    folded = False
    for line in lines[1:]:
        h = known.get(line)
        if h is None:
            if line[:1] in (" ", "\t") and out:
                append(_fold(out.pop(), line, eol))
                folded = True
                continue
            h = _new_header(line, problems)
        append(h)
        canon = h[3]  # h.canon: a tuple index is a cheaper read than the field's descriptor
        found = index.get(canon)
        if found is None:
            index[canon] = [h]
        else:
            found.append(h)
    if folded:  # rare: a joined line replaced a header already indexed
        index = _index_of(out)
    headers = object.__new__(Headers)
    headers.__dict__.update(items=tuple(out), _index=index)
    return headers


def _index_of(items: list[Header]) -> dict[str, list[Header]]:
    index: dict[str, list[Header]] = {}
    for h in items:
        index.setdefault(h.canon, []).append(h)
    return index


_new_tuple = tuple.__new__


def _new_header(line: str, problems: _Problems) -> Header:
    text, colon, value = line.partition(":")
    found = _name_key(text) if colon else None
    if found is None:
        problems.add(
            ProblemCode.HEADER_LINE,
            f"header line {line[:60]!r} is not 'field-name HCOLON field-value' "
            "(RFC 3261 §7.3.1, §25.1)",
        )
        return Header("", line, line, "")
    # straight from a tuple: a line new to the cache is one per message or so, and the
    # NamedTuple __new__ is a Python-level call
    header = _new_tuple(Header, (found[0], value.strip(), line, found[1]))
    return remember(_LINES, line, header, _LINES_MAX)


def _fold(prev: Header, line: str, eol: str) -> Header:
    """``prev`` with a continuation line: LWS counts as one SP (RFC 3261 §7.3.1)."""
    more = line.strip()
    value = f"{prev.value} {more}" if prev.value and more else prev.value or more
    return Header(prev.name, value, prev.raw + eol + line, prev.canon)


# --- the message ----------------------------------------------------------------------------


def parse_message(data: bytes, origin: Origin | None = None) -> SipMessage:
    """Parse one SIP message. Raises ParseError when the start line is not SIP."""
    head, body, eol, terminated = _split_head(data)
    lines = head.decode("utf-8", "surrogateescape").split(eol)
    problems = _Problems()
    start = lines[0]
    known = _STARTS.get(start)
    if known is None:
        known = _start_fields(start, problems)
    headers = _parse_headers(lines, eol, problems)
    if not terminated:
        problems.add(
            ProblemCode.UNTERMINATED,
            "header block not ended by an empty line; the message may be truncated (RFC 3261 §7)",
        )
    body = _check_length(headers, body, origin, problems)
    # Built without the frozen-dataclass __init__ (one object.__setattr__ per field costs
    # a third of the parse); every field is set here, and the object is frozen after.
    msg: SipMessage = object.__new__(known[0])
    fields = msg.__dict__
    fields.update(known[1])  # method, uri, version or status, reason, version
    fields["headers"] = headers
    fields["body"] = body
    fields["raw"] = data
    fields["eol"] = eol
    fields["origin"] = origin
    fields["start"] = start
    fields["ts"] = origin.ts if origin is not None else 0
    _validate(msg, problems)
    fields["problems"] = tuple(text for _, text in problems) if problems else ()
    fields["problem_codes"] = tuple(code for code, _ in problems) if problems else ()
    return msg


# start line -> (class, its start-line fields), for lines that parsed with no problem;
# bounded (emptied when full): the few methods, URIs and status lines of a capture recur
_STARTS: dict[str, tuple[type[SipRequest] | type[SipResponse], dict[str, Any]]] = {}
_STARTS_MAX = 1024


def _start_fields(
    line: str, problems: _Problems
) -> tuple[type[SipRequest] | type[SipResponse], dict[str, Any]]:
    """:func:`_parse_start` as the message's class and fields (remembered when clean)."""
    before = len(problems)
    a, b, c, is_request = _parse_start(line, problems)
    known: tuple[type[SipRequest] | type[SipResponse], dict[str, Any]] = (
        (SipRequest, {"method": a, "uri": b, "version": c})
        if is_request
        else (SipResponse, {"status": int(b), "reason": c, "version": a})
    )
    if len(problems) == before:
        remember(_STARTS, line, known, _STARTS_MAX)
    return known


def _check_length(
    headers: Headers, body: bytes, origin: Origin | None, problems: _Problems
) -> bytes:
    """RFC 3261 §18.3: the body is Content-Length bytes; extra datagram bytes are discarded."""
    found = headers._index.get("content-length")
    value = found[0].value if found else None
    if value is None:
        if origin is not None and origin.transport in _STREAM:
            problems.add(
                ProblemCode.MISSING_CONTENT_LENGTH,
                "no Content-Length on a stream "
                f"transport ({origin.transport.value}) (RFC 3261 §18.3, §20.14)",
            )
        return body
    if not (value.isdigit() and value.isascii()):  # = g.digits.fullmatch, without a regex
        problems.add(
            ProblemCode.BAD_CONTENT_LENGTH,
            f"Content-Length {value[:20]!r} is not 1*DIGIT (RFC 3261 §20.14; RFC 4475 §3.1.2.3)",
        )
        return body
    length = int(value)
    if length < len(body):
        problems.add(
            ProblemCode.TRAILING_OCTETS,
            f"{len(body) - length} octets after the "
            f"{length}-byte body (Content-Length) are not part of the message "
            "(RFC 3261 §18.3)",
        )
        return body[:length]
    if length > len(body):
        problems.add(
            ProblemCode.CONTENT_LENGTH_MISMATCH,
            f"Content-Length {length} exceeds "
            f"the {len(body)} body bytes present (RFC 3261 §18.3; RFC 4475 §3.1.2.2)",
        )
    return body


# --- validation of the headers everybody needs ------------------------------------------------
#
# Each check is a pure function of the header text, cached: in a capture the same From,
# To, Via, Contact and Request-URI text recurs in every message of a transaction or
# dialog, so most messages are validated by dictionary look-ups. Cached values are
# immutable (frozen dataclasses, tuples); their ``params`` dicts must not be mutated.

_Found = tuple[tuple[ProblemCode, str], ...]
_CACHE = 8192
_PER_CALL = 256
"""Caches of values new in every call (Call-ID, From/To with tags, Via with branch): they
hit only within a call, so the calls open at once are what they must hold; larger, they
only keep finished calls alive (a live soak's RSS grew with them, docs/live.md; the
B2BUA's at 50 calls/s grew 3 MB more with 2048 than with 512 and 0.8 MB more with 512 than
with 256, docs/b2bua.md; on the 2,500-call load capture 256 misses 4,600 more of 113,000
look-ups than 512, about 1 % of the analysis)."""


def _validate(msg: SipMessage, problems: _Problems) -> None:
    """Check the structured headers and cache their parsed values on ``msg``."""
    headers = msg.headers
    index = headers._index
    is_request = isinstance(msg, SipRequest)
    _check_presence(index, len(headers.items), is_request, problems)
    cache = msg.__dict__
    found = index.get("cseq")
    cseq, why = _parse_cseq(found[0].value) if found else (None, "")
    if why:
        problems.add(ProblemCode.BAD_CSEQ, why)
    cache["cseq"] = cseq
    if isinstance(msg, SipRequest):
        _check_request(msg, cseq, index, problems)
    found = index.get("from")
    value = _address(found[0].value, "From", problems) if found else None
    cache["from_"], cache["from_tag"] = value, value.params.get("tag") if value else None
    found = index.get("to")
    value = _address(found[0].value, "To", problems) if found else None
    cache["to"], cache["to_tag"] = value, value.params.get("tag") if value else None
    found = index.get("call-id")
    cache["call_id"] = found[0].value if found else None
    if found and not _call_id_ok(found[0].value):
        problems.add(
            ProblemCode.BAD_CALL_ID,
            f"Call-ID {found[0].value[:40]!r} is not "
            'word ["@" word] (RFC 3261 §20.8, §25.1 callid)',
        )
    cache["vias"] = _collect(_vias, index.get("via"), problems)
    if "contact" in index:
        cache["contacts"] = _collect(_contacts, index["contact"], problems)
    if "expires" in index or "retry-after" in index or "date" in index:
        _check_scalars(headers, problems)


def _address(text: str, what: str, problems: _Problems) -> NameAddr | None:
    """The From/To value (cached), its problems filed under ``what``."""
    value, why = _name_addr(text)
    if why:
        problems.add(ProblemCode.BAD_ADDRESS, f"{what}: {why}")
    return value


def _collect(
    check: Callable[[str], tuple[tuple[Any, ...], _Found]],
    found: list[Header] | None,
    problems: _Problems,
) -> tuple[Any, ...]:
    """Run a cached per-header-line check over every line of one header."""
    if not found:
        return ()
    if len(found) == 1:  # one header line (nearly always): its cached result as it is
        parsed, notes = check(found[0].value)
        for code, text in notes:
            problems.add(code, text)
        return parsed
    values: tuple[Any, ...] = ()
    for h in found:
        parsed, notes = check(h.value)
        values += parsed
        for code, text in notes:
            problems.add(code, text)
    return values


_REQUEST_MUST = frozenset((*MANDATORY, "max-forwards"))
_RESPONSE_MUST = frozenset(MANDATORY)


def _check_presence(
    index: dict[str, list[Header]], lines: int, is_request: bool, problems: _Problems
) -> None:
    must = _REQUEST_MUST if is_request else _RESPONSE_MUST
    if not must.issubset(index):
        for key in MANDATORY:
            if key not in index:
                problems.add(
                    ProblemCode.MISSING_HEADER,
                    f"missing mandatory header {_PRETTY.get(key, key.title())} (RFC 3261 §8.1.1)",
                )
        if is_request and "max-forwards" not in index:
            problems.add(
                ProblemCode.MISSING_MAX_FORWARDS,
                "missing mandatory header Max-Forwards (RFC 3261 §8.1.1.6)",
            )
    if len(index) == lines:
        return  # one line per header name: nothing can be duplicated
    for key in _SINGLE:
        found = index.get(key)
        if found is not None and len(found) > 1:
            problems.add(
                ProblemCode.DUPLICATE_HEADER,
                f"{len(found)} {_PRETTY.get(key, key.title())} headers where one is allowed "
                "(RFC 3261 §7.3.1; RFC 4475 §3.3.8)",
            )


def _check_request(
    msg: SipRequest, cseq: CSeq | None, index: dict[str, list[Header]], problems: _Problems
) -> None:
    if cseq is not None and cseq.method != msg.method:
        problems.add(
            ProblemCode.CSEQ_METHOD,
            f"CSeq method {cseq.method!r} differs from "
            f"the request method {msg.method!r} (RFC 3261 §8.1.1.7, §20.16)",
        )
    for code, text in _request_uri(msg.uri):
        problems.add(code, text)
    found = index.get("max-forwards")
    if found and not _max_forwards_ok(found[0].value):
        problems.add(
            ProblemCode.BAD_MAX_FORWARDS,
            f"Max-Forwards {found[0].value[:20]!r} is "
            "not an integer 0-255 (RFC 3261 §8.1.1.6, §20.22; RFC 4475 §3.1.2.4)",
        )


@lru_cache(maxsize=_CACHE)
def _request_uri(uri: str) -> _Found:
    if uri.startswith("<") and uri.endswith(">"):
        return (
            (ProblemCode.BAD_URI, "Request-URI enclosed in <> (RFC 3261 §25.1; RFC 4475 §3.1.2.7)"),
        )
    try:
        parsed = parse_uri(uri)
    except ParseError as exc:
        return ((ProblemCode.BAD_URI, f"Request-URI: {exc}"),)
    if parsed.headers:
        return (
            (
                ProblemCode.BAD_URI,
                "Request-URI carries URI headers '?...', which are not "
                "allowed there (RFC 3261 §19.1.1 table 1; RFC 4475 §3.1.2.11)",
            ),
        )
    return ()


@lru_cache(maxsize=_CACHE)
def _max_forwards_ok(value: str) -> bool:
    return bool(g.digits.fullmatch(value)) and int(value) <= 255


@lru_cache(maxsize=_PER_CALL)
def _call_id_ok(value: str) -> bool:
    return bool(g.call_id.fullmatch(value))


def _check_scalars(headers: Headers, problems: _Problems) -> None:
    for key, pretty in (("expires", "Expires"), ("retry-after", "Retry-After")):
        value = headers.get(key)
        if value is None:
            continue
        number = value.split(";", 1)[0].split("(", 1)[0].strip()
        if not g.digits.fullmatch(number) or int(number) > _UINT32_MAX:
            problems.add(
                ProblemCode.SCALAR_RANGE,
                f"{pretty} {number[:30]!r} is not "
                "delta-seconds 0..2**32-1 (RFC 3261 §20.19, §20.33; RFC 4475 §3.1.2.4)",
            )
    date = headers.get("date")
    if date is not None and not g.rfc1123_date.fullmatch(date):
        problems.add(
            ProblemCode.BAD_DATE,
            f"Date {date[:40]!r} is not an rfc1123-date in GMT "
            "(RFC 3261 §20.17; RFC 4475 §3.1.2.12)",
        )


@lru_cache(maxsize=_CACHE)
def _parse_cseq(value: str) -> tuple[CSeq | None, str]:
    """The CSeq and, when it is malformed, why (RFC 3261 §20.16)."""
    m = g.cseq.fullmatch(value.strip())
    if m is None:
        return None, f"CSeq {value[:40]!r} is not '1*DIGIT LWS Method' (RFC 3261 §20.16)"
    seq = int(m.group(1))
    if seq > _UINT32_MAX:
        return None, (
            f"CSeq number {m.group(1)[:30]} exceeds 2**32-1 (RFC 3261 §20.16; RFC 4475 §3.1.2.4)"
        )
    return CSeq(seq, m.group(2)), ""


@lru_cache(maxsize=_PER_CALL)
def _name_addr(value: str) -> tuple[NameAddr | None, str]:
    try:
        parsed = parse_name_addr(value)
    except ParseError as exc:
        return None, str(exc)
    return parsed, "; ".join(parsed.issues)


@lru_cache(maxsize=_PER_CALL)
def _vias(value: str) -> tuple[tuple[Via, ...], _Found]:
    """The via-parms of one Via header line and the problems found in them."""
    out: list[Via] = []
    notes: list[tuple[ProblemCode, str]] = []
    for part in split_commas(value):
        try:
            via = parse_via(part)
        except ParseError as exc:
            notes.append((ProblemCode.BAD_VIA, str(exc)))
            continue
        for issue in via.issues:
            notes.append((ProblemCode.BAD_VIA, f"Via: {issue}"))
        out.append(via)
    return tuple(out), tuple(notes)


@lru_cache(maxsize=_PER_CALL)
def _contacts(value: str) -> tuple[tuple[NameAddr, ...], _Found]:
    """The contact-params of one Contact header line (``*`` excluded) and their problems."""
    out: list[NameAddr] = []
    notes: list[tuple[ProblemCode, str]] = []
    for part in split_commas(value):
        if part == "*":
            continue
        parsed, why = _name_addr(part)
        if why:
            notes.append((ProblemCode.BAD_ADDRESS, f"Contact: {why}"))
        if parsed is None:
            continue
        expires = parsed.params.get("expires")
        if expires is not None and not (
            g.digits.fullmatch(expires) and int(expires) <= _UINT32_MAX
        ):
            notes.append(
                (
                    ProblemCode.SCALAR_RANGE,
                    f"Contact expires={expires[:30]!r} is not "
                    "delta-seconds 0..2**32-1 (RFC 3261 §20.10, §20.19; RFC 4475 §3.1.2.4)",
                )
            )
        out.append(parsed)
    return tuple(out), tuple(notes)


def serialise(msg: SipMessage) -> bytes:
    """The message's bytes rebuilt from its parsed fields (header lines as on the wire)."""
    lines = [msg.start or msg.start_line()]
    lines.extend(h.raw if h.raw else f"{h.name}: {h.value}" for h in msg.headers)
    head = msg.eol.join(lines).encode("utf-8", "surrogateescape")
    sep = (msg.eol * 2).encode()
    rest = msg.raw[len(head) :]
    if msg.raw and not rest.startswith(sep):
        return head + rest  # header block never ended (truncated capture)
    tail = rest[len(sep) + len(msg.body) :]
    return head + sep + msg.body + tail
