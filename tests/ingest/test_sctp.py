"""SCTP DATA / I-DATA chunks to SIP payloads (RFC 9260, RFC 8260, RFC 4168).

This kernel has no SCTP socket support (socket(AF_INET, SOCK_STREAM, IPPROTO_SCTP) fails
with EPROTONOSUPPORT), so SIPp -t s1 and Kamailio cannot run over SCTP here: the real
traffic is the corpus capture heplify__sip_sctp.pcap (OpenSIPS over SCTP, with a DATA
message fragmented over two packets), checked against tshark; the rest are packets built
in the test.
"""

from __future__ import annotations

import shutil
import socket
import struct
import subprocess
from pathlib import Path

import pytest

from sipflow.ingest.sctp import SctpReassembler, data_chunks
from sipflow.ingest.types import Datagram, Endpoint, Transport

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared"
SCTP_PCAP = SHARED / "corpus" / "pcaps" / "heplify__sip_sctp.pcap"

A = Endpoint("10.0.0.1", 0)
B = Endpoint("10.0.0.2", 0)
INVITE = b"INVITE sip:b@x SIP/2.0\r\nCall-ID: 1\r\nContent-Length: 0\r\n\r\n"
OK = b"SIP/2.0 200 OK\r\nCall-ID: 1\r\nContent-Length: 0\r\n\r\n"


def chunk(ctype: int, flags: int, value: bytes, pad: bool = True) -> bytes:
    raw = struct.pack("!BBH", ctype, flags, 4 + len(value)) + value
    return raw + b"\0" * (-len(raw) % 4 if pad else 0)


def data(tsn: int, payload: bytes, flags: int = 3, sid: int = 0, ssn: int = 0) -> bytes:
    return chunk(0, flags, struct.pack("!IHHI", tsn, sid, ssn, 0) + payload)


def idata(tsn: int, payload: bytes, flags: int, mid: int, fsn: int, sid: int = 0) -> bytes:
    last = 0 if flags & 2 else fsn  # PPID on the first fragment, FSN on the others
    return chunk(64, flags, struct.pack("!IHHII", tsn, sid, 0, mid, last) + payload)


def packet(*chunks: bytes, sport: int = 5060, dport: int = 5061) -> bytes:
    return struct.pack("!HHII", sport, dport, 0xDEADBEEF, 0) + b"".join(chunks)


def feed(r: SctpReassembler, pkts: list[bytes]) -> tuple[list[Datagram], list[str]]:
    out, codes = [], []
    for n, p in enumerate(pkts, start=1):
        dgs, found = r.data_chunks(0, n, n * 10, A, B, p)
        out += dgs
        codes += [f.code for f in found]
    return out, codes


def test_several_data_chunks_and_other_chunks_in_one_packet() -> None:
    sack = chunk(3, 0, struct.pack("!IIHH", 5, 1000, 0, 0))
    pkt = packet(
        sack,
        data(1, INVITE),
        data(2, OK, sid=1),
        chunk(0, 3, struct.pack("!IHHI", 3, 0, 0, 0) + b"x", pad=False),
    )  # last one unpadded
    r = SctpReassembler()
    out, codes = feed(r, [pkt])
    assert [d.payload for d in out] == [INVITE, OK, b"x"] and codes == []
    assert {(d.src, d.dst, d.transport, d.frames) for d in out} == {
        (Endpoint("10.0.0.1", 5060), Endpoint("10.0.0.2", 5061), Transport.SCTP, (1,))
    }
    assert r.skipped_chunks == {"SACK": 1}


@pytest.mark.parametrize("order", [(0, 1, 2), (2, 0, 1), (1, 2, 0)])
def test_fragmented_user_message_across_packets_with_tsn_wrap(order: tuple[int, ...]) -> None:
    frags = [
        data(0xFFFFFFFF, INVITE[:10], flags=2),
        data(0, INVITE[10:30], flags=0),
        data(1, INVITE[30:], flags=1),
    ]
    r = SctpReassembler()
    out, codes = feed(r, [packet(frags[i]) for i in order])
    assert [d.payload for d in out] == [INVITE] and codes == []
    assert out[0].frames == (1, 2, 3) and out[0].ts == 30
    assert r.flush() == []


def test_i_data_fragments_interleaved_with_another_message() -> None:
    pkts = [
        packet(idata(10, INVITE[:20], 2, mid=7, fsn=0)),
        packet(idata(11, OK, 3, mid=8, fsn=0, sid=2)),
        packet(idata(13, INVITE[40:], 1, mid=7, fsn=2)),
        packet(idata(12, INVITE[20:40], 0, mid=7, fsn=1)),
    ]
    out, codes = feed(SctpReassembler(), pkts)
    assert [d.payload for d in out] == [OK, INVITE] and codes == []
    assert out[1].frames == (1, 3, 4)


def test_retransmitted_data_chunk_is_dropped() -> None:
    r = SctpReassembler()
    out, _ = feed(r, [packet(data(5, INVITE)), packet(data(5, INVITE)), packet(data(6, OK))])
    assert [d.payload for d in out] == [INVITE, OK] and r.retransmitted == 1


def test_single_packet_function_reports_fragments() -> None:
    out, found = data_chunks(0, 9, 0, A, B, packet(data(1, INVITE[:5], flags=2)))
    assert out == [] and [f.code for f in found] == ["ingest.sctp_incomplete"]
    assert [r.frame for r in found[0].refs] == [9]


@pytest.mark.parametrize(
    "pkt, expect",
    [
        (b"\x13\xc4", "shorter than its header"),
        (packet(chunk(0, 3, b"")[:2]), "stray bytes"),
        (packet(b"\x00\x03\x00\x02"), "has length 2"),
        (packet(b"\x00\x03\x00\x40" + b"x" * 8), "has length 64"),
        (packet(chunk(0, 3, struct.pack("!IHHI", 1, 0, 0, 0))), "carries no user data"),
    ],
)
def test_bad_lengths_become_findings(pkt: bytes, expect: str) -> None:
    out, found = data_chunks(0, 1, 0, A, B, pkt)
    assert out == [] and len(found) == 1
    assert found[0].code == "ingest.sctp_malformed" and expect in found[0].message


def test_every_truncation_is_safe() -> None:
    pkt = packet(data(1, INVITE), data(2, OK))
    for n in range(len(pkt) + 1):
        out, found = data_chunks(0, 1, 0, A, B, pkt[:n])
        assert len(out) + len(found) >= 1 or n == 12
    assert [d.payload for d in data_chunks(0, 1, 0, A, B, pkt)[0]] == [INVITE, OK]


def _sll_sctp(path: Path) -> list[tuple[int, Endpoint, Endpoint, bytes]]:
    """Tiny reader for the Linux cooked (SLL) IPv4/SCTP corpus capture."""
    raw = path.read_bytes()
    assert raw[:4] == b"\xd4\xc3\xb2\xa1" and struct.unpack("<I", raw[20:24])[0] == 113
    out, pos, n = [], 24, 0
    while pos + 16 <= len(raw):
        incl = struct.unpack("<I", raw[pos + 8 : pos + 12])[0]
        pkt, pos, n = raw[pos + 16 : pos + 16 + incl], pos + 16 + incl, n + 1
        ip = pkt[16:]
        if pkt[14:16] != b"\x08\x00" or ip[9] != 132:
            continue
        ihl, total = (ip[0] & 15) * 4, struct.unpack("!H", ip[2:4])[0]
        src, dst = socket.inet_ntoa(ip[12:16]), socket.inet_ntoa(ip[16:20])
        out.append((n, Endpoint(src, 0), Endpoint(dst, 0), ip[ihl:total]))
    return out


@pytest.mark.corpus
def test_real_sctp_capture_matches_tshark() -> None:
    if not SCTP_PCAP.is_file():
        pytest.skip(f"{SCTP_PCAP} is absent (shared corpus not available)")
    if shutil.which("tshark") is None:
        pytest.skip("tshark not installed (make deb)")
    fields = ["frame.number", "sctp.srcport", "sctp.dstport", "sip.Request-Line", "sip.Status-Line"]
    argv = ["tshark", "-n", "-r", str(SCTP_PCAP), "-Y", "sip", "-T", "fields"]
    argv += [x for f in fields for x in ("-e", f)]
    lines = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True).stdout
    oracle = []
    for line in lines.splitlines():
        frame, sport, dport, req, status = line.split("\t")
        oracle.append((int(frame), int(sport), int(dport), req or status))
    r = SctpReassembler()
    ours = []
    for n, src, dst, payload in _sll_sctp(SCTP_PCAP):
        dgs, found = r.data_chunks(0, n, 0, src, dst, payload)
        assert found == []
        ours += [
            (d.frames[-1], d.src.port, d.dst.port, d.payload.split(b"\r\n")[0].decode())
            for d in dgs
        ]
    assert ours == oracle and len(ours) == 4
    assert r.flush() == []
