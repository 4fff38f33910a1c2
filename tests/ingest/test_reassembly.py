"""IP fragment and TCP stream reassembly on synthetic fragments and segments."""

from __future__ import annotations

import itertools
import random
import re
import shutil
import signal
import socket
import struct
import subprocess
import time
from pathlib import Path

import pytest

from sipflow.ingest.reassembly import FragmentReassembler, TcpReassembler, seq_add, seq_diff, seq_gt
from sipflow.ingest.types import (
    TCP_ACK,
    TCP_FIN,
    TCP_RST,
    TCP_SYN,
    Datagram,
    Endpoint,
    IpFragment,
    TcpSegment,
    Transport,
)
from sipflow.sip.framing import StreamFramer

# -- sequence arithmetic -----------------------------------------------------------------


def test_seq_helpers_wrap() -> None:
    assert seq_add(0xFFFFFFFF, 1) == 0
    assert seq_diff(5, 0xFFFFFFFE) == 7
    assert seq_diff(0xFFFFFFFE, 5) == -7
    assert seq_gt(3, 0xFFFFFF00) and not seq_gt(0xFFFFFF00, 3)


# -- IP fragments ------------------------------------------------------------------------

PAYLOAD = bytes(range(256)) * 6  # 1536 bytes


def frags(data: bytes, size: int, version: int = 4, ident: int = 7) -> list[IpFragment]:
    out = []
    for n, off in enumerate(range(0, len(data), size), start=1):
        chunk = data[off : off + size]
        more = off + size < len(data)
        out.append(
            IpFragment(0, n, n * 10, version, "10.0.0.1", "10.0.0.2", ident, 17, off, more, chunk)
        )
    return out


@pytest.mark.parametrize("order", list(itertools.permutations(range(4))))
def test_fragments_any_order(order: tuple[int, ...]) -> None:
    parts = frags(PAYLOAD, 400)
    r = FragmentReassembler()
    results = [r.feed(parts[i]) for i in order]
    assert results[:-1] == [None, None, None]
    done = results[-1]
    assert done is not None
    assert done.payload == PAYLOAD and done.frames == (1, 2, 3, 4) and done.protocol == 17
    assert done.ts == parts[order[-1]].ts
    assert r.findings == [] and r.flush() == []


def test_duplicate_fragment_is_counted_not_reported() -> None:
    parts = frags(PAYLOAD, 800)
    r = FragmentReassembler()
    assert r.feed(parts[0]) is None
    assert r.feed(parts[0]) is None
    done = r.feed(parts[1])
    assert done is not None and done.payload == PAYLOAD
    assert r.duplicates == 1 and r.findings == []


@pytest.mark.parametrize("version, rfc", [(4, "RFC 1858 §4"), (6, "RFC 5722 §4")])
def test_overlap_first_data_wins(version: int, rfc: str) -> None:
    a = IpFragment(0, 1, 1, version, "a", "b", 1, 17, 0, True, b"A" * 16)
    b = IpFragment(0, 2, 2, version, "a", "b", 1, 17, 8, True, b"B" * 16)  # overlaps 8 bytes
    c = IpFragment(0, 3, 3, version, "a", "b", 1, 17, 24, False, b"C" * 4)
    r = FragmentReassembler()
    assert r.feed(a) is None and r.feed(b) is None
    done = r.feed(c)
    assert done is not None and done.payload == b"A" * 16 + b"B" * 8 + b"C" * 4
    assert [(f.code, f.rfc, [x.frame for x in f.refs]) for f in r.findings] == [
        ("ingest.fragment_overlap", rfc, [2])
    ]


def test_incomplete_set_expires_and_flushes() -> None:
    parts = frags(PAYLOAD, 400)
    r = FragmentReassembler(timeout_ns=100)
    r.feed(parts[0])
    r.feed(parts[2])
    assert r.expire(parts[0].ts + 100) == []
    (f,) = r.expire(parts[0].ts + 101)
    assert f.code == "ingest.fragments_incomplete" and [x.frame for x in f.refs] == [1, 3]
    assert "800 of unknown bytes" in f.message
    r.feed(parts[3])
    (g,) = r.flush()
    assert [x.frame for x in g.refs] == [4] and r.flush() == []


def test_cap_on_pending_sets() -> None:
    r = FragmentReassembler(max_pending=3)
    for ident in range(5):
        r.feed(frags(PAYLOAD, 400, ident=ident)[0])
    evicted = [f for f in r.findings if f.code == "ingest.fragments_incomplete"]
    assert len(evicted) == 2 and len(r.flush()) == 3


def test_fragment_beyond_64k_rejected() -> None:
    r = FragmentReassembler()
    big = IpFragment(0, 1, 1, 4, "a", "b", 1, 17, 65528, True, b"x" * 16)
    assert r.feed(big) is None
    assert r.findings[0].code == "ingest.fragment_invalid"


def test_v4_and_v6_sets_do_not_mix() -> None:
    r = FragmentReassembler()
    v4, v6 = frags(PAYLOAD, 800, 4), frags(PAYLOAD, 800, 6)
    assert r.feed(v4[0]) is None and r.feed(v6[1]) is None
    assert r.feed(v6[0]) is not None and r.feed(v4[1]) is not None


# -- TCP ---------------------------------------------------------------------------------

C = Endpoint("192.0.2.1", 40000)
S = Endpoint("192.0.2.2", 5060)
MSG = b"OPTIONS sip:x SIP/2.0\r\nCall-ID: 1\r\nContent-Length: 0\r\n\r\n"


class Conn:
    """Builds the segments of one direction C -> S from a starting sequence number."""

    def __init__(self, isn: int, src: Endpoint = C, dst: Endpoint = S) -> None:
        self.isn, self.src, self.dst, self.frame = isn, src, dst, 0

    def seg(self, offset: int, data: bytes = b"", flags: int = TCP_ACK) -> TcpSegment:
        self.frame += 1
        seq = seq_add(self.isn, offset + 1)  # offset 0 = first data byte after the SYN
        if flags & TCP_SYN:
            seq = self.isn
        return TcpSegment(0, self.frame, self.frame * 100, self.src, self.dst, seq, 0, flags, data)


def payloads(dgs: list[Datagram]) -> bytes:
    return b"".join(d.payload for d in dgs)


def run(segments: list[TcpSegment], r: TcpReassembler | None = None) -> list[Datagram]:
    r = r or TcpReassembler()
    out: list[Datagram] = []
    for s in segments:
        out += r.feed(s)
    return out + r.flush()


STREAM = MSG * 5


def split(data: bytes, sizes: list[int]) -> list[tuple[int, bytes]]:
    out, pos = [], 0
    for n in itertools.cycle(sizes):
        if pos >= len(data):
            return out
        out.append((pos, data[pos : pos + n]))
        pos += n
    return out


@pytest.mark.parametrize("isn", [1000, 0xFFFFFFFF - 100, 0xFFFFFFFF, 0xFFFFFFFE])
def test_in_order_with_syn_and_wraparound(isn: int) -> None:
    c = Conn(isn)
    segs = [c.seg(0, flags=TCP_SYN)] + [c.seg(o, d) for o, d in split(STREAM, [37, 50, 13])]
    segs.append(c.seg(len(STREAM), flags=TCP_FIN | TCP_ACK))
    r = TcpReassembler()
    out = run(segs, r)
    assert payloads(out) == STREAM
    assert all(d.transport is Transport.TCP and not d.gap for d in out)
    assert len({d.stream for d in out}) == 1
    assert [d.frames for d in out] == [(i,) for i in range(2, len(segs))]
    assert r.findings == [] and r.gap_bytes == 0


def test_out_of_order_retransmission_and_overlap() -> None:
    c = Conn(0xFFFFFF00)  # the stream wraps past 2^32 in the middle
    pieces = split(STREAM, [60, 60, 60, 60, 60])
    segs = [c.seg(0, flags=TCP_SYN)]
    order = [0, 2, 1, 1, 4, 3, 0]  # reordered and retransmitted
    segs += [c.seg(*pieces[i]) for i in order]
    segs += [c.seg(50, STREAM[50:130])]  # overlaps delivered bytes
    segs += [c.seg(o, d) for o, d in pieces[5:]]
    r = TcpReassembler()
    out = run(segs, r)
    assert payloads(out) == STREAM
    assert r.gap_bytes == 0 and r.retransmitted_bytes == 60 + 60 + 80
    # frame 4 (piece 2) waited for frame 3's hole: it is released with frame 3's ts
    d2 = next(d for d in out if d.frames == (3,))
    assert d2.payload == pieces[2][1] and d2.ts == 4 * 100


def test_random_permutations_with_duplicates() -> None:
    rng = random.Random(1)
    data = bytes(rng.randrange(256) for _ in range(5000))
    for trial in range(50):
        c = Conn(rng.randrange(1 << 32))
        pieces = split(data, [rng.randrange(1, 300) for _ in range(5)])
        chosen = pieces + rng.sample(pieces, k=min(5, len(pieces)))
        rng.shuffle(chosen)
        segs = [c.seg(0, flags=TCP_SYN)] + [c.seg(o, d) for o, d in chosen]
        assert payloads(run(segs)) == data, trial


def test_mid_connection_start_is_a_gap_and_hole_is_reported_on_flush() -> None:
    c = Conn(5000)
    r = TcpReassembler()
    out = run([c.seg(100, MSG), c.seg(100 + 2 * len(MSG), MSG)], r)
    assert [d.gap for d in out] == [True, True]
    assert payloads(out) == MSG * 2
    (f,) = r.findings
    assert f.code == "ingest.tcp_gap" and f"{len(MSG)} bytes" in f.message
    assert [x.frame for x in f.refs] == [2]
    assert r.gap_bytes == len(MSG)


def test_bounded_out_of_order_skips_the_hole() -> None:
    c = Conn(1)
    r = TcpReassembler(max_out_of_order=3 * len(MSG))
    segs = [c.seg(0, flags=TCP_SYN)] + [c.seg(i * len(MSG), MSG) for i in range(1, 6)]
    out: list[Datagram] = []
    for s in segs:
        out += r.feed(s)
    # the 4th held segment exceeded the bound: the first missing message is given up,
    # the held ones are delivered and the 5th arrives in order
    assert len(out) == 5 and out[3].frames == (5,) and out[4].frames == (6,)
    assert payloads(out) == MSG * 5 and out[0].gap and not any(d.gap for d in out[1:])
    assert r.gap_bytes == len(MSG)
    assert r.flush() == []


def test_fin_releases_and_late_retransmission_is_ignored() -> None:
    c = Conn(77)
    segs = [c.seg(0, flags=TCP_SYN), c.seg(0, MSG), c.seg(len(MSG), flags=TCP_FIN | TCP_ACK)]
    r = TcpReassembler()
    out = []
    for s in segs:
        out += r.feed(s)
    assert payloads(out) == MSG and r._dirs == {}
    assert r.feed(c.seg(0, MSG)) == []  # retransmitted after close
    assert r.feed(c.seg(len(MSG), flags=TCP_FIN | TCP_ACK)) == []
    assert r.retransmitted_bytes == len(MSG) and r._dirs == {}


def test_connection_reuse_gets_a_new_stream() -> None:
    r = TcpReassembler()
    a, b = Conn(10), Conn(900000)
    first = run([a.seg(0, flags=TCP_SYN), a.seg(0, MSG), a.seg(len(MSG), flags=TCP_FIN)], r)
    second = run([b.seg(0, flags=TCP_SYN), b.seg(0, MSG)], r)
    assert payloads(first) == payloads(second) == MSG
    assert first[0].stream != second[0].stream


def test_syn_without_fin_reused() -> None:
    r = TcpReassembler()
    a, b = Conn(10), Conn(900000)
    out = run(
        [
            a.seg(0, flags=TCP_SYN),
            a.seg(0, MSG),
            a.seg(0, flags=TCP_SYN),
            b.seg(0, flags=TCP_SYN),
            b.seg(0, MSG),
        ],
        r,
    )
    assert payloads(out) == MSG * 2 and out[0].stream != out[1].stream


def test_rst_releases_both_directions() -> None:
    r = TcpReassembler()
    a, back = Conn(10), Conn(20, S, C)
    run_segs = [
        a.seg(0, flags=TCP_SYN),
        back.seg(0, flags=TCP_SYN | TCP_ACK),
        a.seg(0, MSG),
        back.seg(0, MSG),
    ]
    out = []
    for s in run_segs:
        out += r.feed(s)
    assert len(r._dirs) == 2
    r.feed(a.seg(len(MSG), flags=TCP_RST))
    assert r._dirs == {} and payloads(out) == MSG * 2


def test_idle_directions_expire() -> None:
    r = TcpReassembler(idle_timeout_ns=1000)
    c = Conn(1)
    r.feed(c.seg(0, flags=TCP_SYN))
    r.feed(c.seg(len(MSG), MSG))  # held: the first message is missing
    assert r.expire(1000) == []
    out = r.expire(10_000)
    assert payloads(out) == MSG and out[0].gap and r._dirs == {}


def test_framer_over_reassembler_byte_at_a_time_out_of_order() -> None:
    c = Conn(0xFFFFFFF0)
    idx = list(range(len(STREAM)))
    random.Random(3).shuffle(idx)
    segs = [c.seg(0, flags=TCP_SYN)] + [c.seg(i, STREAM[i : i + 1]) for i in idx]
    framer = StreamFramer()
    msgs = []
    for d in run(segs):
        msgs += framer.feed(d)
    msgs += framer.flush()
    assert [m.data for m in msgs] == [MSG] * 5
    # each message's frames are exactly the frames that carried its bytes
    frame_of = {i: n for n, i in enumerate(idx, start=2)}
    for k, m in enumerate(msgs):
        span = range(k * len(MSG), (k + 1) * len(MSG))
        assert m.frames == tuple(sorted(frame_of[i] for i in span))


# -- real traffic: SIPp UAC and UAS over one TCP connection, captured by tcpdump -------


_SIPP_LOG_HEAD = re.compile(
    rb"^TCP message (sent|received) (?:\((\d+) bytes\):|\[(\d+)\] bytes :)\n\n", re.M
)


def _free_port_pair() -> int:
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port < 65000:
            with socket.socket() as a, socket.socket() as b:
                try:
                    a.bind(("127.0.0.1", port))
                    b.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
            return port
    raise RuntimeError("no free port pair")


def read_lo_tcp(path: Path) -> list[TcpSegment]:
    """Tiny pcap reader for an Ethernet (tcpdump -i lo) IPv4/TCP capture."""
    raw = path.read_bytes()
    magic = raw[:4]
    endian = "<" if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    nano = magic in (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d")
    assert struct.unpack(endian + "I", raw[20:24])[0] == 1  # LINKTYPE_ETHERNET
    segs, pos, frame = [], 24, 0
    while pos + 16 <= len(raw):
        sec, frac, incl, _ = struct.unpack(endian + "IIII", raw[pos : pos + 16])
        pkt = raw[pos + 16 : pos + 16 + incl]
        pos += 16 + incl
        frame += 1
        if pkt[12:14] != b"\x08\x00" or pkt[23] != 6:
            continue
        ip = pkt[14:]
        ihl = (ip[0] & 0x0F) * 4
        total = struct.unpack("!H", ip[2:4])[0]
        tcp = ip[ihl:total]
        sport, dport, seq, ack = struct.unpack("!HHII", tcp[:12])
        doff = (tcp[12] >> 4) * 4
        src = Endpoint(socket.inet_ntoa(ip[12:16]), sport)
        dst = Endpoint(socket.inet_ntoa(ip[16:20]), dport)
        ts = sec * 1_000_000_000 + (frac if nano else frac * 1000)
        segs.append(TcpSegment(0, frame, ts, src, dst, seq, ack, tcp[13], tcp[doff:]))
    return segs


def sipp_messages(log: Path) -> dict[str, list[tuple[int, bytes]]]:
    """SIPp -trace_msg: (byte count, first line) of each message sent and received."""
    text = log.read_bytes()
    out: dict[str, list[tuple[int, bytes]]] = {"sent": [], "received": []}
    for m in _SIPP_LOG_HEAD.finditer(text):
        first = text[m.end() : text.index(b"\n", m.end())].rstrip(b"\r")
        out[m.group(1).decode()].append((int(m.group(2) or m.group(3)), first))
    return out


@pytest.fixture(scope="module")
def sipp_tcp_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    missing = [t for t in ("sipp", "tcpdump") if shutil.which(t) is None]
    if missing:
        pytest.skip(f"needs {', '.join(missing)} (make deb)")
    work = tmp_path_factory.mktemp("sipp_tcp")
    port = _free_port_pair()
    procs: list[subprocess.Popen[bytes]] = []

    def start(argv: list[str], name: str) -> subprocess.Popen[bytes]:
        with (work / f"{name}.out").open("wb") as out:
            p = subprocess.Popen(
                argv, cwd=work, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        procs.append(p)
        return p

    try:
        cap = start(
            [
                "tcpdump",
                "-i",
                "lo",
                "-n",
                "-U",
                "-Z",
                "root",
                "-s",
                "0",
                "-w",
                "tcp.pcap",
                f"tcp port {port}",
            ],
            "tcpdump",
        )
        deadline = time.monotonic() + 10
        while b"listening on" not in (work / "tcpdump.out").read_bytes():
            if cap.poll() is not None or time.monotonic() > deadline:
                pytest.skip(f"tcpdump cannot capture on lo: {(work / 'tcpdump.out').read_text()}")
            time.sleep(0.05)
        base = ["sipp", "-t", "t1", "-i", "127.0.0.1", "-trace_msg", "-nostdin", "-timeout", "30s"]
        uas = start([*base, "-sn", "uas", "-p", str(port), "-message_file", "uas.log"], "uas")
        time.sleep(0.5)
        uac = start(
            [
                *base,
                "-sn",
                "uac",
                "-p",
                str(port + 1),
                f"127.0.0.1:{port}",
                "-m",
                "50",
                "-r",
                "50",
                "-message_file",
                "uac.log",
            ],
            "uac",
        )
        assert uac.wait(60) == 0, (work / "uac.out").read_text()
        time.sleep(0.5)
        uas.send_signal(signal.SIGINT)
        uas.wait(10)
        time.sleep(0.3)
        cap.send_signal(signal.SIGINT)
        cap.wait(10)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(5)
    return work


@pytest.mark.peers
def test_sipp_tcp_capture_matches_sipp_message_log(sipp_tcp_run: Path) -> None:
    segs = read_lo_tcp(sipp_tcp_run / "tcp.pcap")
    logged = sipp_messages(sipp_tcp_run / "uac.log")
    assert len(logged["sent"]) == 150 and len(logged["received"]) == 150
    uac = next(s.src for s in segs if s.flags & TCP_SYN and not s.flags & TCP_ACK)
    r = TcpReassembler()
    framers: dict[int, StreamFramer] = {}
    found: dict[str, list[tuple[int, bytes]]] = {"sent": [], "received": []}
    for dg in [d for s in segs for d in r.feed(s)] + r.flush():
        framer = framers.setdefault(dg.stream, StreamFramer())
        side = "sent" if dg.src == uac else "received"
        for m in framer.feed(dg):
            assert m.complete
            found[side].append((len(m.data), m.data.split(b"\r\n", 1)[0]))
    assert found == logged  # same messages, same order, same byte counts
    assert r.findings == [] and r.gap_bytes == 0
    assert all(f.problems == [] and f.skipped_bytes == 0 for f in framers.values())
    assert len(framers) == 2


@pytest.mark.peers
def test_sipp_tcp_bytes_resegmented_coalesced_split_reordered(sipp_tcp_run: Path) -> None:
    """The real streams cut at random points (1..1500 bytes, several messages per segment
    and messages over many segments), with neighbours swapped and some repeated."""
    segs = read_lo_tcp(sipp_tcp_run / "tcp.pcap")
    logged = sipp_messages(sipp_tcp_run / "uac.log")
    rng = random.Random(7)
    uac = next(s.src for s in segs if s.flags & TCP_SYN and not s.flags & TCP_ACK)
    found: dict[str, list[tuple[int, bytes]]] = {"sent": [], "received": []}
    for side, src in (("sent", uac), ("received", next(s.src for s in segs if s.src != uac))):
        stream = b"".join(s.payload for s in segs if s.src == src)
        isn = rng.randrange(1 << 32)
        pieces, pos = [], 0
        while pos < len(stream):
            n = rng.choice([1, 7, 200, 900, 1500])
            pieces.append((pos, stream[pos : pos + n]))
            pos += n
        for i in range(0, len(pieces) - 1, 3):
            pieces[i], pieces[i + 1] = pieces[i + 1], pieces[i]
        pieces += rng.sample(pieces, 20)
        dst = Endpoint("127.0.0.9", 9)
        feed = [TcpSegment(0, 1, 0, src, dst, isn, 0, TCP_SYN, b"")]
        feed += [
            TcpSegment(0, n, n, src, dst, seq_add(isn, 1 + o), 0, TCP_ACK, d)
            for n, (o, d) in enumerate(pieces, 2)
        ]
        framer = StreamFramer()
        for dg in run(feed):
            found[side] += [(len(m.data), m.data.split(b"\r\n", 1)[0]) for m in framer.feed(dg)]
        assert framer.problems == [] and framer.flush() == []
    assert found == logged


PRIVATE_PCAPNG = (
    Path(__file__).resolve().parents[2]
    / ".."
    / "shared"
    / "corpus"
    / "pcaps"
    / "goffinet__private-test-sip.pcapng"
)


@pytest.mark.corpus
def test_real_ipv4_fragmented_invite_matches_tshark() -> None:
    """A reSIProcate lab capture with an INVITE fragmented over two IPv4 packets."""
    if not PRIVATE_PCAPNG.is_file():
        pytest.skip(f"{PRIVATE_PCAPNG} is absent (shared corpus not available)")
    if shutil.which("tshark") is None:
        pytest.skip("tshark not installed (make deb)")
    from scapy.layers.inet import IP
    from scapy.utils import rdpcap

    argv = ["tshark", "-n", "-r", str(PRIVATE_PCAPNG), "-Y", "ip.fragments", "-T", "fields"]
    argv += ["-e", "frame.number", "-e", "ip.fragment", "-e", "udp.payload"]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True).stdout
    oracle = []
    for line in out.splitlines():
        frame, frags, payload = line.split("\t")
        oracle.append((int(frame), tuple(int(x) for x in frags.split(",")), bytes.fromhex(payload)))
    r = FragmentReassembler()
    ours = []
    for n, pkt in enumerate(rdpcap(str(PRIVATE_PCAPNG)), start=1):
        ip = pkt.getlayer(IP)
        if ip is None or not (ip.flags.MF or ip.frag):
            continue
        body = bytes(ip.payload)[: ip.len - ip.ihl * 4]
        frag = IpFragment(
            0, n, n, 4, ip.src, ip.dst, ip.id, ip.proto, ip.frag * 8, bool(ip.flags.MF), body
        )
        done = r.feed(frag)
        if done is not None:
            ours.append((n, done.frames, done.payload[8:]))  # after the UDP header
    assert ours == oracle and len(ours) == 1
    assert ours[0][2].startswith(b"INVITE sip:")
    assert r.findings == [] and r.flush() == []
