"""WebSocket (RFC 6455) under SIP (RFC 7118): the HTTP upgrade and the frames after it.

How this works: TCP reassembly hands each direction's in-order bytes to an
:class:`UpgradeSniffer`. It looks at the first bytes of the stream: an HTTP request
``GET ... Upgrade: websocket`` or an ``HTTP/1.1 101`` answer switches the direction to
WebSocket after the header block (the handshake bytes are counted, not emitted; RFC 6455
§4.1: a client sends no frame before the 101, so the request side switches on its own).
Anything else passes through unchanged as TCP bytes for SIP framing.

In WebSocket mode a :class:`WsDecoder` parses frames (RFC 6455 §5.2): FIN/continuation
fragmentation, client masking, 7/16/64-bit lengths, and RFC 7692 permessage-deflate
(RSV1). Each complete text or binary message becomes one piece (RFC 7118 §5: one SIP
message per WebSocket message). Control frames (ping, pong, close) are skipped and
counted. After a TCP gap the frame boundaries are lost: the rest of that direction is
skipped and counted. Sans-IO: bytes and times in, pieces out.

The same sniffer runs twice: on TCP stream bytes (:mod:`sipflow.ingest.reassembly`, WS)
and on decrypted TLS application data (:mod:`sipflow.ingest.tls`, WSS), where one TLS
record may span several frames (:meth:`UpgradeSniffer.feed_frames`).
"""

from __future__ import annotations

import enum
import re
import zlib
from dataclasses import dataclass

from sipflow.ingest.types import Transport
from sipflow.sip.framing import ByteFrames

MAX_MESSAGE = 1 << 20  # larger WebSocket messages are skipped (SIP messages are far smaller)
MAX_HANDSHAKE = 16 * 1024  # an HTTP header block longer than this is not a handshake
_HTTP_STARTS = (b"GET ", b"HTTP/1.")
_UPGRADE_WS = re.compile(rb"^upgrade[ \t]*:[ \t]*websocket[ \t]*\r?$", re.I | re.M)
_STATUS_101 = re.compile(rb"HTTP/1\.[01] 101\b")


class Opcode(enum.IntEnum):
    """RFC 6455 §5.2 / §11.8 frame opcodes."""

    CONTINUATION = 0x0
    TEXT = 0x1
    BINARY = 0x2
    CLOSE = 0x8
    PING = 0x9
    PONG = 0xA


_DATA_OPCODES = frozenset({Opcode.TEXT, Opcode.BINARY})
_CONTROL_OPCODES = frozenset({Opcode.CLOSE, Opcode.PING, Opcode.PONG})


@dataclass(frozen=True, slots=True)
class Piece:
    """Bytes for the layer above: a TCP run or a whole WebSocket message.

    ``frames``: frames that carried the bytes; ``ts``: time (ns) of the last of them;
    ``gap``: bytes were lost before this piece (TCP only).
    """

    transport: Transport
    payload: bytes
    frames: tuple[int, ...]
    ts: int
    gap: bool = False


def unmask(payload: bytes, key: bytes) -> bytes:
    """RFC 6455 §5.3: XOR the payload with the 4-byte masking key, repeated."""
    n = len(payload)
    if n == 0:
        return payload
    mask = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(mask, "big")).to_bytes(n, "big")


class WsDecoder:
    """RFC 6455 §5 frames of one direction in, whole data messages out.

    Counters: ``messages``, ``control_frames`` (ping/pong/close skipped), ``skipped_bytes``
    (bytes of frames or messages dropped); ``problems`` holds (frames, text).
    """

    def __init__(self, max_message: int = MAX_MESSAGE) -> None:
        self.max_message = max_message
        self.messages = 0
        self.control_frames = 0
        self.skipped_bytes = 0
        self.problems: list[tuple[tuple[int, ...], str]] = []
        self._buf = bytearray()
        self._map = ByteFrames()
        self._parts: list[bytes] = []
        self._part_frames: list[int] = []
        self._compressed = False
        self._inflate: zlib._Decompress | None = None
        self._discard = 0  # bytes of an oversized frame still to drop
        self._broken = False  # frame boundaries lost: drop everything

    def feed(self, data: bytes, frames: tuple[int, ...], ts: int) -> list[Piece]:
        out: list[Piece] = []
        if self._broken:
            self.skipped_bytes += len(data)
            return out
        if self._discard:
            drop = min(self._discard, len(data))
            self._discard -= drop
            self.skipped_bytes += drop
            data = data[drop:]
        if data:
            self._buf += data
            self._map.add(len(data), frames, ts)
        while self._frame(out):
            pass
        return out

    def lose_sync(self, frames: tuple[int, ...], why: str) -> None:
        """Frame boundaries are lost (a TCP gap): skip the rest of this direction."""
        if not self._broken:
            self.problems.append((frames, f"WebSocket frames lost sync: {why}; rest skipped"))
        self.skipped_bytes += len(self._buf) + sum(map(len, self._parts))
        self._broken = True
        self._buf.clear()
        self._map.take(len(self._map))
        self._parts.clear()

    def flush(self) -> None:
        """End of stream: a partial frame or message is counted and reported."""
        pending = len(self._buf) + sum(map(len, self._parts))
        if pending and not self._broken:
            frames = tuple(sorted(set(self._part_frames) | set(self._map.first_frames())))
            self.problems.append(
                (frames, f"stream ended inside a WebSocket message ({pending} bytes)")
            )
            self.skipped_bytes += pending
        self._buf.clear()
        self._map.take(len(self._map))
        self._parts.clear()

    def _frame(self, out: list[Piece]) -> bool:
        """Decode one frame from the buffer; False when more bytes are needed."""
        buf = self._buf
        if len(buf) < 2:
            return False
        b0, b1 = buf[0], buf[1]
        length = b1 & 0x7F
        pos = 2
        if length == 126:  # RFC 6455 §5.2: 16-bit extended payload length
            if len(buf) < 4:
                return False
            length, pos = int.from_bytes(buf[2:4], "big"), 4
        elif length == 127:  # 64-bit extended payload length, most significant bit 0
            if len(buf) < 10:
                return False
            length, pos = int.from_bytes(buf[2:10], "big"), 10
            if length >> 63:
                self.lose_sync(self._map.first_frames(), "64-bit length with the top bit set")
                return False
        key = b""
        if b1 & 0x80:
            if len(buf) < pos + 4:
                return False
            key, pos = bytes(buf[pos : pos + 4]), pos + 4
        if length > self.max_message:
            self._drop_oversized(pos, length)
            return bool(self._buf)
        if len(buf) < pos + length:
            return False
        payload = bytes(buf[pos : pos + length])
        frames, ts = self._map.take(pos + length)
        del buf[: pos + length]
        self._handle(out, b0, unmask(payload, key) if key else payload, frames, ts)
        return True

    def _drop_oversized(self, head: int, length: int) -> None:
        frames = self._map.first_frames()
        self.problems.append((frames, f"WebSocket frame of {length} bytes skipped (too large)"))
        have = min(len(self._buf), head + length)
        self._map.take(have)
        del self._buf[:have]
        self._discard = head + length - have
        self.skipped_bytes += have - head  # the rest is counted as it is discarded

    def _handle(
        self, out: list[Piece], b0: int, payload: bytes, frames: tuple[int, ...], ts: int
    ) -> None:
        fin, rsv, opcode = b0 & 0x80, b0 & 0x70, b0 & 0x0F
        if opcode in _CONTROL_OPCODES:
            # RFC 6455 §5.5: control frames are not fragmented and carry at most 125 bytes.
            self.control_frames += 1
            if not fin or len(payload) > 125:
                self.problems.append((frames, "fragmented or oversized WebSocket control frame"))
            return
        if opcode not in _DATA_OPCODES and opcode != Opcode.CONTINUATION:
            self._reject(frames, len(payload), f"reserved WebSocket opcode {opcode:#x}")
            return
        if rsv & 0x30:  # RSV2/RSV3: no extension we know defines them
            self._reject(frames, len(payload), "WebSocket frame with RSV2/RSV3 set")
            return
        if opcode != Opcode.CONTINUATION:
            if self._parts:  # RFC 6455 §5.4: a new message before the previous one ended
                self._reject(
                    self._frames(()), sum(map(len, self._parts)), "unfinished WebSocket message"
                )
                self._parts.clear()
            self._compressed = bool(rsv & 0x40)  # RFC 7692 §6: RSV1 on the first frame
            self._part_frames = []
        elif not self._parts and not self._part_frames:
            self._reject(frames, len(payload), "WebSocket continuation frame without a message")
            return
        self._parts.append(payload)
        self._part_frames.extend(frames)
        if fin:
            self._finish(out, ts)

    def _finish(self, out: list[Piece], ts: int) -> None:
        data = b"".join(self._parts)
        frames = self._frames(())
        self._parts.clear()
        self._part_frames = []
        if self._compressed:
            inflated = self._decompress(data, frames)
            if inflated is None:
                return
            data = inflated
        self.messages += 1
        out.append(Piece(Transport.WS, data, frames, ts))

    def _decompress(self, data: bytes, frames: tuple[int, ...]) -> bytes | None:
        # RFC 7692 §7.2.2: append 00 00 ff ff and inflate; the window is kept across
        # messages (context takeover), which also decodes "no_context_takeover" streams.
        if self._inflate is None:
            self._inflate = zlib.decompressobj(-15)
        try:
            return self._inflate.decompress(data + b"\x00\x00\xff\xff", self.max_message)
        except zlib.error as exc:
            self._reject(frames, len(data), f"permessage-deflate data does not inflate: {exc}")
            return None

    def _frames(self, extra: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(sorted(set(self._part_frames) | set(extra)))

    def _reject(self, frames: tuple[int, ...], n: int, why: str) -> None:
        self.skipped_bytes += n
        self.problems.append((frames, why))


class _Mode(enum.Enum):
    PROBE = "probe"  # fewer bytes than needed to tell HTTP from anything else
    HTTP = "http"  # collecting an HTTP header block
    WS = "ws"  # WebSocket frames
    PLAIN = "plain"  # pass-through TCP bytes


class UpgradeSniffer:
    """One TCP direction: pass bytes through, or switch to WebSocket after an upgrade.

    ``handshake_bytes`` counts the HTTP header bytes consumed (not SIP, not emitted);
    ``problems`` holds (frames, text); ``decoder`` is the WebSocket decoder once switched.
    """

    def __init__(self) -> None:
        self.mode = _Mode.PROBE
        self.handshake_bytes = 0
        self.problems: list[tuple[tuple[int, ...], str]] = []
        self.decoder: WsDecoder | None = None
        self._held: list[tuple[bytes, tuple[int, ...], int, bool]] = []  # (bytes, frames, ts, gap)
        self._held_len = 0

    @property
    def websocket(self) -> bool:
        return self.mode is _Mode.WS

    @property
    def plain(self) -> bool:
        """True once the direction is known not to be WebSocket: bytes pass unchanged."""
        return self.mode is _Mode.PLAIN

    def feed(self, data: bytes, frame: int, ts: int, gap: bool = False) -> list[Piece]:
        """The next in-order bytes of the direction, carried by one frame."""
        return self.feed_frames(data, (frame,), ts, gap)

    def feed_frames(
        self, data: bytes, frames: tuple[int, ...], ts: int, gap: bool = False
    ) -> list[Piece]:
        """The next in-order bytes, carried by ``frames`` (a TLS record spans several)."""
        if self.mode is _Mode.PLAIN:
            return [Piece(Transport.TCP, data, frames, ts, gap)]
        if self.mode is _Mode.WS:
            assert self.decoder is not None
            if gap:
                self.decoder.lose_sync(frames, "bytes missing from the capture (TCP gap)")
            return self.decoder.feed(data, frames, ts)
        self._held.append((data, frames, ts, gap))
        self._held_len += len(data)
        return self._decide()

    def take_problems(self) -> list[tuple[tuple[int, ...], str]]:
        """Problems of the handshake and the frames found since the last call (then cleared)."""
        problems = self.problems
        if self.decoder is not None and self.decoder.problems:
            problems = problems + self.decoder.problems
            self.decoder.problems.clear()
        self.problems = []
        return problems

    def flush(self) -> list[Piece]:
        """End of stream: held bytes that never formed a handshake go out as TCP."""
        if self.decoder is not None:
            self.decoder.flush()
        if self.mode in (_Mode.PROBE, _Mode.HTTP):
            return self._release()
        return []

    def _decide(self) -> list[Piece]:
        head = b"".join(d for d, _, _, _ in self._held)
        if self.mode is _Mode.PROBE:
            if any(p.startswith(head) for p in _HTTP_STARTS if len(head) < len(p)):
                return []  # still a prefix of "GET " / "HTTP/1."
            if not head.startswith(_HTTP_STARTS):
                return self._release()
            self.mode = _Mode.HTTP
        end = head.find(b"\r\n\r\n")
        if end < 0:
            return self._release() if len(head) > MAX_HANDSHAKE else []
        return self._upgrade(head, end + 4)

    def _upgrade(self, head: bytes, end: int) -> list[Piece]:
        block = head[:end]
        is_ws = bool(_UPGRADE_WS.search(block)) and (
            block.startswith(b"GET ") or bool(_STATUS_101.match(block))
        )
        if not is_ws:
            return self._release()
        self.handshake_bytes += end
        self.mode = _Mode.WS
        self.decoder = WsDecoder()
        out: list[Piece] = []
        pos = 0
        for data, frames, ts, _gap in self._held:  # the bytes after the header block
            start = max(end - pos, 0)
            pos += len(data)
            if start < len(data):
                out += self.decoder.feed(data[start:], frames, ts)
        self._held, self._held_len = [], 0
        return out

    def _release(self) -> list[Piece]:
        self.mode = _Mode.PLAIN
        out = [Piece(Transport.TCP, d, f, t, g) for d, f, t, g in self._held]
        self._held, self._held_len = [], 0
        return out
