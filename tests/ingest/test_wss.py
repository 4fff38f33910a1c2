"""SIP over secure WebSocket (RFC 7118 over TLS): decrypted with the client's key log.

A real Kamailio (tls + xhttp + websocket modules) listens for WSS on 127.0.0.1 and relays
INVITEs over UDP to a SIPp UAS with record_route. The client here is a small RFC 6455
client over Python's ssl (masked frames, subprotocol "sip", ``keylog_filename`` writing
the NSS key log); it registers, pings, sends OPTIONS several ways (two messages in one
TLS record, one message across two records, fragmented with a ping in between) and makes
one call. tcpdump records lo. Its own log of what it sent and received (the endpoint's
log) is the oracle: sipflow must give every one of those messages, byte for byte, with
transport WSS; the counts must equal tshark's ``sip,stat`` with the same key log; the
call must have its outcome and both hops. Without the key log, or with a key log that
does not hold the session, the WSS leg stays hidden with the usual TLS facts.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from peers.harness import (
    KAMAILIO_MODULES,
    Proc,
    ShortMsg,
    allocate_ports,
    capture_drops,
    parse_shortmsg,
    parse_sip_stat,
    port_bound,
    wait_for,
)
from peers.sipflow_cli import run_sipflow
from test_tls import make_cert as make_tls_cert

import sipflow
from sipflow.findings import Finding
from sipflow.ingest.capture import read_capture
from sipflow.ingest.tls import TlsKeys, TlsStats
from sipflow.ingest.types import Datagram, Endpoint, SourceStats, Transport

HERE = Path(__file__).resolve().parent
WSS_CFG = HERE.parent / "peers" / "kamailio" / "wss.cfg.in"
UAS_XML = HERE.parent / "peers" / "scenarios" / "uas_answer.xml"  # copies Record-Route
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 §1.3
HOST = "127.0.0.1"
SNI = "wss.example.test"
TIMEOUT = 10.0


def _missing() -> list[str]:
    missing = [t for t in ("kamailio", "tcpdump", "tshark", "sipp") if shutil.which(t) is None]
    modules = Path(KAMAILIO_MODULES)
    missing += [
        f"kamailio module {m} (kamailio-tls-modules / kamailio-websocket-modules)"
        for m in ("tls.so", "websocket.so", "xhttp.so")
        if not (modules / m).exists()
    ]
    return missing


# -- the WebSocket client (RFC 6455) over TLS -------------------------------------------------


def ws_frame(payload: bytes, opcode: int = 1, fin: bool = True) -> bytes:
    """A client frame (RFC 6455 §5.2), masked with a random key as §5.3 requires."""
    n, key = len(payload), os.urandom(4)
    head = bytes([(0x80 if fin else 0) | opcode])
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + n.to_bytes(2, "big")
    else:
        head += bytes([0x80 | 127]) + n.to_bytes(8, "big")
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


@dataclass
class WssClient:
    """One WSS connection; ``sent`` and ``got`` are the endpoint's log of SIP messages."""

    port: int
    keylog: Path
    sent: list[bytes] = field(default_factory=list)
    got: list[bytes] = field(default_factory=list)
    pongs: list[bytes] = field(default_factory=list)
    closed: bool = False

    def __post_init__(self) -> None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.keylog_filename = str(self.keylog)
        raw = socket.create_connection((HOST, self.port), timeout=TIMEOUT)
        self.sock = ctx.wrap_socket(raw, server_hostname=SNI)
        self.local = Endpoint(*self.sock.getsockname()[:2])
        self.buf = b""

    def handshake(self) -> bytes:
        """RFC 6455 §4.1 opening handshake with subprotocol "sip" (RFC 7118 §4)."""
        key = base64.b64encode(os.urandom(16))
        self.write(
            b"GET / HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n"
            b"Sec-WebSocket-Protocol: sip\r\nOrigin: https://%s\r\n\r\n"
            % (HOST.encode(), self.port, key, SNI.encode())
        )
        while b"\r\n\r\n" not in self.buf:
            self._read()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
        assert head.startswith(b"HTTP/1.1 101"), head
        assert b"Sec-WebSocket-Accept: " + accept in head, head
        assert b"Sec-WebSocket-Protocol: sip\r\n" in head, head
        return head

    def write(self, data: bytes) -> None:
        """One ``sendall`` under 16 KiB: one TLS record."""
        self.sock.sendall(data)

    def send(self, msg: bytes) -> None:
        self.sent.append(msg)
        self.write(ws_frame(msg))

    def recv(self) -> bytes:
        """The next data message (pongs and closes recorded on the way)."""
        while True:
            opcode, payload = self._frame()
            if opcode == 0xA:
                self.pongs.append(payload)
            elif opcode == 0x8:
                self.closed = True
                return b""
            elif opcode in (1, 2):
                self.got.append(payload)
                return payload

    def recv_final(self, method: str) -> list[bytes]:
        """Responses up to the final one to ``method`` (others are logged on the way)."""
        out: list[bytes] = []
        while True:
            msg = self.recv()
            assert msg, "the server closed the WebSocket"
            if cseq_method(msg) != method:
                continue
            out.append(msg)
            if int(msg.split(b" ", 2)[1]) >= 200:
                return out

    def close(self) -> None:
        self.write(ws_frame(b"\x03\xe8", opcode=0x8))  # RFC 6455 §5.5.1, 1000 normal closure
        try:
            while not self.closed:
                self.recv()
        except (OSError, ValueError):
            pass
        try:
            self.sock.unwrap().close()
        except (OSError, ssl.SSLError):
            self.sock.close()

    def _read(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise ValueError("connection closed by the server")
        self.buf += data

    def _need(self, n: int) -> None:
        while len(self.buf) < n:
            self._read()

    def _frame(self) -> tuple[int, bytes]:
        """A server frame (unmasked, RFC 6455 §5.1), unfragmented."""
        self._need(2)
        b0, n, pos = self.buf[0], self.buf[1] & 0x7F, 2
        if n == 126:
            self._need(4)
            n, pos = int.from_bytes(self.buf[2:4], "big"), 4
        elif n == 127:
            self._need(10)
            n, pos = int.from_bytes(self.buf[2:10], "big"), 10
        self._need(pos + n)
        payload, self.buf = self.buf[pos : pos + n], self.buf[pos + n :]
        assert b0 & 0x80, "the server fragmented a message"
        return b0 & 0x0F, payload


def https_get(port: int, keylog: Path) -> tuple[Endpoint, bytes]:
    """An HTTP request that is no WebSocket upgrade, on the same TLS socket (Kamailio's
    xhttp answers 404): cleartext that is neither SIP nor WebSocket."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.keylog_filename = str(keylog)
    raw = socket.create_connection((HOST, port), timeout=TIMEOUT)
    with ctx.wrap_socket(raw, server_hostname=SNI) as s:
        s.sendall(b"GET /status HTTP/1.1\r\nHost: %s\r\n\r\n" % SNI.encode())
        answer = b""
        while b"\r\n\r\n" not in answer:
            data = s.recv(65536)
            if not data:
                break
            answer += data
        return Endpoint(*s.getsockname()[:2]), answer


# -- SIP messages the client sends --------------------------------------------------------------


@dataclass
class Dialog:
    """What one request of the client needs: Call-ID, tag, CSeq, route set."""

    client: WssClient
    call_id: str = field(default_factory=lambda: f"{uuid.uuid4().hex}@wss.test")
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:10])
    cseq: int = 0
    to_tag: str = ""
    routes: list[str] = field(default_factory=list)
    contact: str = ""

    def request(self, method: str, ruri: str, to: str, extra: str = "", body: bytes = b"",
                cseq_method: str | None = None) -> bytes:  # fmt: skip
        if cseq_method is None:
            self.cseq += 1
        branch = f"z9hG4bK{uuid.uuid4().hex[:16]}"
        to_tag = f";tag={self.to_tag}" if self.to_tag else ""
        route = "".join(f"Route: {r}\r\n" for r in self.routes)
        head = (
            f"{method} {ruri} SIP/2.0\r\n"
            f"Via: SIP/2.0/WSS df7jal23ls0d.invalid;branch={branch};rport\r\n"
            f"Max-Forwards: 70\r\n{route}"
            f"From: <sip:alice@wss.test>;tag={self.tag}\r\nTo: <{to}>{to_tag}\r\n"
            f"Call-ID: {self.call_id}\r\nCSeq: {self.cseq} {cseq_method or method}\r\n"
            f"Contact: <sip:alice@df7jal23ls0d.invalid;transport=ws>\r\n{extra}"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        return head.encode() + body

    def answered(self, response: bytes) -> None:
        """The dialog's remote tag and route set from a 2xx (RFC 3261 §12.1.2)."""
        for line in response.split(b"\r\n"):
            name, _, value = line.decode().partition(":")
            if name.lower() == "to" and ";tag=" in value:
                self.to_tag = value.split(";tag=", 1)[1].split(";")[0].strip()
            elif name.lower() == "record-route":
                self.routes[:0] = [r.strip() for r in reversed(value.split(","))]
            elif name.lower() == "contact":
                self.contact = value.strip().strip("<>").split(">")[0]


SDP = (
    b"v=0\r\no=alice 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    b"m=audio 49170 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
)


def cseq_method(msg: bytes) -> str:
    for line in msg.split(b"\r\n"):
        if line.lower().startswith(b"cseq:"):
            return line.split()[-1].decode()
    return ""


def start_line(msg: bytes) -> str:
    return msg.split(b"\r\n", 1)[0].decode()


def client_session(client: WssClient, uas_port: int) -> dict[str, Any]:
    """Everything the client does on its one connection; returns what it saw."""
    ws = client.port
    client.handshake()
    reg = Dialog(client)
    client.send(reg.request("REGISTER", "sip:wss.test", "sip:alice@wss.test", "Expires: 600\r\n"))
    assert start_line(client.recv()) == "SIP/2.0 200 OK"
    client.write(ws_frame(b"ping-1", opcode=0x9))  # RFC 6455 §5.5.2: answered by a pong
    opt = Dialog(client)
    ruri, to = f"sip:{HOST}:{ws};transport=ws", f"sip:{HOST}:{ws}"
    first, second = opt.request("OPTIONS", ruri, to), opt.request("OPTIONS", ruri, to)
    client.sent += [first, second]
    client.write(ws_frame(first) + ws_frame(second))  # two messages in one TLS record
    third = opt.request("OPTIONS", ruri, to)
    client.sent.append(third)
    wire = ws_frame(third)
    client.write(wire[:40])  # one message across two TLS records
    time.sleep(0.05)
    client.write(wire[40:])
    fourth = opt.request("OPTIONS", ruri, to)
    client.sent.append(fourth)
    half = len(fourth) // 2  # RFC 6455 §5.4: fragments, a control frame in between
    client.write(ws_frame(fourth[:half], fin=False) + ws_frame(b"ping-2", opcode=0x9))
    client.write(ws_frame(fourth[half:], opcode=0x0))
    options = [start_line(client.recv()) for _ in range(4)]
    call = Dialog(client)
    invite_ruri = f"sip:bob@{HOST}:{uas_port}"
    client.send(call.request("INVITE", invite_ruri, "sip:bob@wss.test",
                             "Content-Type: application/sdp\r\n", SDP))  # fmt: skip
    answers = client.recv_final("INVITE")
    call.answered(answers[-1])
    client.send(call.request("ACK", call.contact, "sip:bob@wss.test", cseq_method="ACK"))
    time.sleep(0.2)
    client.send(call.request("BYE", call.contact, "sip:bob@wss.test"))
    bye = client.recv_final("BYE")
    client.close()
    return {"options": options, "invite": [start_line(a) for a in answers],
            "bye": [start_line(b) for b in bye]}  # fmt: skip


# -- the run: Kamailio, SIPp UAS, tcpdump, the client ----------------------------------------


def make_cert(tmp: Path) -> tuple[Path, Path]:
    """A self-signed certificate for the WSS server name (test_tls's, RSA 2048)."""
    cert, key, _ = make_tls_cert(tmp, SNI)
    return cert, key


def kamailio_cfg(tmp: Path, udp_port: int, wss_port: int, uas_port: int) -> Path:
    cert, key = make_cert(tmp)
    tls_cfg = tmp / "tls.cfg"
    tls_cfg.write_text(
        f"[server:default]\nmethod = TLSv1.2+\nverify_certificate = no\n"
        f"require_certificate = no\nprivate_key = {key}\ncertificate = {cert}\n"
        f"[client:default]\nverify_certificate = no\nrequire_certificate = no\n"
    )
    text = WSS_CFG.read_text()
    for name, value in {
        "@UDP_PORT@": str(udp_port),
        "@WSS_PORT@": str(wss_port),
        "@MPATH@": KAMAILIO_MODULES,
        "@TLS_CFG@": str(tls_cfg),
        "@UAS@": f"sip:{HOST}:{uas_port};transport=udp",
    }.items():
        text = text.replace(name, value)
    cfg = tmp / "kamailio-wss.cfg"
    cfg.write_text(text)
    return cfg


@dataclass
class WssRun:
    pcap: Path
    keylog: Path
    client: WssClient
    saw: dict[str, Any]
    uas: list[ShortMsg]
    ports: dict[str, int]
    http: tuple[Endpoint, bytes]
    """The plain HTTPS request's client endpoint and the answer it got."""


def _start(name: str, argv: list[str], tmp: Path, stack: list[Proc]) -> Proc:
    proc = Proc.start(name, argv, tmp)
    stack.append(proc)
    return proc


def run_wss(tmp: Path) -> WssRun:
    uas_port, wss_port, udp_port, _ = allocate_ports()
    cfg = kamailio_cfg(tmp, udp_port, wss_port, uas_port)
    check = subprocess.run(["kamailio", "-c", "-f", str(cfg)], capture_output=True, text=True,
                           timeout=30, check=False)  # fmt: skip
    assert check.returncode == 0, check.stderr[-1500:]
    pcap, keylog = tmp / "wss.pcap", tmp / "client.keys.log"
    procs: list[Proc] = []
    try:
        cap = _start("tcpdump", ["tcpdump", "-i", "lo", "-n", "-U", "--immediate-mode", "-B",
                                 "65536", "-Z", "root", "-s", "0", "-w", str(pcap),
                                 f"port {uas_port} or port {wss_port} or port {udp_port}"],
                     tmp, procs)  # fmt: skip
        wait_for(lambda: "listening on" in cap.err.read_text(), TIMEOUT, "tcpdump to listen")
        rundir = tmp / "kamailio-run"
        rundir.mkdir()
        kam = _start("kamailio", ["kamailio", "-f", str(cfg), "-DD", "-E", "-m", "64", "-M", "8",
                                  "-Y", str(rundir), "-P", str(rundir / "k.pid"), "-w",
                                  str(rundir)], tmp, procs)  # fmt: skip
        wait_for(lambda: port_bound(wss_port, "tcp", False) or kam.popen.poll() is not None,
                 15, "kamailio to listen")  # fmt: skip
        assert kam.popen.poll() is None, kam.text()[-1500:]
        uas = _start("sipp-uas", ["sipp", "-sf", str(UAS_XML), "-i", HOST, "-p", str(uas_port),
                                  "-t", "u1", "-m", "1", "-nostdin", "-trace_shortmsg",
                                  "-shortmessage_file", str(tmp / "uas_short.log")],
                     tmp, procs)  # fmt: skip
        wait_for(lambda: port_bound(uas_port, "udp", False), TIMEOUT, "SIPp UAS to listen")
        time.sleep(0.2)
        http = https_get(wss_port, keylog)
        client = WssClient(wss_port, keylog)
        saw = client_session(client, uas_port)
        uas.wait(TIMEOUT)
        time.sleep(0.3)
    finally:
        for proc in reversed(procs):
            proc.stop(signal.SIGINT if proc.name == "tcpdump" else signal.SIGTERM, 10)
    assert capture_drops(cap.err.read_text()) == 0, cap.text()
    ports = {"uas": uas_port, "wss": wss_port, "udp": udp_port}
    uas_log = parse_shortmsg(tmp / "uas_short.log")
    return WssRun(pcap, keylog, client, saw, uas_log, ports, http)


@pytest.fixture(scope="module")
def wss(tmp_path_factory: pytest.TempPathFactory) -> WssRun:
    missing = _missing()
    if missing:
        pytest.skip(f"not installed: {', '.join(missing)} (make deb)")
    if os.geteuid() != 0:
        pytest.skip("capturing on lo with tcpdump needs root")
    return run_wss(tmp_path_factory.mktemp("wss"))


def tshark_stat(run: WssRun, keylog: Path | None) -> tuple[dict[str, int], dict[str, int]]:
    argv = ["tshark", "-n", "-q", "-r", str(run.pcap), "-z", "sip,stat"]
    if keylog is not None:
        argv += ["-o", f"tls.keylog_file:{keylog}"]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=True)
    stat = parse_sip_stat(r.stdout)
    return stat.requests, stat.responses


def counts(msgs: list[bytes]) -> tuple[Counter[str], Counter[str]]:
    req: Counter[str] = Counter()
    resp: Counter[str] = Counter()
    for m in msgs:
        line = start_line(m)
        if line.startswith("SIP/2.0 "):
            resp[line.split()[1]] += 1
        else:
            req[line.split()[0]] += 1
    return req, resp


# -- the checks ---------------------------------------------------------------------------------


def sessions(run: WssRun, items: list[Any], key: Any) -> tuple[Any, Any]:
    """(the WSS session, the plain HTTPS one) of ``items``, told apart by client endpoint."""
    by_client = {key(s): s for s in items}
    assert len(by_client) == len(items) == 2
    return by_client[run.client.local], by_client[run.http[0]]


@pytest.mark.peers
@pytest.mark.timeout(180)
def test_every_wss_message_of_the_endpoint_log(wss: WssRun) -> None:
    saw = wss.saw
    assert saw["options"] == ["SIP/2.0 200 OK"] * 4
    assert saw["invite"][-1] == "SIP/2.0 200 OK" and saw["bye"] == ["SIP/2.0 200 OK"]
    assert wss.client.pongs == [b"ping-1", b"ping-2"]
    trace = sipflow.analyze([wss.pcap], sipflow.Options(tls_keylog=[str(wss.keylog)]))
    msgs = trace.message_list
    client, server = wss.client.local, Endpoint(HOST, wss.ports["wss"])
    on_wss = [m for m in msgs if m.origin is not None and m.origin.transport is Transport.WSS]
    assert [m.raw for m in on_wss if m.origin and m.origin.src == client] == wss.client.sent
    assert [m.raw for m in on_wss if m.origin and m.origin.dst == client] == wss.client.got
    assert all(m.origin and {m.origin.src, m.origin.dst} == {client, server} for m in on_wss)
    assert len(on_wss) == len(wss.client.sent) + len(wss.client.got)
    # the OPTIONS written in two TLS records (50 ms apart) cites the frames of both
    split = next(m for m in on_wss if m.raw == wss.client.sent[3])
    assert split.origin is not None and len(split.origin.frames) >= 2
    # the UDP leg: what the SIPp UAS sent and received, nothing on another transport
    on_udp = [m for m in msgs if m.origin is not None and m.origin.transport is Transport.UDP]
    assert sorted(start_line(m.raw) for m in on_udp) == sorted(s.first_line for s in wss.uas)
    assert len(msgs) == len(on_wss) + len(on_udp)
    session, http = sessions(wss, trace.tls_sessions, lambda s: s.client)
    assert session.decrypted and session.carries_sip and session.not_decrypted is None
    assert session.sni == SNI and session.server == server
    ws = session.websocket
    assert ws is not None
    assert ws.messages == len(on_wss)
    assert ws.control_frames == 2 + 2 + 2  # two pings, two pongs, a close each way
    assert ws.skipped_bytes == 0 and ws.handshake_bytes > 100
    # the HTTPS request that was no upgrade: decrypted, not SIP, not WebSocket, not shown
    assert wss.http[1].startswith(b"HTTP/1.1 404 ")
    assert (http.decrypted, http.carries_sip, http.websocket) == (True, False, None)
    bad = [f for f in trace.finding_list if f.code.startswith(("tls.", "ingest."))]
    assert bad == []


@pytest.mark.peers
@pytest.mark.timeout(180)
def test_json_counts_equal_tshark_and_the_call_has_both_legs(wss: WssRun) -> None:
    result = run_sipflow(wss.pcap, "--tls-keylog", wss.keylog)
    assert result.returncode == 0 and not result.traceback, result.stderr
    out = result.json
    req, resp = counts(wss.client.sent + wss.client.got)
    uas_req = Counter(s.method for s in wss.uas if s.is_request)
    uas_resp = Counter(str(s.code) for s in wss.uas if not s.is_request)
    assert out["stats"]["sip_requests"] == dict(req + uas_req)
    assert out["stats"]["sip_responses"] == dict(resp + uas_resp)
    n_wss = len(wss.client.sent) + len(wss.client.got)
    assert out["stats"]["transports"] == {"WSS": n_wss, "UDP": len(wss.uas)}
    t_req, t_resp = tshark_stat(wss, wss.keylog)
    assert (t_req, t_resp) == (out["stats"]["sip_requests"], out["stats"]["sip_responses"])
    (call,) = out["calls"]
    assert (call["outcome"], call["final_code"], call["ended_by"]) == ("answered", 200, "caller")
    client = f"{wss.client.local}"
    kam_wss, kam_udp = f"{HOST}:{wss.ports['wss']}", f"{HOST}:{wss.ports['udp']}"
    assert call["hops"] == [f"{client} -> {kam_wss}", f"{kam_udp} -> {HOST}:{wss.ports['uas']}"]
    session, http = sessions(wss, out["tls_sessions"], lambda s: Endpoint(**s["client"]))
    assert session["websocket"] == {
        "messages": n_wss,
        "control_frames": 6,
        "handshake_bytes": session["websocket"]["handshake_bytes"],
        "skipped_bytes": 0,
    }
    assert (http["carries_sip"], http["websocket"]) == (False, None)
    # the HTTPS GET and its 404: decrypted, not SIP, counted with the source's other skips
    assert out["sources"][0]["skipped"]["tls_not_sip"] == 2
    activity = {a["method"]: a for a in out["activity"]}
    assert activity["REGISTER"]["responses"] == {"200": 1}
    assert activity["OPTIONS"]["responses"] == {"200": 4}


@pytest.mark.peers
@pytest.mark.timeout(180)
def test_without_the_key_log_the_wss_leg_stays_hidden(wss: WssRun, tmp_path: Path) -> None:
    plain = run_sipflow(wss.pcap)
    assert plain.returncode == 0 and not plain.traceback, plain.stderr
    out = plain.json
    assert out["stats"]["transports"] == {"UDP": len(wss.uas)}
    assert out["tls_sessions"] == []  # not port 5061, no SIP seen on it first: not followed
    assert tshark_stat(wss, None)[0].keys() == {m.method for m in wss.uas if m.is_request}
    empty = tmp_path / "empty.keys.log"
    empty.write_text("")
    nokey = run_sipflow(wss.pcap, "--tls-keylog", empty)  # followed on any port, no key
    assert nokey.returncode == 0 and not nokey.traceback, nokey.stderr
    out = nokey.json
    assert out["stats"]["transports"] == {"UDP": len(wss.uas)}
    facts = [(s["decrypted"], s["not_decrypted"], s["websocket"]) for s in out["tls_sessions"]]
    assert facts == [(False, "no_key", None)] * 2
    tls_codes = [f["code"] for f in out["findings"] if f["code"].startswith("tls.")]
    assert tls_codes == ["tls.no_key"] * 2
    wrong = tmp_path / "wrong.keys.log"
    wrong.write_text(
        "\n".join(
            " ".join([*line.split()[:2], "00" * (len(line.split()[2]) // 2)])
            for line in wss.keylog.read_text().splitlines()
            if line.strip()
        )
    )
    bad = run_sipflow(wss.pcap, "--tls-keylog", wrong)
    assert bad.returncode == 0 and not bad.traceback, bad.stderr
    assert {s["not_decrypted"] for s in bad.json["tls_sessions"]} == {"decrypt_failed"}
    assert bad.json["stats"]["transports"] == {"UDP": len(wss.uas)}


def pcap_records(path: Path) -> tuple[bytes, list[bytes]]:
    """Global header and records of a classic pcap (tcpdump -w), read independently."""
    data = path.read_bytes()
    assert data[:4] == b"\xd4\xc3\xb2\xa1", "little-endian microsecond pcap expected"
    pos, out = 24, []
    while pos < len(data):
        incl = int.from_bytes(data[pos + 8 : pos + 12], "little")
        out.append(data[pos : pos + 16 + incl])
        pos += 16 + incl
    return data[:24], out


def wss_read(path: Path, keys: TlsKeys) -> tuple[dict[Endpoint, list[bytes]], list[Finding]]:
    findings: list[Finding] = []
    got: dict[Endpoint, list[bytes]] = {}
    for dg in read_capture(str(path), 0, SourceStats(str(path)), findings, tls=keys):
        if dg.transport is Transport.WSS:
            got.setdefault(dg.src, []).append(dg.payload)
    return got, findings


@pytest.mark.peers
@pytest.mark.timeout(180)
def test_capture_cut_after_every_frame(wss: WssRun, tmp_path: Path) -> None:
    """Each prefix of the capture: what is whole comes out (a prefix of each direction's
    messages, byte for byte), a message cut by the end is an ``ingest.websocket`` finding,
    nothing raises."""
    head, records = pcap_records(wss.pcap)
    keys = TlsKeys.load(keylogs=[str(wss.keylog)])
    client, server = wss.client.local, Endpoint(HOST, wss.ports["wss"])
    cut_inside = 0
    for n in range(len(records) + 1):
        path = tmp_path / "cut.pcap"
        path.write_bytes(head + b"".join(records[:n]))
        got, findings = wss_read(path, keys)
        sent, answered = got.get(client, []), got.get(server, [])
        assert sent == wss.client.sent[: len(sent)]
        assert answered == wss.client.got[: len(answered)]
        ws = [f for f in findings if f.code == "ingest.websocket"]
        assert all("stream ended inside a WebSocket message" in f.message for f in ws), ws
        assert {f.code for f in findings} <= {"ingest.websocket"}, findings
        cut_inside += bool(ws)
    assert got == {client: wss.client.sent, server: wss.client.got}
    assert cut_inside >= 1  # at least the OPTIONS written in two TLS records was cut


# -- the follower alone: real OpenSSL in memory (MemoryBIO), no network ------------------------

CLIENT, SERVER = Endpoint("192.0.2.10", 50000), Endpoint("192.0.2.20", 8443)
UPGRADE = (
    b"GET / HTTP/1.1\r\nHost: wss.example.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: sip\r\n"
    b"Sec-WebSocket-Version: 13\r\n\r\n"
)
SWITCH = (
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nSec-WebSocket-Protocol: sip\r\n\r\n"
)
REGISTER = (
    b"REGISTER sip:wss.test SIP/2.0\r\nVia: SIP/2.0/WSS df7jal23ls0d.invalid;branch=z9hG4bK1\r\n"
    b"From: <sip:a@wss.test>;tag=1\r\nTo: <sip:a@wss.test>\r\nCall-ID: 1@wss.test\r\n"
    b"CSeq: 1 REGISTER\r\nContent-Length: 0\r\n\r\n"
)
OK = b"SIP/2.0 200 OK" + REGISTER[REGISTER.index(b"\r\n") :]


def server_frame(payload: bytes, opcode: int = 1) -> bytes:
    """An unmasked server frame (RFC 6455 §5.1), payload under 64 KiB."""
    n = len(payload)
    head = bytes([0x80 | opcode]) + (bytes([n]) if n < 126 else bytes([126]) + n.to_bytes(2, "big"))
    return head + payload


class MemoryTls:
    """A TLS 1.3 client and server joined by memory BIOs; ``wire`` holds each write's
    record bytes as a TCP Datagram of its direction, in order."""

    def __init__(self, tmp: Path) -> None:
        tmp.mkdir(exist_ok=True)
        cert, key = make_cert(tmp)
        self.keylog = tmp / "memory.keys.log"
        sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        sctx.load_cert_chain(cert, key)
        cctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        cctx.check_hostname = False
        cctx.verify_mode = ssl.CERT_NONE
        cctx.keylog_filename = str(self.keylog)
        self.bio = {n: ssl.MemoryBIO() for n in ("c_in", "c_out", "s_in", "s_out")}
        self.c = cctx.wrap_bio(self.bio["c_in"], self.bio["c_out"], server_hostname=SNI)
        self.s = sctx.wrap_bio(self.bio["s_in"], self.bio["s_out"], server_side=True)
        self.wire: list[Datagram] = []
        for _ in range(10):
            done = [self._step(self.c), self._step(self.s)]
            self.pump()
            if all(done):
                break

    @staticmethod
    def _step(end: ssl.SSLObject) -> bool:
        try:
            end.do_handshake()
            return True
        except ssl.SSLWantReadError:
            return False

    def pump(self) -> None:
        for out, into, src, dst in (("c_out", "s_in", CLIENT, SERVER),
                                    ("s_out", "c_in", SERVER, CLIENT)):  # fmt: skip
            data = self.bio[out].read()
            if data:
                self.bio[into].write(data)
                n = len(self.wire) + 1
                self.wire.append(
                    Datagram(src, dst, Transport.TCP, data, (n,), n, 0, 1 + (src == SERVER))
                )

    def send(self, client: bool, data: bytes) -> None:
        """One write: one TLS record (under 16 KiB), one Datagram."""
        (self.c if client else self.s).write(data)
        self.pump()

    def follow(
        self, upto: int | None = None
    ) -> tuple[list[Datagram], TlsStats, list[Finding], Counter[str]]:
        from sipflow.ingest import classify
        from sipflow.ingest.keylog import parse_keylog
        from sipflow.ingest.tls import TlsFollower

        findings: list[Finding] = []
        stats, skipped = TlsStats(), Counter[str]()
        keys = TlsKeys(parse_keylog(self.keylog.read_bytes()))
        follower = TlsFollower(keys, stats, 0, findings, classify.looks_like_sip, skipped)
        follower.open(CLIENT, SERVER)
        out = list(follower.route(self.wire[:upto])) + list(follower.flush())
        return out, stats, findings, skipped


@pytest.fixture
def mem(tmp_path: Path) -> MemoryTls:
    return MemoryTls(tmp_path)


def test_wss_messages_and_damage_through_the_follower(mem: MemoryTls) -> None:
    mem.send(True, UPGRADE[:30])  # the upgrade across two records
    mem.send(True, UPGRADE[30:] + ws_frame(REGISTER))  # handshake tail and a frame, one record
    mem.send(False, SWITCH)
    mem.send(False, server_frame(OK) + server_frame(b"x", opcode=0x3))  # reserved opcode
    mem.send(True, ws_frame(REGISTER[:50], fin=False))
    mem.send(True, ws_frame(b"", opcode=0x9) + ws_frame(REGISTER[50:], opcode=0x0))
    whole = len(mem.wire)
    mem.send(False, server_frame(OK)[:20])  # the capture ends inside this message
    out, stats, findings, skipped = mem.follow()
    assert [(d.transport, d.src, d.payload) for d in out] == [
        (Transport.WSS, CLIENT, REGISTER),
        (Transport.WSS, SERVER, OK),
        (Transport.WSS, CLIENT, REGISTER),
    ]
    assert out[2].frames == (whole - 1, whole)  # the two records of the fragmented message
    texts = [f.message for f in findings]
    assert [f.code for f in findings] == ["ingest.websocket", "ingest.websocket"], texts
    assert texts[0].startswith("reserved WebSocket opcode 0x3") and "(TLS " in texts[0]
    assert texts[1].startswith("stream ended inside a WebSocket message (20 bytes)")
    assert findings[1].refs[0].frame == whole + 1
    (s,) = stats.tls_sessions
    assert s.carries_sip and s.websocket is not None
    assert s.websocket.to_dict() == {
        "messages": 3,
        "control_frames": 1,
        "handshake_bytes": len(UPGRADE) + len(SWITCH),
        "skipped_bytes": 1 + 20,
    }
    assert not skipped
    # cut before the 101: the client's messages are there, the server's side has none
    out, stats, findings, skipped = mem.follow(upto=whole - 4)
    assert [(d.transport, d.payload) for d in out] == [(Transport.WSS, REGISTER)]


def test_websocket_that_is_not_sip_and_plain_sip_over_tls(mem: MemoryTls, tmp_path: Path) -> None:
    mem.send(True, UPGRADE)
    mem.send(False, SWITCH)
    mem.send(True, ws_frame(b'{"janus":"create"}') + ws_frame(b'{"janus":"attach"}'))
    out, stats, findings, skipped = mem.follow()
    assert out == [] and findings == []
    (s,) = stats.tls_sessions
    assert (s.carries_sip, s.websocket is not None) == (False, True)
    assert skipped == Counter({"tls_not_sip": 2})
    other = MemoryTls(tmp_path / "plain")  # SIP over TLS: stream bytes, as before
    other.send(True, REGISTER[:10])
    other.send(True, REGISTER[10:])
    other.send(False, OK)
    out, stats, findings, skipped = other.follow()
    assert [(d.transport, d.payload) for d in out] == [
        (Transport.TLS, REGISTER[:10]),
        (Transport.TLS, REGISTER[10:]),
        (Transport.TLS, OK),
    ]
    assert stats.tls_sessions[0].websocket is None and findings == []
