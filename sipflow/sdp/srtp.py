"""SRTP keying in SDP: SDES crypto lines (RFC 4568) and DTLS-SRTP (RFC 5763/5764/8842).

How this works: :func:`parse_crypto` splits ``a=crypto:<tag> <suite> <key-params>
[<session-params>]`` (RFC 4568 §9.1 ABNF) into a :class:`CryptoAttr`, which never holds the
key: only the length of the decoded ``key||salt`` octets, so nothing sipflow prints or
stores can leak a media key. For SRTP decryption :func:`sdes_keys` reads the keys of an
m-line into :class:`SdesKeys` (in memory only: hidden from ``repr``, never serialised;
pickled only between sipflow's own processes, :mod:`sipflow.engine.shard`).
:data:`SUITES` gives the expected ``key||salt`` length per suite (RFC 4568 §6.2,
RFC 6188 §3, RFC 7714 §12, and the names FreeSWITCH and others use).
:func:`parse_fingerprint` and :func:`parse_setup` read the DTLS-SRTP attributes (RFC 8122
§5, RFC 4145 §4), and :data:`SETUP_ANSWERS` is the table of setup roles an answer may take
for each offered role (RFC 5763 §5, RFC 8842 §5). Malformed
values raise :class:`~sipflow.errors.ParseError`; the SDP model records them as problems.
"""

from __future__ import annotations

import binascii
import enum
import re
from dataclasses import dataclass

from sipflow.errors import ParseError


class SrtpMethod(enum.Enum):
    """How the media keys of an m-line are agreed."""

    NONE = "none"
    SDES = "sdes"  # RFC 4568 a=crypto
    DTLS = "dtls"  # RFC 5763/5764 DTLS-SRTP (a=fingerprint, UDP/TLS/RTP/SAVP)


@dataclass(frozen=True, slots=True)
class SuiteSpec:
    """Master key and salt sizes (octets) of an SRTP crypto suite, and where defined."""

    key: int
    salt: int
    rfc: str

    @property
    def key_salt(self) -> int:
        """Length of the base64-decoded ``key||salt`` in an ``inline:`` key-param."""
        return self.key + self.salt


_CM128 = SuiteSpec(16, 14, "RFC 4568 §6.2")
_CM192 = SuiteSpec(24, 14, "RFC 6188 §3")
_CM256 = SuiteSpec(32, 14, "RFC 6188 §3")
_GCM128 = SuiteSpec(16, 12, "RFC 7714 §12")
_GCM256 = SuiteSpec(32, 12, "RFC 7714 §12")

SUITES: dict[str, SuiteSpec] = {
    "AES_CM_128_HMAC_SHA1_80": _CM128,
    "AES_CM_128_HMAC_SHA1_32": _CM128,
    "F8_128_HMAC_SHA1_80": _CM128,
    "AES_192_CM_HMAC_SHA1_80": _CM192,
    "AES_192_CM_HMAC_SHA1_32": _CM192,
    "AES_256_CM_HMAC_SHA1_80": _CM256,
    "AES_256_CM_HMAC_SHA1_32": _CM256,
    "AEAD_AES_128_GCM": _GCM128,
    "AEAD_AES_256_GCM": _GCM256,
}
"""Registered suites (IANA "SDP Security Descriptions" registry)."""

# Unregistered names seen in the wild (FreeSWITCH, libsrtp builds): sized by prefix.
_PREFIXES: tuple[tuple[str, SuiteSpec], ...] = (
    ("AES_CM_128_", SuiteSpec(16, 14, "RFC 4568 §6.2 (unregistered name)")),
    ("AES_CM_192_", SuiteSpec(24, 14, "RFC 6188 §3 (unregistered name)")),
    ("AES_192_CM_", SuiteSpec(24, 14, "RFC 6188 §3 (unregistered name)")),
    ("AES_CM_256_", SuiteSpec(32, 14, "RFC 6188 §3 (unregistered name)")),
    ("AES_256_CM_", SuiteSpec(32, 14, "RFC 6188 §3 (unregistered name)")),
    ("AEAD_AES_128_GCM", SuiteSpec(16, 12, "RFC 7714 §12 (unregistered name)")),
    ("AEAD_AES_256_GCM", SuiteSpec(32, 12, "RFC 7714 §12 (unregistered name)")),
)


def suite_spec(suite: str) -> SuiteSpec | None:
    """Key/salt sizes for a suite name, or None when the suite is unknown."""
    found = SUITES.get(suite)
    if found is not None:
        return found
    for prefix, spec in _PREFIXES:
        if suite.startswith(prefix):
            return spec
    return None


@dataclass(frozen=True, slots=True)
class KeyParam:
    """One key-param of a crypto line, without the key (RFC 4568 §6.1).

    ``key_salt_len`` is the length of the base64-decoded ``key||salt`` (None when the key
    is not valid base64 or the method is not ``inline``); ``lifetime`` and ``mki`` are
    kept as written (``2^20``, ``1:4``)."""

    method: str
    key_salt_len: int | None
    lifetime: str | None = None
    mki: str | None = None
    padded: bool = True
    """False when the base64 omitted its ``=`` padding (seen from FreeSWITCH)."""

    def to_dict(self) -> dict[str, object]:
        return {
            "method": self.method,
            "key_salt_len": self.key_salt_len,
            "lifetime": self.lifetime,
            "mki": self.mki,
        }


@dataclass(frozen=True, slots=True)
class CryptoAttr:
    """``a=crypto`` (RFC 4568 §9.1): tag, suite, key-params (no keys), session-params."""

    tag: int
    suite: str
    keys: tuple[KeyParam, ...]
    session_params: tuple[str, ...] = ()

    @property
    def spec(self) -> SuiteSpec | None:
        return suite_spec(self.suite)

    def to_dict(self) -> dict[str, object]:
        return {
            "tag": self.tag,
            "suite": self.suite,
            "keys": [k.to_dict() for k in self.keys],
            "session_params": list(self.session_params),
        }


# RFC 4568 §9.1: tag = 1*9DIGIT; crypto-suite = 1*(ALPHA / DIGIT / "_")
_CRYPTO = re.compile(r"(\d{1,9})[ \t]+([A-Za-z0-9_]+)[ \t]+(\S+)((?:[ \t]+\S+)*)[ \t]*")
_B64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")
_LIFETIME = re.compile(r"(?:2\^)?\d+")
_MKI = re.compile(r"\d+:\d+")


def parse_crypto(value: str) -> CryptoAttr:
    """Parse the value of an ``a=crypto`` attribute. Raises ParseError."""
    m = _CRYPTO.fullmatch(value)
    if m is None:
        raise ParseError(
            "crypto", f"expected 'tag SP crypto-suite SP key-params' in {value[:60]!r}"
        )
    keys = tuple(_key_param(k) for k in m.group(3).split(";"))
    return CryptoAttr(int(m.group(1)), m.group(2), keys, tuple(m.group(4).split()))


def _key_param(text: str) -> KeyParam:
    """``inline:<key||salt>[|lifetime][|MKI:length]`` (RFC 4568 §6.1)."""
    method, colon, info = text.partition(":")
    if not colon:
        raise ParseError("key-params", f"expected 'key-method \":\" key-info' in {text[:8]!r}...")
    if method.lower() != "inline":
        return KeyParam(method, None)
    parts = info.split("|")
    key = parts[0]
    lifetime = mki = None
    for extra in parts[1:]:
        if _MKI.fullmatch(extra):
            mki = extra
        elif _LIFETIME.fullmatch(extra) and lifetime is None:
            lifetime = extra
        else:
            raise ParseError("key-params", f"unknown inline parameter {extra[:20]!r}")
    return KeyParam(method, _b64_len(key), lifetime, mki, len(key) % 4 == 0)


def _b64_len(key: str) -> int | None:
    """Decoded length of a base64 key (padding optional), None when not base64."""
    if not key or not _B64.fullmatch(key):
        return None
    body = key.rstrip("=")
    try:
        return len(binascii.a2b_base64(body + "=" * (-len(body) % 4)))
    except binascii.Error:
        return None


# -- DTLS-SRTP ------------------------------------------------------------------------------


class SetupRole(enum.Enum):
    """``a=setup`` values (RFC 4145 §4)."""

    ACTIVE = "active"
    PASSIVE = "passive"
    ACTPASS = "actpass"
    HOLDCONN = "holdconn"


def parse_setup(value: str) -> SetupRole:
    try:
        return SetupRole(value.strip().lower())
    except ValueError:
        raise ParseError(
            "setup", f"{value[:20]!r} is not active/passive/actpass/holdconn"
        ) from None


# RFC 5763 §5 / RFC 8842 §5: an offer says actpass (a re-offer may repeat its role); the
# answer takes active or passive, never actpass, and never the role the offer took.
SETUP_ANSWERS: dict[SetupRole, frozenset[SetupRole]] = {
    SetupRole.ACTPASS: frozenset({SetupRole.ACTIVE, SetupRole.PASSIVE}),
    SetupRole.ACTIVE: frozenset({SetupRole.PASSIVE}),
    SetupRole.PASSIVE: frozenset({SetupRole.ACTIVE}),
    SetupRole.HOLDCONN: frozenset({SetupRole.HOLDCONN}),
}

# RFC 8122 §5: hash-func names (IANA "Hash Function Textual Names") and digest sizes
HASH_BYTES = {
    "md2": 16,
    "md5": 16,
    "sha-1": 20,
    "sha-224": 28,
    "sha-256": 32,
    "sha-384": 48,
    "sha-512": 64,
}


@dataclass(frozen=True, slots=True)
class Fingerprint:
    """``a=fingerprint:<hash-func> <hex:hex:...>`` (RFC 8122 §5)."""

    hash_func: str
    value: str

    @property
    def octets(self) -> int:
        return len(self.value.split(":")) if self.value else 0

    @property
    def expected_octets(self) -> int | None:
        return HASH_BYTES.get(self.hash_func.lower())


_FINGERPRINT = re.compile(r"([A-Za-z0-9-]+)[ \t]+([0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2})*)[ \t]*")


def parse_fingerprint(value: str) -> Fingerprint:
    m = _FINGERPRINT.fullmatch(value)
    if m is None:
        raise ParseError("fingerprint", f"expected 'hash-func SP HEX:HEX...' in {value[:40]!r}")
    return Fingerprint(m.group(1), m.group(2).upper())


def is_dtls_proto(proto: str) -> bool:
    """UDP/TLS/RTP/SAVP(F), TCP/TLS/RTP/SAVP(F) and TCP/DTLS/... (RFC 5764 §8, RFC 7850;
    UDP/DTLS/SCTP, RFC 8841). Not MSRP over TLS (``TCP/TLS/MSRP``, RFC 4975 §8.1: TLS on its
    TCP connection, no DTLS-SRTP)."""
    up = proto.upper()
    return "/TLS/RTP/" in up or "DTLS" in up


def is_secure_proto(proto: str) -> bool:
    """RTP/SAVP, RTP/SAVPF and the DTLS profiles."""
    return proto.upper().endswith(("/SAVP", "/SAVPF"))


# -- SDES key material (in memory only) -----------------------------------------------------
#
# The SDP model keeps every line as received, so an ``a=crypto`` line still holds its key;
# :class:`CryptoAttr` and everything built for output (MediaLine, JSON, DataFrames) do not.
# To decrypt SRTP (:mod:`sipflow.rtp.decrypt`) the keys travel from the SDP to the RTP stage
# in :class:`SdesKeys` values, which hold :class:`MasterKey` objects: their ``repr`` hides
# the key and they are never serialised (no ``to_dict``), so no output, log or file
# carries a media key. They do pickle whole: a Call-ID shard (:mod:`sipflow.engine.shard`)
# hands its calls' SDP to the parent process, which decrypts the media.

# RFC 4568 §9.1: key-info = key-salt ["|" lifetime] ["|" mki]; key-salt is base64
_INLINE_KEY = re.compile(r"inline:([A-Za-z0-9+/]+={0,2})")


class MasterKey:
    """One SRTP master key || master salt from an ``inline:`` key-param (RFC 4568 §6.1).

    ``material()`` is the only way to the key; ``repr`` shows tag and suite only."""

    __slots__ = ("_material", "lifetime", "mki", "suite", "tag")

    def __init__(
        self, tag: int, suite: str, material: bytes, mki: str | None, lifetime: str | None
    ) -> None:
        self.tag = tag
        self.suite = suite
        self.mki = mki
        """``value:length`` as written (RFC 4568 §6.1), or None."""
        self.lifetime = lifetime
        self._material = material

    def material(self) -> bytes:
        return self._material

    @property
    def mki_length(self) -> int:
        """Octets of MKI each SRTP packet carries (RFC 3711 §3.1), 0 when none."""
        if not self.mki:
            return 0
        return int(self.mki.partition(":")[2] or 0)

    def __repr__(self) -> str:
        return f"MasterKey(tag={self.tag}, suite={self.suite!r}, key=<hidden>)"

    def __reduce__(self) -> tuple[object, ...]:
        """Whole, for the process boundary of a split run (memory to memory)."""
        return (MasterKey, (self.tag, self.suite, self._material, self.mki, self.lifetime))


@dataclass(frozen=True, slots=True)
class SdesKeys:
    """The SDES keys of one m-line of one offer/answer exchange.

    RFC 4568 §5.1: the offer lists one or more crypto lines, each with the key the offerer
    would send with; the answer accepts one of them by echoing its tag and suite (§5.1.2)
    and carries the key the answerer sends with. Each side's key protects what that side
    *sends* (SRTP and SRTCP alike); the receiver decrypts with the sender's key."""

    offer: tuple[MasterKey, ...]
    answer: tuple[MasterKey, ...]

    def selected(self, sender: str) -> tuple[MasterKey, ...]:
        """The key(s) ``sender`` (``offerer`` / ``answerer``) protects its media with after
        this exchange: the answer's line for the answerer; for the offerer the offered
        line whose tag the answer echoed (RFC 4568 §5.1.3), or every offered line when
        the answer echoed none of them."""
        if sender == "answerer":
            return self.answer
        tags = {k.tag for k in self.answer}
        chosen = tuple(k for k in self.offer if k.tag in tags)
        return chosen or self.offer

    def sender_keys(self, sender: str) -> tuple[MasterKey, ...]:
        """:meth:`selected` first, then the sender's other offered lines."""
        first = self.selected(sender)
        rest = self.offer if sender == "offerer" else ()
        return first + tuple(k for k in rest if k not in first)

    def __repr__(self) -> str:
        return f"SdesKeys(offer={len(self.offer)} keys, answer={len(self.answer)} keys)"


def _keys_of(values: tuple[str | None, ...]) -> tuple[MasterKey, ...]:
    out: list[MasterKey] = []
    for value in values:
        if value is None:
            continue
        try:
            attr = parse_crypto(value)
        except ParseError:
            continue  # reported by the SDP checks (sdp.malformed_line)
        found = _INLINE_KEY.search(value)
        if found is None or not attr.keys:
            continue
        body = found.group(1).rstrip("=")
        try:
            material = binascii.a2b_base64(body + "=" * (-len(body) % 4))
        except binascii.Error:
            continue
        first = attr.keys[0]
        out.append(MasterKey(attr.tag, attr.suite, material, first.mki, first.lifetime))
    return tuple(out)


def sdes_keys(
    offer_crypto: tuple[str | None, ...], answer_crypto: tuple[str | None, ...]
) -> SdesKeys | None:
    """The keys of an m-line from the raw values of its offer's and answer's ``a=crypto``
    attributes (``Section.attrs("crypto")`` values); None when neither side has a key.
    Only the first key-param of a line is used (several keys with MKIs are rare)."""
    keys = SdesKeys(_keys_of(offer_crypto), _keys_of(answer_crypto))
    return keys if keys.offer or keys.answer else None
