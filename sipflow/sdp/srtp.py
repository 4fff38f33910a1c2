"""SRTP keying in SDP: SDES crypto lines (RFC 4568) and DTLS-SRTP (RFC 5763/5764/8842).

How this works: :func:`parse_crypto` splits ``a=crypto:<tag> <suite> <key-params>
[<session-params>]`` (RFC 4568 §9.1 ABNF) into a :class:`CryptoAttr`. The key itself is
never kept: only the length of the decoded ``key||salt`` octets, so nothing sipflow
prints or stores can leak a media key. :data:`SUITES` gives the expected ``key||salt``
length per suite (RFC 4568 §6.2, RFC 6188 §3, RFC 7714 §12, and the names FreeSWITCH and
others use). :func:`parse_fingerprint` and :func:`parse_setup` read the DTLS-SRTP
attributes (RFC 8122 §5, RFC 4145 §4), and :data:`SETUP_ANSWERS` is the table of setup
roles an answer may take for each offered role (RFC 5763 §5, RFC 8842 §5). Malformed
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
    """UDP/TLS/RTP/SAVP(F) and TCP/DTLS/... (RFC 5764 §8, RFC 7850)."""
    up = proto.upper()
    return "/TLS/" in up or "DTLS" in up


def is_secure_proto(proto: str) -> bool:
    """RTP/SAVP, RTP/SAVPF and the DTLS profiles."""
    return proto.upper().endswith(("/SAVP", "/SAVPF"))
