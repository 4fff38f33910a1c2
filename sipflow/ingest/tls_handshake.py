"""TLS handshake message parsing: hellos, SNI, ALPN, certificates.

How this works: :class:`Reader` reads one handshake message with a length check before
every field, so a truncated or lying message raises :class:`~sipflow.errors.ParseError`
naming the field (the decoder turns it into a ``tls.bad_handshake`` Finding). Parsers
return frozen values; X.509 is read by ``cryptography``.
"""

from __future__ import annotations

from dataclasses import dataclass

from sipflow.errors import ParseError
from sipflow.ingest.tls_codes import Ext

# -- handshake parsing --------------------------------------------------------------------------


class Reader:
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


def read_extensions(r: Reader) -> dict[int, bytes]:
    if not r.left:
        return {}
    body = Reader(r.vec(2, "extensions"), r.what)
    out: dict[int, bytes] = {}
    while body.left:
        kind = body.num(2, "extension type")
        out[kind] = body.vec(2, f"extension {kind}")
    return out


@dataclass(frozen=True, slots=True)
class Hello:
    version: int
    random: bytes
    session_id: bytes
    suites: tuple[int, ...]
    ext: dict[int, bytes]


def parse_hello(body: bytes, client: bool) -> Hello:
    """ClientHello / ServerHello (RFC 8446 §4.1.2-3, RFC 5246 §7.4.1.2-3)."""
    r = Reader(body, "ClientHello" if client else "ServerHello")
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
    ext = read_extensions(r)
    sv = ext.get(Ext.SUPPORTED_VERSIONS)
    if not client and sv is not None and len(sv) == 2:
        version = int.from_bytes(sv, "big")  # RFC 8446 §4.2.1: the negotiated version
    return Hello(version, random, session_id, suites, ext)


def parse_sni(data: bytes) -> str | None:
    """RFC 6066 §3: the first host_name of a server_name extension."""
    r = Reader(data, "server_name")
    names = Reader(r.vec(2, "server_name_list"), "server_name")
    while names.left:
        kind, name = names.num(1, "name_type"), names.vec(2, "host_name")
        if kind == 0:
            return name.decode("ascii", "replace")
    return None


def parse_alpn(data: bytes) -> tuple[str, ...]:
    """RFC 7301 §3.1: ProtocolNameList."""
    r = Reader(Reader(data, "alpn").vec(2, "protocol_name_list"), "alpn")
    out = []
    while r.left:
        out.append(r.vec(1, "protocol_name").decode("ascii", "replace"))
    return tuple(out)


def parse_certificates(body: bytes, tls13: bool) -> list[bytes]:
    """DER certificates of a Certificate message (RFC 5246 §7.4.2, RFC 8446 §4.4.2)."""
    r = Reader(body, "Certificate")
    if tls13:
        r.vec(1, "certificate_request_context")
    chain = Reader(r.vec(3, "certificate_list"), "Certificate")
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
