"""HEP v1/v2/v3 decapsulation: round trips, every chunk type, every truncation, fuzz,
TCP framing, and HEP inside a pcap analysed like the capture it encapsulates."""

from __future__ import annotations

import random
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

from sipflow.api import Options, analyze
from sipflow.errors import ParseError
from sipflow.ingest.hep import (
    AF_INET6,
    Chunk,
    HepDecapsulator,
    HepProto,
    HepStream,
    decode_hep,
    encode_hep2,
    encode_hep3,
    hep_candidates,
    looks_like_hep,
)
from sipflow.ingest.live import LINKTYPE_ETHERNET, PcapWriter, hep_frame
from sipflow.ingest.types import Endpoint, Transport
from sipflow.trace import CALL_FIELDS, call_to_dict

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared"
PCAPS = SHARED / "corpus" / "pcaps"
INVITE = (
    b"INVITE sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1\r\n"
    b"From: <sip:alice@example.com>;tag=1\r\nTo: <sip:bob@example.com>\r\nCall-ID: c1\r\n"
    b"CSeq: 1 INVITE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
)
SRC4, DST4 = Endpoint("192.0.2.1", 5060), Endpoint("192.0.2.2", 5080)
SRC6, DST6 = Endpoint("2001:db8::1", 5060), Endpoint("2001:db8::2", 5062)
TS = 1_700_000_000_123_456_000
NS = 1_000_000_000


def _chunk(tid: int, value: bytes, vendor: int = 0) -> bytes:
    return struct.pack("!HHH", vendor, tid, 6 + len(value)) + value


# ------------------------------------------------------------------------ round trips


@pytest.mark.parametrize(("src", "dst"), [(SRC4, DST4), (SRC6, DST6)])
@pytest.mark.parametrize("ip_proto", [17, 6, 132])
@pytest.mark.parametrize("compress", [False, True])
def test_hep3_round_trip(src: Endpoint, dst: Endpoint, ip_proto: int, compress: bool) -> None:
    data = encode_hep3(src, dst, INVITE, TS, ip_proto=ip_proto, capture_id=7, compress=compress)
    pkt = decode_hep(data)
    assert (pkt.version, pkt.src, pkt.dst, pkt.ip_proto) == (3, src, dst, ip_proto)
    assert pkt.ts == TS and pkt.capture_id == 7 and pkt.payload == INVITE
    assert pkt.is_sip and pkt.trailing == 0
    assert pkt.family == (AF_INET6 if ":" in src.ip else 2)
    assert pkt.transport is {17: Transport.UDP, 6: Transport.TCP, 132: Transport.SCTP}[ip_proto]


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize(("src", "dst"), [(SRC4, DST4), (SRC6, DST6)])
def test_hep2_and_hep1_round_trip(version: int, src: Endpoint, dst: Endpoint) -> None:
    pkt = decode_hep(encode_hep2(src, dst, INVITE, TS, version=version))
    assert (pkt.version, pkt.src, pkt.dst, pkt.payload) == (version, src, dst, INVITE)
    assert pkt.ts == (TS if version == 2 else None)


def test_hep2_time_header_is_little_endian_as_agents_write_it() -> None:
    # Kamailio siptrace hep_version 2, bytes as captured on lo (a 2026 timestamp).
    raw = bytes.fromhex("0210021113ed13ee7f0000017f0000019f470c6bb7b4090001000000") + INVITE
    pkt = decode_hep(raw)
    assert pkt.ts == 0x6B0C479F * 10**9 + 0x0009B4B7 * 1000  # 1795966879 s, 636087 us
    assert pkt.src == Endpoint("127.0.0.1", 5101) and pkt.dst == Endpoint("127.0.0.1", 5102)
    assert pkt.capture_id == 1 and pkt.payload == INVITE


# Values for every generic chunk type of the HEP3 spec (sizes per the spec table).
ALL_CHUNKS: dict[Chunk, bytes] = {
    Chunk.IP_FAMILY: b"\x02",
    Chunk.IP_PROTO: b"\x11",
    Chunk.IPV4_SRC: bytes([192, 0, 2, 1]),
    Chunk.IPV4_DST: bytes([192, 0, 2, 2]),
    Chunk.IPV6_SRC: bytes(15) + b"\x01",
    Chunk.IPV6_DST: bytes(15) + b"\x02",
    Chunk.SRC_PORT: struct.pack("!H", 5060),
    Chunk.DST_PORT: struct.pack("!H", 5080),
    Chunk.TS_SEC: struct.pack("!I", 1_700_000_000),
    Chunk.TS_USEC: struct.pack("!I", 999_999),
    Chunk.PROTO_TYPE: b"\x01",
    Chunk.CAPTURE_ID: struct.pack("!I", 0xDEADBEEF),
    Chunk.KEEPALIVE: struct.pack("!H", 30),
    Chunk.AUTH_KEY: b"secret",
    Chunk.PAYLOAD: INVITE,
    Chunk.COMPRESSED_PAYLOAD: zlib.compress(b"ignored: plain payload wins"),
    Chunk.CORRELATION_ID: b"c1",
    Chunk.VLAN_ID: struct.pack("!H", 42),
    Chunk.GROUP_ID: b"grp",
    Chunk.SRC_MAC: struct.pack("!Q", 0x0200_0000_0001),
    Chunk.DST_MAC: struct.pack("!Q", 0x0200_0000_0002),
    Chunk.ETH_TYPE: struct.pack("!H", 0x0800),
    Chunk.TCP_FLAGS: b"\x18",
    Chunk.IP_TOS: b"\xb8",
    Chunk.MOS: struct.pack("!H", 410),
    Chunk.R_FACTOR: struct.pack("!H", 93),
    Chunk.GEO_LOCATION: b"52.5,13.4",
    Chunk.JITTER: struct.pack("!I", 12),
    Chunk.TRANSACTION_TYPE: b"call",
    Chunk.PAYLOAD_JSON_KEYS: b"{}",
    Chunk.TAGS_VALUES: b"a=b",
    Chunk.TAG_TYPE: b"t",
}


def _hep3(body: bytes) -> bytes:
    return b"HEP3" + struct.pack("!H", 6 + len(body)) + body


def _all_chunks_packet() -> bytes:
    body = b"".join(_chunk(t, v) for t, v in ALL_CHUNKS.items())
    return _hep3(body + _chunk(0x2A, b"vendor data", vendor=0x0003))


def test_every_chunk_type_is_decoded_and_kept() -> None:
    pkt = decode_hep(_all_chunks_packet())
    assert [t for t, _ in pkt.chunks] == list(ALL_CHUNKS)
    assert set(Chunk) == set(ALL_CHUNKS)
    assert pkt.chunk(Chunk.IPV6_SRC) == "::1" and pkt.chunk(Chunk.VLAN_ID) == 42
    assert pkt.chunk(Chunk.CAPTURE_ID) == 0xDEADBEEF and pkt.chunk(Chunk.AUTH_KEY) == b"secret"
    assert pkt.chunk(Chunk.SRC_MAC) == 0x0200_0000_0001 and pkt.chunk(Chunk.MOS) == 410
    assert pkt.vendor_chunks == ((3, 0x2A, b"vendor data"),)
    assert pkt.ts == 1_700_000_000_999_999_000 and pkt.payload == INVITE
    assert pkt.src == SRC4 and pkt.dst == DST4  # family 2 picks the IPv4 chunks


def test_unknown_proto_type_and_non_sip_are_counted_not_emitted() -> None:
    skipped: dict[str, int] = {}
    dec = HepDecapsulator(0, skipped, [])
    rtcp = encode_hep3(SRC4, DST4, b'{"type":200}', TS, proto_type=HepProto.RTCP_JSON)
    log = encode_hep3(SRC4, DST4, b"log line", TS, proto_type=HepProto.LOG)
    ping = encode_hep3(SRC4, DST4, b"\r\n\r\n", TS)
    assert [dec.datagram(p, 1, 0) for p in (rtcp, log, ping)] == [None, None, None]
    assert skipped == {"hep_non_sip": 2, "hep_keepalive": 1}


def test_decapsulated_datagram_keeps_inner_five_tuple_and_agent_time() -> None:
    dec = HepDecapsulator(3, {}, [])
    udp = dec.datagram(encode_hep3(SRC4, DST4, INVITE, TS), 9, 1)
    tcp = dec.datagram(encode_hep3(SRC6, DST6, INVITE, TS, ip_proto=6), 10, 1)
    assert udp is not None and tcp is not None
    assert (udp.src, udp.dst, udp.transport, udp.ts, udp.frames, udp.source) == (
        SRC4,
        DST4,
        Transport.UDP,
        TS,
        (9,),
        3,
    )
    assert tcp.transport is Transport.TCP and tcp.stream <= -2 and tcp.payload == INVITE


def test_idle_tcp_pairs_are_forgotten_and_numbers_never_reused() -> None:
    """20,000 short HEP-carried TCP exchanges, one new inner pair a second: the pseudo
    streams remembered are those used in the last 10 minutes, not every pair (was 20,000);
    a pair seen again keeps its number while in use, and a forgotten one gets a new one."""
    from sipflow.ingest.hep import STREAM_IDLE_NS

    dec = HepDecapsulator(0, {}, [])
    numbers = set()
    for i in range(20_000):
        src = Endpoint("192.0.2.1", 10_000 + i % 50_000)
        dg = dec.datagram(encode_hep3(src, DST4, INVITE, TS + i * NS, ip_proto=6), i + 1, 0)
        assert dg is not None
        numbers.add(dg.stream)
    assert len(numbers) == 20_000 and max(numbers) == -2
    assert dec.streams <= STREAM_IDLE_NS // NS + 1
    last = TS + 19_999 * NS
    again = [encode_hep3(SRC4, DST4, INVITE, last + k * NS, ip_proto=6) for k in range(2)]
    a, b = (dec.datagram(p, 1, 0) for p in again)
    assert a is not None and b is not None and a.stream == b.stream not in numbers
    late = encode_hep3(SRC4, DST4, INVITE, last + STREAM_IDLE_NS + 10 * NS, ip_proto=6)
    c = dec.datagram(late, 1, 0)
    assert c is not None and c.stream < a.stream


# ------------------------------------------------------------------------ malformed input


def _every_prefix(data: bytes) -> list[bytes]:
    return [data[:n] for n in range(len(data))]


@pytest.mark.parametrize("compress", [False, True])
def test_hep3_truncated_at_every_byte_is_a_parse_error_and_a_finding(compress: bool) -> None:
    data = encode_hep3(SRC6, DST6, INVITE, TS, compress=compress)
    findings: list[object] = []
    skipped: dict[str, int] = {}
    dec = HepDecapsulator(0, skipped, findings)  # type: ignore[arg-type]
    for cut in _every_prefix(data):
        with pytest.raises(ParseError):
            decode_hep(cut)
        assert dec.datagram(cut, 1, 0) is None
    assert skipped == {"hep_malformed": len(data)}
    assert len(findings) == len(data)
    assert all(f.code == "ingest.hep_malformed" for f in findings)  # type: ignore[attr-defined]


def test_all_chunks_packet_truncated_at_every_byte() -> None:
    for cut in _every_prefix(_all_chunks_packet()):
        with pytest.raises(ParseError):
            decode_hep(cut)


@pytest.mark.parametrize("version", [1, 2])
def test_hep2_truncated_headers_are_parse_errors(version: int) -> None:
    data = encode_hep2(SRC6, DST6, INVITE, TS, version=version)
    head = 40 + (12 if version == 2 else 0)
    for n in range(len(data)):
        if n < head:
            with pytest.raises(ParseError):
                decode_hep(data[:n])
        else:  # no length field in v1/v2: a shorter datagram is a shorter payload
            assert decode_hep(data[:n]).payload == INVITE[: n - head]


@pytest.mark.parametrize(
    ("data", "what"),
    [
        (b"HEP3\x00\x03", "hep3.length"),
        (_hep3(_chunk(1, b"\x02\x00")), "hep3.ip_family"),  # uint8 chunk with 2 bytes
        (_hep3(struct.pack("!HHH", 0, 1, 3)), "hep3.chunk"),  # chunk length under 6
        (_hep3(_chunk(1, b"\x07")), "hep3.ip_family"),  # family 7
        (_hep3(_chunk(1, b"\x02") + _chunk(2, b"\x11")), "hep3.ipv4_src"),
        (_hep3(_chunk(Chunk.COMPRESSED_PAYLOAD, b"not zlib")), "hep3.ip_family"),
        (b"\x03\x10\x02\x11" + bytes(20), "hep"),
        (b"\x02\x10\x07\x11" + bytes(20), "hep2.family"),
        (b"\x02\x28\x02\x11" + bytes(60), "hep2.header"),  # IPv4 with a 40-byte header
    ],
)
def test_malformed_packets_name_the_field(data: bytes, what: str) -> None:
    with pytest.raises(ParseError) as exc:
        decode_hep(data)
    assert exc.value.what == what


def _with_payload_chunk(tid: int, value: bytes) -> bytes:
    base = encode_hep3(SRC4, DST4, b"x", TS)
    body = base[6 : base.rfind(_chunk(Chunk.PAYLOAD, b"x"))]
    return _hep3(body + _chunk(tid, value))


def test_compressed_payload_checks() -> None:
    ok = _with_payload_chunk(Chunk.COMPRESSED_PAYLOAD, zlib.compress(INVITE))
    assert decode_hep(ok).payload == INVITE
    for bad, why in [
        (b"not zlib", "does not inflate"),
        (zlib.compress(INVITE)[:-6], "truncated"),
        (zlib.compress(bytes(2 << 20)), "inflates past"),
    ]:
        with pytest.raises(ParseError, match=why):
            decode_hep(_with_payload_chunk(Chunk.COMPRESSED_PAYLOAD, bad))
    with pytest.raises(ParseError, match="no payload chunk"):
        decode_hep(_with_payload_chunk(Chunk.GROUP_ID, b"g"))


def test_fuzzed_packets_raise_only_parse_error() -> None:
    rng = random.Random(9060)
    seeds = [
        encode_hep3(SRC4, DST4, INVITE, TS),
        encode_hep3(SRC6, DST6, INVITE, TS, compress=True),
        _all_chunks_packet(),
        encode_hep2(SRC4, DST4, INVITE, TS),
    ]
    outcomes = {"decoded": 0, "parse_error": 0}
    for _ in range(3000):
        data = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 6)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        try:
            decode_hep(bytes(data))
            outcomes["decoded"] += 1
        except ParseError:
            outcomes["parse_error"] += 1
    assert outcomes["decoded"] > 100 and outcomes["parse_error"] > 100  # both paths exercised


# ------------------------------------------------------------------------ detection, TCP


def test_vectorised_candidates_agree_with_looks_like_hep() -> None:
    payloads = [
        encode_hep3(SRC4, DST4, INVITE, TS),
        encode_hep2(SRC4, DST4, INVITE, TS),
        encode_hep2(SRC6, DST6, INVITE, TS, version=1),
        b"\x80\x00\x01\x02" + bytes(160),  # RTP
        b"\x00\x01\x00\x00\x21\x12\xa4\x42" + bytes(12),  # STUN
        b"HEP2xxxxxx",
        b"HEP3",  # too short to be a packet
        INVITE,
    ]
    buf = np.frombuffer(b"".join(payloads) + bytes(8), np.uint8)
    sizes = np.array([len(p) for p in payloads], np.int64)
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    got = hep_candidates(buf, offsets, sizes).tolist()
    assert got == [looks_like_hep(p) and len(p) >= 6 for p in payloads]
    assert got == [True, True, True, False, False, False, False, False]


def test_hep_stream_byte_at_a_time_and_resync() -> None:
    packets = [encode_hep3(SRC4, DST4, INVITE + bytes([i]), TS + i) for i in range(3)]
    wire = packets[0] + b"garbage!" + packets[1] + packets[2]
    stream = HepStream()
    out = [p for b in wire for p in stream.feed(bytes([b]))]
    assert out == packets and stream.skipped_bytes == len(b"garbage!") and stream.pending == 0
    whole = HepStream()
    assert whole.feed(wire) == packets


# ------------------------------------------------------------------------ HEP in a pcap


def _calls(path: Path) -> list[dict[str, object]]:
    trace = analyze([path], Options(keep_messages=False, keep_records=False))
    return [{k: call_to_dict(c)[k] for k in CALL_FIELDS} for c in trace.call_records]


@pytest.mark.parametrize(
    "name", ["goffinet__SIP-Call-with-Proxy-Server.pcap", "heplify__sip_ipv4_tcp.pcap"]
)
@pytest.mark.parametrize("version", [2, 3])
def test_hep_in_pcap_gives_the_calls_of_the_capture(
    name: str, version: int, tmp_path: Path
) -> None:
    """Every SIP message of a corpus capture sent as HEP to a collector and captured: the
    pcap of HEP packets is analysed into the same calls, with the inner addresses."""
    path = PCAPS / name
    if not path.exists():
        pytest.skip(f"{path} absent (../shared not on this machine)")
    trace = analyze([path], Options(keep_messages=True, keep_records=False))
    out = tmp_path / "hep.pcap"
    w = PcapWriter(str(out), LINKTYPE_ETHERNET)
    agent, collector = Endpoint("198.51.100.7", 40000), Endpoint("198.51.100.9", 9060)
    for msg in trace.message_list:
        o = msg.origin
        assert o is not None and o.src is not None and o.dst is not None
        proto = 6 if o.transport is Transport.TCP else 17
        if version == 3:
            hep = encode_hep3(o.src, o.dst, msg.raw, msg.ts, ip_proto=proto)
        else:
            hep = encode_hep2(o.src, o.dst, msg.raw, msg.ts, ip_proto=proto)
        w.write(msg.ts, hep_frame(LINKTYPE_ETHERNET, agent, collector, hep))
    w.close()
    calls = _calls(out)
    assert calls == _calls(path) and calls
    again = analyze([out], Options(keep_messages=True, keep_records=False))
    assert again.sip_messages == len(trace.message_list)
    assert {m.origin.src for m in again.message_list if m.origin} == {
        m.origin.src for m in trace.message_list if m.origin
    }
    assert again.sources[0].skipped.get("non_sip_udp", 0) == 0
