"""A lossless SDP model (RFC 8866, formerly RFC 4566) with typed accessors.

How this works: :func:`parse_sdp` splits the body into lines, each kept with its exact
text and line ending (CRLF, LF, CR or none), so ``serialise(parse_sdp(x)) == x`` byte for
byte, whatever the input. Each ``<type>=<value>`` line is then read by a parser chosen
from a table by its type letter (``v o s c t m b``) or, for ``a=`` lines, by attribute
name (``rtpmap fmtp ptime crypto fingerprint setup candidate group`` ...). A value that does
not follow its grammar raises :class:`~sipflow.errors.ParseError` inside that parser; here,
at the model's boundary, it becomes an :class:`SdpProblem` naming the line, and the line
stays in the model unparsed. Unknown attributes are kept as name/value text.

Lines before the first ``m=`` form the session section; each ``m=`` starts a media
section (RFC 8866 §5). Two bounded caches keep this cheap when bodies repeat with small
changes (each call's SDP differs from the last in o=, c= and the m= port): each distinct
line is read once, and so is each distinct set of a section's ``a=`` lines with its m=
formats (the attribute index, rtpmaps and formats, shared between sections, never
changed). Media-level accessors (direction, connection, ICE, DTLS) fall back to the
session level as RFC 8866 §5.7/§6.7, RFC 8839 §5 and RFC 8122 §5 say.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import NamedTuple, TypeVar

from sipflow.errors import ParseError
from sipflow.frozen import builder
from sipflow.memo import remember
from sipflow.sdp.srtp import (
    CryptoAttr,
    Fingerprint,
    SetupRole,
    parse_crypto,
    parse_fingerprint,
    parse_setup,
)

# RFC 3551 §6 table 4/5: static payload types (encoding, clock rate, channels)
STATIC_PT: dict[int, tuple[str, int, int | None]] = {
    0: ("PCMU", 8000, 1),
    3: ("GSM", 8000, 1),
    4: ("G723", 8000, 1),
    5: ("DVI4", 8000, 1),
    6: ("DVI4", 16000, 1),
    7: ("LPC", 8000, 1),
    8: ("PCMA", 8000, 1),
    9: ("G722", 8000, 1),
    10: ("L16", 44100, 2),
    11: ("L16", 44100, 1),
    12: ("QCELP", 8000, 1),
    13: ("CN", 8000, 1),
    14: ("MPA", 90000, None),
    15: ("G728", 8000, 1),
    16: ("DVI4", 11025, 1),
    17: ("DVI4", 22050, 1),
    18: ("G729", 8000, 1),
    25: ("CelB", 90000, None),
    26: ("JPEG", 90000, None),
    28: ("nv", 90000, None),
    31: ("H261", 90000, None),
    32: ("MPV", 90000, None),
    33: ("MP2T", 90000, None),
    34: ("H263", 90000, None),
}

DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")  # RFC 8866 §6.7
_TYPES = frozenset("vosiuepcbtrzkam")  # RFC 8866 §5 line types (r, k kept for old peers)
_SESSION_MUST = frozenset("ost")  # RFC 8866 §5: o=, s=, t= in the session part
_ICE_KEYS = frozenset({"ice-ufrag", "candidate", "ice-lite"})  # what ``Sdp.ice_of`` reads


class Direction(enum.Enum):
    """Media direction attributes (RFC 8866 §6.7, RFC 3264 §5.1)."""

    SENDRECV = "sendrecv"
    SENDONLY = "sendonly"
    RECVONLY = "recvonly"
    INACTIVE = "inactive"


_DIRECTION_KEYS = {d.value: d for d in Direction}
_T = TypeVar("_T")


# -- typed values ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Origin:
    """``o=<username> <sess-id> <sess-version> <nettype> <addrtype> <unicast-address>``."""

    username: str
    sess_id: str
    sess_version: str
    nettype: str
    addrtype: str
    address: str


@dataclass(frozen=True, slots=True)
class Connection:
    """``c=<nettype> <addrtype> <connection-address>`` with optional /ttl and /count."""

    nettype: str
    addrtype: str
    address: str
    ttl: int | None = None
    count: int | None = None


@dataclass(frozen=True, slots=True)
class Timing:
    """``t=<start-time> <stop-time>`` (NTP seconds; 0 0 = unbounded)."""

    start: int
    stop: int


@dataclass(frozen=True, slots=True)
class MediaDesc:
    """``m=<media> <port>[/<number of ports>] <proto> <fmt> ...`` (RFC 8866 §5.14)."""

    media: str
    port: int
    port_count: int | None
    proto: str
    fmts: tuple[str, ...]
    payload_types: tuple[int, ...] = ()
    """Formats that are RTP payload type numbers (RTP profiles only)."""


@dataclass(frozen=True, slots=True)
class RtpMap:
    """``a=rtpmap:<pt> <encoding>/<clock>[/<channels>]`` (RFC 8866 §6.6)."""

    pt: int
    encoding: str
    clock: int
    channels: int | None = None

    @property
    def label(self) -> str:
        base = f"{self.encoding}/{self.clock}"
        return f"{base}/{self.channels}" if self.channels and self.channels != 1 else base

    @property
    def identity(self) -> tuple[str, int, int]:
        """What makes two rtpmaps the same codec: name (case-insensitive), clock, channels."""
        return (self.encoding.lower(), self.clock, self.channels or 1)


@dataclass(frozen=True, slots=True)
class Format:
    """One format of an m-line: an RTP payload type with its codec (from a=rtpmap or the
    RFC 3551 static table; ``clock`` None when unknown), or a non-RTP format name (t38)."""

    fmt: str
    pt: int | None
    encoding: str
    clock: int | None = None
    channels: int | None = None

    @property
    def label(self) -> str:
        """``PCMA/8000``, ``opus/48000/2``, ``t38``, ``PT 96`` (no rtpmap)."""
        if self.clock is None:
            return self.encoding or f"PT {self.pt}"
        base = f"{self.encoding}/{self.clock}"
        return f"{base}/{self.channels}" if self.channels and self.channels != 1 else base

    @property
    def identity(self) -> tuple[str, int | None, int]:
        """What makes two formats the same codec: name (any case), clock, channels."""
        if self.clock is None:
            return (self.encoding.lower() or f"pt{self.pt}", None, 0)
        return (self.encoding.lower(), self.clock, self.channels or 1)

    def to_dict(self) -> dict[str, object]:
        return {
            "pt": self.pt,
            "name": self.encoding,
            "clock": self.clock,
            "channels": self.channels,
        }


@dataclass(frozen=True, slots=True)
class Fmtp:
    """``a=fmtp:<format> <format specific parameters>`` (RFC 8866 §6.15)."""

    fmt: str
    params: str


@dataclass(frozen=True, slots=True)
class Candidate:
    """``a=candidate`` (RFC 8839 §5.1): the fields needed to say where media may flow."""

    foundation: str
    component: int
    transport: str
    priority: int
    address: str
    port: int
    typ: str
    extra: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Group:
    """``a=group:<semantics> <mid> ...`` (RFC 5888 §5)."""

    semantics: str
    mids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Rtcp:
    """``a=rtcp:<port> [<nettype> <addrtype> <address>]`` (RFC 3605 §2.1)."""

    port: int
    address: str | None = None


# -- lines, attributes, problems ------------------------------------------------------------


class SdpLine(NamedTuple):
    """One line exactly as received: ``text`` without its ending, ``eol`` the ending.

    A NamedTuple, not a dataclass: an SDP has tens of lines and building them is most of
    the parse (immutable all the same)."""

    index: int  # type: ignore[assignment]  # shadows tuple.index, on purpose
    """0-based line number."""
    text: str
    eol: str
    type: str
    """The type letter, or "" when the line is not ``<letter>=<value>``."""
    value: str
    parsed: object = None
    """The typed value (Origin, MediaDesc, ...) when the line parsed, else None."""


@dataclass(frozen=True, slots=True)
class Attribute:
    """``a=<name>[:<value>]``: name as written, ``key`` lower-cased for look-ups."""

    name: str
    key: str
    value: str | None
    parsed: object = None
    """The typed value (RtpMap, CryptoAttr, ...) when the attribute parsed, else None."""


class ProblemKind(enum.Enum):
    SYNTAX = "syntax"  # not <type>=<value>
    VALUE = "value"  # a known field whose value does not follow its grammar
    STRUCTURE = "structure"  # v= not first, o=/s=/t= missing, unknown type letter
    BLANK = "blank"  # an empty line (RFC 8866 §5: no blank lines)


@dataclass(frozen=True, slots=True)
class SdpProblem:
    """Something in the SDP that does not follow RFC 8866; ``line`` is 0-based (-1: none)."""

    kind: ProblemKind
    line: int
    text: str
    detail: str


# -- sections -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Section:
    """The session part or one media part: its lines and attributes, in order."""

    lines: tuple[SdpLine, ...]
    attributes: tuple[Attribute, ...]
    by_key: dict[str, tuple[Attribute, ...]] = field(default_factory=dict, compare=False)
    """``attributes`` grouped by lower-cased name, each group in order."""

    def attrs(self, key: str) -> tuple[Attribute, ...]:
        return self.by_key.get(key, ())

    def has(self, key: str) -> bool:
        return key in self.by_key

    def value(self, key: str) -> str | None:
        found = self.by_key.get(key)
        return found[0].value if found else None

    def _typed(self, key: str, kind: type[_T]) -> tuple[_T, ...]:
        """The typed values of the ``key`` attributes that parsed; () fast when there is none
        (these accessors run several times per m-line in the offer/answer rules)."""
        found = self.by_key.get(key)
        if not found:
            return ()
        return tuple([a.parsed for a in found if isinstance(a.parsed, kind)])

    @property
    def connection(self) -> Connection | None:
        for line in self.lines:
            if line.type == "c" and isinstance(line.parsed, Connection):
                return line.parsed
        return None

    @property
    def direction(self) -> Direction | None:
        """The direction attribute written in this section (last wins), else None."""
        found = None
        for a in self.attributes:
            if a.key in _DIRECTION_KEYS:
                found = _DIRECTION_KEYS[a.key]
        return found

    @property
    def fingerprints(self) -> tuple[Fingerprint, ...]:
        return self._typed("fingerprint", Fingerprint)

    @property
    def setup(self) -> SetupRole | None:
        found = self._typed("setup", SetupRole)
        return found[0] if found else None

    @property
    def ice_ufrag(self) -> str | None:
        return self.value("ice-ufrag")

    @property
    def ice_pwd(self) -> str | None:
        return self.value("ice-pwd")


@dataclass(frozen=True, slots=True)
class MediaSection(Section):
    """An ``m=`` line and the lines after it up to the next ``m=``."""

    m: MediaDesc | None = None
    """None when the m= line itself did not parse."""
    rtpmaps: dict[int, RtpMap] = field(default_factory=dict, compare=False)
    """a=rtpmap by payload type (the first one wins)."""
    formats: tuple[Format, ...] = ()
    """The m-line's formats in order, each with its codec."""

    def codec(self, pt: int) -> RtpMap | None:
        """The rtpmap for ``pt``, or the RFC 3551 static assignment when there is none."""
        found = self.rtpmaps.get(pt)
        if found is None and pt in STATIC_PT:
            name, clock, ch = STATIC_PT[pt]
            return RtpMap(pt, name, clock, ch)
        return found

    def fmtp(self, fmt: int | str) -> str | None:
        for p in self._typed("fmtp", Fmtp):
            if p.fmt == str(fmt):
                return p.params
        return None

    @property
    def ptime(self) -> float | None:
        found = self._typed("ptime", float)
        return found[0] if found else None

    @property
    def maxptime(self) -> float | None:
        found = self._typed("maxptime", float)
        return found[0] if found else None

    @property
    def rtcp_mux(self) -> bool:
        return self.has("rtcp-mux")

    @property
    def rtcp(self) -> Rtcp | None:
        found = self._typed("rtcp", Rtcp)
        return found[0] if found else None

    @property
    def candidates(self) -> tuple[Candidate, ...]:
        return self._typed("candidate", Candidate)

    @property
    def crypto(self) -> tuple[CryptoAttr, ...]:
        return self._typed("crypto", CryptoAttr)

    @property
    def mid(self) -> str | None:
        return self.value("mid")


@dataclass(frozen=True, slots=True)
class Sdp:
    """A parsed session description; ``lines`` hold every byte of the input."""

    lines: tuple[SdpLine, ...]
    session: Section
    media: tuple[MediaSection, ...]
    problems: tuple[SdpProblem, ...]

    def _first(self, kind: str) -> object:
        for line in self.session.lines:
            if line.type == kind:
                return line.parsed
        return None

    @property
    def version(self) -> str | None:
        for line in self.session.lines:
            if line.type == "v":
                return line.value
        return None

    @property
    def origin(self) -> Origin | None:
        found = self._first("o")
        return found if isinstance(found, Origin) else None

    @property
    def session_name(self) -> str | None:
        for line in self.session.lines:
            if line.type == "s":
                return line.value
        return None

    @property
    def timing(self) -> Timing | None:
        found = self._first("t")
        return found if isinstance(found, Timing) else None

    @property
    def groups(self) -> tuple[Group, ...]:
        return self.session._typed("group", Group)

    # -- media-level values with the session-level fallback --------------------------------

    def connection_of(self, i: int) -> Connection | None:
        """RFC 8866 §5.7: a media c= overrides the session c=."""
        return self.media[i].connection or self.session.connection

    def direction_of(self, i: int) -> Direction:
        """RFC 8866 §6.7: media level, else session level, else sendrecv."""
        return self.media[i].direction or self.session.direction or Direction.SENDRECV

    def fingerprints_of(self, i: int) -> tuple[Fingerprint, ...]:
        return self.media[i].fingerprints or self.session.fingerprints

    def setup_of(self, i: int) -> SetupRole | None:
        return self.media[i].setup or self.session.setup

    def ice_of(self, i: int) -> bool:
        """ICE in use on this m-line: ufrag/pwd (either level) or candidates (RFC 8839)."""
        sec = self.media[i]
        if _ICE_KEYS.isdisjoint(sec.by_key) and _ICE_KEYS.isdisjoint(self.session.by_key):
            return False  # no ICE attribute at either level (nearly always): nothing to read
        return bool(
            sec.ice_ufrag or self.session.ice_ufrag or sec.candidates or sec.has("ice-lite")
        ) or self.session.has("ice-lite")

    def serialise(self) -> bytes:
        return serialise(self)


def serialise(sdp: Sdp) -> bytes:
    """The exact bytes the SDP was parsed from."""
    return "".join(line.text + line.eol for line in sdp.lines).encode("utf-8", "surrogateescape")


# -- value parsers (raise ParseError) -------------------------------------------------------


def _fields(value: str, n: int, what: str, grammar: str) -> list[str]:
    parts = value.split()
    if len(parts) != n:
        raise ParseError(what, f"expected {grammar}, got {len(parts)} fields")
    return parts


def _int(text: str, what: str) -> int:
    if not text.isdigit():
        raise ParseError(what, f"{text[:20]!r} is not a decimal number")
    return int(text)


def _version(value: str) -> object:
    if value.strip() != "0":  # RFC 8866 §5.1
        raise ParseError("v=", f"protocol version {value[:10]!r} is not 0")
    return None


def _origin(value: str) -> Origin:
    g = "'username sess-id sess-version nettype addrtype address' (RFC 8866 §5.2)"
    return Origin(*_fields(value, 6, "o=", g))


def _session_name(value: str) -> object:
    if not value:  # RFC 8866 §5.3: s= SHOULD carry at least one character (" " or "-")
        raise ParseError("s=", "empty session name (RFC 8866 §5.3: use 's= ' or 's=-')")
    return None


def _connection(value: str) -> Connection:
    net, addrtype, addr = _fields(value, 3, "c=", "'nettype addrtype address' (RFC 8866 §5.7)")
    base, *rest = addr.split("/")
    if not base or len(rest) > 2:
        raise ParseError("c=", f"bad connection-address {addr[:40]!r} (RFC 8866 §5.7)")
    nums = [_int(r, "c=") for r in rest]
    ttl = nums[0] if nums and addrtype.upper() == "IP4" else None
    count = nums[-1] if (len(nums) == 2 or (nums and addrtype.upper() == "IP6")) else None
    return Connection(net, addrtype, base, ttl, count)


def _timing(value: str) -> Timing:
    start, stop = _fields(value, 2, "t=", "'start-time stop-time' (RFC 8866 §5.9)")
    return Timing(_int(start, "t="), _int(stop, "t="))


def _media(value: str) -> MediaDesc:
    parts = value.split()
    if len(parts) < 3:
        raise ParseError("m=", "expected 'media port proto fmt ...' (RFC 8866 §5.14)")
    port, _, count = parts[1].partition("/")
    n = _int(count, "m=") if count else None
    fmts = tuple(parts[3:])
    pts = _payload_types(parts[2], fmts)
    return _new_media_desc(parts[0], _int(port, "m="), n, parts[2], fmts, pts)


@lru_cache(maxsize=1024)  # m= lines differ in their port; profile and formats repeat
def _payload_types(proto: str, fmts: tuple[str, ...]) -> tuple[int, ...]:
    """The formats that are RTP payload type numbers (none unless the profile is RTP)."""
    rtp = "RTP" in proto.upper()
    return tuple(int(f) for f in fmts if rtp and f.isdigit() and int(f) < 128)


def _bandwidth(value: str) -> object:
    kind, colon, bw = value.partition(":")
    if not colon or not kind or not bw.strip().isdigit():
        raise ParseError("b=", f"expected 'bwtype:bandwidth' in {value[:30]!r} (RFC 8866 §5.8)")
    return None


_RTPMAP = re.compile(r"(\d{1,3})[ \t]+([^/\s]+)/(\d+)(?:/(\d+))?[ \t]*")


def _rtpmap(value: str) -> RtpMap:
    m = _RTPMAP.fullmatch(value)
    if m is None:
        raise ParseError(
            "rtpmap",
            f"expected 'payload-type encoding/clock[/channels]' in {value!r} (RFC 8866 §6.6)",
        )
    pt = int(m.group(1))
    if pt > 127:
        raise ParseError("rtpmap", f"payload type {pt} is not 0-127 (RFC 3550 §5.1)")
    ch = int(m.group(4)) if m.group(4) else None
    return RtpMap(pt, m.group(2), int(m.group(3)), ch)


def _fmtp(value: str) -> Fmtp:
    fmt, _, params = value.strip().partition(" ")
    if not fmt:
        raise ParseError("fmtp", f"expected 'format parameters' in {value!r} (RFC 8866 §6.15)")
    return Fmtp(fmt, params.strip())


def _ptime(value: str) -> float:
    try:
        ms = float(value.strip())
    except ValueError:
        raise ParseError("ptime", f"{value[:20]!r} is not a number of ms (RFC 8866 §6.4)") from None
    if ms <= 0:
        raise ParseError("ptime", f"{value[:20]!r} is not a positive duration (RFC 8866 §6.4)")
    return ms


def _no_value(value: str) -> object:
    raise ParseError("attribute", "a property attribute takes no value (RFC 8866 §5.13)")


def _token(value: str) -> str:
    if not value.strip():
        raise ParseError("attribute", "empty value")
    return value.strip()


def _candidate(value: str) -> Candidate:
    p = value.split()
    if len(p) < 8 or p[6].lower() != "typ":
        raise ParseError(
            "candidate",
            "expected 'foundation component transport priority address port typ type' "
            "(RFC 8839 §5.1)",
        )
    comp, prio, port = _int(p[1], "candidate"), _int(p[3], "candidate"), _int(p[5], "candidate")
    return Candidate(p[0], comp, p[2], prio, p[4], port, p[7], tuple(p[8:]))


def _group(value: str) -> Group:
    p = value.split()
    if not p:
        raise ParseError("group", "expected 'semantics mid ...' (RFC 5888 §5)")
    return Group(p[0], tuple(p[1:]))


def _rtcp(value: str) -> Rtcp:
    p = value.split()
    if not p or len(p) not in (1, 4):
        raise ParseError("rtcp", "expected 'port [nettype addrtype address]' (RFC 3605 §2.1)")
    return Rtcp(_int(p[0], "rtcp"), p[3] if len(p) == 4 else None)


_LINE_PARSERS: dict[str, Callable[[str], object]] = {
    "v": _version,
    "o": _origin,
    "s": _session_name,
    "c": _connection,
    "t": _timing,
    "m": _media,
    "b": _bandwidth,
}

_ATTR_PARSERS: dict[str, Callable[[str], object]] = {
    "rtpmap": _rtpmap,
    "fmtp": _fmtp,
    "ptime": _ptime,
    "maxptime": _ptime,
    "crypto": parse_crypto,
    "fingerprint": parse_fingerprint,
    "setup": parse_setup,
    "candidate": _candidate,
    "group": _group,
    "mid": _token,
    "ice-ufrag": _token,
    "ice-pwd": _token,
    "rtcp": _rtcp,
}
# property attributes (no value): RFC 8866 §6.7 directions, RFC 5761 §5.1.3 rtcp-mux
_FLAGS = frozenset(DIRECTIONS) | {"rtcp-mux", "ice-lite"}


# -- parsing --------------------------------------------------------------------------------

_TYPE_VALUE = re.compile(r"([A-Za-z])=(.*)", re.S)


_Info = tuple[str, str, object, "Attribute | None", tuple[tuple["ProblemKind", str], ...]]
# line text -> what it parses to; lines repeat a lot between SDPs (t=0 0, a=rtpmap:0
# PCMU/8000, c=...), so each distinct line is parsed once. Bounded: the text is from the wire.
_LINE_CACHE: dict[str, _Info] = {}
_LINE_CACHE_MAX = 16384


def _line_info(text: str) -> _Info:
    """(type, value, typed value, Attribute, problems) of one line; pure, so cached."""
    m = _TYPE_VALUE.fullmatch(text)
    if m is None:
        if not text.strip():
            return "", text, None, None, ((ProblemKind.BLANK, "empty line (RFC 8866 §5)"),)
        return "", text, None, None, ((ProblemKind.SYNTAX, "not '<type>=<value>' (RFC 8866 §5)"),)
    kind, value = m.group(1), m.group(2)
    if kind == "a":
        attr, problems = _attribute(value)
        return kind, value, None, attr, problems
    found: list[tuple[ProblemKind, str]] = []
    if kind not in _TYPES:
        found.append((ProblemKind.STRUCTURE, f"unknown line type {kind!r}"))
    parsed = None
    parser = _LINE_PARSERS.get(kind)
    if parser is not None:
        try:
            parsed = parser(value)
        except ParseError as e:
            found.append((ProblemKind.VALUE, str(e)))
    if isinstance(parsed, MediaDesc) and not parsed.fmts:
        # kept as an m-line (a rejected stream often looks like this), but reported
        found.append((ProblemKind.VALUE, "m=: no media formats (RFC 8866 §5.14)"))
    return kind, value, parsed, None, tuple(found)


def _attribute(value: str) -> tuple[Attribute, tuple[tuple[ProblemKind, str], ...]]:
    name, colon, rest = value.partition(":")
    key = name.strip().lower()
    plain = Attribute(name, key, rest if colon else None)
    parser = _ATTR_PARSERS.get(key)
    try:
        if key in _FLAGS and colon:
            _no_value(rest)
        if parser is not None:
            if not colon:
                raise ParseError(key, f"a={name} needs a value (RFC 8866 §5.13)")
            return Attribute(name, key, rest, parser(rest)), ()
    except ParseError as e:
        return plain, ((ProblemKind.VALUE, str(e)),)
    return plain, ()


def _cached_info(text: str) -> _Info:
    info = _LINE_CACHE.get(text)
    if info is None:
        info = remember(_LINE_CACHE, text, _line_info(text), _LINE_CACHE_MAX)
    return info


def _index(attrs: list[Attribute]) -> dict[str, tuple[Attribute, ...]]:
    out: dict[str, list[Attribute]] = {}
    for a in attrs:
        out.setdefault(a.key, []).append(a)
    return {k: tuple(v) for k, v in out.items()}


_Parts = tuple[list[SdpLine], list[Attribute], list[str], "MediaDesc | None"]
# (lines, attributes, attribute line texts, parsed m= line) of one section while parsing


def _read_lines(
    texts: list[str], eols: list[str]
) -> tuple[list[SdpLine], list[_Parts], list[SdpProblem]]:
    """Every line in order, split into the session part and one part per ``m=`` line, and
    the problems of single lines (one loop, names bound locally: this is most of the parse)."""
    cache, lines, problems = _LINE_CACHE, [], []
    s_lines: list[SdpLine] = []
    s_attrs: list[Attribute] = []
    s_texts: list[str] = []
    sections: list[_Parts] = [(s_lines, s_attrs, s_texts, None)]
    for index, text in enumerate(texts):
        kind, value, parsed, attr, found = cache.get(text) or _cached_info(text)
        line = _new_line(SdpLine, (index, text, eols[index], kind, value, parsed))
        for pk, detail in found:
            problems.append(SdpProblem(pk, index, text, detail))
        lines.append(line)
        if kind == "m":
            s_lines, s_attrs, s_texts = [], [], []
            m = parsed if isinstance(parsed, MediaDesc) else None
            sections.append((s_lines, s_attrs, s_texts, m))
        s_lines.append(line)
        if attr is not None:
            s_attrs.append(attr)
            s_texts.append(text)
    return lines, sections, problems


def _structure(lines: list[SdpLine], session: list[SdpLine]) -> list[SdpProblem]:
    """RFC 8866 §5: v= first; o=, s= and t= present (blank trailing lines aside)."""
    first = lines[0] if lines and lines[0].type else None  # v= first: nearly always
    first = first or next((line for line in lines if line.type), None)
    if first is None:
        return [SdpProblem(ProblemKind.STRUCTURE, -1, "", "no '<type>=<value>' line at all")]
    out = []
    if first.type != "v":
        detail = "the first line is not v= (RFC 8866 §5)"
        out.append(SdpProblem(ProblemKind.STRUCTURE, first.index, first.text, detail))
    types = {line.type for line in session}
    if not _SESSION_MUST.issubset(types):
        names = ", ".join(f"{t}=" for t in "ost" if t not in types)
        detail = f"session part lacks {names} (RFC 8866 §5)"
        out.append(SdpProblem(ProblemKind.STRUCTURE, -1, "", detail))
    return out


_Shared = tuple[
    tuple[Attribute, ...], dict[str, tuple[Attribute, ...]], dict[int, RtpMap], tuple[Format, ...]
]
# A section's attribute lines (and its m= formats) -> what is built from them. Between SDPs
# only a few lines change (o= versions, m= ports, c= addresses); the attributes, their index,
# the rtpmaps and the formats repeat, so each distinct set is built once (its dicts shared,
# never changed). Bounded: the text is from the wire.
_SECTION_CACHE: dict[tuple[object, ...], _Shared] = {}
_SECTION_CACHE_MAX = 4096


def _shared(key: tuple[object, ...], build: Callable[[], _Shared]) -> _Shared:
    found = _SECTION_CACHE.get(key)
    if found is None:
        found = remember(_SECTION_CACHE, key, build(), _SECTION_CACHE_MAX)
    return found


def _session_parts(
    attrs: list[Attribute], texts: list[str]
) -> tuple[tuple[Attribute, ...], dict[str, tuple[Attribute, ...]]]:
    key = ("session", *texts)
    found = _SECTION_CACHE.get(key) or _shared(key, lambda: (tuple(attrs), _index(attrs), {}, ()))
    return found[0], found[1]


def _media_section(
    lines: list[SdpLine], attrs: list[Attribute], texts: list[str], m: MediaDesc | None
) -> MediaSection:
    key = (m.fmts if m is not None else None, bool(m and m.payload_types), *texts)
    found = _SECTION_CACHE.get(key) or _shared(key, lambda: _media_parts(attrs, m))
    return MediaSection(tuple(lines), found[0], found[1], m, found[2], found[3])


def _media_parts(attrs: list[Attribute], m: MediaDesc | None) -> _Shared:
    rtpmaps: dict[int, RtpMap] = {}
    for a in attrs:
        if isinstance(a.parsed, RtpMap):
            rtpmaps.setdefault(a.parsed.pt, a.parsed)
    formats = tuple(_format(f, m, rtpmaps) for f in m.fmts) if m is not None else ()
    return tuple(attrs), _index(attrs), rtpmaps, formats


def _format(fmt: str, m: MediaDesc, rtpmaps: dict[int, RtpMap]) -> Format:
    if not m.payload_types or not fmt.isdigit():
        return Format(fmt, None, fmt)
    pt = int(fmt)
    rm = rtpmaps.get(pt)
    if rm is not None:
        return Format(fmt, pt, rm.encoding, rm.clock, rm.channels)
    if pt in STATIC_PT:  # RFC 3551 §6: static payload types need no rtpmap
        name, clock, ch = STATIC_PT[pt]
        return Format(fmt, pt, name, clock, ch)
    return Format(fmt, pt, "")


# built without the frozen __init__ (sipflow.frozen): one of each per SDP or per m= line
_new_sdp = builder(Sdp)
_new_media_desc = builder(MediaDesc)

_EOL = re.compile(r"(\r\n|\n|\r)")
# SdpLine built straight from a tuple: the NamedTuple __new__ wrapper is a Python call per line
_new_line = tuple.__new__


def _split_lines(text: str) -> tuple[list[str], list[str]]:
    """Line texts and their endings; the last line's ending is "" (dropped when empty)."""
    crlf = text.count("\r\n")
    if crlf == text.count("\r") and crlf in (0, text.count("\n")):  # one kind of ending
        eol = "\r\n" if crlf else "\n"
        texts = text.split(eol)
        eols = [eol] * len(texts)
    else:
        parts = _EOL.split(text)  # mixed endings: alternating text, ending, text, ...
        texts, eols = parts[0::2], parts[1::2]
        eols.append("")
    eols[-1] = ""
    if not texts[-1]:
        texts.pop()
    return texts, eols


@lru_cache(maxsize=256)  # a call's hops relay the same bodies; calls seldom repeat another's
def parse_sdp(data: bytes) -> Sdp:
    """Parse an SDP body. Never raises: what does not follow RFC 8866 is in ``problems``."""
    lines, sections, problems = _read_lines(*_split_lines(data.decode("utf-8", "surrogateescape")))
    problems.extend(_structure(lines, sections[0][0]))
    s_lines, s_attrs, s_texts, _ = sections[0]
    attrs, by_key = _session_parts(s_attrs, s_texts)
    session = Section(tuple(s_lines), attrs, by_key)
    media = tuple([_media_section(*parts) for parts in sections[1:]])
    return _new_sdp(tuple(lines), session, media, tuple(problems))
