"""SDP on the B2BUA's legs: SDES offers on SRTP legs, plain answers back, SRTP sessions.

How this works: SDP is passed through (the endpoints' addresses are forwarded) except
on a leg configured for SRTP: there the offer becomes ``RTP/SAVP`` with one ``a=crypto``
line per suite in :data:`SUITES` (RFC 4568 §9.1, several suites as FreeSWITCH offers in
the seed), each with a fresh ``inline:`` key (key || salt, base64). The answer names the
suite it took (same tag, RFC 4568 §7.1.2); :func:`selected` returns it, and
:func:`strip_sdes` turns it back into plain ``RTP/AVP`` for a plain-RTP leg.
:func:`srtp_pair` builds the pylibsrtp sessions that protect what goes out on the SRTP
leg and unprotect what comes in (sender and receiver keys from offer and answer).

Anchored mode (``media = "anchor"``): each leg of a call gets one of our RTP port pairs
(RTP on an even port, RTCP on the next, RFC 3550 §11) from a :class:`PortPool`;
:func:`anchor_sdp` rewrites the leg's c=/o= address and audio m= port to it, and
:class:`Anchor` decides, for each packet one of our ports receives, where it goes next:
A-leg packets leave from the B-leg port to the address the B side's SDP named, protected
with the key we offered when the B leg is SRTP (RFC 4568 §5.1: each side encrypts what it
sends with its own a=crypto key); B-leg packets are unprotected with the key the answer
named and leave from the A-leg port in the clear. Nothing here touches a socket: the
core returns :class:`MediaOpen` / :class:`MediaSend` / :class:`MediaClose` actions and
the asyncio layer (:mod:`sipflow.b2bua.transport`) binds, sends and records them.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sipflow.errors import ParseError
from sipflow.ingest.types import Endpoint
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


# -- anchored media ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MediaOpen:
    """Bind UDP ``local`` (RTP) and ``local.port + 1`` (RTCP, RFC 3550 §11)."""

    local: Endpoint


@dataclass(frozen=True, slots=True)
class MediaClose:
    """Close the RTP/RTCP pair bound for ``local``."""

    local: Endpoint


@dataclass(frozen=True, slots=True)
class MediaSend:
    """An RTP or RTCP datagram to send from our bound ``src`` to ``dst``."""

    data: bytes
    src: Endpoint
    dst: Endpoint


MediaAction = MediaOpen | MediaClose | MediaSend

_C = re.compile(rb"^(c=IN IP[46] )(\S+)(.*)$")
_O = re.compile(rb"^(o=.* IN IP[46] )(\S+)$")
_AUDIO = re.compile(rb"^m=audio (\d+)((?:/\d+)? .*)$")


def media_address(body: bytes) -> Endpoint | None:
    """Where the SDP's first audio stream wants RTP: its c= (media level, else session
    level, RFC 4566 §5.7) and m= port; None without one (or with port 0)."""
    session: bytes | None = None
    port: int | None = None
    for line in _lines(body):
        m = _AUDIO.match(line)
        if m is not None:
            if port is not None:
                break
            port = int(m.group(1))
            continue
        c = _C.match(line)
        if c is not None:
            session = c.group(2)
            if port is not None:  # a media-level c= overrides the session's
                break
        elif line.startswith(b"m=") and port is not None:
            break
    if not port or session is None:
        return None
    return Endpoint(session.decode("ascii", "replace"), port)


def anchor_sdp(body: bytes, local: Endpoint) -> bytes:
    """``body`` with every c= and o= address set to ``local.ip`` and the audio m= port
    to ``local.port``: the peer sends its RTP to our pair (RFC 4566 §5.2, §5.7, §5.14)."""
    out: list[bytes] = []
    ip = local.ip.encode()
    for line in _lines(body):
        if not line:
            continue
        if (m := _AUDIO.match(line)) is not None and int(m.group(1)) != 0:
            line = b"m=audio " + str(local.port).encode() + m.group(2)
        elif (c := _C.match(line)) is not None:
            line = c.group(1) + ip + c.group(3)
        elif (o := _O.match(line)) is not None:
            line = o.group(1) + ip
        out.append(line)
    return b"\r\n".join(out) + b"\r\n"


class PortPool:
    """Our RTP port pairs (even RTP port, RTCP on the next) in ``[first, last]``."""

    def __init__(self, ip: str, first: int, last: int) -> None:
        start = first + (first % 2)
        self.ip = ip
        self._free = list(range(last - 1 - ((last - 1 - start) % 2), start - 1, -2))

    def take(self) -> Endpoint | None:
        """A free pair's RTP endpoint, or None when all are in use."""
        return Endpoint(self.ip, self._free.pop()) if self._free else None

    def give(self, ep: Endpoint) -> None:
        self._free.append(ep.port)

    def __len__(self) -> int:
        return len(self._free)


def is_rtp_version_2(data: bytes) -> bool:
    """RTP and RTCP both start with version 2 (RFC 3550 §5.1, §6.4.1); at least a header."""
    return len(data) >= 8 and data[0] >> 6 == 2


@dataclass(eq=False, slots=True)
class Anchor:
    """One call's relay: our A-leg pair, our B-leg pair, where each leg's peer receives,
    and the SRTP sessions of an SRTP B leg (None: plain RTP on both legs)."""

    a_local: Endpoint
    b_local: Endpoint
    a_remote: Endpoint | None = None
    """The caller's RTP address (its SDP)."""
    b_remote: Endpoint | None = None
    """The callee's RTP address (its answer, or an early-media provisional)."""
    protect: Any = None
    """pylibsrtp session protecting what we send on the B leg (our offered key)."""
    unprotect: Any = None
    """pylibsrtp session unprotecting what the B side sends (the key its answer named)."""
    srtp: bool = False
    """The B leg is SRTP: nothing crosses until the answer gave the keys."""
    early: list[tuple[bytes, Endpoint]] = field(default_factory=list)
    """SRTP from the B side that beat the answer carrying its key (UDP overtaking the SIP
    on TLS): held (at most :data:`EARLY_MAX`) and relayed by :meth:`keyed`."""
    relayed: int = 0
    dropped: int = 0

    def owns(self, local: Endpoint) -> bool:
        base = _rtp_port_of(local)
        return base in (self.a_local, self.b_local)

    def relay(self, data: bytes, local: Endpoint) -> MediaSend | None:
        """Where a datagram that reached our ``local`` port goes next (None: dropped:
        not RTP/RTCP, its peer's address not known yet, or SRTP authentication failed)."""
        base = _rtp_port_of(local)
        rtcp = local.port - base.port
        if not is_rtp_version_2(data):
            self.dropped += 1
            return None
        if base == self.a_local:
            out_local, dst, session, outbound = self.b_local, self.b_remote, self.protect, True
        else:
            out_local, dst, session, outbound = self.a_local, self.a_remote, self.unprotect, False
        if self.srtp and session is None:  # not keyed yet (RFC 4568 §5.1)
            if not outbound and len(self.early) < EARLY_MAX:
                self.early.append((data, local))
            else:
                self.dropped += 1
            return None
        if dst is None:
            self.dropped += 1
            return None
        if session is not None:
            packet = _srtp(session, data, outbound, bool(rtcp))
            if packet is None:
                self.dropped += 1
                return None
            data = packet
        self.relayed += 1
        return MediaSend(
            data, Endpoint(out_local.ip, out_local.port + rtcp), Endpoint(dst.ip, dst.port + rtcp)
        )

    def keyed(self, protect: Any, unprotect: Any) -> list[MediaSend]:
        """The B leg's SRTP sessions are known: set them, relay what was held."""
        self.protect, self.unprotect = protect, unprotect
        held, self.early = self.early, []
        return [m for data, local in held if (m := self.relay(data, local)) is not None]


EARLY_MAX = 50
"""SRTP packets held per call while the answer with their key is on its way."""


def _rtp_port_of(local: Endpoint) -> Endpoint:
    return Endpoint(local.ip, local.port - (local.port % 2))


def _srtp(session: Any, data: bytes, outbound: bool, rtcp: bool) -> bytes | None:
    """Protect (outbound) or unprotect (inbound) one packet; None when libsrtp refuses it
    (RFC 3711 §3.3: a packet failing authentication or replayed is discarded)."""
    import pylibsrtp

    try:
        if outbound:
            return bytes(session.protect_rtcp(data) if rtcp else session.protect(data))
        return bytes(session.unprotect_rtcp(data) if rtcp else session.unprotect(data))
    except pylibsrtp.Error:
        return None


def offered_for(offered: list[Crypto], answer: Crypto | None) -> Crypto | None:
    """Our offered line the answer accepted (same tag, RFC 4568 §5.1.2), or None."""
    if answer is None:
        return None
    return next((c for c in offered if c.tag == answer.tag and c.suite == answer.suite), None)
