"""SIP requests and responses: parse, serialise, raw bytes kept.

How this works: :func:`parse_message` splits the start line, the header block and the
body (RFC 3261 §7), keeping every header in wire order and case. A start line that is
not SIP raises :class:`~sipflow.errors.ParseError`; problems that still leave a usable
message (a Content-Length that disagrees with the body, a missing mandatory header, an
unparseable Via) are recorded in ``problems`` so the caller can turn them into Findings.
``serialise`` rebuilds the bytes from the parsed fields: ``serialise(parse(x)) == x``.

Time and origin are not the parser's business: the caller passes an :class:`Origin`
(where the bytes came from) and it is kept on the message.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

from sipflow.errors import ParseError
from sipflow.ingest.types import Endpoint, Transport
from sipflow.sip.headers import Header, Headers
from sipflow.sip.uri import NameAddr, Via, parse_name_addr, parse_via

# RFC 3261 §7.3.1 / §7.5: mandatory in every request (§8.1.1) and echoed in responses.
MANDATORY = ("call-id", "cseq", "from", "to", "via")


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
    """CSeq header value: sequence number and method (RFC 3261 §20.16)."""

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

    @property
    def call_id(self) -> str | None:
        return self.headers.get("call-id")

    @cached_property
    def cseq(self) -> CSeq | None:
        value = self.headers.get("cseq")
        if value is None:
            return None
        num, _, method = value.strip().partition(" ")
        if not num.isdigit() or not method.strip():
            return None
        return CSeq(int(num), method.strip().upper())

    @cached_property
    def from_(self) -> NameAddr | None:
        return _name_addr(self.headers.get("from"))

    @cached_property
    def to(self) -> NameAddr | None:
        return _name_addr(self.headers.get("to"))

    @property
    def from_tag(self) -> str | None:
        return self.from_.tag if self.from_ else None

    @property
    def to_tag(self) -> str | None:
        return self.to.tag if self.to else None

    @cached_property
    def vias(self) -> tuple[Via, ...]:
        out: list[Via] = []
        for value in self.headers.get_all("via"):
            try:
                out.append(parse_via(value))
            except ParseError:
                continue
        return tuple(out)

    @property
    def top_via(self) -> Via | None:
        return self.vias[0] if self.vias else None

    @property
    def ts(self) -> int:
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


def _name_addr(value: str | None) -> NameAddr | None:
    if value is None:
        return None
    try:
        return parse_name_addr(value)
    except ParseError:
        return None


def _split_head(data: bytes) -> tuple[bytes, bytes, str]:
    """Header block and body, and the line ending the sender used."""
    end = data.find(b"\r\n\r\n")
    if end >= 0:
        return data[:end], data[end + 4 :], "\r\n"
    end = data.find(b"\n\n")
    if end >= 0:
        return data[:end], data[end + 2 :], "\n"
    # No empty line: a message with no body whose final CRLF was not captured.
    eol = "\r\n" if b"\r\n" in data else "\n"
    return data.rstrip(b"\r\n"), b"", eol


def _parse_start(line: str) -> tuple[str, str, str, bool]:
    """Returns (a, b, c, is_request) for ``Method SP URI SP Version`` or ``Version SP Code SP Reason``."""
    if line.startswith("SIP/"):
        version, _, rest = line.partition(" ")
        code, _, reason = rest.partition(" ")
        if version != "SIP/2.0":
            raise ParseError("Status-Line", f"unsupported version {version!r}", 0)
        if len(code) != 3 or not code.isdigit() or code[0] == "0":
            raise ParseError("Status-Line", f"bad status code {code!r}", len(version) + 1)
        return version, code, reason, False
    parts = line.split(" ")
    if len(parts) != 3:
        raise ParseError("Request-Line", f"expected 'Method SP Request-URI SP SIP-Version' in {line[:80]!r}", 0)
    method, uri, version = parts
    if not method or not all(c.isalnum() or c in "-.!%*_+`'~" for c in method):
        raise ParseError("Request-Line", f"bad method token {method[:40]!r}", 0)
    if not version.startswith("SIP/"):
        raise ParseError("Request-Line", f"not a SIP version {version[:20]!r}", len(method) + len(uri) + 2)
    if version != "SIP/2.0":
        raise ParseError("Request-Line", f"unsupported version {version!r}", len(method) + len(uri) + 2)
    if ":" not in uri:
        raise ParseError("Request-URI", f"no scheme in {uri[:80]!r}", len(method) + 1)
    return method, uri, version, True


def _parse_headers(lines: list[str], eol: str, problems: list[str]) -> tuple[Header, ...]:
    """Header lines with folded continuations joined (RFC 3261 §7.3.1)."""
    out: list[tuple[str, str, str]] = []
    for line in lines:
        if line[:1] in (" ", "\t") and out:
            name, value, raw = out[-1]
            out[-1] = (name, f"{value} {line.strip()}".strip(), raw + eol + line)
            continue
        name, colon, value = line.partition(":")
        if not colon or not name.strip() or " " in name.strip():
            problems.append(f"header line without a name: {line[:60]!r}")
            out.append(("", line, line))
            continue
        out.append((name.rstrip(), value.strip(), line))
    return tuple(Header(n, v, r) for n, v, r in out)


def parse_message(data: bytes, origin: Origin | None = None) -> SipMessage:
    """Parse one SIP message. Raises ParseError when the start line is not SIP."""
    head, body, eol = _split_head(data)
    text = head.decode("utf-8", "surrogateescape")
    lines = text.split(eol) if eol == "\r\n" else text.split("\n")
    a, b, c, is_request = _parse_start(lines[0])
    problems: list[str] = []
    headers = Headers(_parse_headers(lines[1:], eol, problems))
    body = _check_length(headers, body, problems)
    for key in MANDATORY:
        if headers.get(key) is None:
            problems.append(f"missing mandatory header {key}")
    common = {
        "version": c if is_request else a,
        "headers": headers,
        "body": body,
        "raw": data,
        "eol": eol,
        "problems": tuple(problems),
        "origin": origin,
    }
    if is_request:
        return SipRequest(method=a, uri=b, **common)  # type: ignore[arg-type]
    return SipResponse(status=int(b), reason=c, **common)  # type: ignore[arg-type]


def _check_length(headers: Headers, body: bytes, problems: list[str]) -> bytes:
    """RFC 3261 §18.3: the body is Content-Length bytes; extra bytes are not body."""
    value = headers.get("content-length")
    if value is None:
        return body
    if not value.strip().isdigit():
        problems.append(f"Content-Length is not a number: {value!r}")
        return body
    length = int(value)
    if length < len(body):
        problems.append(f"Content-Length {length} is shorter than the {len(body)}-byte body")
        return body[:length]
    if length > len(body):
        problems.append(f"Content-Length {length} exceeds the {len(body)} bytes present")
    return body


def serialise(msg: SipMessage) -> bytes:
    """The message's bytes rebuilt from its parsed fields (header lines as on the wire)."""
    lines = [msg.start_line()]
    lines.extend(h.raw if h.raw else f"{h.name}: {h.value}" for h in msg.headers)
    head = msg.eol.join(lines).encode("utf-8", "surrogateescape")
    tail = msg.raw[len(head) + 2 * len(msg.eol) + len(msg.body) :]
    return head + (msg.eol * 2).encode() + msg.body + tail
