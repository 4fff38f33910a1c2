"""One TCP connection's TLS, sans-IO: stream bytes in; cleartext, facts and Findings out.

How this works: :class:`TlsDecoder` keeps one state per direction. Each direction cuts
its in-order bytes into records (RFC 5246 §6.2.1, RFC 8446 §5.1: records split and
coalesced across segments as on the wire), reassembles handshake messages across
records, and reads ClientHello (SNI, ALPN), ServerHello (version, suite), Certificate
(subject, issuer, expiry) and alerts through a handler table. Keys come from
:class:`~sipflow.ingest.tls_facts.TlsKeys`:

* TLS <= 1.2: the master secret from the NSS key log (``CLIENT_RANDOM``), or from the
  RSA-encrypted pre-master secret and a server private key (RFC 5246 §7.4.7.1, §8.1;
  RFC 7627 extended master secret), or from an earlier session (resumption, by session
  id or ticket); the key block from the PRF (:mod:`sipflow.ingest.tls_crypto`);
* TLS 1.3: handshake and application traffic secrets from the key log, keys and IVs by
  HKDF-Expand-Label (RFC 8446 §7.1, §7.3), KeyUpdate followed (§4.6.3).

A connection that cannot be decrypted says why (:class:`NotDecrypted`) and its bytes are
counted, never guessed at. The follower (:mod:`sipflow.ingest.tls`) passes each direction's
cleartext through a WebSocket :class:`~sipflow.ingest.websocket.UpgradeSniffer` kept in
``sniffers``; :meth:`TlsDecoder.facts` reports their counts when the session is WSS.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from sipflow.errors import ParseError
from sipflow.findings import Finding, Ref, Severity
from sipflow.ingest.keylog import Label
from sipflow.ingest.tls_codes import (
    ALERTS,
    CONTENT_TYPES,
    HRR_RANDOM,
    MAX_HANDSHAKE,
    MAX_RECORD,
    SUITES,
    TLS13,
    VERSIONS,
    ContentType,
    Ext,
    HandshakeType,
    NotDecrypted,
    Suite,
)
from sipflow.ingest.tls_crypto import (
    RecordKeys,
    hash_len,
    hkdf_expand_label,
    master_secret,
    rsa_premaster,
    tls12_keys,
    tls13_keys,
)
from sipflow.ingest.tls_facts import AlertFacts, TlsKeys, TlsSessionFacts, WebSocketFacts
from sipflow.ingest.tls_handshake import (
    CertificateFacts,
    Hello,
    Reader,
    certificate_facts,
    parse_alpn,
    parse_certificates,
    parse_hello,
    parse_sni,
    read_extensions,
)
from sipflow.ingest.types import Endpoint
from sipflow.ingest.websocket import UpgradeSniffer


@dataclass(slots=True)
class _Dir:
    """One direction: unparsed bytes (with the frames that carried them) and read state."""

    client: bool
    buf: bytearray = field(default_factory=bytearray)
    base: int = 0  # stream offset of buf[0]
    spans: list[tuple[int, int, tuple[int, ...], int]] = field(default_factory=list)
    hs: bytearray = field(default_factory=bytearray)  # handshake bytes across records
    hs_frames: list[int] = field(default_factory=list)
    keys: RecordKeys | None = None
    pending: RecordKeys | None = None  # TLS <= 1.2: active after ChangeCipherSpec
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
        self.client_hello: Hello | None = None
        self.server_hello: Hello | None = None
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
        self.sniffers: list[UpgradeSniffer] = []  # cleartext directions (set by the follower)

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
            self.cleartext_bytes, self.carries_sip, self._websocket(),
        )  # fmt: skip

    def _websocket(self) -> WebSocketFacts | None:
        """Counts of the directions that switched to WebSocket (RFC 6455 §4), if any."""
        ws = [s for s in self.sniffers if s.decoder is not None]
        if not ws:
            return None
        decs = [s.decoder for s in ws if s.decoder is not None]
        return WebSocketFacts(
            sum(d.messages for d in decs),
            sum(d.control_frames for d in decs),
            sum(s.handshake_bytes for s in ws),
            sum(d.skipped_bytes for d in decs),
        )

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
            if ctype not in CONTENT_TYPES or major != 3 or length > MAX_RECORD:
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
        ext = read_extensions(Reader(body, "EncryptedExtensions"))
        if Ext.ALPN in ext:
            self.alpn = next(iter(parse_alpn(ext[Ext.ALPN])), None)

    def _on_new_session_ticket(self, d: _Dir, body: bytes) -> None:
        if (self.version or 0) < TLS13 and self.master is not None:
            r = Reader(body, "NewSessionTicket")  # RFC 5077 §3.3
            r.num(4, "ticket_lifetime_hint")
            self.cache[r.vec(2, "ticket")] = self.master

    def _on_finished(self, d: _Dir, body: bytes) -> None:
        if (self.version or 0) >= TLS13 and self.suite is not None:
            d.secret, d.app_secret = d.app_secret, None  # RFC 8446 §7.1: application keys
            d.keys = tls13_keys(self.suite, d.secret) if d.secret is not None else None

    def _on_key_update(self, d: _Dir, body: bytes) -> None:
        if d.secret is not None and self.suite is not None:  # RFC 8446 §7.2
            n = hash_len(self.suite.prf)
            d.secret = hkdf_expand_label(self.suite.prf, d.secret, b"traffic upd", b"", n)
            d.keys = tls13_keys(self.suite, d.secret)

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
                d.secret, d.app_secret, d.keys = hs, app, tls13_keys(self.suite, hs)

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

    def _rsa_master(self, ch: Hello, sh: Hello) -> bytes | None:
        assert self.premaster_enc is not None and self.suite is not None
        assert self.version is not None
        enc = self.premaster_enc
        pre = self.keys.keylog.get(Label.RSA, enc[:8])  # RSA lines: by encrypted prefix
        pre = pre or rsa_premaster(self.keys.rsa_keys, enc, self.cert_key)
        if pre is None:
            return None
        ems = b"".join(self.transcript) if Ext.EXTENDED_MASTER_SECRET in sh.ext else None
        return master_secret(self.version, self.suite, pre, ch.random, sh.random, ems)

    def _key_block(self) -> None:
        ch, sh = self.client_hello, self.server_hello
        assert self.master is not None and ch is not None and sh is not None
        assert self.suite is not None and self.version is not None
        ckeys, skeys = tls12_keys(self.suite, self.version, self.master, ch.random, sh.random)
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
