"""WebSocket (RFC 6455) decoding under TCP reassembly, SIP over WS (RFC 7118)."""

from __future__ import annotations

import os
import zlib

import pytest

from sipflow.ingest.reassembly import TcpReassembler, seq_add
from sipflow.ingest.types import TCP_ACK, TCP_SYN, Datagram, Endpoint, TcpSegment, Transport
from sipflow.ingest.websocket import UpgradeSniffer, WsDecoder, unmask

C = Endpoint("192.0.2.1", 40000)
S = Endpoint("192.0.2.2", 8080)
REQ = (
    b"GET /ws HTTP/1.1\r\nHost: 192.0.2.2:8080\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: sip\r\n"
    b"Sec-WebSocket-Version: 13\r\n\r\n"
)
RESP = (
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nSec-WebSocket-Protocol: sip\r\n\r\n"
)
VIA = b"Via: SIP/2.0/WS df7jal23ls0d.invalid;branch=z9hG4bK1\r\nContent-Length: 0\r\n\r\n"
REGISTER = b"REGISTER sip:example.com SIP/2.0\r\n" + VIA
OK = b"SIP/2.0 200 OK\r\n" + VIA


def frame(
    payload: bytes, opcode: int = 1, fin: bool = True, mask: bytes | None = None, rsv1: bool = False
) -> bytes:
    """An RFC 6455 §5.2 frame, written independently of the decoder."""
    head = bytes([(0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode])
    n = len(payload)
    mbit = 0x80 if mask is not None else 0
    if n < 126:
        head += bytes([mbit | n])
    elif n < 65536:
        head += bytes([mbit | 126]) + n.to_bytes(2, "big")
    else:
        head += bytes([mbit | 127]) + n.to_bytes(8, "big")
    if mask is None:
        return head + payload
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def test_unmask_is_its_own_inverse() -> None:
    key = b"\x37\xfa\x21\x3d"
    data = os.urandom(1001)
    assert unmask(unmask(data, key), key) == data
    assert unmask(b"Hello", key) == bytes.fromhex("7f9f4d5158")  # RFC 6455 §5.7 example


def decode(stream: bytes, chunk: int = 0) -> tuple[list[bytes], WsDecoder]:
    dec = WsDecoder()
    out = []
    step = chunk or len(stream)
    for i in range(0, len(stream), step):
        out += [p.payload for p in dec.feed(stream[i : i + step], (i + 1,), i)]
    return out, dec


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536, 70000])
@pytest.mark.parametrize("mask", [None, b"\x01\x02\x03\x04"])
def test_lengths_7_16_64_bits(size: int, mask: bytes | None) -> None:
    payload = (REGISTER * (size // len(REGISTER) + 1))[:size]
    msgs, dec = decode(frame(payload, 2, mask=mask) + frame(OK, mask=mask))
    assert msgs == [payload, OK] and dec.problems == []


def test_fragmented_message_with_interleaved_ping_byte_at_a_time() -> None:
    m = b"\xaa\xbb\xcc\xdd"
    stream = (
        frame(REGISTER[:10], 1, fin=False, mask=m)
        + frame(b"hb", 9, mask=m)  # RFC 6455 §5.4: control frames may be injected
        + frame(REGISTER[10:50], 0, fin=False, mask=m)
        + frame(REGISTER[50:], 0, mask=m)
        + frame(b"", 10)
        + frame(OK)
    )
    msgs, dec = decode(stream, chunk=1)
    assert msgs == [REGISTER, OK]
    assert dec.control_frames == 2 and dec.problems == []
    msgs, _ = decode(stream)  # and all of it in one segment
    assert msgs == [REGISTER, OK]


def test_message_frames_are_the_frames_that_carried_it() -> None:
    dec = WsDecoder()
    wire = frame(REGISTER, mask=b"abcd")
    half = len(wire) // 2
    assert dec.feed(wire[:half], (7,), 70) == []
    (p,) = dec.feed(wire[half:] + frame(OK)[:3], (8,), 80)
    assert (p.payload, p.frames, p.ts, p.transport) == (REGISTER, (7, 8), 80, Transport.WS)


def test_permessage_deflate() -> None:
    comp = zlib.compressobj(wbits=-15)
    wire = b""
    for msg in (REGISTER, OK, REGISTER):  # context takeover across messages
        data = comp.compress(msg) + comp.flush(zlib.Z_SYNC_FLUSH)
        assert data.endswith(b"\x00\x00\xff\xff")
        wire += frame(data[:-4], rsv1=True)
    msgs, dec = decode(wire)
    assert msgs == [REGISTER, OK, REGISTER] and dec.problems == []


def test_bad_frames_are_reported_and_skipped() -> None:
    wire = frame(b"x", 3) + frame(b"lost", 0) + frame(b"y" * 200, 9) + frame(OK)
    msgs, dec = decode(wire)
    assert msgs == [OK]
    texts = [t for _, t in dec.problems]
    assert any("reserved WebSocket opcode" in t for t in texts)
    assert any("continuation frame without a message" in t for t in texts)
    assert any("control frame" in t for t in texts)


def test_oversized_frame_is_skipped_by_length() -> None:
    dec = WsDecoder(max_message=1000)
    wire = frame(b"z" * 5000, 2) + frame(OK)
    out = []
    for i in range(0, len(wire), 700):
        out += [p.payload for p in dec.feed(wire[i : i + 700], (i,), 0)]
    assert out == [OK] and dec.skipped_bytes == 5000


def test_trailing_partial_message_reported_on_flush() -> None:
    dec = WsDecoder()
    dec.feed(frame(REGISTER)[:20], (3,), 0)
    dec.flush()
    assert dec.problems and "stream ended" in dec.problems[0][1]


def test_sniffer_passes_plain_sip_and_http_through() -> None:
    sn = UpgradeSniffer()
    pieces = sn.feed(b"GE", 1, 1) + sn.feed(b"T / HTTP/1.1\r\nHost: x\r\n\r\n", 2, 2)
    assert [p.transport for p in pieces] == [Transport.TCP, Transport.TCP] and not sn.websocket
    sn = UpgradeSniffer()
    assert [p.payload for p in sn.feed(REGISTER, 1, 1)] == [REGISTER]


class Side:
    def __init__(self, isn: int, src: Endpoint, dst: Endpoint, frames: list[int]) -> None:
        self.seq, self.src, self.dst, self.frames = isn, src, dst, frames

    def syn(self, flags: int = TCP_SYN) -> TcpSegment:
        self.frames[0] += 1
        seg = TcpSegment(
            0, self.frames[0], self.frames[0], self.src, self.dst, self.seq, 0, flags, b""
        )
        self.seq = seq_add(self.seq, 1)
        return seg

    def send(self, data: bytes) -> TcpSegment:
        self.frames[0] += 1
        seg = TcpSegment(
            0, self.frames[0], self.frames[0], self.src, self.dst, self.seq, 0, TCP_ACK, data
        )
        self.seq = seq_add(self.seq, len(data))
        return seg


def test_sip_over_websocket_through_tcp_reassembly() -> None:
    n = [0]
    c, s = Side(0xFFFFFFF0, C, S, n), Side(5, S, C, n)
    mask = b"\x11\x22\x33\x44"
    client_wire = frame(REGISTER, mask=mask) + frame(REGISTER[:30], fin=False, mask=mask)
    segs = [c.syn(), s.syn(TCP_SYN | TCP_ACK), c.send(REQ[:20]), c.send(REQ[20:] + client_wire[:5])]
    segs += [
        s.send(RESP + frame(OK)),
        c.send(client_wire[5:]),
        c.send(frame(REGISTER[30:], 0, mask=mask)),
    ]
    r = TcpReassembler()
    out: list[Datagram] = []
    for seg in segs:
        out += r.feed(seg)
    out += r.flush()
    assert [(d.transport, d.payload, d.src) for d in out] == [
        (Transport.WS, OK, S),
        (Transport.WS, REGISTER, C),
        (Transport.WS, REGISTER, C),
    ]
    assert out[1].frames == (4, 6)  # frame 4 carried the handshake tail and 5 bytes of this message
    assert out[2].frames == (6, 7)
    assert r.handshake_bytes == len(REQ) + len(RESP) and r.findings == []


def test_gap_in_websocket_mode_is_reported() -> None:
    n = [0]
    c = Side(100, C, S, n)
    r = TcpReassembler()
    out = r.feed(c.syn()) + r.feed(c.send(REQ)) + r.feed(c.send(frame(REGISTER, mask=b"abcd")))
    c.seq = seq_add(c.seq, 50)  # 50 bytes never captured
    out += r.feed(c.send(frame(OK, mask=b"abcd")))
    out += r.flush()
    assert [d.payload for d in out] == [REGISTER]
    codes = sorted(f.code for f in r.findings)
    assert codes == ["ingest.tcp_gap", "ingest.websocket"]
