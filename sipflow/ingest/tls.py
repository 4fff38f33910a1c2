"""TLS 1.0-1.3 over TCP: session facts, and SIP cleartext when keys allow.

How this works: :class:`TlsDecoder` follows one TCP connection (sans-IO: stream bytes,
frame numbers and times in; cleartext chunks, facts and Findings out). Each direction
cuts its in-order bytes into records (RFC 5246 §6.2.1, RFC 8446 §5.1: records split and
coalesced across segments as on the wire), reassembles handshake messages across
records, and reads ClientHello (SNI, ALPN), ServerHello (version, suite), Certificate
(subject, issuer, expiry) and alerts. Keys come from :class:`TlsKeys`:

* TLS <= 1.2: the master secret from the NSS key log (``CLIENT_RANDOM``), or from the
  RSA-encrypted pre-master secret and a server private key (RFC 5246 §7.4.7.1, §8.1;
  RFC 7627 extended master secret), or from an earlier session (resumption, by session
  id or ticket); the key block from the PRF (RFC 5246 §5, §6.3; RFC 2246 §5 for 1.0/1.1);
* TLS 1.3: handshake and application traffic secrets from the key log, keys and IVs by
  HKDF-Expand-Label (RFC 8446 §7.1, §7.3), KeyUpdate followed (§4.6.3).

All cryptography (AES-GCM/CCM, ChaCha20-Poly1305, AES-CBC, HMAC, HKDF, RSA, x509) is
done by the ``cryptography`` package. A connection that cannot be decrypted says why
(:class:`NotDecrypted`) and its bytes are counted, never guessed at. :class:`TlsFollower`
is the glue the capture reader uses: which TCP connections to follow, and their TLS
bytes in, ``Transport.TLS`` Datagrams of cleartext out.
"""

from __future__ import annotations

import enum
import hmac as std_hmac
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sipflow.errors import InputError, ParseError
from sipflow.findings import Finding, Ref, Severity
from sipflow.ingest.keylog import KeyLog, Label, load_keylog
from sipflow.ingest.types import Datagram, Endpoint, Transport

if TYPE_CHECKING:  # cryptography is imported where used: ~0.15 s off every start-up
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.hazmat.primitives.ciphers.aead import AESCCM, AESGCM, ChaCha20Poly1305
    from cryptography.hazmat.primitives.hashes import HashAlgorithm

__all__ = [
    "AlertFacts",
    "CertificateFacts",
    "NotDecrypted",
    "TlsDecoder",
    "TlsFollower",
    "TlsKeys",
    "TlsSessionFacts",
    "TlsStats",
    "looks_like_tls",
]


# -- wire codes -----------------------------------------------------------------------------


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


_CONTENT_TYPES = frozenset(int(t) for t in ContentType)
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


def _hash(name: str) -> HashAlgorithm:
    from cryptography.hazmat.primitives import hashes

    algos: dict[str, Callable[[], HashAlgorithm]] = {
        "md5": hashes.MD5, "sha1": hashes.SHA1, "sha256": hashes.SHA256, "sha384": hashes.SHA384,
    }  # fmt: skip
    return algos[name]()


# -- key derivation (the constructions; every primitive is cryptography's) ----------------


def _hash_len(name: str) -> int:
    return _hash(name).digest_size


def _hmac(name: str, key: bytes, data: bytes) -> bytes:
    from cryptography.hazmat.primitives.hmac import HMAC

    h = HMAC(key, _hash(name))
    h.update(data)
    return h.finalize()


def _digest(name: str, data: bytes) -> bytes:
    from cryptography.hazmat.primitives.hashes import Hash

    h = Hash(_hash(name))
    h.update(data)
    return h.finalize()


def _p_hash(name: str, secret: bytes, seed: bytes, n: int) -> bytes:
    """RFC 5246 §5: P_hash(secret, seed) = HMAC(secret, A(1) + seed) + ..., A(i) = HMAC(A(i-1))."""
    out, a = b"", seed
    while len(out) < n:
        a = _hmac(name, secret, a)
        out += _hmac(name, secret, a + seed)
    return out[:n]


def prf(version: int, suite_hash: str, secret: bytes, label: bytes, seed: bytes, n: int) -> bytes:
    """TLS 1.2 PRF with the suite's hash (RFC 5246 §5); MD5 xor SHA-1 before (RFC 2246 §5)."""
    if version >= TLS12:
        return _p_hash(suite_hash, secret, label + seed, n)
    half = (len(secret) + 1) // 2
    md5 = _p_hash("md5", secret[:half], label + seed, n)
    sha = _p_hash("sha1", secret[-half:], label + seed, n)
    return bytes(x ^ y for x, y in zip(md5, sha, strict=True))


def hkdf_expand_label(name: str, secret: bytes, label: bytes, context: bytes, n: int) -> bytes:
    """RFC 8446 §7.1: HKDF-Expand(Secret, HkdfLabel(length, "tls13 " + Label, Context))."""
    full = b"tls13 " + label
    info = n.to_bytes(2, "big") + bytes([len(full)]) + full + bytes([len(context)]) + context
    from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

    return HKDFExpand(_hash(name), n, info).derive(secret)


# -- record protection ----------------------------------------------------------------------


class _RecordKeys:
    """One direction's read state: decrypt(type, version, fragment) -> (type, plaintext).

    Raises :class:`ParseError` for a record that does not decrypt (bad tag, MAC, padding).
    """

    def __init__(self, suite: Suite, version: int, key: bytes, iv: bytes, mac_key: bytes) -> None:
        self.suite, self.version, self.iv, self.mac_key, self.key = suite, version, iv, mac_key, key
        self.seq = 0
        self.etm = False  # RFC 7366 encrypt-then-MAC (CBC only)
        from cryptography.hazmat.primitives.ciphers.aead import AESCCM, AESGCM, ChaCha20Poly1305

        self.aead: AESGCM | AESCCM | ChaCha20Poly1305 | None = None
        if suite.cipher == "GCM":
            self.aead = AESGCM(key)
        elif suite.cipher == "CCM":
            self.aead = AESCCM(key)
        elif suite.cipher == "CHACHA":
            self.aead = ChaCha20Poly1305(key)

    def decrypt(self, ctype: int, frag: bytes) -> tuple[int, bytes]:
        from cryptography.exceptions import InvalidTag

        seq, self.seq = self.seq, self.seq + 1
        try:
            if self.version >= TLS13:
                return self._tls13(frag, seq)
            if self.aead is not None:
                return ctype, self._aead12(ctype, frag, seq)
            return ctype, self._cbc(ctype, frag, seq)
        except InvalidTag:
            raise ParseError("record", "authentication tag does not match") from None
        except ValueError as exc:
            raise ParseError("record", str(exc)) from None

    def _nonce(self, seq: int) -> bytes:
        """RFC 8446 §5.3 / RFC 7905 §2: the IV xor the left-padded sequence number."""
        padded = seq.to_bytes(len(self.iv), "big")
        return bytes(a ^ b for a, b in zip(self.iv, padded, strict=True))

    def _tls13(self, frag: bytes, seq: int) -> tuple[int, bytes]:
        assert self.aead is not None
        header = bytes([ContentType.APPLICATION_DATA, 3, 3]) + len(frag).to_bytes(2, "big")
        inner = self.aead.decrypt(self._nonce(seq), frag, header)
        end = len(inner.rstrip(b"\0"))  # RFC 8446 §5.4: zero padding after the real type
        if end == 0:
            raise ParseError("record", "TLSInnerPlaintext has no content type")
        return inner[end - 1], inner[: end - 1]

    def _aad(self, seq: int, ctype: int, length: int) -> bytes:
        """RFC 5246 §6.2.3.3: seq_num + type + version + length."""
        return (
            seq.to_bytes(8, "big")
            + bytes([ctype])
            + self.version.to_bytes(2, "big")
            + (length.to_bytes(2, "big"))
        )

    def _aead12(self, ctype: int, frag: bytes, seq: int) -> bytes:
        assert self.aead is not None
        if self.suite.cipher == "CHACHA":  # RFC 7905 §2: no explicit nonce
            nonce, body = self._nonce(seq), frag
        else:  # RFC 5288 §3: 4-byte salt + 8-byte explicit nonce
            nonce, body = self.iv + frag[:8], frag[8:]
        if len(body) < 16:
            raise ParseError("record", f"AEAD record of {len(frag)} bytes is too short")
        return self.aead.decrypt(nonce, body, self._aad(seq, ctype, len(body) - 16))

    def _cbc(self, ctype: int, frag: bytes, seq: int) -> bytes:
        """RFC 5246 §6.2.3.2 (explicit IV, 1.1+); RFC 2246 §6.2.3.2 (chained IV, 1.0)."""
        assert self.suite.mac is not None
        mac_len = _hash_len(self.suite.mac)
        if self.etm:  # RFC 7366 §3: MAC over the ciphertext
            frag, tag = frag[:-mac_len], frag[-mac_len:]
            self._check_mac(self._aad(seq, ctype, len(frag)) + frag, tag)
        if self.version >= 0x0302:
            iv, body = frag[:16], frag[16:]
        else:
            iv, body = self.iv, frag
        if not body or len(body) % 16:
            raise ParseError("record", f"CBC record body of {len(body)} bytes")
        if self.version < 0x0302:
            self.iv = body[-16:]
        from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

        dec = Cipher(algorithms.AES(self.key), modes.CBC(iv)).decryptor()
        plain = dec.update(body) + dec.finalize()
        pad = plain[-1]
        if (
            pad + 1 + (0 if self.etm else mac_len) > len(plain)
            or plain[-pad - 1 :].count(bytes([pad])) != pad + 1
        ):
            raise ParseError("record", "bad CBC padding (wrong key or damaged record)")
        data = plain[: -pad - 1]
        if not self.etm:
            data, tag = data[:-mac_len], data[-mac_len:]
            self._check_mac(self._aad(seq, ctype, len(data)) + data, tag)
        return data

    def _check_mac(self, data: bytes, tag: bytes) -> None:
        assert self.suite.mac is not None
        if not std_hmac.compare_digest(_hmac(self.suite.mac, self.mac_key, data), tag):
            raise ParseError("record", "record MAC does not match (wrong key or damaged record)")


def _tls13_keys(suite: Suite, secret: bytes) -> _RecordKeys:
    """RFC 8446 §7.3: write key and IV from a traffic secret."""
    key = hkdf_expand_label(suite.prf, secret, b"key", b"", suite.key_len)
    iv = hkdf_expand_label(suite.prf, secret, b"iv", b"", 12)
    return _RecordKeys(suite, TLS13, key, iv, b"")


def _tls12_keys(
    suite: Suite, version: int, master: bytes, client_random: bytes, server_random: bytes
) -> tuple[_RecordKeys, _RecordKeys]:
    """RFC 5246 §6.3: key_block = PRF(master, "key expansion", server_random + client_random)."""
    mac = _hash_len(suite.mac) if suite.mac else 0
    n = 2 * (mac + suite.key_len + suite.fixed_iv)
    block = prf(version, suite.prf, master, b"key expansion", server_random + client_random, n)
    parts, pos = [], 0
    for size in (mac, mac, suite.key_len, suite.key_len, suite.fixed_iv, suite.fixed_iv):
        parts.append(block[pos : pos + size])
        pos += size
    cmac, smac, ckey, skey, civ, siv = parts
    client = _RecordKeys(suite, version, ckey, civ, cmac)
    return client, _RecordKeys(suite, version, skey, siv, smac)


# -- handshake parsing --------------------------------------------------------------------------


class _Reader:
    """Length-checked reads from one handshake message (ParseError names the field)."""

    __slots__ = ("data", "pos", "what")

    def __init__(self, data: bytes, what: str) -> None:
        self.data, self.pos, self.what = data, 0, what

    def take(self, n: int, field_name: str) -> bytes:
        if self.pos + n > len(self.data):
            left = len(self.data) - self.pos
            raise ParseError(self.what, f"{field_name} needs {n} bytes, {left} left", self.pos)
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def num(self, width: int, field_name: str) -> int:
        return int.from_bytes(self.take(width, field_name), "big")

    def vec(self, width: int, field_name: str) -> bytes:
        return self.take(self.num(width, field_name + " length"), field_name)

    @property
    def left(self) -> int:
        return len(self.data) - self.pos


def _extensions(r: _Reader) -> dict[int, bytes]:
    if not r.left:
        return {}
    body = _Reader(r.vec(2, "extensions"), r.what)
    out: dict[int, bytes] = {}
    while body.left:
        kind = body.num(2, "extension type")
        out[kind] = body.vec(2, f"extension {kind}")
    return out


@dataclass(frozen=True, slots=True)
class _Hello:
    version: int
    random: bytes
    session_id: bytes
    suites: tuple[int, ...]
    ext: dict[int, bytes]


def parse_hello(body: bytes, client: bool) -> _Hello:
    """ClientHello / ServerHello (RFC 8446 §4.1.2-3, RFC 5246 §7.4.1.2-3)."""
    r = _Reader(body, "ClientHello" if client else "ServerHello")
    version = r.num(2, "legacy_version")
    random = r.take(32, "random")
    session_id = r.vec(1, "session_id")
    if client:
        raw = r.vec(2, "cipher_suites")
        suites = tuple(int.from_bytes(raw[i : i + 2], "big") for i in range(0, len(raw) - 1, 2))
        r.vec(1, "compression_methods")
    else:
        suites = (r.num(2, "cipher_suite"),)
        r.num(1, "compression_method")
    ext = _extensions(r)
    sv = ext.get(Ext.SUPPORTED_VERSIONS)
    if not client and sv is not None and len(sv) == 2:
        version = int.from_bytes(sv, "big")  # RFC 8446 §4.2.1: the negotiated version
    return _Hello(version, random, session_id, suites, ext)


def parse_sni(data: bytes) -> str | None:
    """RFC 6066 §3: the first host_name of a server_name extension."""
    r = _Reader(data, "server_name")
    names = _Reader(r.vec(2, "server_name_list"), "server_name")
    while names.left:
        kind, name = names.num(1, "name_type"), names.vec(2, "host_name")
        if kind == 0:
            return name.decode("ascii", "replace")
    return None


def parse_alpn(data: bytes) -> tuple[str, ...]:
    """RFC 7301 §3.1: ProtocolNameList."""
    r = _Reader(_Reader(data, "alpn").vec(2, "protocol_name_list"), "alpn")
    out = []
    while r.left:
        out.append(r.vec(1, "protocol_name").decode("ascii", "replace"))
    return tuple(out)


def parse_certificates(body: bytes, tls13: bool) -> list[bytes]:
    """DER certificates of a Certificate message (RFC 5246 §7.4.2, RFC 8446 §4.4.2)."""
    r = _Reader(body, "Certificate")
    if tls13:
        r.vec(1, "certificate_request_context")
    chain = _Reader(r.vec(3, "certificate_list"), "Certificate")
    out = []
    while chain.left:
        out.append(chain.vec(3, "cert_data"))
        if tls13:
            chain.vec(2, "extensions")
    return out


@dataclass(frozen=True, slots=True)
class CertificateFacts:
    """The server's end-entity certificate."""

    subject: str
    issuer: str
    not_before: str
    not_after: str
    """ISO 8601, UTC."""


def certificate_facts(der: bytes) -> tuple[CertificateFacts, object]:
    """Facts and public key of a DER certificate (ValueError when it does not parse)."""
    from cryptography import x509

    cert = x509.load_der_x509_certificate(der)
    facts = CertificateFacts(
        cert.subject.rfc4514_string(),
        cert.issuer.rfc4514_string(),
        cert.not_valid_before_utc.isoformat(),
        cert.not_valid_after_utc.isoformat(),
    )
    return facts, cert.public_key()


# -- keys, facts and statistics ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TlsKeys:
    """What may decrypt TLS: a parsed NSS key log and RSA server private keys."""

    keylog: KeyLog = field(default_factory=KeyLog)
    rsa_keys: tuple[rsa.RSAPrivateKey, ...] = ()

    @classmethod
    def load(cls, keylogs: Sequence[str] = (), key_files: Sequence[str] = ()) -> TlsKeys:
        """Read key log and PEM/DER key files; :class:`InputError` when one is unusable."""
        log = KeyLog()
        for path in keylogs:
            try:
                log.merge(load_keylog(path))
            except OSError as exc:
                raise InputError(f"TLS key log {path}: {exc.strerror or exc}") from None
        return cls(log, tuple(_load_rsa(path) for path in key_files))


def _load_rsa(path: str) -> rsa.RSAPrivateKey:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise InputError(f"TLS key {path}: {exc.strerror or exc}") from None
    try:
        if b"-----BEGIN" in data:
            key = serialization.load_pem_private_key(data, password=None)
        else:
            key = serialization.load_der_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise InputError(f"TLS key {path}: not an unencrypted private key ({exc})") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise InputError(f"TLS key {path}: not an RSA key (only RSA key exchange uses one)")
    return key


@dataclass(frozen=True, slots=True)
class AlertFacts:
    """One TLS alert (RFC 8446 §6); ``level``/``description`` None when it stayed encrypted."""

    frame: int
    sender: str  # "client" / "server"
    level: str | None
    description: str | None


@dataclass(frozen=True, slots=True)
class TlsSessionFacts:
    """What is known about one TLS connection (the ``tls_sessions`` JSON items)."""

    source: int
    client: Endpoint
    server: Endpoint
    first_frame: int
    version: str | None
    cipher_suite: str | None
    sni: str | None
    alpn_offered: tuple[str, ...]
    alpn: str | None
    certificate: CertificateFacts | None
    resumed: bool
    decrypted: bool
    not_decrypted: str | None
    """A :class:`NotDecrypted` value, or None when decrypted."""
    detail: str | None
    alerts: tuple[AlertFacts, ...]
    records: int
    cleartext_bytes: int
    carries_sip: bool | None

    def to_dict(self) -> dict[str, object]:
        c = self.certificate
        return {
            "source": self.source,
            "transport": "TCP",
            "client": {"ip": self.client.ip, "port": self.client.port},
            "server": {"ip": self.server.ip, "port": self.server.port},
            "first_frame": self.first_frame,
            "version": self.version,
            "cipher_suite": self.cipher_suite,
            "sni": self.sni,
            "alpn_offered": list(self.alpn_offered),
            "alpn": self.alpn,
            "certificate": None if c is None else {
                "subject": c.subject, "issuer": c.issuer,
                "not_before": c.not_before, "not_after": c.not_after,
            },
            "resumed": self.resumed,
            "decrypted": self.decrypted,
            "not_decrypted": self.not_decrypted,
            "detail": self.detail,
            "alerts": [
                {"frame": a.frame, "sender": a.sender, "level": a.level,
                 "description": a.description} for a in self.alerts
            ],
            "records": self.records,
            "cleartext_bytes": self.cleartext_bytes,
            "carries_sip": self.carries_sip,
        }  # fmt: skip


class TlsStats:
    """Collects the sessions of every followed connection, and the session cache
    (session id / ticket -> master secret) that lets resumed TLS <= 1.2 sessions decrypt."""

    def __init__(self) -> None:
        self.decoders: list[TlsDecoder] = []
        self.session_cache: dict[bytes, bytes] = {}
        self.skipped: Counter[str] = Counter()

    @property
    def tls_sessions(self) -> list[TlsSessionFacts]:
        return [d.facts() for d in self.decoders]

    def to_dicts(self) -> list[dict[str, object]]:
        return [s.to_dict() for s in self.tls_sessions]


# -- the per-connection decoder -----------------------------------------------------------


@dataclass(slots=True)
class _Dir:
    """One direction: unparsed bytes (with the frames that carried them) and read state."""

    client: bool
    buf: bytearray = field(default_factory=bytearray)
    base: int = 0  # stream offset of buf[0]
    spans: list[tuple[int, int, tuple[int, ...], int]] = field(default_factory=list)
    hs: bytearray = field(default_factory=bytearray)  # handshake bytes across records
    hs_frames: list[int] = field(default_factory=list)
    keys: _RecordKeys | None = None
    pending: _RecordKeys | None = None  # TLS <= 1.2: active after ChangeCipherSpec
    encrypted: bool = False
    secret: bytes | None = None  # TLS 1.3: current traffic secret (for KeyUpdate)
    app_secret: bytes | None = None  # TLS 1.3: used after this side's Finished
    seen: bool = False
    dead: bool = False


def _side(d: _Dir) -> str:
    return "client" if d.client else "server"


@dataclass(frozen=True, slots=True)
class Cleartext:
    """Decrypted application data of one record, with the frames that carried it."""

    data: bytes
    frames: tuple[int, ...]
    ts: int


class TlsDecoder:
    """One TCP connection's TLS: ``feed`` each direction's in-order bytes."""

    def __init__(
        self,
        keys: TlsKeys,
        source: int,
        a: Endpoint,
        b: Endpoint,
        findings: list[Finding],
        cache: dict[bytes, bytes] | None = None,
    ) -> None:
        self.keys, self.source, self.findings = keys, source, findings
        self.cache = {} if cache is None else cache
        self.ends = (a, b)  # ``a`` spoke first; the sender of the ClientHello is the client
        self.client: Endpoint | None = None
        self.dirs: dict[Endpoint, _Dir] = {}
        self.version: int | None = None
        self.suite_code: int | None = None
        self.suite: Suite | None = None
        self.client_hello: _Hello | None = None
        self.server_hello: _Hello | None = None
        self.sni: str | None = None
        self.alpn_offered: tuple[str, ...] = ()
        self.alpn: str | None = None
        self.cert: CertificateFacts | None = None
        self.cert_key: object = None
        self.premaster_enc: bytes | None = None
        self.transcript: list[bytes] = []  # handshake messages, for RFC 7627 session_hash
        self.master: bytes | None = None
        self.resumed = False
        self.reason: NotDecrypted | None = None
        self.detail: str | None = None
        self.alerts: list[AlertFacts] = []
        self.records = 0
        self.cleartext_bytes = 0
        self.decrypted_records = 0
        self.first_frame = 0
        self.carries_sip: bool | None = None

    # -- public -------------------------------------------------------------------------

    def feed(
        self, src: Endpoint, data: bytes, frames: tuple[int, ...], ts: int, gap: bool = False
    ) -> list[Cleartext]:
        """The next in-order bytes sent by ``src``; returns application data now readable."""
        d = self._dir(src)
        if not self.first_frame and frames:
            self.first_frame = frames[0]
        if d.dead:
            return []
        if gap and d.seen:
            self._fail(d, NotDecrypted.GAP, "bytes missing from the capture", frames)
            return []
        d.seen = True
        start = d.base + len(d.buf)
        d.buf += data
        d.spans.append((start, start + len(data), frames, ts))
        return self._records(d)

    def facts(self) -> TlsSessionFacts:
        client = self.client or self._guess_client()
        server = self.ends[1] if client == self.ends[0] else self.ends[0]
        decrypted = self.decrypted_records > 0
        reason = self.reason or (None if decrypted or not self.records else self._why_not())
        return TlsSessionFacts(
            self.source, client, server, self.first_frame,
            VERSIONS.get(self.version, f"0x{self.version:04X}") if self.version else None,
            self.suite.name if self.suite else
            (f"0x{self.suite_code:04X}" if self.suite_code is not None else None),
            self.sni, self.alpn_offered, self.alpn, self.cert, self.resumed, decrypted,
            reason.value if reason else None, self.detail, tuple(self.alerts), self.records,
            self.cleartext_bytes, self.carries_sip,
        )  # fmt: skip

    # -- records --------------------------------------------------------------------------

    def _dir(self, src: Endpoint) -> _Dir:
        d = self.dirs.get(src)
        if d is None:
            d = self.dirs[src] = _Dir(client=src == self._guess_client())
        return d

    def _guess_client(self) -> Endpoint:
        if self.client is not None:
            return self.client
        a, b = self.ends
        if a.port in (5061, 443) and b.port not in (5061, 443):
            return b
        return a  # the first to speak

    def _records(self, d: _Dir) -> list[Cleartext]:
        out: list[Cleartext] = []
        pos, buf = 0, d.buf
        while len(buf) - pos >= 5 and not d.dead:
            ctype, major, length = buf[pos], buf[pos + 1], int.from_bytes(buf[pos + 3 : pos + 5])
            if ctype not in _CONTENT_TYPES or major != 3 or length > MAX_RECORD:
                frames = self._frames(d, d.base + pos, d.base + pos + 5)[0]
                why = f"not a TLS record header ({bytes(buf[pos : pos + 5]).hex()})"
                self._fail(d, NotDecrypted.BAD_RECORD, why, frames)
                break
            if len(buf) - pos < 5 + length:
                break
            frames, ts = self._frames(d, d.base + pos, d.base + pos + 5 + length)
            frag = bytes(buf[pos + 5 : pos + 5 + length])
            pos += 5 + length
            self.records += 1
            chunk = self._record(d, ctype, frag, frames, ts)
            if chunk is not None:
                out.append(chunk)
        if pos:
            del buf[:pos]
            d.base += pos
            d.spans = [s for s in d.spans if s[1] > d.base]
        if d.dead:
            d.buf.clear()
        return out

    @staticmethod
    def _frames(d: _Dir, start: int, end: int) -> tuple[tuple[int, ...], int]:
        frames: dict[int, None] = {}
        ts = 0
        for a, b, fr, t in d.spans:
            if a >= end:
                break
            if b > start:
                frames.update(dict.fromkeys(fr))
                ts = t
        return tuple(frames), ts

    def _record(
        self, d: _Dir, ctype: int, frag: bytes, frames: tuple[int, ...], ts: int
    ) -> Cleartext | None:
        if ctype == ContentType.CHANGE_CIPHER_SPEC:
            self._change_cipher_spec(d)  # RFC 8446 §5: never protected; 1.3 ignores it
            return None
        if d.encrypted:
            if d.keys is None:
                self._undecryptable(d, ctype, frames)
                return None
            try:
                ctype, frag = d.keys.decrypt(ctype, frag)
            except ParseError as exc:
                self._fail(d, NotDecrypted.DECRYPT_FAILED, exc.detail, frames)
                return None
            self.decrypted_records += 1
        elif ctype == ContentType.APPLICATION_DATA:
            self._undecryptable(d, ctype, frames)
            return None
        return self._plain(d, ctype, frag, frames, ts)

    def _plain(
        self, d: _Dir, ctype: int, data: bytes, frames: tuple[int, ...], ts: int
    ) -> Cleartext | None:
        if ctype == ContentType.APPLICATION_DATA:
            self.cleartext_bytes += len(data)
            return Cleartext(data, frames, ts) if data else None
        if ctype == ContentType.HANDSHAKE:
            d.hs += data
            d.hs_frames.extend(frames)
            self._handshakes(d, frames)
        elif ctype == ContentType.ALERT:
            self._alert(d, data, frames)
        return None

    def _undecryptable(self, d: _Dir, ctype: int, frames: tuple[int, ...]) -> None:
        if ctype == ContentType.ALERT:
            self.alerts.append(AlertFacts(frames[0] if frames else 0, _side(d), None, None))
        if self.reason is None:
            reason = self._why_not()
            self.reason = reason
            self._finding(f"tls.{reason.value}", Severity.WARNING, self._reason_text(reason),
                          frames, "RFC 8446 §5.2")  # fmt: skip

    def _why_not(self) -> NotDecrypted:
        if self.client_hello is None and self.server_hello is None:
            return NotDecrypted.NO_HANDSHAKE
        if self.suite is None and self.suite_code is not None:
            return NotDecrypted.UNSUPPORTED_SUITE
        return NotDecrypted.NO_KEY

    def _reason_text(self, reason: NotDecrypted) -> str:
        conn = f"{self._guess_client()} -> {self.facts_server()}"
        if reason is NotDecrypted.NO_HANDSHAKE:
            return f"TLS {conn}: capture starts mid-session (no handshake), cannot decrypt"
        if reason is NotDecrypted.UNSUPPORTED_SUITE:
            return f"TLS {conn}: cipher suite 0x{self.suite_code or 0:04X} is not supported"
        what = self.suite.kx if self.suite else "?"
        return f"TLS {conn}: no key for this session (key exchange {what}); SIP stays hidden"

    def facts_server(self) -> Endpoint:
        client = self._guess_client()
        return self.ends[1] if client == self.ends[0] else self.ends[0]

    def _fail(self, d: _Dir, reason: NotDecrypted, why: str, frames: Sequence[int]) -> None:
        d.dead = True
        if self.reason is None:
            self.reason = reason
        self.detail = self.detail or why
        text = f"TLS {self._guess_client()} -> {self.facts_server()} ({_side(d)} side): {why}"
        self._finding(f"tls.{reason.value}", Severity.WARNING, text, frames)

    def _finding(
        self, code: str, sev: Severity, text: str, frames: Iterable[int], rfc: str | None = None
    ) -> None:
        refs = tuple(Ref(self.source, f) for f in sorted(set(frames)))
        self.findings.append(Finding(code, sev, text, rfc, refs[:20]))

    # -- alerts and cipher changes -----------------------------------------------------

    def _alert(self, d: _Dir, data: bytes, frames: tuple[int, ...]) -> None:
        sender = _side(d)
        for i in range(0, len(data) - 1, 2):
            level = {1: "warning", 2: "fatal"}.get(data[i], str(data[i]))
            desc = ALERTS.get(data[i + 1], str(data[i + 1]))
            self.alerts.append(AlertFacts(frames[0] if frames else 0, sender, level, desc))
            if desc != "close_notify":
                text = f"TLS alert from the {sender} {self._guess_client()}: {level} {desc}"
                sev = Severity.ERROR if level == "fatal" else Severity.WARNING
                self._finding("tls.alert", sev, text, frames, "RFC 8446 §6")

    def _change_cipher_spec(self, d: _Dir) -> None:
        if self.version is not None and self.version >= TLS13:
            return
        d.encrypted = True  # RFC 5246 §7.1: records after this one use the pending state
        if self.master is None:
            self._derive_master()
        if d.pending is None and self.master is not None:
            self._key_block()
        d.keys, d.pending = d.pending, None

    # -- handshake messages ------------------------------------------------------------

    def _handshakes(self, d: _Dir, frames: tuple[int, ...]) -> None:
        """Handshake messages split across / coalesced in records (RFC 8446 §5.1)."""
        while len(d.hs) >= 4 and not d.dead:
            n = int.from_bytes(d.hs[1:4], "big")
            if n > MAX_HANDSHAKE:
                why = f"handshake message of {n} bytes: not a TLS handshake"
                self._fail(d, NotDecrypted.BAD_RECORD, why, frames)
                return
            if len(d.hs) < 4 + n:
                return
            kind, body, raw = d.hs[0], bytes(d.hs[4 : 4 + n]), bytes(d.hs[: 4 + n])
            del d.hs[: 4 + n]
            msg_frames = tuple(d.hs_frames)
            d.hs_frames = list(frames) if d.hs else []
            try:
                self._handshake(d, kind, body, raw)
            except ParseError as exc:
                text = f"TLS handshake message {kind} from the {_side(d)}: {exc}"
                self._finding("tls.bad_handshake", Severity.WARNING, text, msg_frames,
                              "RFC 8446 §4")  # fmt: skip

    def _handshake(self, d: _Dir, kind: int, body: bytes, raw: bytes) -> None:
        if self.master is None and (self.version or 0) < TLS13:
            self.transcript.append(raw)
        handler = _HANDSHAKE_HANDLERS.get(kind)
        if handler is not None:
            handler(self, d, body)

    def _on_client_hello(self, d: _Dir, body: bytes) -> None:
        hello = parse_hello(body, client=True)
        if self.client_hello is None:
            self.client = next(e for e in self.ends if self.dirs.get(e) is d)
            for e, other in self.dirs.items():
                other.client = e == self.client
        self.client_hello = hello
        if Ext.SERVER_NAME in hello.ext:
            self.sni = parse_sni(hello.ext[Ext.SERVER_NAME])
        if Ext.ALPN in hello.ext:
            self.alpn_offered = parse_alpn(hello.ext[Ext.ALPN])

    def _on_server_hello(self, d: _Dir, body: bytes) -> None:
        hello = parse_hello(body, client=False)
        self.server_hello, self.version = hello, hello.version
        self.suite_code = hello.suites[0]
        self.suite = SUITES.get(self.suite_code)
        if Ext.ALPN in hello.ext:
            self.alpn = next(iter(parse_alpn(hello.ext[Ext.ALPN])), None)
        if hello.random == HRR_RANDOM:
            return  # RFC 8446 §4.1.4: a second ClientHello follows
        if hello.version >= TLS13:
            self._tls13_handshake_keys()
        elif self.client_hello is not None and hello.session_id:
            self.resumed = hello.session_id == self.client_hello.session_id

    def _on_certificate(self, d: _Dir, body: bytes) -> None:
        if d.client:
            return
        chain = parse_certificates(body, tls13=(self.version or 0) >= TLS13)
        if chain:
            try:
                self.cert, self.cert_key = certificate_facts(chain[0])
            except ValueError as exc:
                raise ParseError("Certificate", f"unreadable X.509: {exc}") from None

    def _on_client_key_exchange(self, d: _Dir, body: bytes) -> None:
        if self.suite is not None and self.suite.kx == "rsa":
            # RFC 5246 §7.4.7.1: EncryptedPreMasterSecret with a 2-byte length (SSL 3.0: none)
            n = int.from_bytes(body[:2], "big")
            self.premaster_enc = body[2:] if n == len(body) - 2 else body

    def _on_encrypted_extensions(self, d: _Dir, body: bytes) -> None:
        ext = _extensions(_Reader(body, "EncryptedExtensions"))
        if Ext.ALPN in ext:
            self.alpn = next(iter(parse_alpn(ext[Ext.ALPN])), None)

    def _on_new_session_ticket(self, d: _Dir, body: bytes) -> None:
        if (self.version or 0) < TLS13 and self.master is not None:
            r = _Reader(body, "NewSessionTicket")  # RFC 5077 §3.3
            r.num(4, "ticket_lifetime_hint")
            self.cache[r.vec(2, "ticket")] = self.master

    def _on_finished(self, d: _Dir, body: bytes) -> None:
        if (self.version or 0) >= TLS13 and self.suite is not None:
            d.secret, d.app_secret = d.app_secret, None  # RFC 8446 §7.1: application keys
            d.keys = _tls13_keys(self.suite, d.secret) if d.secret is not None else None

    def _on_key_update(self, d: _Dir, body: bytes) -> None:
        if d.secret is not None and self.suite is not None:  # RFC 8446 §7.2
            n = _hash_len(self.suite.prf)
            d.secret = hkdf_expand_label(self.suite.prf, d.secret, b"traffic upd", b"", n)
            d.keys = _tls13_keys(self.suite, d.secret)

    # -- keys ---------------------------------------------------------------------------

    def _tls13_handshake_keys(self) -> None:
        for d in self.dirs.values():
            d.encrypted = True
        if self.suite is None or self.client_hello is None:
            return
        cr, log = self.client_hello.random, self.keys.keylog
        secrets = {
            True: (log.get(Label.CLIENT_HANDSHAKE_TRAFFIC_SECRET, cr),
                   log.get(Label.CLIENT_TRAFFIC_SECRET_0, cr)),
            False: (log.get(Label.SERVER_HANDSHAKE_TRAFFIC_SECRET, cr),
                    log.get(Label.SERVER_TRAFFIC_SECRET_0, cr)),
        }  # fmt: skip
        for e in self.ends:
            d = self._dir(e)
            d.encrypted = True
            hs, app = secrets[d.client]
            if hs is not None:
                d.secret, d.app_secret, d.keys = hs, app, _tls13_keys(self.suite, hs)

    def _derive_master(self) -> None:
        ch, sh = self.client_hello, self.server_hello
        if ch is None or sh is None or self.suite is None or self.version is None:
            return
        master = self.keys.keylog.get(Label.CLIENT_RANDOM, ch.random)
        if master is None and self.resumed:
            ticket = ch.ext.get(Ext.SESSION_TICKET)
            master = self.cache.get(sh.session_id) or (self.cache.get(ticket) if ticket else None)
        if master is None and self.premaster_enc is not None:
            master = self._rsa_master(ch, sh)
        if master is not None:
            self.master = master
            if sh.session_id:
                self.cache[sh.session_id] = master
            self.transcript.clear()

    def _rsa_master(self, ch: _Hello, sh: _Hello) -> bytes | None:
        assert self.premaster_enc is not None and self.suite is not None
        pre = self.keys.keylog.get(Label.RSA, self.premaster_enc[:8]) or self._rsa_decrypt()
        if pre is None:
            return None
        assert self.version is not None
        if Ext.EXTENDED_MASTER_SECRET in sh.ext:  # RFC 7627 §4
            data = b"".join(self.transcript)
            if self.version >= TLS12:
                session_hash = _digest(self.suite.prf, data)
            else:
                session_hash = _digest("md5", data) + _digest("sha1", data)
            return prf(self.version, self.suite.prf, pre, b"extended master secret",
                       session_hash, 48)  # fmt: skip
        return prf(self.version, self.suite.prf, pre, b"master secret", ch.random + sh.random, 48)

    def _rsa_decrypt(self) -> bytes | None:
        from cryptography.hazmat.primitives.asymmetric import padding, rsa

        assert self.premaster_enc is not None
        keys = list(self.keys.rsa_keys)
        if isinstance(self.cert_key, rsa.RSAPublicKey):  # the key that matches the certificate
            n = self.cert_key.public_numbers().n
            keys = [k for k in keys if k.public_key().public_numbers().n == n] or keys
        for key in keys:
            try:
                pre = key.decrypt(self.premaster_enc, padding.PKCS1v15())
            except ValueError:
                continue
            if len(pre) == 48:  # RFC 5246 §7.4.7.1: client_version + 46 random bytes
                return pre
        return None

    def _key_block(self) -> None:
        ch, sh = self.client_hello, self.server_hello
        assert self.master is not None and ch is not None and sh is not None
        assert self.suite is not None and self.version is not None
        ckeys, skeys = _tls12_keys(self.suite, self.version, self.master, ch.random, sh.random)
        etm = Ext.ENCRYPT_THEN_MAC in sh.ext and self.suite.cipher == "CBC"
        ckeys.etm = skeys.etm = etm
        for e in self.ends:
            d = self._dir(e)
            if not d.encrypted or d.keys is None:
                d.pending = ckeys if d.client else skeys


_HANDSHAKE_HANDLERS: dict[int, Callable[[TlsDecoder, _Dir, bytes], None]] = {
    HandshakeType.CLIENT_HELLO: TlsDecoder._on_client_hello,
    HandshakeType.SERVER_HELLO: TlsDecoder._on_server_hello,
    HandshakeType.CERTIFICATE: TlsDecoder._on_certificate,
    HandshakeType.CLIENT_KEY_EXCHANGE: TlsDecoder._on_client_key_exchange,
    HandshakeType.ENCRYPTED_EXTENSIONS: TlsDecoder._on_encrypted_extensions,
    HandshakeType.NEW_SESSION_TICKET: TlsDecoder._on_new_session_ticket,
    HandshakeType.FINISHED: TlsDecoder._on_finished,
    HandshakeType.KEY_UPDATE: TlsDecoder._on_key_update,
}


# -- glue for the capture reader ----------------------------------------------------------


def looks_like_tls(payload: bytes) -> bool:
    """A TLS record header: content type 20-24, version 3.x (RFC 8446 §5.1)."""
    return (
        len(payload) >= 5
        and 20 <= payload[0] <= 24
        and payload[1] == 3
        and payload[2] <= 4
        and int.from_bytes(payload[3:5], "big") <= MAX_RECORD
    )


_SIP_TLS_PORTS = frozenset({5061})


class TlsFollower:
    """Which TCP connections to follow as TLS, and their bytes in, cleartext Datagrams out.

    A connection is followed when its first payload is a TLS record and keys were given
    (any port) or a port is 5061 or already seen carrying SIP (facts and "why not" only).
    Cleartext that does not start like SIP marks the session ``carries_sip=False`` and is
    counted in ``stats.skipped["tls_not_sip"]`` instead of being framed as SIP.
    """

    def __init__(
        self,
        keys: TlsKeys | None,
        stats: TlsStats | None,
        source: int,
        findings: list[Finding],
        is_sip: Callable[[bytes], bool] | None = None,
    ) -> None:
        self.keys = keys or TlsKeys()
        self.any_port = keys is not None
        self.stats = stats if stats is not None else TlsStats()
        self.source, self.findings = source, findings
        self.conns: dict[tuple[Endpoint, Endpoint], TlsDecoder] = {}
        self._is_sip = is_sip

    def wants(self, payload: bytes, sport: int, dport: int, sip_ports: set[int]) -> bool:
        if not looks_like_tls(payload):
            return False
        if self.any_port:
            return True
        return bool({sport, dport} & (_SIP_TLS_PORTS | sip_ports))

    def open(self, a: Endpoint, b: Endpoint) -> None:
        key = (a, b) if a <= b else (b, a)
        dec = TlsDecoder(self.keys, self.source, a, b, self.findings, self.stats.session_cache)
        self.conns[key] = dec
        self.stats.decoders.append(dec)

    def route(self, dgs: Iterable[Datagram]) -> Iterable[Datagram]:
        """TCP Datagrams in; those of TLS connections come out as TLS cleartext."""
        if not self.conns:
            return dgs
        return self._route(dgs)

    def _route(self, dgs: Iterable[Datagram]) -> Iterable[Datagram]:
        for dg in dgs:
            key = (dg.src, dg.dst) if dg.src <= dg.dst else (dg.dst, dg.src)
            dec = self.conns.get(key)
            if dec is None:
                yield dg
                continue
            for c in dec.feed(dg.src, dg.payload, dg.frames, dg.ts, dg.gap):
                if self._sip(dec, c.data):
                    yield Datagram(dg.src, dg.dst, Transport.TLS, c.data, c.frames, c.ts,
                                   dg.source, dg.stream)  # fmt: skip
                else:
                    self.stats.skipped["tls_not_sip"] += 1

    def _sip(self, dec: TlsDecoder, data: bytes) -> bool:
        if dec.carries_sip is None:
            dec.carries_sip = self._is_sip(data) if self._is_sip is not None else True
        return dec.carries_sip
