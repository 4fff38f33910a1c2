"""TLS 1.0-1.3 over TCP: session facts, and SIP cleartext when keys allow (docs/tls.md).

How this works: :class:`TlsFollower` is the glue the capture reader uses: which TCP
connections to follow as TLS, their bytes into one :class:`TlsDecoder` each, and
``Transport.TLS`` Datagrams of cleartext out. Each direction's cleartext passes the
WebSocket :class:`~sipflow.ingest.websocket.UpgradeSniffer` that TCP streams pass: after
an HTTP upgrade (RFC 6455 §4) each WebSocket message leaves as one ``Transport.WSS``
Datagram (SIP over secure WebSocket, RFC 7118 §5); other cleartext is unchanged. The work
is done in sibling modules:

* :mod:`~sipflow.ingest.tls_codes`: wire codes, supported cipher suites, ``NotDecrypted``;
* :mod:`~sipflow.ingest.tls_handshake`: ClientHello/ServerHello, SNI, ALPN, certificates;
* :mod:`~sipflow.ingest.tls_crypto`: PRF, HKDF-Expand-Label, key blocks, record decryption
  (every primitive from the ``cryptography`` package);
* :mod:`~sipflow.ingest.tls_decoder`: one connection's records, handshake and keys;
* :mod:`~sipflow.ingest.tls_facts`: ``TlsKeys`` (key logs, RSA keys), session facts.

:class:`TlsStats` (here) collects each source's sessions. The public names stay importable
from here; the sibling modules load with the first connection followed or the first use of
one of their names, so a capture without TLS does not load the decoder and its crypto.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sipflow.findings import Finding, Ref, Severity
from sipflow.ingest.types import Datagram, Endpoint, Transport
from sipflow.ingest.websocket import Piece, UpgradeSniffer
from sipflow.lazy import lazy_names

if TYPE_CHECKING:
    from sipflow.ingest.tls_codes import NotDecrypted
    from sipflow.ingest.tls_crypto import hkdf_expand_label, prf
    from sipflow.ingest.tls_decoder import Cleartext, TlsDecoder
    from sipflow.ingest.tls_facts import AlertFacts, TlsKeys, TlsSessionFacts, WebSocketFacts
    from sipflow.ingest.tls_handshake import CertificateFacts

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
    "WebSocketFacts",
    "hkdf_expand_label",
    "looks_like_tls",
    "prf",
]

# public name -> the sibling module that defines it, imported when first used (PEP 562)
_WHERE = {
    "AlertFacts": "sipflow.ingest.tls_facts",
    "CertificateFacts": "sipflow.ingest.tls_handshake",
    "Cleartext": "sipflow.ingest.tls_decoder",
    "NotDecrypted": "sipflow.ingest.tls_codes",
    "TlsDecoder": "sipflow.ingest.tls_decoder",
    "TlsKeys": "sipflow.ingest.tls_facts",
    "TlsSessionFacts": "sipflow.ingest.tls_facts",
    "WebSocketFacts": "sipflow.ingest.tls_facts",
    "hkdf_expand_label": "sipflow.ingest.tls_crypto",
    "prf": "sipflow.ingest.tls_crypto",
}
__getattr__ = lazy_names(__name__, globals(), _WHERE)


# RFC 5246 §6.2.3: TLSCiphertext.length limit; tls_codes.MAX_RECORD, written here again so
# that sniffing a record header does not load tls_codes (a test checks they agree)
_MAX_RECORD = 2**14 + 2048


def looks_like_tls(payload: bytes) -> bool:
    """A TLS record header: content type 20-24, version 3.x (RFC 8446 §5.1)."""
    return (
        len(payload) >= 5
        and 20 <= payload[0] <= 24
        and payload[1] == 3
        and payload[2] <= 4
        and int.from_bytes(payload[3:5], "big") <= _MAX_RECORD
    )


_SIP_TLS_PORTS = frozenset({5061})
# What a sniffer piece becomes once it was under TLS: stream bytes or a WebSocket message.
_SECURE = {Transport.TCP: Transport.TLS, Transport.WS: Transport.WSS}
MAX_REFS = 64  # frames kept on one finding


class TlsStats:
    """Collects the sessions of every followed connection, and the session cache
    (session id / ticket -> master secret) that lets resumed TLS <= 1.2 sessions decrypt."""

    def __init__(self) -> None:
        self.decoders: list[TlsDecoder] = []
        self.session_cache: dict[bytes, bytes] = {}

    @property
    def tls_sessions(self) -> list[TlsSessionFacts]:
        return [d.facts() for d in self.decoders]

    def to_dicts(self) -> list[dict[str, object]]:
        return [s.to_dict() for s in self.tls_sessions]


@dataclass(slots=True)
class _Side:
    """One direction of a followed connection: its cleartext sniffer and Datagram identity."""

    sniffer: UpgradeSniffer
    dec: TlsDecoder
    src: Endpoint
    dst: Endpoint
    source: int
    stream: int


class TlsFollower:
    """Which TCP connections to follow as TLS, and their bytes in, cleartext Datagrams out.

    A connection is followed when its first payload is a TLS record and keys were given
    (any port) or a port is 5061 or already seen carrying SIP (facts and "why not" only).
    Cleartext that starts with a WebSocket upgrade comes out as one ``Transport.WSS``
    Datagram per message; other cleartext as ``Transport.TLS`` stream bytes. Cleartext (or
    a first WebSocket message) that does not start like SIP marks the session
    ``carries_sip=False`` and is counted in ``skipped["tls_not_sip"]`` (the source's skip
    counts) instead of
    being framed as SIP. WebSocket damage gives ``ingest.websocket`` findings, as on TCP.
    """

    def __init__(
        self,
        keys: TlsKeys | None,
        stats: TlsStats | None,
        source: int,
        findings: list[Finding],
        is_sip: Callable[[bytes], bool] | None = None,
        skipped: Counter[str] | None = None,
    ) -> None:
        self.keys = keys  # None: an empty TlsKeys, made with the first connection followed
        self.skipped: Counter[str] = skipped if skipped is not None else Counter()
        self.any_port = keys is not None
        self.stats = stats if stats is not None else TlsStats()
        self.source, self.findings = source, findings
        self.conns: dict[tuple[Endpoint, Endpoint], TlsDecoder] = {}
        self.sides: dict[tuple[Endpoint, Endpoint], _Side] = {}
        self._is_sip = is_sip

    def wants(self, payload: bytes, sport: int, dport: int, sip_ports: set[int]) -> bool:
        if not looks_like_tls(payload):
            return False
        if self.any_port:
            return True
        return bool({sport, dport} & (_SIP_TLS_PORTS | sip_ports))

    def open(self, a: Endpoint, b: Endpoint) -> None:
        from sipflow.ingest.tls_decoder import TlsDecoder
        from sipflow.ingest.tls_facts import TlsKeys

        if self.keys is None:
            self.keys = TlsKeys()
        key = (a, b) if a <= b else (b, a)
        dec = TlsDecoder(self.keys, self.source, a, b, self.findings, self.stats.session_cache)
        self.conns[key] = dec
        self.stats.decoders.append(dec)

    def route(self, dgs: Iterable[Datagram]) -> Iterable[Datagram]:
        """TCP Datagrams in; those of TLS connections come out as TLS / WSS cleartext."""
        if not self.conns:
            return dgs
        return self._route(dgs)

    def flush(self) -> Iterator[Datagram]:
        """End of input: bytes a sniffer still holds (an unfinished HTTP header block) go
        out as TLS cleartext; a WebSocket message cut by the end is reported."""
        for side in self.sides.values():
            yield from self._pieces(side, side.sniffer.flush())
            self._problems(side)

    def _route(self, dgs: Iterable[Datagram]) -> Iterable[Datagram]:
        for dg in dgs:
            key = (dg.src, dg.dst) if dg.src <= dg.dst else (dg.dst, dg.src)
            dec = self.conns.get(key)
            if dec is None:
                yield dg
                continue
            for c in dec.feed(dg.src, dg.payload, dg.frames, dg.ts, dg.gap):
                yield from self._cleartext(self._side(dec, dg), c)

    def _side(self, dec: TlsDecoder, dg: Datagram) -> _Side:
        side = self.sides.get((dg.src, dg.dst))
        if side is None or side.dec is not dec:
            side = _Side(UpgradeSniffer(), dec, dg.src, dg.dst, dg.source, dg.stream)
            self.sides[dg.src, dg.dst] = side
            dec.sniffers.append(side.sniffer)
        return side

    def _cleartext(self, side: _Side, c: Cleartext) -> Iterator[Datagram]:
        if side.sniffer.plain:  # fast path: SIP over TLS (or anything but a WS upgrade)
            yield from self._pieces(side, (Piece(Transport.TCP, c.data, c.frames, c.ts),))
            return
        yield from self._pieces(side, side.sniffer.feed_frames(c.data, c.frames, c.ts))
        self._problems(side)

    def _pieces(self, side: _Side, pieces: Iterable[Piece]) -> Iterator[Datagram]:
        for p in pieces:
            if self._sip(side.dec, p.payload):
                yield Datagram(side.src, side.dst, _SECURE[p.transport], p.payload, p.frames,
                               p.ts, side.source, side.stream)  # fmt: skip
            else:
                self.skipped["tls_not_sip"] += 1

    def _sip(self, dec: TlsDecoder, data: bytes) -> bool:
        if dec.carries_sip is None:
            dec.carries_sip = self._is_sip(data) if self._is_sip is not None else True
        return dec.carries_sip

    def _problems(self, side: _Side) -> None:
        """RFC 6455 damage found by the sniffer: ``ingest.websocket`` findings, as on TCP."""
        for frames, text in side.sniffer.take_problems():
            refs = tuple(Ref(side.source, f) for f in sorted(set(frames))[:MAX_REFS])
            msg = f"{text} (TLS {side.src} -> {side.dst})"
            self.findings.append(
                Finding("ingest.websocket", Severity.WARNING, msg, "RFC 6455 §5", refs)
            )
