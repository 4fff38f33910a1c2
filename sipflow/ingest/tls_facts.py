"""What decrypts TLS (:class:`TlsKeys`) and what is known of each session (facts).

How this works: :meth:`TlsKeys.load` reads NSS key logs and RSA private keys once per
analysis (unreadable files are :class:`~sipflow.errors.InputError`). Each followed
connection's decoder gives a :class:`TlsSessionFacts` (the ``tls_sessions`` JSON items,
docs/tls.md); :class:`~sipflow.ingest.tls.TlsStats` collects them per source, with the
session cache that lets resumed TLS <= 1.2 sessions decrypt.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sipflow.errors import InputError
from sipflow.ingest.keylog import KeyLog, load_keylog
from sipflow.ingest.tls_handshake import CertificateFacts
from sipflow.ingest.types import Endpoint

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import rsa


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
class WebSocketFacts:
    """SIP over secure WebSocket (RFC 7118) in a decrypted session: both directions' counts."""

    messages: int
    """Whole data messages (one SIP message each, RFC 7118 §5)."""
    control_frames: int
    """Ping, pong and close frames (RFC 6455 §5.5), skipped."""
    handshake_bytes: int
    """HTTP upgrade request and 101 answer (RFC 6455 §4), consumed."""
    skipped_bytes: int
    """Bytes of frames or messages dropped (damage, too large, cut at the end)."""

    def to_dict(self) -> dict[str, int]:
        return {
            "messages": self.messages,
            "control_frames": self.control_frames,
            "handshake_bytes": self.handshake_bytes,
            "skipped_bytes": self.skipped_bytes,
        }


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
    websocket: WebSocketFacts | None = None
    """Set when the cleartext is a WebSocket upgrade and frames (WSS), else None."""

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
            "websocket": None if self.websocket is None else self.websocket.to_dict(),
        }  # fmt: skip
