"""pcap and pcapng records, a chunk at a time, as numpy columns.

How this works: :func:`open_capture` maps the file (``mmap``; a gzip file or stdin is
first copied into an unnamed temporary file so it can be mapped too, and memory does not
grow with the file size). :meth:`Capture.chunks` walks the record headers - a linked list,
so one tight Python loop that only follows lengths - and then gathers every header field
of the chunk with one numpy fancy index. A chunk is a :class:`RecordChunk`: 1-based frame
numbers, timestamps in int64 nanoseconds, link type, offset of the packet bytes in
``buf`` (the whole mapped file), captured and original lengths.

Formats: pcap (tcpdump.org "pcap savefile", draft-ietf-opsawg-pcap) with microsecond
(0xa1b2c3d4) and nanosecond (0xa1b23c4d) magic in both byte orders; pcapng
(draft-ietf-opsawg-pcapng) with several sections of either byte order, interfaces with
``if_tsresol`` (powers of 10 and of 2) and ``if_tsoffset``, Enhanced/Simple/obsolete
Packet Blocks; other blocks are skipped and counted in :attr:`Capture.skipped`.

Damage: a truncated last record or a corrupt length stops or resynchronises the walk with
a :class:`~sipflow.findings.Finding` in :attr:`Capture.findings`; records read before it
are kept. A source that is not a capture at all raises :class:`~sipflow.errors.InputError`.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import shutil
import struct
import sys
import tempfile
import zlib
from array import array
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import repeat
from typing import BinaryIO

import numpy as np
import numpy.typing as npt

from sipflow.errors import InputError
from sipflow.findings import Finding, Ref, Severity

I64 = npt.NDArray[np.int64]
U8 = npt.NDArray[np.uint8]

CHUNK_RECORDS = 65536

# libpcap's pcap_datalink_val_to_name() names for the link types we decode.
LINKTYPE_NAMES: dict[int, str] = {
    0: "NULL",
    1: "EN10MB",
    12: "RAW",  # DLT_RAW as written on most BSDs and Linux before LINKTYPE_RAW
    14: "RAW",  # DLT_RAW on OpenBSD
    101: "RAW",
    108: "LOOP",
    113: "LINUX_SLL",
    228: "IPV4",
    229: "IPV6",
    276: "LINUX_SLL2",
}

# libpcap rejects records longer than this (MAXIMUM_SNAPLEN); we do the same.
MAX_CAPLEN = 262144
# Sanity bound for one pcapng block (libpcap uses 16 MiB as its default maximum).
MAX_BLOCK = 16 * 1024 * 1024
# How far a resynchronisation scan looks for the next plausible record.
RESYNC_WINDOW = 4 * 1024 * 1024

PCAP_MAGICS: dict[bytes, tuple[str, int]] = {
    b"\xd4\xc3\xb2\xa1": ("<", 1000),  # microseconds, little-endian file
    b"\xa1\xb2\xc3\xd4": (">", 1000),
    b"\x4d\x3c\xb2\xa1": ("<", 1),  # nanoseconds
    b"\xa1\xb2\x3c\x4d": (">", 1),
}
PCAPNG_SHB = 0x0A0D0D0A
BYTE_ORDER_MAGIC = 0x1A2B3C4D

# pcapng block types (draft-ietf-opsawg-pcapng §10.1)
BLK_IDB = 1
BLK_PB = 2
BLK_SPB = 3
BLK_EPB = 6
BLOCK_NAMES = {
    4: "nrb",
    5: "isb",
    9: "journal",
    0x0A: "dsb",
    0x0BAD: "custom",
    0x40000BAD: "custom",
}
# Linux, macOS, BSDs; None where mmap.madvise cannot drop pages (pages then stay mapped).
_MADV_DONTNEED: int | None = getattr(mmap, "MADV_DONTNEED", None)

# Offset tags for the rare packet blocks in the EPB offset list (see _walk_pcapng).
_TAG_SPB = 1 << 60
_TAG_PB = 2 << 60
_OFF_MASK = (1 << 60) - 1


@dataclass(frozen=True, slots=True)
class RecordChunk:
    """Up to ``CHUNK_RECORDS`` records as columns; ``offset`` indexes ``buf``."""

    buf: U8
    frame: I64
    ts: I64
    link_type: I64
    offset: I64
    caplen: I64
    origlen: I64

    def __len__(self) -> int:
        return len(self.frame)

    def data(self, i: int) -> bytes:
        """The captured bytes of record ``i`` of this chunk."""
        off = int(self.offset[i])
        return self.buf[off : off + int(self.caplen[i])].tobytes()


@dataclass(slots=True)
class _Interface:
    """A pcapng interface: link type, snap length, time unit and offset."""

    link_type: int
    snaplen: int
    resol: tuple[int, int] = (10, 6)  # (base, exponent): units of base**-exponent seconds
    offset_s: int = 0


@dataclass
class Capture:
    """An open capture; iterate :meth:`chunks`. Close it (or use ``with``)."""

    path: str
    format: str
    buf: U8
    source: int = 0
    findings: list[Finding] = field(default_factory=list)
    skipped: Counter[str] = field(default_factory=Counter)
    link_types: set[int] = field(default_factory=set)
    _mm: mmap.mmap | None = None
    _file: BinaryIO | None = None
    _released: int = 0
    """Bytes from the start of the mapping already released (page-aligned)."""

    def __enter__(self) -> Capture:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.buf = np.zeros(0, np.uint8)
        if self._mm is not None:
            with contextlib.suppress(BufferError):  # chunk arrays still alive elsewhere
                self._mm.close()
            self._mm = None
        if self._file is not None:
            self._file.close()
            self._file = None

    def mapped(self) -> mmap.mmap:
        """The mapped capture (slicing it gives ``bytes``)."""
        if self._mm is None:
            raise InputError(f"{self.path}: capture is closed")
        return self._mm

    def chunks(self, size: int | None = None) -> Iterator[RecordChunk]:
        """Records in file order, ``size`` (default :data:`CHUNK_RECORDS`) at a time.

        When the consumer asks for the next chunk, the pages holding the previous one are
        handed back to the kernel (see :meth:`_release_before`), so resident memory stays
        bounded by a chunk, not the file size. A chunk kept and read later still reads
        the right bytes: its pages are faulted in again from the file.
        """
        size = size or CHUNK_RECORDS  # read here, so a test may set a smaller chunk
        walker = _PcapngWalker(self, size) if self.format.startswith("pcapng") else None
        for chunk in walker.run() if walker else _PcapWalker(self, size).run():
            yield chunk
            if len(chunk):
                self._release_before(int(chunk.offset[-1]) + int(chunk.caplen[-1]))

    def _release_before(self, end: int) -> None:
        """Drop the mapped pages wholly before ``end`` from this process's resident set
        (``madvise(MADV_DONTNEED)``: for a read-only file mapping the data stays in the
        page cache and is read again on the next access, so nothing is lost)."""
        stop = end - end % mmap.PAGESIZE
        if self._mm is None or stop <= self._released or _MADV_DONTNEED is None:
            return
        with contextlib.suppress(OSError, ValueError):
            self._mm.madvise(_MADV_DONTNEED, self._released, stop - self._released)
        self._released = stop

    def _finding(self, code: str, message: str, frame: int) -> None:
        self.findings.append(
            Finding(code, Severity.WARNING, message, refs=(Ref(self.source, frame),))
        )


# ---------------------------------------------------------------------------------------
# opening


def open_capture(path: str, source: int = 0) -> Capture:
    """Open ``path`` (a pcap/pcapng file, gzip-compressed or not, or ``-`` for stdin)."""
    findings: list[Finding] = []
    fh, gz = _open_plain(path, findings, source)
    try:
        size = os.fstat(fh.fileno()).st_size
        if size == 0:
            raise InputError(f"{path}: empty file, not a capture")
        mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    except (OSError, ValueError, InputError) as exc:
        fh.close()
        if isinstance(exc, InputError):
            raise
        raise InputError(f"{path}: cannot map file: {exc}") from exc
    try:
        fmt = _detect(path, mm)
    except InputError:
        mm.close()
        fh.close()
        raise
    buf = np.frombuffer(mm, dtype=np.uint8)
    cap = Capture(path, fmt + ("+gzip" if gz else ""), buf, source, findings, _mm=mm, _file=fh)
    return cap


def _open_plain(path: str, findings: list[Finding], source: int) -> tuple[BinaryIO, bool]:
    """A mappable file object for ``path`` and whether it was gzip-compressed."""
    if path == "-":
        tmp = tempfile.TemporaryFile()  # noqa: SIM115 - closed by Capture.close
        shutil.copyfileobj(sys.stdin.buffer, tmp, 1 << 20)
        tmp.flush()
        tmp.seek(0)
        if _peek(tmp, 2) != b"\x1f\x8b":
            return tmp, False
        return _gunzip(tmp, path, findings, source), True
    try:
        fh = open(path, "rb")  # noqa: SIM115 - closed by Capture.close
    except OSError as exc:
        raise InputError(f"{path}: cannot open: {exc.strerror or exc}") from exc
    if _peek(fh, 2) == b"\x1f\x8b":
        return _gunzip(fh, path, findings, source), True
    return fh, False


def _peek(fh: BinaryIO, n: int) -> bytes:
    data = fh.read(n)
    fh.seek(0)
    return data


def _gunzip(src: BinaryIO, path: str, findings: list[Finding], source: int) -> BinaryIO:
    """Decompress ``src`` (one or more gzip members, RFC 1952) into a temporary file; a
    damaged or cut stream keeps every byte that came out before the damage."""
    out = tempfile.TemporaryFile()  # noqa: SIM115 - closed by Capture.close
    dec = zlib.decompressobj(16 + zlib.MAX_WBITS)
    problem = ""
    try:
        while data := src.read(1 << 20):
            while data:
                out.write(dec.decompress(data))
                data = b""
                if dec.eof and dec.unused_data:  # next member
                    data = dec.unused_data
                    dec = zlib.decompressobj(16 + zlib.MAX_WBITS)
        out.write(dec.flush())
        if not dec.eof:
            problem = "gzip stream cut short"
    except zlib.error as exc:
        problem = f"gzip stream damaged ({exc})"
    finally:
        src.close()
    if problem:
        findings.append(
            Finding(
                "ingest.truncated_gzip",
                Severity.WARNING,
                f"{path}: {problem}; using the bytes before it",
                refs=(Ref(source, 0),),
            )
        )
    out.flush()
    out.seek(0)
    return out


def _detect(path: str, mm: mmap.mmap) -> str:
    head = mm[:4]
    if head in PCAP_MAGICS:
        if len(mm) < 24:
            raise InputError(f"{path}: pcap file header cut short ({len(mm)} of 24 bytes)")
        return "pcap"
    if len(head) == 4 and struct.unpack("<I", head)[0] == PCAPNG_SHB:
        if len(mm) < 28:
            raise InputError(f"{path}: pcapng section header cut short ({len(mm)} bytes)")
        return "pcapng"
    hint = ""
    if head[:4] in (b"RTSS", b"GMBU"):
        hint = " (Microsoft NetMon: convert with `editcap -F pcap`)"
    raise InputError(f"{path}: not a pcap or pcapng capture (starts with {head.hex()}){hint}")


# ---------------------------------------------------------------------------------------
# helpers shared by both walkers


def rows(buf: U8, starts: I64, width: int) -> U8:
    """``buf[s : s + width]`` for every start, copied into a new (n, width) matrix; each
    start must leave ``width`` bytes. One gather of ``width``-byte items (numpy copies
    each item whole): about twice as fast as fancy-indexing a sliding window view."""
    items = np.ndarray((len(buf) - width + 1,), np.dtype((np.void, width)), buf, 0, (1,))
    out: U8 = items[starts].view(np.uint8).reshape(len(starts), width)
    return out


def _gather_u32(buf: U8, offs: I64, width: int, order: str) -> I64:
    """The ``width`` (multiple of 4) header bytes at each offset as int64 columns of
    unsigned 32-bit fields, plus a last column holding the offset itself. Headers that
    run past the end of ``buf`` read as zeros."""
    n, words = len(offs), width // 4
    out = np.empty((n, words + 1), np.int64)
    out[:, words] = offs
    if n == 0:
        return out
    if int(offs.max()) + width <= len(buf):
        raw = rows(buf, offs, width)
    else:
        idx = offs[:, None] + np.arange(width, dtype=np.int64)
        raw = buf[np.minimum(idx, len(buf) - 1)]
        raw[idx >= len(buf)] = 0
    out[:, :words] = raw.view(np.dtype(order + "u4"))
    return out


def _walk_lengths(
    mm: mmap.mmap, off: int, n: int, order: str, at: int, hdr: int
) -> tuple[array[int], int]:
    """Follow a chain of records from ``off``: each is ``hdr`` bytes plus the 32-bit length
    at ``off + at``. Up to ``n`` offsets; stops where a length can no longer be read. The
    lengths are not checked here (the caller checks all of them at once, vectorised):
    this loop is the one per-record cost of reading a pcap file. The offsets come in an
    ``array("q")``, which numpy takes without a copy (``np.frombuffer``)."""
    if (order == "<") == (sys.byteorder == "little") and len(mm) >= 64:
        return _walk_lengths_native(mm, off, n, at, hdr)
    offs = array("q")
    append = offs.append
    unpack = struct.Struct(order + "I").unpack_from
    try:
        for _ in repeat(None, n):
            append(off)
            off += hdr + unpack(mm, off + at)[0]
    except struct.error:
        off = offs.pop()
    return offs, off


def _walk_lengths_native(
    mm: mmap.mmap, off: int, n: int, at: int, hdr: int
) -> tuple[array[int], int]:
    """:func:`_walk_lengths` for a file in host byte order: the length is read through
    one of four ``memoryview.cast("I")`` views (one per alignment), ~30% faster than
    ``struct.unpack_from``. The views are released before returning (mmap can close)."""
    offs = array("q")
    append = offs.append
    base = memoryview(mm)
    views = [base[k : k + (len(mm) - k) // 4 * 4].cast("I") for k in range(4)]
    try:
        for _ in repeat(None, n):
            append(off)
            p = off + at
            off += hdr + views[p & 3][p >> 2]
    except IndexError:
        off = offs.pop()
    finally:
        for v in views:
            v.release()
        base.release()
    return offs, off


def _ints(fmt: str, buf: mmap.mmap, off: int) -> tuple[int, ...]:
    """``struct.unpack_from`` typed as ints."""
    values: tuple[int, ...] = struct.unpack_from(fmt, buf, off)
    return values


# ---------------------------------------------------------------------------------------
# pcap


class _PcapWalker:
    """Walks pcap records (16-byte header + data)."""

    def __init__(self, cap: Capture, size: int) -> None:
        self.cap = cap
        self.size = size
        mm = cap._mm
        assert mm is not None
        self.mm = mm
        order, self.ts_mult = PCAP_MAGICS[mm[:4]]
        self.order = order
        _, _, _, _, snaplen, link = struct.unpack_from(order + "HHiIII", mm, 4)
        self.link_type = link & 0x0FFFFFFF  # upper bits: FCS length (pcap spec §4)
        self.limit = max(snaplen, MAX_CAPLEN)
        self.frame = 1
        cap.link_types.add(self.link_type)

    def run(self) -> Iterator[RecordChunk]:
        off, end = 24, len(self.mm)
        while off < end:
            offs, off = _walk_lengths(self.mm, off, self.size, self.order, 8, 16)
            if not offs:
                if off < end:
                    self._truncated(off, end)
                return
            h = _gather_u32(self.cap.buf, np.frombuffer(offs, np.int64), 16, self.order)
            bad = (h[:, 2] > self.limit) | (h[:, 4] + 16 + h[:, 2] > end)
            first_bad = int(np.argmax(bad)) if bad.any() else len(offs)
            if first_bad:
                yield self._columns(h[:first_bad])
            if first_bad < len(offs):
                off = int(h[first_bad, 4])
                if h[first_bad, 2] <= self.limit:
                    self._truncated(off, end)
                    return
                off = self._resync(off, end)

    def _truncated(self, off: int, end: int) -> None:
        self.cap._finding(
            "ingest.truncated_record",
            f"capture ends inside record {self.frame} (offset {off}); {end - off} bytes ignored",
            self.frame,
        )

    def _columns(self, h: I64) -> RecordChunk:
        """Columns from gathered headers (sec, frac, caplen, origlen, offset)."""
        n = len(h)
        frame = np.arange(self.frame, self.frame + n, dtype=np.int64)
        self.frame += n
        ts = h[:, 0] * 1_000_000_000 + h[:, 1] * self.ts_mult
        link = np.full(n, self.link_type, np.int64)
        return RecordChunk(self.cap.buf, frame, ts, link, h[:, 4] + 16, h[:, 2], h[:, 3])

    def _resync(self, off: int, end: int) -> int:
        """After a corrupt record header at ``off``: the next offset where two plausible
        headers follow each other (or one ends exactly at the end), else ``end``."""
        prev_sec = struct.unpack_from(self.order + "I", self.mm, off)[0]
        start = off + 1
        stop = min(end - 16, off + RESYNC_WINDOW)
        found = end
        if stop > start:
            cand = self._plausible(np.arange(start, stop + 1, dtype=np.int64), prev_sec)
            for c in cand.tolist():
                if self._chain_ok(int(c), end, prev_sec):
                    found = int(c)
                    break
        self.cap._finding(
            "ingest.corrupt_record",
            f"record {self.frame} at offset {off} has an impossible length; "
            + (
                f"skipped {found - off} bytes to the next plausible record"
                if found < end
                else "no plausible record after it"
            ),
            self.frame,
        )
        return found

    def _plausible(self, offs: I64, prev_sec: int) -> I64:
        h = _gather_u32(self.cap.buf, offs, 16, self.order).astype(np.int64)
        frac_max = 1_000_000 if self.ts_mult == 1000 else 1_000_000_000
        ok = (h[:, 2] <= self.limit) & (h[:, 2] <= h[:, 3]) & (h[:, 1] < frac_max)
        ok &= np.abs(h[:, 0] - prev_sec) < 86400 * 366
        out: I64 = offs[ok]
        return out

    def _chain_ok(self, off: int, end: int, prev_sec: int) -> bool:
        nxt = off + 16 + struct.unpack_from(self.order + "I", self.mm, off + 8)[0]
        if nxt == end:
            return True
        if nxt + 16 > end:
            return False
        return len(self._plausible(np.array([nxt], np.int64), prev_sec)) == 1


# ---------------------------------------------------------------------------------------
# pcapng


class _PcapngWalker:
    """Walks pcapng blocks section by section."""

    def __init__(self, cap: Capture, size: int) -> None:
        self.cap = cap
        self.size = size
        mm = cap._mm
        assert mm is not None
        self.mm = mm
        self.order = "<"
        self.ifaces: list[_Interface] = []
        self.frame = 1
        self.last_ts = 0

    def run(self) -> Iterator[RecordChunk]:
        off, end = 0, len(self.mm)
        while off < end:
            offs, off, stop = self._walk(off, end)
            if offs:
                tagged = np.array(offs, np.int64)
                h = _gather_u32(self.cap.buf, tagged & _OFF_MASK, 28, self.order)
                blen = h[:, 1]
                bad = (blen < 12) | (blen & 3 != 0) | (h[:, 7] + blen > end)
                first_bad = int(np.argmax(bad)) if bad.any() else len(offs)
                chunk = self._columns(tagged[:first_bad], h[:first_bad])
                if chunk is not None:
                    yield chunk
                if first_bad < len(offs):
                    off = int(h[first_bad, 7])
                    stop = "truncated" if h[first_bad, 1] <= MAX_BLOCK else "corrupt"
                    if blen[first_bad] < 12 or blen[first_bad] & 3:
                        stop = "corrupt"
            if stop == "end":
                return
            if stop == "truncated":
                self.cap._finding(
                    "ingest.truncated_record",
                    f"capture ends inside a block at offset {off} (after frame "
                    f"{self.frame - 1}); {end - off} bytes ignored",
                    self.frame,
                )
                return
            if stop == "corrupt":
                off = self._resync(off, end)
            elif stop == "block":
                off = self._other_block(off)

    def _walk(self, off: int, end: int) -> tuple[list[int], int, str]:
        """Tagged offsets of packet blocks from ``off`` until a chunk is full or another
        kind of block; lengths are checked by the caller, vectorised."""
        offs: list[int] = []
        append = offs.append
        mm = self.mm
        unpack = struct.Struct(self.order + "II").unpack_from
        try:
            for _ in repeat(None, self.size):
                btype, blen = unpack(mm, off)
                if btype == BLK_EPB:
                    append(off)
                elif btype == BLK_SPB:
                    append(off | _TAG_SPB)
                elif btype == BLK_PB:
                    append(off | _TAG_PB)
                else:
                    return offs, off, "block" if off + 12 <= end else "truncated"
                off += blen
        except struct.error:
            return offs, off, "end" if off == end else "truncated"
        return offs, off, "chunk"

    # -- non-packet blocks ------------------------------------------------------------

    def _other_block(self, off: int) -> int:
        """Handle SHB/IDB/skipped blocks at ``off``; the offset after it."""
        mm = self.mm
        if struct.unpack_from("<I", mm, off)[0] == PCAPNG_SHB:
            return self._section(off)
        btype, blen = _ints(self.order + "II", mm, off)
        if btype == BLK_IDB:
            self._interface(off, blen)
        else:
            self.cap.skipped[f"pcapng_block_{BLOCK_NAMES.get(btype, 'unknown')}"] += 1
        return off + blen

    def _section(self, off: int) -> int:
        """A Section Header Block: byte order, fresh interface list."""
        mm, end = self.mm, len(self.mm)
        if off + 28 > end:
            self.cap._finding(
                "ingest.truncated_record", f"section header cut at offset {off}", self.frame
            )
            return end
        magic = struct.unpack_from("<I", mm, off + 8)[0]
        if magic == BYTE_ORDER_MAGIC:
            self.order = "<"
        elif magic == 0x4D3C2B1A:
            self.order = ">"
        else:
            self.cap._finding(
                "ingest.corrupt_record",
                f"section header at offset {off} has no byte-order magic",
                self.frame,
            )
            return self._resync(off, end)
        blen = _ints(self.order + "I", mm, off + 4)[0]
        if blen < 28 or blen & 3 or off + blen > end:
            self.cap._finding(
                "ingest.corrupt_record",
                f"section header at offset {off} has a bad length {blen}",
                self.frame,
            )
            return self._resync(off, end)
        self.ifaces = []
        return off + blen

    def _interface(self, off: int, blen: int) -> None:
        """An Interface Description Block (pcapng §4.2) with if_tsresol/if_tsoffset."""
        link, _, snap = struct.unpack_from(self.order + "HHI", self.mm, off + 8)
        iface = _Interface(link, snap)
        for code, value in _options(self.mm, off + 16, off + blen - 4, self.order):
            if code == 9 and len(value) >= 1:  # if_tsresol
                v = value[0]
                iface.resol = (2, v & 0x7F) if v & 0x80 else (10, v)
            elif code == 14 and len(value) >= 8:  # if_tsoffset, seconds
                iface.offset_s = struct.unpack(self.order + "q", value[:8])[0]
        self.ifaces.append(iface)
        self.cap.link_types.add(link)

    # -- packet blocks ----------------------------------------------------------------

    def _columns(self, tagged: I64, h: I64) -> RecordChunk | None:
        """Columns for EPB/SPB/PB offsets (tagged, see _walk) and their gathered headers."""
        offs = h[:, 7]
        kind = tagged >> 60
        n = len(offs)
        if n == 0:
            return None
        pb_iface = h[:, 2] >> 16 if self.order == ">" else h[:, 2] & 0xFFFF  # u16 + u16 drops
        iface = np.where(kind == 2, pb_iface, h[:, 2])
        iface = np.where(kind == 1, 0, iface)
        ts_raw = (h[:, 3] << 32) | h[:, 4]
        caplen, origlen = h[:, 5].copy(), h[:, 6].copy()
        data = offs + 28
        spb = kind == 1
        if spb.any():
            caplen[spb] = np.minimum(h[spb, 2], h[spb, 1] - 16)
            origlen[spb] = h[spb, 2]
            data[spb] = offs[spb] + 12
        frame = np.arange(self.frame, self.frame + n, dtype=np.int64)
        self.frame += n
        good = self._check(frame, iface, caplen, h[:, 1] - np.where(spb, 16, 32))
        link = np.zeros(n, np.int64)
        ts = np.zeros(n, np.int64)
        for i in np.unique(iface[good]).tolist():
            sel = good & (iface == i)
            link[sel] = self.ifaces[i].link_type
            ts[sel] = _to_ns(ts_raw[sel], self.ifaces[i])
            if spb.any():  # SPB has no timestamp (pcapng §4.4): use the previous one
                sel &= spb
                caplen[sel] = np.minimum(caplen[sel], self.ifaces[i].snaplen or MAX_CAPLEN)
        ts = self._fill_spb_ts(ts, spb & good)
        if not good.all():
            keep = np.flatnonzero(good)
            frame, ts, link, data = frame[keep], ts[keep], link[keep], data[keep]
            caplen, origlen = caplen[keep], origlen[keep]
        if len(frame) == 0:
            return None
        return RecordChunk(self.cap.buf, frame, ts, link, data, caplen, origlen)

    def _check(self, frame: I64, iface: I64, caplen: I64, room: I64) -> npt.NDArray[np.bool_]:
        """Records whose interface exists and whose data fits in the block."""
        good = (iface < len(self.ifaces)) & (caplen <= room)
        for i in np.flatnonzero(~good).tolist():
            what = (
                f"interface {int(iface[i])} undeclared"
                if iface[i] >= len(self.ifaces)
                else f"captured length {int(caplen[i])} exceeds its block"
            )
            self.cap._finding(
                "ingest.corrupt_record", f"frame {int(frame[i])}: {what}; skipped", int(frame[i])
            )
            self.cap.skipped["corrupt_record"] += 1
        return good

    def _fill_spb_ts(self, ts: I64, spb: npt.NDArray[np.bool_]) -> I64:
        if spb.any():
            idx = np.where(spb, -1, np.arange(len(ts)))
            np.maximum.accumulate(idx, out=idx)
            prev = np.where(idx >= 0, ts[np.maximum(idx, 0)], self.last_ts)
            ts = np.where(spb, prev, ts)
        if len(ts):
            self.last_ts = int(ts[-1])
        return ts

    def _resync(self, off: int, end: int) -> int:
        """The next 4-aligned offset that starts a well-formed block, else ``end``."""
        mm = self.mm
        stop = min(end - 12, off + RESYNC_WINDOW)
        found = end
        for c in range(off + 4, stop + 1, 4):
            btype, blen = struct.unpack_from(self.order + "II", mm, c)
            if btype not in (PCAPNG_SHB, BLK_IDB, BLK_PB, BLK_SPB, 4, 5, BLK_EPB):
                continue
            if 12 <= blen <= end - c and not blen & 3:
                trailer = struct.unpack_from(self.order + "I", mm, c + blen - 4)[0]
                if trailer == blen:
                    found = c
                    break
        self.cap._finding(
            "ingest.corrupt_record",
            f"block at offset {off} (after frame {self.frame - 1}) has an impossible length; "
            + (
                f"skipped {found - off} bytes to the next block"
                if found < end
                else "no block found after it"
            ),
            self.frame,
        )
        return found


def _options(mm: mmap.mmap, off: int, end: int, order: str) -> Iterator[tuple[int, bytes]]:
    """pcapng options (code, value) between ``off`` and ``end`` (pcapng §3.5)."""
    while off + 4 <= end:
        code, length = struct.unpack_from(order + "HH", mm, off)
        if code == 0:  # opt_endofopt
            return
        value = mm[off + 4 : min(off + 4 + length, end)]
        yield code, value
        off += 4 + ((length + 3) & ~3)


def _to_ns(raw: I64, iface: _Interface) -> I64:
    """Interface time units to ns since the epoch (if_tsresol, if_tsoffset; pcapng §4.2)."""
    base, exp = iface.resol
    if base == 10:
        ns = raw * 10 ** (9 - exp) if exp <= 9 else raw // 10 ** (exp - 9)
    elif exp <= 32:
        ns = (raw >> exp) * 1_000_000_000 + (((raw & ((1 << exp) - 1)) * 1_000_000_000) >> exp)
    else:
        ns = (raw.astype(np.float64) * (1e9 / 2.0**exp)).astype(np.int64)
    out: I64 = ns + iface.offset_s * 1_000_000_000
    return out
