"""Link, IP, tunnel and transport decoding: frames built with scapy, checked against the
per-record decoder, the vectorised decoder and tshark's dissection of the same file."""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
from scapy.contrib.erspan import ERSPAN, ERSPAN_II, ERSPAN_III, ERSPAN_PlatformSpecific
from scapy.contrib.gtp import GTP_U_Header
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import (
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
)
from scapy.layers.l2 import ARP, GRE, CookedLinux, CookedLinuxV2, Dot1AD, Dot1Q, Ether
from scapy.layers.ppp import PPP, PPPoE
from scapy.layers.sctp import SCTP, SCTPChunkData
from scapy.packet import Packet as ScapyPacket

from sipflow.ingest.decode import Fragment, Packet, decode_chunk, decode_frame
from sipflow.ingest.pcap import open_capture

SIP = b"OPTIONS sip:bob@example.com SIP/2.0\r\nCall-ID: t1\r\nContent-Length: 0\r\n\r\n"
TSHARK = shutil.which("tshark")


def udp4(payload: bytes = SIP) -> ScapyPacket:
    return IP(src="192.0.2.1", dst="192.0.2.2") / UDP(sport=5060, dport=5062) / payload


def udp6(payload: bytes = SIP) -> ScapyPacket:
    return IPv6(src="2001:db8::1", dst="2001:db8::2") / UDP(sport=5060, dport=5062) / payload


ETH = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")


def null_header(family: int, order: str) -> bytes:
    return struct.pack(order + "I", family)


# name -> (link type, frame bytes, expected IP version)
FRAMES: dict[str, tuple[int, bytes, int]] = {
    "ethernet_ipv4": (1, bytes(ETH / udp4()), 4),
    "ethernet_ipv6": (1, bytes(ETH / udp6()), 6),
    "vlan": (1, bytes(ETH / Dot1Q(vlan=10) / udp4()), 4),
    "qinq_88a8": (1, bytes(ETH / Dot1AD(vlan=20) / Dot1Q(vlan=10) / udp4()), 4),
    "qinq_9100": (1, bytes(Ether(type=0x9100) / Dot1Q(vlan=20) / Dot1Q(vlan=10) / udp6()), 6),
    "vlan_depth_6": (
        1,
        bytes(ETH / Dot1Q() / Dot1Q() / Dot1Q() / Dot1Q() / Dot1Q() / Dot1Q() / udp4()),
        4,
    ),
    "sll": (113, bytes(CookedLinux(proto=0x0800) / udp4()), 4),
    "sll_v6": (113, bytes(CookedLinux(proto=0x86DD) / udp6()), 6),
    "sll2": (276, bytes(CookedLinuxV2(proto=0x0800) / udp4()), 4),
    "raw_101": (101, bytes(udp4()), 4),
    "raw_12": (12, bytes(udp6()), 6),
    "raw_14": (14, bytes(udp4()), 4),
    "ipv4_228": (228, bytes(udp4()), 4),
    "ipv6_229": (229, bytes(udp6()), 6),
    "null_le_inet": (0, null_header(2, "<") + bytes(udp4()), 4),
    "null_be_inet": (0, null_header(2, ">") + bytes(udp4()), 4),
    **{
        f"null_inet6_{fam}_{o}": (0, null_header(fam, o) + bytes(udp6()), 6)
        for fam in (10, 24, 28, 30)
        for o in "<>"
    },
    "loop_108": (108, null_header(2, ">") + bytes(udp4()), 4),
    "pppoe_v4": (1, bytes(ETH / PPPoE(sessionid=1) / PPP(proto=0x0021) / udp4()), 4),
    "pppoe_v6": (1, bytes(ETH / PPPoE(sessionid=1) / PPP(proto=0x0057) / udp6()), 6),
    "ipv4_options": (
        1,
        bytes(
            ETH
            / IP(src="192.0.2.1", dst="192.0.2.2", options=b"\x01\x01\x01\x00")
            / UDP(sport=5060, dport=5062)
            / SIP
        ),
        4,
    ),
    "ipv6_ext": (
        1,
        bytes(
            ETH
            / IPv6(src="2001:db8::1", dst="2001:db8::2")
            / IPv6ExtHdrHopByHop()
            / IPv6ExtHdrRouting()
            / IPv6ExtHdrDestOpt()
            / UDP(sport=5060, dport=5062)
            / SIP
        ),
        6,
    ),
    "ipv6_atomic_fragment": (
        1,
        bytes(
            ETH
            / IPv6(src="2001:db8::1", dst="2001:db8::2")
            / IPv6ExtHdrFragment(offset=0, m=0, id=7)
            / UDP(sport=5060, dport=5062)
            / SIP
        ),
        6,
    ),
    "ipip": (1, bytes(ETH / IP(src="10.0.0.1", dst="10.0.0.2") / udp4()), 4),
    "ipv6_in_ipv4": (1, bytes(ETH / IP(src="10.0.0.1", dst="10.0.0.2") / udp6()), 6),
    "ipv4_in_ipv6": (1, bytes(ETH / IPv6(src="2001:db8::9", dst="2001:db8::8") / udp4()), 4),
    "gre_ipv4": (1, bytes(ETH / IP(src="10.0.0.1", dst="10.0.0.2") / GRE() / udp4()), 4),
    "gre_key_seq_csum": (
        1,
        bytes(
            ETH
            / IP(src="10.0.0.1", dst="10.0.0.2")
            / GRE(chksum_present=1, key_present=1, seqnum_present=1, key=5, sequence_number=9)
            / udp6()
        ),
        6,
    ),
    "gre_ethernet": (
        1,
        bytes(ETH / IP(src="10.0.0.1", dst="10.0.0.2") / GRE(proto=0x6558) / ETH / udp4()),
        4,
    ),
    "erspan_1": (
        1,
        bytes(
            ETH / IP(src="10.0.0.1", dst="10.0.0.2") / GRE(proto=0x88BE) / ERSPAN() / ETH / udp4()
        ),
        4,
    ),
    "erspan_2": (
        1,
        bytes(
            ETH
            / IP(src="10.0.0.1", dst="10.0.0.2")
            / GRE(seqnum_present=1, proto=0x88BE)
            / ERSPAN_II(session_id=3)
            / ETH
            / udp4()
        ),
        4,
    ),
    "erspan_3": (
        1,
        bytes(
            ETH
            / IP(src="10.0.0.1", dst="10.0.0.2")
            / GRE(seqnum_present=1, proto=0x22EB)
            / ERSPAN_III(session_id=3)
            / ETH
            / udp4()
        ),
        4,
    ),
    "erspan_3_platform": (
        1,
        bytes(
            ETH
            / IP(src="10.0.0.1", dst="10.0.0.2")
            / GRE(seqnum_present=1, proto=0x22EB)
            / ERSPAN_III(o=1)
            / ERSPAN_PlatformSpecific()
            / ETH
            / udp4()
        ),
        4,
    ),
    "gtp_u": (
        1,
        bytes(
            ETH
            / IP(src="10.0.0.1", dst="10.0.0.2")
            / UDP(sport=2152, dport=2152)
            / GTP_U_Header(teid=1, gtp_type=255)
            / udp6()
        ),
        6,
    ),
}


@pytest.mark.parametrize("name", sorted(FRAMES))
def test_decode_frame_reaches_sip_udp(name: str) -> None:
    link, frame, version = FRAMES[name]
    res = decode_frame(link, frame)
    assert isinstance(res, Packet), res
    assert (res.protocol, res.version, res.sport, res.dport) == (17, version, 5060, 5062)
    assert res.payload == SIP


def test_tcp_options_and_flags() -> None:
    opts = [("MSS", 1460), ("NOP", None)]
    tcp = TCP(sport=40000, dport=5060, seq=1000, ack=77, flags="PA", options=opts)
    pkt = ETH / IP(src="192.0.2.1", dst="192.0.2.2") / tcp / SIP
    res = decode_frame(1, bytes(pkt))
    assert isinstance(res, Packet)
    assert (res.protocol, res.seq, res.ack, res.flags, res.payload) == (6, 1000, 77, 0x18, SIP)


def test_sctp_payload_is_whole_sctp_packet() -> None:
    sctp = SCTP(sport=5060, dport=5060) / SCTPChunkData(data=SIP)
    res = decode_frame(1, bytes(ETH / IP(src="192.0.2.1", dst="192.0.2.2") / sctp))
    assert isinstance(res, Packet)
    assert (res.protocol, res.sport, res.payload) == (132, 5060, bytes(sctp))


@pytest.mark.parametrize("version", [4, 6])
def test_fragments(version: int) -> None:
    if version == 4:
        pkt = (
            ETH
            / IP(src="192.0.2.1", dst="192.0.2.2", id=99, flags="MF", frag=0, proto=17)
            / (b"x" * 16)
        )
    else:
        pkt = (
            ETH
            / IPv6(src="2001:db8::1", dst="2001:db8::2")
            / IPv6ExtHdrFragment(offset=2, m=1, id=99, nh=17)
            / (b"y" * 16)
        )
    res = decode_frame(1, bytes(pkt))
    assert isinstance(res, Fragment)
    assert (res.ident, res.protocol, res.more) == (99, 17, True)
    assert res.offset == (0 if version == 4 else 16)


@pytest.mark.parametrize(
    ("link", "frame", "reason"),
    [
        (1, bytes(ETH / ARP()), "not_ip"),
        (1, bytes(ETH / IP(src="1.1.1.1", dst="2.2.2.2") / ICMP()), "icmp"),
        (1, bytes(ETH / IP(src="1.1.1.1", dst="2.2.2.2", proto=89) / b"ospf"), "other_ip_protocol"),
        (147, b"\0" * 40, "unsupported_link_type_147"),
        (1, bytes(ETH)[:10], "truncated_headers"),
    ],
)
def test_skip_reasons(link: int, frame: bytes, reason: str) -> None:
    assert decode_frame(link, frame) == reason


@pytest.mark.parametrize("name", sorted(FRAMES))
def test_every_truncation_is_a_reason_or_a_value(name: str) -> None:
    link, frame, _ = FRAMES[name]
    for n in range(len(frame)):
        res = decode_frame(link, frame[:n])
        assert isinstance(res, (str, Packet, Fragment))


def write_pcap(path: Path, link: int, frames: list[bytes]) -> None:
    head = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, link)
    recs = b"".join(
        struct.pack("<IIII", 1_700_000_000 + i, 0, len(f), len(f)) + f for i, f in enumerate(frames)
    )
    path.write_bytes(head + recs)


@pytest.mark.parametrize("link", sorted({lt for lt, _, _ in FRAMES.values()}))
def test_vectorised_path_agrees_with_per_record_path(tmp_path: Path, link: int) -> None:
    frames = [f for lt, f, _ in FRAMES.values() if lt == link]
    frames += [f[: len(f) // 2] for f in frames]  # and cut copies
    path = tmp_path / "x.pcap"
    write_pcap(path, link, frames)
    with open_capture(str(path)) as cap:
        for ch in cap.chunks():
            dec = decode_chunk(ch)
            fast, slow = set(dec.udp.index.tolist()), set(dec.slow.tolist())
            assert not fast & slow  # every record in exactly one place
            assert len(fast) + len(slow) + sum(dec.skipped.values()) == len(ch)
            for i in slow:  # the slow path never sees what the fast path could have taken
                ref = decode_frame(link, ch.data(i))
                assert not (
                    isinstance(ref, Packet)
                    and ref.protocol == 17
                    and i < len(ch) // 2
                    and FRAMES_SIMPLE.get(ch.data(i))
                )
            u = dec.udp
            for k, i in enumerate(u.index.tolist()):
                ref = decode_frame(link, ch.data(i))
                assert isinstance(ref, Packet) and ref.protocol == 17
                off, size = int(u.payload[k]), int(u.length[k])
                assert ch.buf[off : off + size].tobytes() == ref.payload
                assert (int(u.sport[k]), int(u.dport[k])) == (ref.sport, ref.dport)


FRAMES_SIMPLE = {
    FRAMES[n][1]: True
    for n in (
        "ethernet_ipv4",
        "ethernet_ipv6",
        "vlan",
        "qinq_88a8",
        "sll",
        "sll2",
        "raw_101",
        "ipv4_228",
        "ipv6_229",
        "null_le_inet",
        "loop_108",
        "ipv4_options",
    )
}

TSHARK_LINKS = sorted({lt for lt, _, _ in FRAMES.values()} - {14})  # 14 is not RAW in tshark


@pytest.mark.parametrize("link", TSHARK_LINKS)
def test_tshark_finds_the_same_sip(tmp_path: Path, link: int) -> None:
    """tshark dissects every frame of a link type down to the same SIP over UDP."""
    if TSHARK is None:
        pytest.skip("tshark not installed")
    # Intended difference: AF_INET6 = 10 (Linux's value) in a DLT_NULL header is not
    # IPv6 to tshark (BSD systems write 24/28/30 there); we accept it.
    names = [n for n, (lt, _, _) in FRAMES.items() if lt == link and "inet6_10" not in n]
    path = tmp_path / "x.pcap"
    write_pcap(path, link, [FRAMES[n][1] for n in names])
    out = subprocess.run(
        [
            TSHARK,
            "-r",
            str(path),
            "-d",
            "udp.port==5062,sip",
            "-T",
            "fields",
            "-e",
            "frame.number",
            "-e",
            "sip.Method",
            "-e",
            "udp.srcport",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    rows = [line.split("\t") for line in out.splitlines()]
    assert [r[1] for r in rows] == ["OPTIONS"] * len(names), list(zip(names, rows, strict=True))
    ours = [decode_frame(link, FRAMES[n][1]) for n in names]
    assert all(isinstance(p, Packet) and p.payload == SIP for p in ours)
    assert np.all([r[2].split(",")[-1] == "5060" for r in rows])


@pytest.mark.parametrize("link", sorted({lt for lt, _, _ in FRAMES.values()}))
def test_mutated_frames_never_raise(tmp_path: Path, link: int) -> None:
    """Known frames with random bytes overwritten (seeded), through both paths."""
    import random

    rng = random.Random(link)
    base = [f for lt, f, _ in FRAMES.values() if lt == link]
    frames = []
    for _ in range(400):
        f = bytearray(rng.choice(base))
        for _ in range(rng.randint(1, 6)):
            pos = rng.randrange(len(f))
            f[pos] = rng.randrange(256)
        frames.append(bytes(f[: rng.randint(0, len(f))]) if rng.random() < 0.3 else bytes(f))
    for f in frames:
        assert isinstance(decode_frame(link, f), (str, Packet, Fragment))
    path = tmp_path / "m.pcap"
    write_pcap(path, link, frames)
    with open_capture(str(path)) as cap:
        for ch in cap.chunks():
            dec = decode_chunk(ch)
            assert len(dec.udp.index) + len(dec.slow) + sum(dec.skipped.values()) == len(ch)
            for k, i in enumerate(dec.udp.index.tolist()):  # fast path agrees with slow
                ref = decode_frame(link, ch.data(i))
                assert isinstance(ref, Packet) and ref.protocol == 17
                off, size = int(dec.udp.payload[k]), int(dec.udp.length[k])
                assert ch.buf[off : off + size].tobytes() == ref.payload
