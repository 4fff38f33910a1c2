"""read_capture end to end: every corpus capture against tshark's own SIP dissection, live
loopback captures made with tcpdump (Ethernet-less lo, and -i any as LINUX_SLL2), damage.

Intended differences from tshark, by design:
* SIP quoted inside ICMP errors: tshark dissects it, we count the frame as ``icmp``;
* HTTP on TCP 5060 (ndpi__http_on_sip_port): tshark calls it SIP by port, we do not;
* TCP: tshark reports the frame where a message completes; our TCP Datagrams are stream
  bytes, so we check that every tshark SIP frame is among the frames of our Datagrams.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sipflow.errors import InputError
from sipflow.findings import Finding
from sipflow.ingest.capture import read_capture
from sipflow.ingest.types import Datagram, SourceStats, Transport

CORPUS = Path(__file__).resolve().parents[2] / ".." / "shared" / "corpus" / "pcaps"
TSHARK = shutil.which("tshark")
TCPDUMP = shutil.which("tcpdump")

SKIP_FILES = {"sipnab__c07-sip-r2.cap"}  # NetMon 2 format: InputError (tested below)
NOT_SIP_BY_DESIGN = {"ndpi__http_on_sip_port.pcap"}


def run(path: Path | str) -> tuple[list[Datagram], SourceStats, list[Finding]]:
    stats = SourceStats(str(path))
    findings: list[Finding] = []
    dgs = list(read_capture(str(path), 0, stats, findings))
    return dgs, stats, findings


def tshark_sip(path: Path) -> list[tuple[int, int, str, str]]:
    """(frame, ts ns, transport, first line) of each SIP frame tshark finds (not in ICMP)."""
    if TSHARK is None:
        pytest.skip("tshark not installed")
    out = subprocess.run(
        [
            TSHARK,
            "-r",
            str(path),
            "-Y",
            "sip && !icmp && !icmpv6",
            "-T",
            "fields",
            "-E",
            "occurrence=f",
            "-e",
            "frame.number",
            "-e",
            "frame.time_epoch",
            "-e",
            "tcp.srcport",
            "-e",
            "sctp.srcport",
            "-e",
            "sip.Request-Line",
            "-e",
            "sip.Status-Line",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    rows = []
    for line in out.splitlines():
        frame, epoch, tcp, sctp, req, status = line.split("\t")
        sec, _, frac = epoch.partition(".")
        ts = int(sec) * 1_000_000_000 + int((frac + "000000000")[:9])
        rows.append((int(frame), ts, "other" if tcp or sctp else "UDP", req or status))
    return rows


def corpus_files() -> list[str]:
    if not CORPUS.is_dir():
        return []
    return sorted(p.name for p in CORPUS.iterdir() if p.suffix in (".pcap", ".pcapng", ".cap"))


KNOWN_BUGS: dict[str, str] = {}  # file -> reason, for differences that are bugs


@pytest.mark.corpus
@pytest.mark.parametrize("name", [n for n in corpus_files() if n not in SKIP_FILES])
def test_corpus_matches_tshark(name: str) -> None:
    if name in KNOWN_BUGS:
        pytest.xfail(KNOWN_BUGS[name])
    path = CORPUS / name
    dgs, stats, _ = run(path)
    expected = tshark_sip(path)
    udp = {d.frames[-1]: d for d in dgs if d.transport is Transport.UDP}
    exp_udp = {f: (ts, line) for f, ts, kind, line in expected if kind == "UDP"}
    assert sorted(udp) == sorted(exp_udp)
    for frame, (ts, line) in exp_udp.items():
        dg = udp[frame]
        assert dg.ts == ts
        first = dg.payload.split(b"\n", 1)[0].rstrip(b"\r").decode("utf-8", "replace")
        assert first == line or not line  # tshark leaves the line empty when it is broken
    other = {f for f, _, kind, _ in expected if kind != "UDP"}
    covered = {f for d in dgs if d.transport is not Transport.UDP for f in d.frames}
    if name in NOT_SIP_BY_DESIGN:
        assert not covered
    else:
        assert other <= covered
    assert stats.frames == int(
        subprocess.run(
            [str(TSHARK), "-r", str(path), "-T", "fields", "-e", "frame.number"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()[-1]
    )


@pytest.mark.corpus
@pytest.mark.parametrize(
    ("name", "fmt", "links", "transports"),
    [
        ("heplify__erspan_sip_ipv4_udp.pcapng", "pcapng", {"EN10MB"}, {"UDP": 140}),
        ("heplify__ipip0.pcap", "pcap", {"RAW"}, {"UDP": 8}),
        ("sngrep__ipip.pcap", "pcap", {"EN10MB"}, None),
        ("pcapplusplus__sip_reqs.pcap", "pcap", {"EN10MB"}, {"UDP": 4}),  # one PPPoE
        ("sipnab__h263-over-rtp.pcap", "pcap", {"NULL"}, {"UDP": 4}),
        ("arkime__gtp-iphone.pcap", "pcap", {"LINUX_SLL"}, None),
        ("zeek__sip-long-request-response-paths.pcap", "pcap", {"IPV4"}, {"UDP": 2}),
    ],
)
def test_stats_and_transports(
    name: str, fmt: str, links: set[str], transports: dict[str, int] | None
) -> None:
    dgs, stats, findings = run(CORPUS / name) if CORPUS.is_dir() else pytest.skip("no corpus")
    assert stats.format == fmt and stats.link_types == links
    assert stats.first_ts is not None and stats.last_ts is not None
    assert stats.first_ts <= min(d.ts for d in dgs) <= stats.last_ts
    if transports is not None:
        got: dict[str, int] = {}
        for d in dgs:
            got[d.transport.value] = got.get(d.transport.value, 0) + 1
        assert got == transports
    assert not findings


@pytest.mark.corpus
def test_fragmented_invite_is_reassembled() -> None:
    if not CORPUS.is_dir():
        pytest.skip("no corpus")
    dgs, _, _ = run(CORPUS / "goffinet__private-test-sip.pcapng")
    multi = [d for d in dgs if len(d.frames) > 1]
    assert [d.frames for d in multi] == [(264, 265)]
    assert multi[0].payload.startswith(b"INVITE sip:telephone1@172.16.98.181:5060;ob SIP/2.0")


@pytest.mark.corpus
def test_udp_only_capture_accounts_for_every_frame() -> None:
    if not CORPUS.is_dir():
        pytest.skip("no corpus")
    dgs, stats, _ = run(CORPUS / "goffinet__sip-flow-private.pcapng")
    frames_skipped = sum(v for k, v in stats.skipped.items() if not k.startswith("pcapng_block"))
    assert len(dgs) + frames_skipped == stats.frames
    assert stats.skipped["stun"] == 2


@pytest.mark.corpus
def test_cut_file_never_raises(tmp_path: Path) -> None:
    if not CORPUS.is_dir():
        pytest.skip("no corpus")
    src = (CORPUS / "goffinet__sip-register-wrong_password-401-403-401-403.pcapng").read_bytes()
    full, _, _ = run(CORPUS / "goffinet__sip-register-wrong_password-401-403-401-403.pcapng")
    path = tmp_path / "cut.pcapng"
    ends, off = set(), 0
    while off < len(src):  # block boundaries: a cut there is a shorter, undamaged file
        off += int.from_bytes(src[off + 4 : off + 8], "little")
        ends.add(off)
    for cut in range(len(src) - 1600, len(src)):
        path.write_bytes(src[:cut])
        dgs, _, findings = run(path)
        assert [d.payload for d in dgs] == [d.payload for d in full[: len(dgs)]]
        assert len(dgs) >= len(full) - 3
        assert bool(findings) == (cut not in ends)


def test_not_a_capture_raises_input_error(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("INVITE sip:bob@example.com SIP/2.0\r\n")
    with pytest.raises(InputError):
        run(path)


def test_stdin_through_read_capture() -> None:
    if not CORPUS.is_dir():
        pytest.skip("no corpus")
    code = (
        "from sipflow.ingest.capture import read_capture\n"
        "from sipflow.ingest.types import SourceStats\n"
        "s = SourceStats('-'); print(len(list(read_capture('-', 0, s, []))), s.format)\n"
    )
    data = (CORPUS / "goffinet__SIP-Call-with-Proxy-Server.pcap").read_bytes()
    out = subprocess.run([sys.executable, "-c", code], input=data, capture_output=True)
    assert out.stdout.split() == [b"11", b"pcap"], out.stderr


# -- live loopback captures made with tcpdump ----------------------------------------------


def _capture(tmp_path: Path, iface: str, extra: list[str], port: int) -> Path:
    if TCPDUMP is None:
        pytest.skip("tcpdump not installed")
    out = tmp_path / f"{iface}.pcap"
    cmd = [TCPDUMP, "-i", iface, *extra, "-U", "-c", "3", "-w", str(out), f"udp port {port}"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        time.sleep(1.0)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for i, msg in enumerate(
                [
                    b"OPTIONS sip:a@127.0.0.1 SIP/2.0\r\nCall-ID: lo\r\n\r\n",
                    b"\x80\x00\x00\x01" + bytes(160),
                    b"SIP/2.0 200 OK\r\nCall-ID: lo\r\n\r\n",
                ]
            ):
                s.sendto(msg, ("127.0.0.1", port))
                time.sleep(0.05 * (i + 1))
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    if proc.returncode != 0 or not out.exists():
        pytest.skip(f"tcpdump could not capture on {iface}")
    return out


@pytest.mark.peers
@pytest.mark.parametrize(
    ("iface", "extra", "link"),
    [("lo", [], "EN10MB"), ("any", ["-y", "LINUX_SLL2"], "LINUX_SLL2")],
)
def test_tcpdump_loopback(tmp_path: Path, iface: str, extra: list[str], link: str) -> None:
    port = 25060 + (iface == "any")
    path = _capture(tmp_path, iface, extra, port)
    dgs, stats, _ = run(path)
    assert stats.link_types == {link}
    assert [d.payload.split(b"\r\n")[0] for d in dgs] == [
        b"OPTIONS sip:a@127.0.0.1 SIP/2.0",
        b"SIP/2.0 200 OK",
    ]
    assert stats.skipped["non_sip_udp"] == 1
    assert [f for _, f in [(0, d.frames[0]) for d in dgs]] == [1, 3]
    assert [r[0] for r in tshark_sip(path)] == [1, 3] if TSHARK else True


# -- which TCP connections are followed ------------------------------------------------


def _tcp_pcap(path: Path) -> None:
    """Three connections: A carries SIP from its first payload; B opens with a SYN to the
    port A used for SIP and its first segment is the middle of a message; C is HTTP on
    another port (never followed); D is a SIP-over-WebSocket upgrade."""
    from scapy.layers.inet import IP, TCP
    from scapy.layers.l2 import Ether
    from scapy.utils import wrpcap

    def seg(sport: int, dport: int, seq: int, flags: str, data: bytes = b"") -> object:
        ip = IP(src="192.0.2.1", dst="192.0.2.2")
        return Ether() / ip / TCP(sport=sport, dport=dport, seq=seq, flags=flags) / data

    msg = b"OPTIONS sip:b@example.com SIP/2.0\r\nCall-ID: x\r\nContent-Length: 0\r\n\r\n"
    ws = b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
    pkts = [
        seg(40001, 5060, 100, "S"),  # 1: A's SYN, before any SIP was seen: not followed
        seg(40001, 5060, 101, "PA", msg),  # 2: A's first payload: SIP, followed from here
        seg(40002, 5060, 500, "S"),  # 3: B's SYN to 5060, now a SIP port: followed
        seg(40002, 5060, 501, "PA", msg[:20]),  # 4
        seg(40002, 5060, 521, "PA", msg[20:]),  # 5
        seg(40003, 8080, 900, "PA", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"),  # 6: not SIP
        seg(40004, 8443, 700, "PA", ws),  # 7: WebSocket upgrade: followed
    ]
    wrpcap(str(path), pkts)


def test_tcp_connections_followed(tmp_path: Path) -> None:
    path = tmp_path / "tcp.pcap"
    _tcp_pcap(path)
    dgs, stats, _ = run(path)
    by_port: dict[int, bytes] = {}
    for d in dgs:
        assert d.transport is Transport.TCP
        by_port[d.src.port] = by_port.get(d.src.port, b"") + d.payload
    assert by_port[40001].startswith(b"OPTIONS sip:b@example.com SIP/2.0")
    assert by_port[40002].startswith(b"OPTIONS sip:b@example.com SIP/2.0")
    assert 40003 not in by_port
    assert stats.skipped["non_sip_tcp"] == 1
    # A's SYN (not followed) and B's (followed for stream state): frames without SIP
    assert stats.skipped["tcp_no_payload"] == 2


@pytest.mark.corpus
@pytest.mark.parametrize(
    "name",
    [
        "heplify__erspan_sip_ipv4_udp.pcapng",
        "pcapplusplus__sip_reqs.pcap",
        "arkime__gtp-iphone.pcap",
        "goffinet__private-test-sip.pcapng",
        "heplify__sip_sctp.pcap",
        "sngrep__ipip.pcap",
    ],
)
def test_random_corruption_never_raises(tmp_path: Path, name: str) -> None:
    """Bytes overwritten at random places (seeded): findings and a best effort, no exception."""
    import random

    if not CORPUS.is_dir():
        pytest.skip("no corpus")
    src = (CORPUS / name).read_bytes()
    rng = random.Random(name)
    path = tmp_path / "fuzz"
    for _ in range(150):
        data = bytearray(src)
        for _ in range(rng.randint(1, 8)):
            pos = rng.randrange(24, len(data))
            data[pos : pos + 4] = rng.randbytes(4)
        path.write_bytes(bytes(data))
        run(path)  # must not raise


def _tcp_frame(sport: int, flags: int, seq: int, data: bytes = b"", reply: bool = False) -> bytes:
    """Ethernet/IPv4/TCP between 192.0.2.1:sport and 192.0.2.2:5060 (checksums left 0)."""
    import struct

    a, b = socket.inet_aton("192.0.2.1"), socket.inet_aton("192.0.2.2")
    src, dst, ports = (b, a, (5060, sport)) if reply else (a, b, (sport, 5060))
    tcp = struct.pack("!HHIIBBHHH", *ports, seq, 0, 5 << 4, flags, 65535, 0, 0) + data
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 0, 0, 64, 6, 0, src, dst)
    return b"\x00" * 12 + b"\x08\x00" + ip + tcp


def _write_frames(path: Path, records: list[bytes]) -> Path:
    """A classic Ethernet pcap of ``records``, 1,000 frames a second from t = 1000 s."""
    import struct

    with path.open("wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for k, frame in enumerate(records):
            sec, usec = 1_000 + k // 1000, (k % 1000) * 1000
            f.write(struct.pack("<IIII", sec, usec, len(frame), len(frame)))
            f.write(frame)
    return path


def test_closed_tcp_connections_are_forgotten(tmp_path: Path) -> None:
    """Many short SIP-over-TCP connections (SYN, OPTIONS, FIN both ways): the pipeline's
    set of followed connections holds the open ones, not every connection ever seen."""

    from sipflow.ingest import capture, classify
    from sipflow.ingest.pcap import open_capture
    from sipflow.ingest.tls import TlsFollower

    syn, fin_ack, psh_ack = 0x02, 0x11, 0x18
    msg = b"OPTIONS sip:b@example.com SIP/2.0\r\nCall-ID: x\r\nContent-Length: 0\r\n\r\n"
    n = 20_000  # 80,000 frames: more than one chunk, so the pipeline expires state mid-file
    records = []
    for i in range(n):
        port = 10_000 + i % 50_000
        records += [
            _tcp_frame(port, syn, 100),
            _tcp_frame(port, psh_ack, 101, msg),
            _tcp_frame(port, fin_ack, 101 + len(msg)),
            _tcp_frame(port, fin_ack, 500, reply=True),
        ]
    path = _write_frames(tmp_path / "many_tcp.pcap", records)
    cap = open_capture(str(path), 0)
    findings: list[Finding] = []
    stats = SourceStats(path=str(path))
    pipe = capture._Pipeline(cap, 0, stats, findings, None)
    pipe.tls = TlsFollower(None, None, 0, findings, classify.looks_like_sip)
    sip = sum(1 for dg in pipe.run() if dg.payload.startswith(b"OPTIONS"))
    cap.close()
    assert sip == n and stats.frames == 4 * n
    assert len(pipe.tracked) < 4096, len(pipe.tracked)  # was 20,000: one per connection


def test_idle_tcp_framers_are_dropped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """20,000 short SIP-over-TCP connections over 80 s: the analysis finds every OPTIONS
    and keeps framers only for connections fed in the last FRAMER_IDLE_NS, not one per
    connection ever seen (a half message still waiting is kept)."""

    from sipflow.api import Options, analyze
    from sipflow.engine import local
    from sipflow.sip.framing import StreamFramer

    syn, fin_ack, psh_ack = 0x02, 0x11, 0x18
    msg = b"OPTIONS sip:b@example.com SIP/2.0\r\nCall-ID: x%d\r\nContent-Length: 0\r\n\r\n"
    n = 20_000
    records = [_tcp_frame(9_999, psh_ack, 1, b"OPTIONS sip:half SIP/2.0\r\nCall-ID: h\r\n")]
    for i in range(n):
        port = 10_000 + i % 50_000
        body = msg % i
        records += [
            _tcp_frame(port, syn, 100),
            _tcp_frame(port, psh_ack, 101, body),
            _tcp_frame(port, fin_ack, 101 + len(body)),
            _tcp_frame(port, fin_ack, 500, reply=True),
        ]
    path = _write_frames(tmp_path / "many_tcp.pcap", records)
    held: list[int] = []
    made = StreamFramer.__init__

    def counting(self: StreamFramer, *a: object, **kw: object) -> None:
        made(self, *a, **kw)  # type: ignore[arg-type]
        held.append(id(self))

    monkeypatch.setattr(StreamFramer, "__init__", counting)
    peak = 0
    drop = local._drop_idle_framers

    def watched(framers: dict[int, StreamFramer], *a: object) -> None:
        nonlocal peak
        drop(framers, *a)  # type: ignore[arg-type]
        peak = max(peak, len(framers))

    monkeypatch.setattr(local, "_drop_idle_framers", watched)
    trace = analyze([str(path)], Options(keep_messages=False, keep_records=False))
    # every OPTIONS, and the half message (frame 1), kept to the end and flushed there
    assert trace.counts_requests == {"OPTIONS": n + 1}
    assert any(r["frame"] == 1 for f in trace.to_dict()["findings"] for r in f["refs"])
    assert len(held) == n + 1  # a framer per connection was made ...
    assert peak < 33 * 1000 // 4 + 10, peak  # ... but only ~32 s of them held at once
