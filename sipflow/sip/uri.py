"""SIP/SIPS/TEL URIs, name-addr / addr-spec values and Via values.

How this works: each value is matched against the RFC 3261 §25 productions in
:mod:`sipflow.sip.grammar`. A value whose structure cannot be found (no scheme, an
unterminated quoted string, no sent-by) raises :class:`~sipflow.errors.ParseError` naming
the rule. A value whose structure is clear but breaks a finer rule (an empty parameter,
an unquoted display name with a comma, LWS inside ``<>``) is still returned, with the
broken rules listed in ``issues`` so the message layer can report them. Quoted strings
and escapes are honoured, so a ``;`` or ``,`` inside a display name never splits a value.
Escapes (``%41``) are kept as written: comparing URIs is a caller's business (§19.1.4).
A From/To/Contact or Via value that differs from one parsed before only in its last
parameter (a new tag, a new branch) reuses that parse (``_last_param``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache

from sipflow.errors import ParseError
from sipflow.frozen import builder
from sipflow.sip import grammar as g


def _split_outside_quotes(text: str, sep: str) -> list[str]:
    """Split on ``sep`` outside quoted strings (backslash escapes honoured)."""
    if '"' not in text:
        return text.split(sep)
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


def _generic_params(text: str, where: str, issues: list[str]) -> dict[str, str]:
    """``;a=b;c`` -> {"a": "b", "c": ""}; names lower-cased (RFC 3261 §25 generic-param).

    ``text`` starts at the first ``;``. Broken parameters are kept best-effort and noted
    in ``issues``.
    """
    out: dict[str, str] = {}
    pieces = _split_outside_quotes(text, ";")
    if pieces[0].strip():
        issues.append(
            f"{where}: unexpected text {pieces[0].strip()[:40]!r} before parameters "
            "(RFC 3261 §25.1; an IPv6 address needs [], RFC 5118 §4.5)"
        )
    for part in pieces[1:]:
        part = part.strip()
        if not part:
            issues.append(f"{where}: empty parameter between ';' (RFC 3261 §25.1 generic-param)")
            continue
        m = g.generic_param.fullmatch(part)
        if m is None:
            issues.append(f"{where}: malformed parameter {part[:40]!r} (RFC 3261 §25.1)")
            name, _, value = part.partition("=")
            out[name.strip().lower()] = value.strip()
            continue
        out[m.group(1).lower()] = m.group(2) or ""
    return out


def _fast_params(text: str) -> dict[str, str]:
    """Parameters of a value the whole-value regex already accepted (no checks needed)."""
    out: dict[str, str] = {}
    if not text:
        return out
    for part in _split_outside_quotes(text, ";")[1:]:
        name, _, value = part.partition("=")
        out[name.strip().lower()] = value.strip()
    return out


def _params(text: str) -> dict[str, str]:
    """Lenient ``;a=b;c`` parser kept for callers that only want the values."""
    return _generic_params(";" + text.lstrip(";"), "params", [])


@dataclass(frozen=True, slots=True)
class Uri:
    """A sip:, sips: or tel: URI (other schemes keep ``scheme``, ``raw`` and ``host`` = rest).

    ``user`` and ``password`` keep their escapes; ``params`` are uri-parameters (names
    lower-cased), ``headers`` the ``?h=v&...`` part.
    """

    raw: str
    scheme: str
    user: str | None
    host: str
    port: int | None
    params: dict[str, str]
    password: str | None = None
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def user_or_number(self) -> str:
        return self.user if self.user is not None else self.host


def parse_uri(text: str) -> Uri:
    """Parse a SIP-URI / SIPS-URI (RFC 3261 §19.1, §25.1), tel URI (RFC 3966) or absoluteURI."""
    raw = text.strip()
    if any(c in raw for c in " \t\r\n"):
        raise ParseError("URI", f"whitespace inside {raw[:80]!r} (RFC 3261 §19.1.1)")
    m = g.absolute_uri.fullmatch(raw)
    if m is None:
        raise ParseError("URI", f"no scheme in {raw[:80]!r} (RFC 3261 §25.1 absoluteURI)")
    scheme = m.group(1).lower()
    if scheme in ("sip", "sips"):
        return _parse_sip_uri(raw, scheme)
    if scheme == "tel":
        number, _, params = m.group(2).partition(";")
        return Uri(raw, scheme, number, "", None, _params(params))
    return Uri(raw, scheme, None, m.group(2), None, {})


def _parse_sip_uri(raw: str, scheme: str) -> Uri:
    m = g.sip_uri.fullmatch(raw)
    if m is not None and g.sip_uri_full.fullmatch(raw) and int(m.group("port") or 0) <= 65535:
        userinfo = m.group("userinfo")
        user, colon, pw = userinfo.partition(":") if userinfo is not None else (None, "", "")
        port = m.group("port")
        headers = m.group("headers")
        return Uri(
            raw,
            scheme,
            user,
            m.group("host").lower(),
            int(port) if port else None,
            _fast_params(m.group("params") or ""),
            pw if colon else None,
            dict(h.split("=", 1) for h in headers.split("&")) if headers else {},
        )
    if m is None:
        raise ParseError(
            "SIP-URI",
            f"not scheme:[userinfo@]host[:port][;params][?headers]: {raw[:80]!r} (RFC 3261 §25.1)",
        )
    user, password = _userinfo(m.group("userinfo"), raw)
    port = _port(m.group("port"), raw)
    params = _uri_params(m.group("params") or "", raw)
    headers = _uri_headers(m.group("headers"), raw)
    return Uri(raw, scheme, user, m.group("host").lower(), port, params, password, headers)


def _userinfo(userinfo: str | None, raw: str) -> tuple[str | None, str | None]:
    """``user [":" password]`` (RFC 3261 §25.1 userinfo)."""
    if userinfo is None:
        return None, None
    user, colon, password = userinfo.partition(":")
    if not g.user.fullmatch(user):
        raise ParseError(
            "SIP-URI", f"bad user part {user[:40]!r} in {raw[:80]!r} (RFC 3261 §25.1 user)"
        )
    if colon and not g.password.fullmatch(password):
        raise ParseError("SIP-URI", f"bad password in {raw[:80]!r} (RFC 3261 §25.1 password)")
    return user, (password if colon else None)


def _port(text: str | None, raw: str) -> int | None:
    if text is None:
        return None
    if not text or int(text) > 65535:
        raise ParseError("hostport", f"bad port {text!r} in {raw[:80]!r} (RFC 3261 §25.1 port)")
    return int(text)


def _uri_params(text: str, raw: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in text.split(";")[1:]:
        m = g.uri_param.fullmatch(part)
        if m is None:
            raise ParseError(
                "uri-parameter",
                f"bad parameter {part[:40]!r} in {raw[:80]!r} (RFC 3261 §25.1 uri-parameters)",
            )
        out[m.group(1).lower()] = m.group(2) or ""
    return out


def _uri_headers(text: str | None, raw: str) -> dict[str, str]:
    out: dict[str, str] = {}
    if text is None:
        return out
    for part in text.split("&"):
        m = g.uri_header.fullmatch(part)
        if m is None:
            raise ParseError(
                "SIP-URI", f"bad header {part[:40]!r} in {raw[:80]!r} (RFC 3261 §25.1 headers)"
            )
        out[m.group(1)] = m.group(2)
    return out


def split_hostport(text: str) -> tuple[str, int | None]:
    """``host[:port]`` with IPv6 references in brackets (RFC 3261 §25 hostport)."""
    text = text.strip()
    m = g.hostport.fullmatch(text)
    if m is None:
        raise ParseError("hostport", f"bad host[:port] {text[:80]!r} (RFC 3261 §25.1 hostport)")
    return m.group(1).lower(), _port(m.group(2), text)


@dataclass(frozen=True, slots=True)
class NameAddr:
    """A From/To/Contact value: optional display name, URI and header parameters.

    ``display`` is the display name as written (inside the quotes, escapes kept);
    ``issues`` lists rules the value breaks while still being understood.
    """

    display: str | None
    uri: str
    params: dict[str, str]
    issues: tuple[str, ...] = ()

    @property
    def tag(self) -> str | None:
        return self.params.get("tag")


_new_name_addr = builder(NameAddr)

# --- a new last parameter -----------------------------------------------------------------
# From/To values recur with a new tag in every call, Via values with a new branch in every
# transaction: ``P;name=value`` with ``name`` and ``value`` tokens is well-formed exactly
# when ``P`` is (RFC 3261 §25.1: a generic-param list may end in SWS; no token holds ";",
# "\"" or ">", so the parameter cannot belong to a quoted string or the <uri>), and parses
# to P's fields with ``name`` set to ``value`` last (as _fast_params' dict assignment
# would). So the whole-value regex runs once per ``P`` (memoised), not per tag or branch.
_LAST_PARAM = re.compile(rf"({g.TOKEN})=({g.TOKEN})")
_BASES = 512  # distinct P kept (callers, callees, sent-by addresses of a capture)


def _last_param(text: str) -> tuple[str, str, str] | None:
    """``(P, name, value)`` when ``text`` ends in ``;name=value`` (both tokens)."""
    head, semi, last = text.rpartition(";")
    if not semi:
        return None
    m = _LAST_PARAM.fullmatch(last)
    return (head, m.group(1).lower(), m.group(2)) if m is not None else None


def _set_param(params: dict[str, str], name: str, value: str) -> dict[str, str]:
    out = params.copy()
    out[name] = value
    return out


def parse_name_addr(text: str) -> NameAddr:
    """``[display] <uri> *(;param)`` or ``addr-spec *(;param)`` (RFC 3261 §20.10, §25)."""
    text = text.strip()
    split = _last_param(text)
    if split is not None:
        base = _name_addr_base(split[0])
        if base is not None:
            params = _set_param(base.params, split[1], split[2])
            return _new_name_addr(base.display, base.uri, params, ())
    return _name_addr_fast(text) or _name_addr_slow(text)


@lru_cache(maxsize=_BASES)
def _name_addr_base(text: str) -> NameAddr | None:
    return _name_addr_fast(text)  # not stripped: only SP/HTAB may precede the ";"


def _name_addr_fast(text: str) -> NameAddr | None:
    """The value when a whole-value regex accepts it (no checks left), else None."""
    m = g.name_addr_full.fullmatch(text)
    if m is not None:
        quoted = m.group(1)
        display = quoted[1:-1] if quoted is not None else m.group(2)
        return NameAddr(display, m.group(3), _fast_params(m.group(4)))
    m = g.addr_spec_full.fullmatch(text)
    if m is not None:
        return NameAddr(None, m.group(1), _fast_params(m.group(2)))
    return None


def _name_addr_slow(text: str) -> NameAddr:
    """The piecewise parse, for values the whole-value regexes refused: says what is wrong."""
    issues: list[str] = []
    if text.startswith('"'):
        m = g.quoted_string.match(text)
        if m is None:
            raise ParseError(
                "name-addr",
                f"unterminated quoted display name in {text[:80]!r} (RFC 3261 §25.1 quoted-string)",
            )
        display: str | None = text[1 : m.end() - 1]
        rest = text[m.end() :].lstrip(" \t")
        if not rest.startswith("<"):
            raise ParseError("name-addr", f"display name without <uri> in {text[:80]!r}")
        return _bracketed(display, rest, 0, issues)
    lt = text.find("<")
    if lt >= 0:
        display = text[:lt].strip() or None
        if display is not None and not g.display_tokens.fullmatch(display):
            issues.append(
                f"display-name {display[:40]!r} is neither tokens nor a quoted-string "
                "(RFC 3261 §25.1 display-name)"
            )
        return _bracketed(display, text, lt, issues)
    return _addr_spec(text, issues)


def _bracketed(display: str | None, text: str, lt: int, issues: list[str]) -> NameAddr:
    gt = text.find(">", lt)
    if gt < 0:
        raise ParseError("name-addr", f"missing '>' in {text[:80]!r} (RFC 3261 §25.1 name-addr)")
    inner = text[lt + 1 : gt]
    uri = inner.strip()
    if not uri:
        raise ParseError("name-addr", f"empty <> in {text[:80]!r}")
    if uri != inner:
        issues.append(
            f"LWS inside <{uri[:40]}> (RFC 3261 §25.1 name-addr: LAQUOT addr-spec RAQUOT)"
        )
    params = _generic_params(text[gt + 1 :], "header parameters", issues)
    return NameAddr(display, uri, params, tuple(issues))


def _addr_spec(text: str, issues: list[str]) -> NameAddr:
    # addr-spec form: parameters after the URI are header parameters, so a URI with
    # ';', ',' or '?' must be in <> (RFC 3261 §20.10).
    uri, semi, rest = text.partition(";")
    uri = uri.strip()
    if not uri:
        raise ParseError("name-addr", "empty address")
    if " " in uri or "\t" in uri:
        raise ParseError("addr-spec", f"whitespace inside {uri[:80]!r} (RFC 3261 §25.1)")
    if "?" in uri or "," in uri:
        issues.append(f"addr-spec {uri[:40]!r} contains '?' or ',' outside <> (RFC 3261 §20.10)")
    params = _generic_params(semi + rest, "header parameters", issues)
    return NameAddr(None, uri, params, tuple(issues))


@dataclass(frozen=True, slots=True)
class Via:
    """One via-parm: ``SIP/2.0/UDP host:port;branch=...`` (RFC 3261 §20.42).

    ``host`` is lower-cased and keeps the brackets of an IPv6 reference.
    """

    protocol: str
    transport: str
    host: str
    port: int | None
    params: dict[str, str]
    issues: tuple[str, ...] = ()

    @property
    def branch(self) -> str | None:
        return self.params.get("branch")

    @property
    def sent_by(self) -> str:
        return f"{self.host}:{self.port}" if self.port is not None else self.host

    @property
    def received(self) -> str | None:
        """The ``received`` address (RFC 3261 §18.2.1), brackets stripped."""
        value = self.params.get("received")
        return value.strip("[]") if value else None

    @property
    def rport(self) -> int | None:
        """The ``rport`` value (RFC 3581 §4); None when absent or empty (a request for one)."""
        value = self.params.get("rport")
        return int(value) if value and value.isdigit() else None


_new_via = builder(Via)


def parse_via(text: str) -> Via:
    """Parse one via-parm (RFC 3261 §25: sent-protocol LWS sent-by *(SEMI via-params))."""
    text = text.strip()
    if "received" not in text:  # received= is checked further (_is_address)
        split = _last_param(text)
        if split is not None:  # a new branch on a known sent-by (see _last_param)
            base = _via_base(split[0])
            if base is not None:
                params = _set_param(base.params, split[1], split[2])
                return _new_via(base.protocol, base.transport, base.host, base.port, params, ())
        found = _via_fast(text)
        if found is not None:
            return found
    return _via_slow(text)


@lru_cache(maxsize=_BASES)
def _via_base(text: str) -> Via | None:
    return _via_fast(text)  # not stripped: only SP/HTAB may precede the ";"


def _via_fast(text: str) -> Via | None:
    """The via-parm when the whole-value regex accepts it (no checks left), else None."""
    m = g.via_parm_full.fullmatch(text)
    if m is None:
        return None
    port_text = m.group(5)
    return Via(
        f"{m.group(1)}/{m.group(2)}",
        m.group(3).upper(),
        m.group(4).lower(),
        int(port_text) if port_text else None,
        _fast_params(m.group(6)),
    )


def _via_slow(text: str) -> Via:
    """The piecewise parse, for values the whole-value regex refused (or with received=)."""
    m = g.via_parm.fullmatch(text)
    if m is None:
        raise ParseError(
            "Via",
            f"not 'SIP/2.0/transport host[:port][;params]': {text[:80]!r} "
            "(RFC 3261 §25.1 via-parm)",
        )
    issues: list[str] = []
    port = _port(m.group(5), text)
    params = _generic_params(m.group(6), "Via parameters", issues)
    if "received" in params and not _is_address(params["received"]):
        issues.append(
            f"received={params['received'][:40]!r} is not an IP address "
            "(RFC 3261 §25.1 via-received)"
        )
    protocol = f"{m.group(1)}/{m.group(2)}"
    return Via(protocol, m.group(3).upper(), m.group(4).lower(), port, params, tuple(issues))


def _is_address(value: str) -> bool:
    return bool(g.ipv4.fullmatch(value) or ":" in value)
