"""The one asyncio module: sockets, one timer, and the run's pcap, log and truth files.

How this works: a :class:`Node` runs one sans-IO agent (the B2BUA core, or a built-in
UA) on its listeners: UDP endpoints, TCP and TLS servers, and outgoing TCP/TLS
connections opened on demand and reused for the same peer (RFC 3261 §18.1.1, §18.2.2).
Stream bytes are cut into messages by :class:`~sipflow.sip.framing.StreamFramer`.
Every message in or out goes to the agent or the wire and, when the node records, to the
pcap (real timestamps, the socket addresses; TLS legs as their cleartext SIP over TCP
on the same ports) and to the FreeSWITCH-style log. Given a key log path, every TLS
context (listeners and outgoing) appends its secrets there in the NSS key log format
(``SSLContext.keylog_filename``), so a real capture of the wire decrypts (docs/tls.md).
After each event the node asks the agent for its next deadline and arms one
``loop.call_at``. A stream connection that has not completed a message within
``tcp_idle_timeout_s`` is closed (half-open).

Anchored media: a :class:`~sipflow.b2bua.media.MediaOpen` action binds a UDP RTP port
and its RTCP port (the next one); what they receive goes to the agent's
``media_received`` (relay decisions are the agent's) and a ``MediaSend`` leaves from the
bound port it names. RTP/RTCP in and out is written to the pcap like the SIP (real bytes,
real times), not to the log.
"""

from __future__ import annotations

import asyncio
import datetime
import functools
import os
import socket
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Protocol, cast

from sipflow.b2bua.config import Config, Listen
from sipflow.b2bua.core import Action, CallEvent, Send
from sipflow.b2bua.logwriter import PcapRecords, event_line, trace_block
from sipflow.b2bua.media import MediaClose, MediaOpen, MediaSend
from sipflow.ingest.types import Datagram, Endpoint, Transport
from sipflow.sip.framing import StreamFramer

MAX_STREAM_BUFFER = 65_536  # more unframed bytes than one 64 KB message: close


class Agent(Protocol):
    """What a node drives: the B2BUA core or a built-in UA."""

    def receive(
        self, data: bytes, src: Endpoint, transport: Transport, now: int
    ) -> Sequence[Action]: ...

    def expire(self, now: int) -> Sequence[Action]: ...

    def next_deadline(self) -> int | None: ...

    def transport_error(
        self, dst: Endpoint, transport: Transport, now: int
    ) -> Sequence[Action]: ...


def ensure_self_signed(cert: str, key: str, host: str = "127.0.0.1") -> None:
    """Write a self-signed certificate and key (PEM) unless both exist."""
    if Path(cert).exists() and Path(key).exists():
        return
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    pk = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sipflow-b2bua")])
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(pk.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(host))]), False
        )
    )
    crt = builder.sign(pk, hashes.SHA256())
    Path(cert).write_bytes(crt.public_bytes(serialization.Encoding.PEM))
    Path(key).write_bytes(
        pk.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def _server_ssl(listen: Listen, keylog: str | None = None) -> ssl.SSLContext:
    if listen.cert is None or listen.key is None:
        raise ValueError("a TLS listener needs cert and key")
    if listen.self_signed:
        ensure_self_signed(listen.cert, listen.key, listen.host)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(listen.cert, listen.key)
    if keylog:
        ctx.keylog_filename = keylog  # NSS key log lines, appended as handshakes happen
    return ctx


def _client_ssl(keylog: str | None = None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # lab peers use self-signed pairs
    if keylog:
        ctx.keylog_filename = keylog
    return ctx


@dataclass
class Recorder:
    """Where a node writes what it saw: pcap, FreeSWITCH-style log, TLS key log."""

    pcap: IO[bytes] | None = None
    log: IO[str] | None = None
    records: PcapRecords = field(default_factory=PcapRecords)
    tls_ports: set[int] = field(default_factory=set)
    keylog: str | None = None
    """NSS key log path for the node's TLS contexts (Python/OpenSSL append to it)."""

    @classmethod
    def open(cls, pcap: str | None, log: str | None, keylog: str | None = None) -> Recorder:
        rec = cls(open(pcap, "wb") if pcap else None, open(log, "w") if log else None)  # noqa: SIM115
        rec.keylog = keylog  # opened by each TLS context (OpenSSL appends)
        if rec.pcap is not None:
            rec.pcap.write(PcapRecords.header())
        return rec

    def message(
        self, ts: int, src: Endpoint, dst: Endpoint, t: Transport, data: bytes, out: bool
    ) -> None:
        if t is Transport.TLS:  # both ends: a reader decodes either port as cleartext SIP
            self.tls_ports.update((src.port, dst.port))
        if self.pcap is not None:
            self.pcap.write(self.records.record(ts, src, dst, t, data))
        if self.log is not None:
            peer = dst if out else src
            self.log.write(trace_block("send" if out else "recv", data, t, peer, ts))

    def media(self, ts: int, src: Endpoint, dst: Endpoint, data: bytes) -> None:
        """An RTP/RTCP datagram in or out: pcap only (a PBX log does not trace media)."""
        if self.pcap is not None:
            self.pcap.write(self.records.record(ts, src, dst, Transport.UDP, data))

    def event(self, ev: CallEvent) -> None:
        if self.log is not None:
            self.log.write(event_line(ev))

    def close(self) -> None:
        for f in (self.pcap, self.log):
            if f is not None:
                f.close()


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, node: Node, local: Endpoint) -> None:
        self.node = node
        self.local = local
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        src = Endpoint(str(addr[0]), int(addr[1]))
        self.node.on_message(data, src, self.local, Transport.UDP)


class _Media(asyncio.DatagramProtocol):
    """One bound RTP or RTCP port of anchored media (or of a built-in UA's stream)."""

    def __init__(self, node: Node, local: Endpoint, sock: socket.socket) -> None:
        self.node = node
        self.local = local
        self.sock = sock
        """The bound socket (sends go through it until the transport is set up)."""
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)
        if self.node.media.get(self.local) is not self:  # closed before it was set up
            self.transport.close()

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self.node.on_media(data, Endpoint(str(addr[0]), int(addr[1])), self.local)

    def error_received(self, exc: Exception) -> None:  # ICMP port unreachable and the like
        self.node.counts["media-error"] = self.node.counts.get("media-error", 0) + 1


def _same(proto: _Media) -> _Media:
    return proto


class _Stream(asyncio.Protocol):
    """One TCP or TLS connection, either direction."""

    def __init__(self, node: Node, kind: Transport) -> None:
        self.node = node
        self.kind = kind
        # The size limit is ours (MAX_STREAM_BUFFER, checked before feeding): the framer's
        # own max_head path re-finds the same start line forever (reported upstream).
        self.framer = StreamFramer(max_head=1 << 30)
        self.transport: asyncio.Transport | None = None
        self.local = Endpoint("0.0.0.0", 0)
        self.peer = Endpoint("0.0.0.0", 0)
        self.last_message = time.monotonic()
        self.pending = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        sock, peer = transport.get_extra_info("sockname"), transport.get_extra_info("peername")
        self.local = Endpoint(str(sock[0]), int(sock[1]))
        self.peer = Endpoint(str(peer[0]), int(peer[1]))
        self.node.conns[(self.kind, self.peer)] = self

    def data_received(self, data: bytes) -> None:
        self.pending += len(data)
        if self.pending > MAX_STREAM_BUFFER:  # a message over 64 KB: refused, connection closed
            self.node.counts["closed-oversize"] = self.node.counts.get("closed-oversize", 0) + 1
            self.close()
            return
        dg = Datagram(self.peer, self.local, Transport.TCP, data, (), time.time_ns())
        for fm in self.framer.feed(dg):
            self.pending = 0
            self.last_message = time.monotonic()
            self.node.on_message(fm.data, self.peer, self.local, self.kind)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.node.conns.get((self.kind, self.peer)) is self:
            del self.node.conns[(self.kind, self.peer)]

    def send(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class Node:
    """Runs one agent on its listeners in the running event loop."""

    def __init__(
        self,
        agent: Agent,
        listen: Sequence[Listen],
        recorder: Recorder | None = None,
        tcp_idle_timeout_s: float = 32.0,
    ) -> None:
        self.agent = agent
        self.listen = list(listen)
        self.recorder = recorder or Recorder()
        self.idle_timeout = tcp_idle_timeout_s
        self.udp: dict[Endpoint, _Udp] = {}
        self.media: dict[Endpoint, _Media] = {}
        """Bound RTP/RTCP ports (anchored media, built-in UAs' streams)."""
        self.conns: dict[tuple[Transport, Endpoint], _Stream] = {}
        self.connecting: dict[tuple[Transport, Endpoint], list[bytes]] = {}
        self.servers: list[asyncio.AbstractServer] = []
        self.events = 0
        """Call events seen (written to the log, not kept: memory stays flat under load)."""
        self.counts: dict[str, int] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client_ctx: ssl.SSLContext | None = None
        self._tasks: set[asyncio.Task[object]] = set()  # referenced until done (asyncio docs)

    async def start(self) -> None:
        loop = self._loop = asyncio.get_running_loop()
        for lst in self.listen:
            ep = lst.endpoint
            if lst.transport is Transport.UDP:
                _, proto = await loop.create_datagram_endpoint(
                    functools.partial(_Udp, self, ep), local_addr=(lst.host, lst.port)
                )
                self.udp[ep] = proto
            else:
                tls = lst.transport is Transport.TLS
                ctx = _server_ssl(lst, self.recorder.keylog) if tls else None
                kind = lst.transport
                server = await loop.create_server(
                    functools.partial(_Stream, self, kind), lst.host, lst.port, ssl=ctx
                )
                self.servers.append(server)
        self.rearm()

    async def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        for conn in list(self.conns.values()):
            conn.close()
        for server in self.servers:
            server.close()
        protos: list[_Udp | _Media] = [*self.udp.values(), *self.media.values()]
        for proto in protos:
            if proto.transport is not None:
                proto.transport.close()
        self.media.clear()
        await asyncio.sleep(0)

    # -- agent I/O ---------------------------------------------------------------------------

    def on_message(self, data: bytes, src: Endpoint, local: Endpoint, t: Transport) -> None:
        now = time.time_ns()
        self.recorder.message(now, src, local, t, data, False)
        try:
            actions = self.agent.receive(data, src, t, now)
        except Exception:
            self.counts["agent-error"] = self.counts.get("agent-error", 0) + 1
            actions = []
        self._do(actions)
        self.rearm()

    def on_media(self, data: bytes, src: Endpoint, local: Endpoint) -> None:
        now = time.time_ns()
        self.recorder.media(now, src, local, data)
        receive = getattr(self.agent, "media_received", None)
        if receive is None:
            return
        try:
            actions = receive(data, local, src, now)
        except Exception:
            self.counts["agent-error"] = self.counts.get("agent-error", 0) + 1
            actions = []
        self._do(actions)

    def _do(self, actions: Sequence[Action]) -> None:
        for a in actions:
            if isinstance(a, Send):
                self._send(a)
            elif isinstance(a, MediaSend):
                self._send_media(a)
            elif isinstance(a, MediaOpen):
                self._open_media(a.local)
            elif isinstance(a, MediaClose):
                self._close_media(a.local)
            else:
                self.events += 1
                self.recorder.event(a)

    # -- media ports ------------------------------------------------------------------------

    def _open_media(self, rtp: Endpoint) -> None:
        """Bind ``rtp`` and its RTCP port now (a clash is counted, not raised)."""
        assert self._loop is not None
        for port in (rtp.port, rtp.port + 1):
            local = Endpoint(rtp.ip, port)
            if local in self.media:
                continue
            sock = socket.socket(
                socket.AF_INET6 if ":" in rtp.ip else socket.AF_INET, socket.SOCK_DGRAM
            )
            try:
                sock.bind((rtp.ip, port))
            except OSError:
                sock.close()
                self.counts["media-bind-failed"] = self.counts.get("media-bind-failed", 0) + 1
                continue
            sock.setblocking(False)
            proto = _Media(self, local, sock)
            self.media[local] = proto
            task = self._loop.create_task(
                self._loop.create_datagram_endpoint(functools.partial(_same, proto), sock=sock)
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _close_media(self, rtp: Endpoint) -> None:
        for port in (rtp.port, rtp.port + 1):
            proto = self.media.pop(Endpoint(rtp.ip, port), None)
            if proto is not None and proto.transport is not None:
                proto.transport.close()

    def _send_media(self, m: MediaSend) -> None:
        proto = self.media.get(m.src)
        if proto is None:
            self.counts["media-unbound"] = self.counts.get("media-unbound", 0) + 1
            return
        self.recorder.media(time.time_ns(), m.src, m.dst, m.data)
        if proto.transport is not None:
            proto.transport.sendto(m.data, (m.dst.ip, m.dst.port))
            return
        try:  # bound, its asyncio transport not set up yet: the socket itself
            proto.sock.sendto(m.data, (m.dst.ip, m.dst.port))
        except OSError:
            self.counts["media-error"] = self.counts.get("media-error", 0) + 1

    def _send(self, s: Send) -> None:
        now = time.time_ns()
        if s.transport is Transport.UDP:
            proto = next(iter(self.udp.values()), None)
            if proto is None or proto.transport is None:
                self.counts["no-udp-socket"] = self.counts.get("no-udp-socket", 0) + 1
                return
            self.recorder.message(now, proto.local, s.dst, s.transport, s.data, True)
            proto.transport.sendto(s.data, (s.dst.ip, s.dst.port))
            return
        conn = self.conns.get((s.transport, s.dst))
        if conn is not None:
            self.recorder.message(now, conn.local, s.dst, s.transport, s.data, True)
            conn.send(s.data)
            return
        key = (s.transport, s.dst)
        if key in self.connecting:
            self.connecting[key].append(s.data)
            return
        self.connecting[key] = [s.data]
        assert self._loop is not None
        self._loop.create_task(self._connect(s.transport, s.dst))

    async def _connect(self, t: Transport, dst: Endpoint) -> None:
        assert self._loop is not None
        ctx = None
        if t is Transport.TLS:
            if self._client_ctx is None:  # one context, one key log handle
                self._client_ctx = _client_ssl(self.recorder.keylog)
            ctx = self._client_ctx
        try:
            _, conn = await self._loop.create_connection(
                functools.partial(_Stream, self, t), dst.ip, dst.port, ssl=ctx
            )
        except OSError:
            self.counts["connect-failed"] = self.counts.get("connect-failed", 0) + 1
            self.connecting.pop((t, dst), None)
            self._do(self.agent.transport_error(dst, t, time.time_ns()))
            self.rearm()
            return
        for data in self.connecting.pop((t, dst), []):
            self.recorder.message(time.time_ns(), conn.local, dst, t, data, True)
            conn.send(data)

    # -- the one timer -------------------------------------------------------------------------

    def rearm(self) -> None:
        if self._loop is None:
            return
        if self._timer is not None:
            self._timer.cancel()
        deadline = self.agent.next_deadline()
        delay = 1.0 if self.conns else None
        if deadline is not None:
            until = max(0.0, (deadline - time.time_ns()) / 1e9)
            delay = until if delay is None else min(delay, until)
        if delay is not None:
            self._timer = self._loop.call_later(delay, self._fire)

    def _fire(self) -> None:
        self._timer = None
        self._do(self.agent.expire(time.time_ns()))
        limit = time.monotonic() - self.idle_timeout
        for conn in list(self.conns.values()):
            if conn.pending and conn.last_message < limit:
                self.counts["closed-idle"] = self.counts.get("closed-idle", 0) + 1
                conn.close()
        self.rearm()


async def serve(config: Config, stop: asyncio.Event, agent: Agent | None = None) -> Node:
    """Run the B2BUA of ``config`` until ``stop`` is set; write pcap, log, key log, truth.

    The key log is ``config.keylog``, else the ``SSLKEYLOGFILE`` environment variable."""
    from sipflow.b2bua import truth
    from sipflow.b2bua.core import B2BUA

    core = agent if agent is not None else B2BUA(config)
    stream = None
    if config.truth and isinstance(core, B2BUA):  # ended calls go to the file, not to memory
        stream = truth.TruthStream(config.truth)
        core.on_finished = stream.add
    keylog = config.keylog or os.environ.get("SSLKEYLOGFILE") or None
    recorder = Recorder.open(config.pcap, config.log, keylog)
    node = Node(core, config.listen, recorder, config.tcp_idle_timeout_s)
    await node.start()
    try:
        await stop.wait()
    finally:
        await node.stop()
        node.recorder.close()
        if stream is not None and isinstance(core, B2BUA):
            stream.close(core.finished + list(core.calls.values()), sorted(node.recorder.tls_ports))
    return node


def run_forever(config: Config) -> None:
    """``sipflow b2bua``: serve until SIGINT/SIGTERM."""
    import signal

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await serve(config, stop)

    asyncio.run(main())
