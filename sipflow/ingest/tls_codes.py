"""TLS wire codes and the cipher suites sipflow can decrypt.

How this works: content, handshake and extension types are enums (IANA registries, RFC 8446
§4 / §5.1, RFC 5246 §7.4); each supported suite is a :class:`Suite` read from its IANA
name (key exchange, cipher, key length, PRF/HKDF hash, CBC MAC hash), so adding a suite is
one line in :data:`SUITES`. :class:`NotDecrypted` names why a session stayed encrypted.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class ContentType(enum.IntEnum):
    """RFC 8446 §5.1 / RFC 5246 §6.2.1 (heartbeat: RFC 6520)."""

    CHANGE_CIPHER_SPEC = 20
    ALERT = 21
    HANDSHAKE = 22
    APPLICATION_DATA = 23
    HEARTBEAT = 24


class HandshakeType(enum.IntEnum):
    """RFC 8446 §4 / RFC 5246 §7.4."""

    HELLO_REQUEST = 0
    CLIENT_HELLO = 1
    SERVER_HELLO = 2
    NEW_SESSION_TICKET = 4
    END_OF_EARLY_DATA = 5
    ENCRYPTED_EXTENSIONS = 8
    CERTIFICATE = 11
    SERVER_KEY_EXCHANGE = 12
    CERTIFICATE_REQUEST = 13
    SERVER_HELLO_DONE = 14
    CERTIFICATE_VERIFY = 15
    CLIENT_KEY_EXCHANGE = 16
    FINISHED = 20
    KEY_UPDATE = 24


class Ext(enum.IntEnum):
    """Extension types we read (IANA TLS ExtensionType registry)."""

    SERVER_NAME = 0  # RFC 6066 §3
    ALPN = 16  # RFC 7301
    ENCRYPT_THEN_MAC = 22  # RFC 7366
    EXTENDED_MASTER_SECRET = 23  # RFC 7627
    SESSION_TICKET = 35  # RFC 5077
    EARLY_DATA = 42  # RFC 8446 §4.2.10
    SUPPORTED_VERSIONS = 43  # RFC 8446 §4.2.1


ALERTS = {
    0: "close_notify", 10: "unexpected_message", 20: "bad_record_mac", 21: "decryption_failed",
    22: "record_overflow", 30: "decompression_failure", 40: "handshake_failure",
    41: "no_certificate", 42: "bad_certificate", 43: "unsupported_certificate",
    44: "certificate_revoked", 45: "certificate_expired", 46: "certificate_unknown",
    47: "illegal_parameter", 48: "unknown_ca", 49: "access_denied", 50: "decode_error",
    51: "decrypt_error", 60: "export_restriction", 70: "protocol_version",
    71: "insufficient_security", 80: "internal_error", 86: "inappropriate_fallback",
    90: "user_canceled", 100: "no_renegotiation", 109: "missing_extension",
    110: "unsupported_extension", 112: "unrecognized_name",
    113: "bad_certificate_status_response", 115: "unknown_psk_identity",
    116: "certificate_required", 120: "no_application_protocol",
}  # fmt: skip  # RFC 8446 §6, RFC 5246 §7.2

VERSIONS = {0x0300: "SSL 3.0", 0x0301: "TLS 1.0", 0x0302: "TLS 1.1", 0x0303: "TLS 1.2",
            0x0304: "TLS 1.3"}  # fmt: skip
TLS12, TLS13 = 0x0303, 0x0304
# RFC 8446 §4.1.3: a ServerHello with this random is a HelloRetryRequest.
HRR_RANDOM = bytes.fromhex("cf21ad74e59a6111be1d8c021e65b891c2a211167abb8c5e079e09e2c8a8339c")
MAX_RECORD = 2**14 + 2048  # RFC 5246 §6.2.3: TLSCiphertext.length limit


CONTENT_TYPES = frozenset(int(t) for t in ContentType)
MAX_HANDSHAKE = 1 << 18  # a longer handshake message is damage, not a certificate chain


class NotDecrypted(enum.Enum):
    """Why a session's application data stayed encrypted."""

    NO_KEY = "no_key"
    NO_HANDSHAKE = "no_handshake"
    UNSUPPORTED_SUITE = "unsupported_suite"
    DECRYPT_FAILED = "decrypt_failed"
    GAP = "gap"
    BAD_RECORD = "bad_record"


# -- cipher suites ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Suite:
    """What decryption needs from a cipher suite (names as in the IANA registry)."""

    code: int
    name: str
    cipher: str  # "GCM", "CCM", "CHACHA", "CBC"
    key_len: int
    prf: str  # "sha256" / "sha384": TLS 1.2 PRF and TLS 1.3 HKDF hash
    mac: str | None  # HMAC hash of CBC suites
    kx: str  # "rsa", "dhe", "ecdhe", "tls13"

    @property
    def fixed_iv(self) -> int:
        return {"GCM": 4, "CCM": 4, "CHACHA": 12, "CBC": 16}[self.cipher]


def _suite(code: int, name: str) -> Suite:
    kx = "tls13" if "_WITH_" not in name else name[4:].split("_", 1)[0].lower()
    cipher = next(c for c in ("GCM", "CCM", "CHACHA", "CBC") if c in name)
    key_len = 16 if "AES_128" in name else 32
    tail = name.rsplit("_", 1)[1]
    mac = {"SHA": "sha1", "SHA256": "sha256", "SHA384": "sha384"}[tail] if cipher == "CBC" else None
    return Suite(code, name, cipher, key_len, "sha384" if tail == "SHA384" else "sha256", mac, kx)


SUITES = {s.code: s for s in (_suite(c, n) for c, n in (
    (0x1301, "TLS_AES_128_GCM_SHA256"), (0x1302, "TLS_AES_256_GCM_SHA384"),
    (0x1303, "TLS_CHACHA20_POLY1305_SHA256"), (0x1304, "TLS_AES_128_CCM_SHA256"),
    (0x002F, "TLS_RSA_WITH_AES_128_CBC_SHA"), (0x0035, "TLS_RSA_WITH_AES_256_CBC_SHA"),
    (0x003C, "TLS_RSA_WITH_AES_128_CBC_SHA256"), (0x003D, "TLS_RSA_WITH_AES_256_CBC_SHA256"),
    (0x009C, "TLS_RSA_WITH_AES_128_GCM_SHA256"), (0x009D, "TLS_RSA_WITH_AES_256_GCM_SHA384"),
    (0x0033, "TLS_DHE_RSA_WITH_AES_128_CBC_SHA"), (0x0039, "TLS_DHE_RSA_WITH_AES_256_CBC_SHA"),
    (0x009E, "TLS_DHE_RSA_WITH_AES_128_GCM_SHA256"),
    (0x009F, "TLS_DHE_RSA_WITH_AES_256_GCM_SHA384"),
    (0xC009, "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA"),
    (0xC00A, "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA"),
    (0xC013, "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA"), (0xC014, "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA"),
    (0xC023, "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256"),
    (0xC024, "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA384"),
    (0xC027, "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256"),
    (0xC028, "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA384"),
    (0xC02B, "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"),
    (0xC02C, "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384"),
    (0xC02F, "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"),
    (0xC030, "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384"),
    (0xCCA8, "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256"),
    (0xCCA9, "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256"),
    (0xCCAA, "TLS_DHE_RSA_WITH_CHACHA20_POLY1305_SHA256"),
))}  # fmt: skip
