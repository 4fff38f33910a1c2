"""SDP on the B2BUA's legs: SDES offers on SRTP legs, plain answers back, SRTP sessions.

How this works: SDP is passed through (the endpoints' addresses are forwarded) except
on a leg configured for SRTP: there the offer becomes ``RTP/SAVP`` with one ``a=crypto``
line per suite in :data:`SUITES` (RFC 4568 §9.1, several suites as FreeSWITCH offers in
the seed), each with a fresh ``inline:`` key (key || salt, base64). The answer names the
suite it took (same tag, RFC 4568 §7.1.2); :func:`selected` returns it, and
:func:`strip_sdes` turns it back into plain ``RTP/AVP`` for a plain-RTP leg.
:func:`srtp_pair` builds the pylibsrtp sessions that protect what goes out on the SRTP
leg and unprotect what comes in (sender and receiver keys from offer and answer).
Anchored mode (an RTP relay through our own ports) is not implemented yet.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sipflow.errors import ParseError
from sipflow.sdp.srtp import parse_crypto, suite_spec

# RFC 4568 §6.2 / RFC 6188 / RFC 7714: offered in this order (preferred first)
SUITES = (
    "AEAD_AES_256_GCM",
    "AEAD_AES_128_GCM",
    "AES_CM_128_HMAC_SHA1_80",
    "AES_CM_128_HMAC_SHA1_32",
)
_PROFILES = {
    "AES_CM_128_HMAC_SHA1_80": "SRTP_PROFILE_AES128_CM_SHA1_80",
    "AES_CM_128_HMAC_SHA1_32": "SRTP_PROFILE_AES128_CM_SHA1_32",
    "AEAD_AES_128_GCM": "SRTP_PROFILE_AEAD_AES_128_GCM",
    "AEAD_AES_256_GCM": "SRTP_PROFILE_AEAD_AES_256_GCM",
}
_INLINE = re.compile(r"inline:([A-Za-z0-9+/]+)")
_M_LINE = re.compile(rb"^(m=audio \d+(?:/\d+)? )RTP/AVP( .*)$")


@dataclass(frozen=True, slots=True)
class Crypto:
    """One a=crypto choice: tag, suite and the decoded key || salt."""

    tag: int
    suite: str
    key: bytes


def _lines(body: bytes) -> list[bytes]:
    return body.replace(b"\r\n", b"\n").split(b"\n")


def offer_sdes(body: bytes, random_bytes: Callable[[int], bytes]) -> tuple[bytes, list[Crypto]]:
    """The offer with audio on RTP/SAVP and an a=crypto line per suite (RFC 4568 §9.1)."""
    out: list[bytes] = []
    offered: list[Crypto] = []
    in_audio = False
    for line in _lines(body):
        if line.startswith(b"m="):
            if in_audio:
                out += _crypto_lines(offered)
            m = _M_LINE.match(line)
            in_audio = m is not None
            if m is not None:
                line = m.group(1) + b"RTP/SAVP" + m.group(2)
                offered = []
                for i, suite in enumerate(SUITES, 1):
                    spec = suite_spec(suite)
                    assert spec is not None
                    offered.append(Crypto(i, suite, random_bytes(spec.key_salt)))
        if line:
            out.append(line)
    if in_audio:
        out += _crypto_lines(offered)
    return b"\r\n".join(out) + b"\r\n", offered


def _crypto_lines(offered: list[Crypto]) -> list[bytes]:
    return [
        f"a=crypto:{c.tag} {c.suite} inline:{base64.b64encode(c.key).decode()}".encode()
        for c in offered
    ]


def selected(answer: bytes) -> Crypto | None:
    """The suite and key the answer chose (its first a=crypto line), or None."""
    for line in _lines(answer):
        if line.startswith(b"a=crypto:"):
            text = line[len(b"a=crypto:") :].decode("utf-8", "replace")
            m = _INLINE.search(text)
            try:
                attr = parse_crypto(text)
                key = base64.b64decode(m.group(1) + "=" * (-len(m.group(1)) % 4)) if m else b""
            except (ParseError, ValueError):
                return None
            return Crypto(attr.tag, attr.suite, key) if key else None
    return None


def answer_sdes(offer: bytes, random_bytes: Callable[[int], bytes]) -> Crypto | None:
    """Our answer's choice: the offer's first suite we support, a fresh key of its size
    (RFC 4568 §7.1.2: same tag, one a=crypto line)."""
    for line in _lines(offer):
        if not line.startswith(b"a=crypto:"):
            continue
        try:
            attr = parse_crypto(line[len(b"a=crypto:") :].decode("utf-8", "replace"))
        except ParseError:
            continue
        spec = suite_spec(attr.suite)
        if attr.suite in _PROFILES and spec is not None:
            return Crypto(attr.tag, attr.suite, random_bytes(spec.key_salt))
    return None


def crypto_line(c: Crypto) -> bytes:
    return _crypto_lines([c])[0] + b"\r\n"


def strip_sdes(body: bytes) -> bytes:
    """The SDP for a plain-RTP leg: RTP/SAVP -> RTP/AVP, no a=crypto lines."""
    out = [
        line.replace(b" RTP/SAVP ", b" RTP/AVP ")
        for line in _lines(body)
        if line and not line.startswith(b"a=crypto:")
    ]
    return b"\r\n".join(out) + b"\r\n"


def srtp_pair(ours: Crypto, theirs: Crypto) -> tuple[Any, Any]:
    """(protect session for what we send, unprotect session for what we receive)."""
    import pylibsrtp

    def session(c: Crypto, direction: int) -> Any:
        profile = getattr(pylibsrtp.Policy, _PROFILES[c.suite])
        policy = pylibsrtp.Policy(key=c.key, ssrc_type=direction, srtp_profile=profile)
        return pylibsrtp.Session(policy=policy)

    return (
        session(ours, pylibsrtp.Policy.SSRC_ANY_OUTBOUND),
        session(theirs, pylibsrtp.Policy.SSRC_ANY_INBOUND),
    )
