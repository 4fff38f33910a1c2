"""SIP/SIPS/TEL URIs, name-addr / addr-spec values and Via values.

How this works: small hand-written scanners over the RFC 3261 §25 productions
(``name-addr``, ``addr-spec``, ``via-parm``); quoted strings and escapes are honoured
so a ``;`` or ``,`` inside a display name never splits a value. Each parser raises
:class:`~sipflow.errors.ParseError` naming the rule that failed.
"""

from __future__ import annotations

from dataclasses import dataclass

from sipflow.errors import ParseError


def _params(text: str) -> dict[str, str]:
    """``;a=b;c`` -> {"a": "b", "c": ""} with lower-case names (RFC 3261 §25 generic-param)."""
    out: dict[str, str] = {}
    for part in _split_outside_quotes(text, ";"):
        part = part.strip()
        if not part:
            continue
        name, _, value = part.partition("=")
        out[name.strip().lower()] = value.strip()
    return out


def _split_outside_quotes(text: str, sep: str) -> list[str]:
    parts: list[str] = []
    quoted = escaped = False
    start = 0
    for i, ch in enumerate(text):
        if escaped:
            escaped = False
        elif ch == "\\" and quoted:
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif ch == sep and not quoted:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return parts


@dataclass(frozen=True, slots=True)
class Uri:
    """A sip:, sips: or tel: URI (other schemes keep ``scheme`` and ``raw`` only)."""

    raw: str
    scheme: str
    user: str | None
    host: str
    port: int | None
    params: dict[str, str]

    @property
    def user_or_number(self) -> str:
        return self.user if self.user is not None else self.host


def parse_uri(text: str) -> Uri:
    """Parse a SIP-URI / SIPS-URI (RFC 3261 §19.1) or tel URI (RFC 3966)."""
    raw = text.strip()
    scheme, colon, rest = raw.partition(":")
    if not colon or not scheme:
        raise ParseError("URI", f"no scheme in {raw!r}")
    scheme = scheme.lower()
    if scheme == "tel":
        number, _, params = rest.partition(";")
        return Uri(raw, scheme, number, "", None, _params(params))
    if scheme not in ("sip", "sips"):
        return Uri(raw, scheme, None, rest, None, {})
    rest, _, _headers = rest.partition("?")
    userinfo, at, hostpart = rest.rpartition("@")
    if not at:
        hostpart, userinfo = rest, ""
    user: str | None = userinfo.partition(":")[0] if at else None
    hostport, _, params = hostpart.partition(";")
    host, port = split_hostport(hostport)
    if not host:
        raise ParseError("URI", f"empty host in {raw!r}")
    return Uri(raw, scheme, user, host, port, _params(params))


def split_hostport(text: str) -> tuple[str, int | None]:
    """``host[:port]`` with IPv6 references in brackets (RFC 3261 §25 hostport)."""
    text = text.strip()
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ParseError("hostport", f"unclosed IPv6 reference in {text!r}")
        host, rest = text[: end + 1], text[end + 1 :]
        port_text = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port_text = text.partition(":")
    port: int | None = None
    if port_text:
        if not port_text.isdigit() or int(port_text) > 65535:
            raise ParseError("hostport", f"bad port {port_text!r}")
        port = int(port_text)
    return host.lower(), port


@dataclass(frozen=True, slots=True)
class NameAddr:
    """A From/To/Contact value: optional display name, URI and header parameters."""

    display: str | None
    uri: str
    params: dict[str, str]

    @property
    def tag(self) -> str | None:
        return self.params.get("tag")


def parse_name_addr(text: str) -> NameAddr:
    """``[display] <uri> *(;param)`` or ``addr-spec *(;param)`` (RFC 3261 §20.10, §25)."""
    text = text.strip()
    i = 0
    display: str | None = None
    if text.startswith('"'):
        i = 1
        while i < len(text) and text[i] != '"':
            i += 2 if text[i] == "\\" else 1
        if i >= len(text):
            raise ParseError("name-addr", f"unterminated quoted display name in {text!r}")
        display = text[1:i]
        i += 1
    lt = text.find("<", i)
    if lt >= 0:
        gt = text.find(">", lt)
        if gt < 0:
            raise ParseError("name-addr", f"missing '>' in {text!r}")
        if display is None:
            display = text[i:lt].strip() or None
        return NameAddr(display, text[lt + 1 : gt].strip(), _params(text[gt + 1 :]))
    if display is not None:
        raise ParseError("name-addr", f"display name without <uri> in {text!r}")
    # addr-spec form: parameters after the URI are header parameters (RFC 3261 §20.10).
    uri, _, params = text.partition(";")
    if not uri.strip():
        raise ParseError("name-addr", "empty address")
    return NameAddr(None, uri.strip(), _params(params))


@dataclass(frozen=True, slots=True)
class Via:
    """One via-parm: ``SIP/2.0/UDP host:port;branch=...`` (RFC 3261 §20.42)."""

    protocol: str
    transport: str
    host: str
    port: int | None
    params: dict[str, str]

    @property
    def branch(self) -> str | None:
        return self.params.get("branch")

    @property
    def sent_by(self) -> str:
        return f"{self.host}:{self.port}" if self.port is not None else self.host


def parse_via(text: str) -> Via:
    """Parse one via-parm (RFC 3261 §25: sent-protocol LWS sent-by *(SEMI via-params))."""
    text = text.strip()
    proto, sep, rest = text.partition(" ")
    if not sep:
        # tolerate tab or LWS variations: split on any whitespace
        pieces = text.split(None, 1)
        if len(pieces) != 2:
            raise ParseError("Via", f"no sent-by in {text!r}")
        proto, rest = pieces
    bits = [b.strip() for b in proto.split("/")]
    if len(bits) != 3:
        raise ParseError("Via", f"bad sent-protocol {proto!r}")
    sent_by, _, params = rest.strip().partition(";")
    host, port = split_hostport(sent_by)
    if not host:
        raise ParseError("Via", f"empty sent-by in {text!r}")
    return Via(f"{bits[0]}/{bits[1]}", bits[2].upper(), host, port, _params(params))
