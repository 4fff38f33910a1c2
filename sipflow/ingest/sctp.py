"""SCTP packets (RFC 9260) to SIP payloads (RFC 4168: SIP over SCTP).

How this works: an SCTP packet is a 12-byte common header (ports, verification tag,
CRC32c) and a list of chunks, each type/flags/length/value, padded to 4 bytes
(RFC 9260 §3, §3.2). Every DATA chunk (type 0, §3.3.1) and I-DATA chunk (type 64,
RFC 8260 §2.1) carrying a whole user message (B and E flags set) becomes one
``Transport.SCTP`` datagram. Fragments of a user message (B, middle, E) are put back
together per stream: DATA fragments by consecutive TSN, I-DATA fragments by Message
Identifier and Fragment Sequence Number. A DATA chunk whose TSN was already seen in that
direction is an SCTP retransmission and is dropped (counted). Other chunks (INIT, SACK,
HEARTBEAT, ...) are skipped and counted by type. Bad lengths become an
``ingest.sctp_malformed`` finding; the rest of that packet is skipped. The checksum is
not verified: loopback and offloading captures often carry none.

Fragment reassembly and retransmission detection need state across packets, so use one
:class:`SctpReassembler` per source; the module-level :func:`data_chunks` handles a
single packet (fragments left over are reported as incomplete).
"""

from __future__ import annotations

import enum
from collections import Counter, deque
from dataclasses import dataclass, field

from sipflow.findings import Finding, Ref, Severity
from sipflow.ingest.types import Datagram, Endpoint, Transport

COMMON_HEADER = 12
MAX_HELD = 1 << 20  # bytes of fragments held per association direction
TSN_MEMORY = 4096  # TSNs remembered per direction to spot retransmissions


class ChunkType(enum.IntEnum):
    """RFC 9260 §3.2 chunk types (and RFC 8260 I-DATA) that matter here."""

    DATA = 0
    INIT = 1
    INIT_ACK = 2
    SACK = 3
    HEARTBEAT = 4
    HEARTBEAT_ACK = 5
    ABORT = 6
    SHUTDOWN = 7
    SHUTDOWN_ACK = 8
    ERROR = 9
    COOKIE_ECHO = 10
    COOKIE_ACK = 11
    SHUTDOWN_COMPLETE = 14
    I_DATA = 64


# RFC 9260 §3.3.1 / RFC 8260 §2.1 DATA and I-DATA flags
FLAG_E = 0x01  # ending fragment
FLAG_B = 0x02  # beginning fragment
FLAG_U = 0x04  # unordered
DATA_HEADER = 16  # type, flags, length, TSN, stream id, SSN, PPID
I_DATA_HEADER = 20  # type, flags, length, TSN, stream id, reserved, MID, PPID/FSN


@dataclass(frozen=True, slots=True)
class UserChunk:
    """One DATA or I-DATA chunk: ``seq`` is the TSN (DATA) or FSN (I-DATA) used to order
    fragments; ``mid`` is the I-DATA Message Identifier (-1 for DATA)."""

    tsn: int
    stream: int
    flags: int
    seq: int
    mid: int
    data: bytes


_AssocKey = tuple[int, str, int, str, int]  # source, src ip, src port, dst ip, dst port


@dataclass(slots=True)
class _Direction:
    tsns: set[int] = field(default_factory=set)
    order: deque[int] = field(default_factory=deque)
    # (stream, unordered, mid) -> seq -> (flags, data, frame)
    held: dict[tuple[int, bool, int], dict[int, tuple[int, bytes, int]]] = field(
        default_factory=dict
    )
    held_bytes: int = 0


class SctpReassembler:
    """SCTP packets of one source in, SIP payload datagrams out (state across packets).

    Counters: ``skipped_chunks`` by chunk type name, ``retransmitted`` DATA chunks dropped.
    """

    def __init__(self) -> None:
        self.skipped_chunks: Counter[str] = Counter()
        self.retransmitted = 0
        self._dirs: dict[_AssocKey, _Direction] = {}

    def data_chunks(
        self, source: int, frame: int, ts: int, src: Endpoint, dst: Endpoint, payload: bytes
    ) -> tuple[list[Datagram], list[Finding]]:
        findings: list[Finding] = []
        ref = (Ref(source, frame),)
        if len(payload) < COMMON_HEADER:
            findings.append(
                _malformed(f"SCTP packet of {len(payload)} bytes, shorter than its header", ref)
            )
            return [], findings
        sport = int.from_bytes(payload[0:2], "big")
        dport = int.from_bytes(payload[2:4], "big")
        src, dst = Endpoint(src.ip, sport), Endpoint(dst.ip, dport)
        d = self._dirs.setdefault((source, src.ip, sport, dst.ip, dport), _Direction())
        out: list[Datagram] = []
        for chunk in _user_chunks(payload, ref, findings, self.skipped_chunks):
            if not self._new_tsn(d, chunk.tsn):
                continue
            data = self._assemble(d, chunk, frame, ref, findings)
            if data is not None:
                msg, frames = data
                out.append(Datagram(src, dst, Transport.SCTP, msg, frames, ts, source))
        return out, findings

    def flush(self) -> list[Finding]:
        """End of input: fragments of user messages never completed."""
        findings: list[Finding] = []
        for (source, sip, sport, dip, dport), d in self._dirs.items():
            for (stream, _, _), parts in d.held.items():
                frames = tuple(Ref(source, f) for f in sorted({p[2] for p in parts.values()}))
                text = (
                    f"SCTP user message on stream {stream} {sip}:{sport} -> {dip}:{dport} "
                    f"never completed: {len(parts)} fragments held"
                )
                findings.append(
                    Finding(
                        "ingest.sctp_incomplete", Severity.WARNING, text, "RFC 9260 §6.9", frames
                    )
                )
        self._dirs.clear()
        return findings

    def _new_tsn(self, d: _Direction, tsn: int) -> bool:
        """RFC 9260 §6.2: a TSN received twice is a duplicate; remember the last few."""
        if tsn in d.tsns:
            self.retransmitted += 1
            return False
        d.tsns.add(tsn)
        d.order.append(tsn)
        if len(d.order) > TSN_MEMORY:
            d.tsns.discard(d.order.popleft())
        return True

    def _assemble(
        self, d: _Direction, c: UserChunk, frame: int, ref: tuple[Ref, ...], findings: list[Finding]
    ) -> tuple[bytes, tuple[int, ...]] | None:
        if c.flags & FLAG_B and c.flags & FLAG_E:
            return c.data, (frame,)
        key = (c.stream, bool(c.flags & FLAG_U), c.mid)
        parts = d.held.setdefault(key, {})
        parts[c.seq] = (c.flags, c.data, frame)
        d.held_bytes += len(c.data)
        whole = _complete(parts, c.seq, by_tsn=c.mid < 0)
        if whole is None:
            if d.held_bytes > MAX_HELD:
                findings.append(_malformed("too many SCTP fragment bytes held; dropped", ref))
                d.held.clear()
                d.held_bytes = 0
            return None
        seqs, data = whole
        frames = tuple(sorted({parts[s][2] for s in seqs}))
        for s in seqs:
            d.held_bytes -= len(parts.pop(s)[1])
        if not parts:
            del d.held[key]
        return data, frames


def data_chunks(
    source: int, frame: int, ts: int, src: Endpoint, dst: Endpoint, payload: bytes
) -> tuple[list[Datagram], list[Finding]]:
    """One packet on its own: whole user messages out; fragments become a finding.

    Use :class:`SctpReassembler` to rebuild messages fragmented over several packets
    and to drop retransmitted DATA chunks.
    """
    r = SctpReassembler()
    out, findings = r.data_chunks(source, frame, ts, src, dst, payload)
    return out, findings + r.flush()


def _complete(
    parts: dict[int, tuple[int, bytes, int]], seq: int, by_tsn: bool
) -> tuple[list[int], bytes] | None:
    """The fragment run containing ``seq`` from a B to an E flag with no hole, or None."""
    start = seq
    while not parts[start][0] & FLAG_B:
        prev = (start - 1) % (1 << 32)  # TSNs wrap (RFC 9260 §1.6); FSNs start at 0
        if prev not in parts or (not by_tsn and start == 0):
            return None
        start = prev
    end = seq
    while not parts[end][0] & FLAG_E:
        nxt = (end + 1) % (1 << 32)
        if nxt not in parts:
            return None
        end = nxt
    seqs = [start]
    while seqs[-1] != end:
        seqs.append((seqs[-1] + 1) % (1 << 32))
    return seqs, b"".join(parts[s][1] for s in seqs)


def _user_chunks(
    payload: bytes, ref: tuple[Ref, ...], findings: list[Finding], skipped: Counter[str]
) -> list[UserChunk]:
    """Walk the chunks after the common header (RFC 9260 §3.2); keep DATA and I-DATA."""
    out: list[UserChunk] = []
    pos = COMMON_HEADER
    while pos < len(payload):
        if len(payload) - pos < 4:
            findings.append(
                _malformed(f"{len(payload) - pos} stray bytes after the last chunk", ref)
            )
            break
        ctype, flags = payload[pos], payload[pos + 1]
        length = int.from_bytes(payload[pos + 2 : pos + 4], "big")
        if length < 4 or pos + length > len(payload):
            text = (
                f"chunk type {ctype} at byte {pos} has length {length} ({len(payload) - pos} left)"
            )
            findings.append(_malformed(text, ref))
            break
        value = payload[pos + 4 : pos + length]
        if ctype in (ChunkType.DATA, ChunkType.I_DATA):
            chunk = _user_chunk(ctype, flags, value, ref, findings)
            if chunk is not None:
                out.append(chunk)
        else:
            skipped[_chunk_name(ctype)] += 1
        pos += (length + 3) & ~3  # RFC 9260 §3.2: chunks are padded to 4 bytes
    return out


def _user_chunk(
    ctype: int, flags: int, value: bytes, ref: tuple[Ref, ...], findings: list[Finding]
) -> UserChunk | None:
    header = DATA_HEADER if ctype == ChunkType.DATA else I_DATA_HEADER
    if len(value) + 4 <= header:  # RFC 9260 §3.3.1: a DATA chunk carries at least one byte
        text = f"{_chunk_name(ctype)} chunk of length {len(value) + 4} carries no user data"
        findings.append(_malformed(text, ref))
        return None
    tsn = int.from_bytes(value[0:4], "big")
    stream = int.from_bytes(value[4:6], "big")
    if ctype == ChunkType.DATA:
        return UserChunk(tsn, stream, flags, tsn, -1, value[12:])
    mid = int.from_bytes(value[8:12], "big")
    # RFC 8260 §2.1: the last word is the PPID on the B fragment, else the FSN (B is FSN 0).
    fsn = 0 if flags & FLAG_B else int.from_bytes(value[12:16], "big")
    return UserChunk(tsn, stream, flags, fsn, mid, value[16:])


def _chunk_name(ctype: int) -> str:
    try:
        return ChunkType(ctype).name
    except ValueError:
        return f"type_{ctype}"


def _malformed(text: str, refs: tuple[Ref, ...]) -> Finding:
    return Finding("ingest.sctp_malformed", Severity.WARNING, text, "RFC 9260 §3.2", refs)
