"""TLS 1.0-1.3 over TCP: session facts, and SIP cleartext when keys allow (docs/tls.md).

How this works: :class:`TlsFollower` is the glue the capture reader uses: which TCP
connections to follow as TLS, their bytes into one :class:`TlsDecoder` each, and
``Transport.TLS`` Datagrams of cleartext out. The work is done in sibling modules:

* :mod:`~sipflow.ingest.tls_codes`: wire codes, supported cipher suites, ``NotDecrypted``;
* :mod:`~sipflow.ingest.tls_handshake`: ClientHello/ServerHello, SNI, ALPN, certificates;
* :mod:`~sipflow.ingest.tls_crypto`: PRF, HKDF-Expand-Label, key blocks, record decryption
  (every primitive from the ``cryptography`` package);
* :mod:`~sipflow.ingest.tls_decoder`: one connection's records, handshake and keys;
* :mod:`~sipflow.ingest.tls_facts`: ``TlsKeys`` (key logs, RSA keys), session facts, stats.

The public names stay importable from here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from sipflow.findings import Finding
from sipflow.ingest.tls_codes import MAX_RECORD, NotDecrypted
from sipflow.ingest.tls_crypto import hkdf_expand_label, prf
from sipflow.ingest.tls_decoder import Cleartext, TlsDecoder
from sipflow.ingest.tls_facts import AlertFacts, TlsKeys, TlsSessionFacts, TlsStats
from sipflow.ingest.tls_handshake import CertificateFacts
from sipflow.ingest.types import Datagram, Endpoint, Transport

__all__ = [
    "AlertFacts",
    "CertificateFacts",
    "Cleartext",
    "NotDecrypted",
    "TlsDecoder",
    "TlsFollower",
    "TlsKeys",
    "TlsSessionFacts",
    "TlsStats",
    "hkdf_expand_label",
    "looks_like_tls",
    "prf",
]


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
