"""HTTP digest authentication for SIP (RFC 3261 §22, RFC 2617, RFC 7616, RFC 8760).

How this works: a challenge (``WWW-Authenticate`` in a 401, ``Proxy-Authenticate`` in a
407) is parsed into a :class:`Challenge`; :func:`authorization` answers it with the
credentials line for ``Authorization`` / ``Proxy-Authorization``. The server side makes a
challenge with :func:`challenge_value` and checks an answer with :func:`verify`.
Algorithms MD5 and SHA-256 (RFC 8760 §2: SHA-256 for SIP), with or without ``-sess``;
qop ``auth`` or none (RFC 2069 compatibility, RFC 2617 §3.2.2.1). Nothing here reads a
clock or a random source: nonces and cnonces are passed in. Malformed header values raise
:class:`~sipflow.errors.ParseError`.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import re
from dataclasses import dataclass

from sipflow.errors import ParseError


class Algorithm(enum.StrEnum):
    """Digest algorithms (RFC 7616 §3.2, RFC 8760 §2.2)."""

    MD5 = "MD5"
    MD5_SESS = "MD5-sess"
    SHA256 = "SHA-256"
    SHA256_SESS = "SHA-256-sess"


_HASHES = {
    Algorithm.MD5: "md5",
    Algorithm.MD5_SESS: "md5",
    Algorithm.SHA256: "sha256",
    Algorithm.SHA256_SESS: "sha256",
}
_BY_NAME = {a.value.upper(): a for a in Algorithm}

# RFC 7616 §3.3 / RFC 3261 §25.1: auth-param = token "=" ( token / quoted-string )
_PARAM = re.compile(r'\s*([A-Za-z0-9_\-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^\s,]*)\s*(?:,|$)')


@dataclass(frozen=True, slots=True)
class Challenge:
    """A parsed digest challenge (RFC 7616 §3.3)."""

    realm: str
    nonce: str
    algorithm: Algorithm = Algorithm.MD5
    qop: tuple[str, ...] = ()
    """qop options offered (empty: RFC 2069 mode)."""
    opaque: str | None = None
    stale: bool = False


@dataclass(frozen=True, slots=True)
class Credentials:
    """A parsed Authorization / Proxy-Authorization digest answer (RFC 7616 §3.4)."""

    username: str
    realm: str
    nonce: str
    uri: str
    response: str
    algorithm: Algorithm = Algorithm.MD5
    qop: str | None = None
    nc: str | None = None
    cnonce: str | None = None
    opaque: str | None = None


def _params(value: str, what: str) -> dict[str, str]:
    scheme, _, rest = value.strip().partition(" ")
    if scheme.lower() != "digest":
        raise ParseError(what, f"scheme {scheme[:20]!r} is not Digest (RFC 3261 §22.4)", 0)
    out: dict[str, str] = {}
    pos = 0
    rest = rest.strip()
    while pos < len(rest):
        m = _PARAM.match(rest, pos)
        if m is None or m.end() == pos:
            raise ParseError(
                what, f"bad auth-param at {rest[pos : pos + 30]!r} (RFC 7616 §3.3)", pos
            )
        raw = m.group(2)
        if raw.startswith('"'):
            raw = re.sub(r"\\(.)", r"\1", raw[1:-1])
        out[m.group(1).lower()] = raw
        pos = m.end()
    return out


def _algorithm(params: dict[str, str], what: str) -> Algorithm:
    name = params.get("algorithm", "MD5").upper()
    try:
        return _BY_NAME[name]
    except KeyError:
        raise ParseError(what, f"unsupported algorithm {name[:20]!r} (RFC 7616 §3.3)", 0) from None


def _need(params: dict[str, str], key: str, what: str) -> str:
    if key not in params:
        raise ParseError(what, f"missing {key} (RFC 7616 §3.3/§3.4)", 0)
    return params[key]


def parse_challenge(value: str) -> Challenge:
    """Parse a WWW-Authenticate / Proxy-Authenticate value (RFC 7616 §3.3)."""
    what = "challenge"
    p = _params(value, what)
    qop = tuple(q.strip() for q in p.get("qop", "").split(",") if q.strip())
    return Challenge(
        realm=_need(p, "realm", what),
        nonce=_need(p, "nonce", what),
        algorithm=_algorithm(p, what),
        qop=qop,
        opaque=p.get("opaque"),
        stale=p.get("stale", "").lower() == "true",
    )


def parse_credentials(value: str) -> Credentials:
    """Parse an Authorization / Proxy-Authorization value (RFC 7616 §3.4)."""
    what = "credentials"
    p = _params(value, what)
    return Credentials(
        username=_need(p, "username", what),
        realm=_need(p, "realm", what),
        nonce=_need(p, "nonce", what),
        uri=_need(p, "uri", what),
        response=_need(p, "response", what),
        algorithm=_algorithm(p, what),
        qop=p.get("qop"),
        nc=p.get("nc"),
        cnonce=p.get("cnonce"),
        opaque=p.get("opaque"),
    )


def _h(alg: Algorithm, text: str) -> str:
    return hashlib.new(_HASHES[alg], text.encode("utf-8")).hexdigest()


def digest_response(
    alg: Algorithm,
    user: str,
    realm: str,
    password: str,
    nonce: str,
    method: str,
    uri: str,
    qop: str | None = None,
    nc: str = "00000001",
    cnonce: str = "",
) -> str:
    """The ``response`` value (RFC 7616 §3.4.1-§3.4.3; RFC 2617 §3.2.2.1 without qop)."""
    ha1 = _h(alg, f"{user}:{realm}:{password}")
    if alg in (Algorithm.MD5_SESS, Algorithm.SHA256_SESS):  # RFC 7616 §3.4.2
        ha1 = _h(alg, f"{ha1}:{nonce}:{cnonce}")
    ha2 = _h(alg, f"{method}:{uri}")  # qop=auth (auth-int is not supported)
    if qop is None:
        return _h(alg, f"{ha1}:{nonce}:{ha2}")  # RFC 2069 compatibility
    return _h(alg, f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def authorization(
    ch: Challenge, user: str, password: str, method: str, uri: str, cnonce: str, nc: int = 1
) -> str:
    """The credentials answering ``ch`` (RFC 7616 §3.4; RFC 3261 §22.2, §22.3)."""
    qop = "auth" if "auth" in ch.qop else None
    ncs = f"{nc:08x}"
    resp = digest_response(
        ch.algorithm, user, ch.realm, password, ch.nonce, method, uri, qop, ncs, cnonce
    )
    parts = [
        f"username={_quote(user)}",
        f"realm={_quote(ch.realm)}",
        f"nonce={_quote(ch.nonce)}",
        f"uri={_quote(uri)}",
        f"response={_quote(resp)}",
        f"algorithm={ch.algorithm.value}",
    ]
    if qop is not None:
        parts += [f"qop={qop}", f"nc={ncs}"]
    if qop is not None or ch.algorithm in (Algorithm.MD5_SESS, Algorithm.SHA256_SESS):
        parts.append(f"cnonce={_quote(cnonce)}")  # RFC 7616 §3.4.2: -sess needs it
    if ch.opaque is not None:
        parts.append(f"opaque={_quote(ch.opaque)}")
    return "Digest " + ", ".join(parts)


def challenge_value(realm: str, nonce: str, algorithm: Algorithm = Algorithm.MD5) -> str:
    """A challenge offering qop=auth (RFC 7616 §3.3)."""
    alg = algorithm.value
    return f'Digest realm={_quote(realm)}, nonce={_quote(nonce)}, algorithm={alg}, qop="auth"'


def verify(cred: Credentials, password: str, method: str) -> bool:
    """Whether ``cred`` holds the right response for ``password`` (RFC 7616 §3.4.1)."""
    if cred.qop is not None and (cred.qop != "auth" or not cred.nc or cred.cnonce is None):
        return False
    expected = digest_response(
        cred.algorithm,
        cred.username,
        cred.realm,
        password,
        cred.nonce,
        method,
        cred.uri,
        cred.qop,
        cred.nc or "",
        cred.cnonce or "",
    )
    return hmac.compare_digest(expected, cred.response.lower())
