"""pcap/pcapng reading: corpus files against tshark, real-tool conversions, pcapng features
written by the test (and read back by tshark as the oracle), damaged files."""

from __future__ import annotations

import gzip
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sipflow.errors import InputError
from sipflow.ingest.pcap import open_capture

CORPUS = Path(__file__).resolve().parents[2] / ".." / "shared" / "corpus" / "pcaps"
TSHARK = shutil.which("tshark")
EDITCAP = shutil.which("editcap")


def corpus(name: str) -> Path:
    if not CORPUS.is_dir():
        pytest.skip(f"{CORPUS} is absent (shared corpus not available)")
    return CORPUS / name


def need_tool(tool: str | None, name: str) -> str:
    if tool is None:
        pytest.skip(f"{name} not installed")
    return tool


def read_all(path: Path | str) -> tuple[list[int], list[int], list[bytes], list[int], object]:
    """frame numbers, timestamps, data, link types and the Capture (closed)."""
    frames: list[int] = []
    ts: list[int] = []
    data: list[bytes] = []
    links: list[int] = []
    with open_capture(str(path)) as cap:
        for ch in cap.chunks(size=7):  # small chunks: exercise chunk boundaries
            frames += ch.frame.tolist()
            ts += ch.ts.tolist()
            links += ch.link_type.tolist()
            data += [ch.data(i) for i in range(len(ch))]
    return frames, ts, data, links, cap


def tshark_times(path: Path) -> list[int | None]:
    """Per-frame ns timestamps as tshark prints them (frame.time_epoch, 9 decimals; None
    for a frame without a time)."""
    out = subprocess.run(
        [need_tool(TSHARK, "tshark"), "-r", str(path), "-T", "fields", "-e", "frame.time_epoch"],
        capture_output=True, text=True, check=True, timeout=120,
    ).stdout  # fmt: skip
    result: list[int | None] = []
    for line in out.splitlines():
        if not line.strip():
            result.append(None)
            continue
        sec, _, frac = line.partition(".")
        result.append(int(sec) * 1_000_000_000 + int((frac + "000000000")[:9]))
    return result


CORPUS_FILES = [
    "goffinet__branch-scenario-sipp.pcapng",  # pcapng, ns resolution
    "goffinet__private-test-sip.pcapng",
    "heplify__erspan_sip_ipv4_udp.pcapng",
    "ndpi__http_on_sip_port.pcap",  # pcapng despite the name
    "heplify__ipip0.pcap",  # LINKTYPE_RAW
    "zeek__sip-long-request-response-paths.pcap",  # LINKTYPE_IPV4
    "arkime__gtp-iphone.pcap",  # Linux SLL
    "sipnab__h263-over-rtp.pcap",  # NULL
    "goffinet__Forensic_challenge_4.pcap",
    "heplify__sip_ipv6_udp.pcap",  # garbage times
]


@pytest.mark.corpus
@pytest.mark.parametrize("name", CORPUS_FILES)
def test_corpus_frames_and_times_match_tshark(name: str) -> None:
    path = corpus(name)
    frames, ts, _data, _, cap = read_all(path)
    expected = tshark_times(path)
    assert frames == list(range(1, len(expected) + 1))
    assert ts == expected
    assert not cap.findings  # type: ignore[attr-defined]


@pytest.mark.corpus
def test_caplen_and_bytes_match_tshark() -> None:
    path = corpus("goffinet__private-test-sip.pcapng")
    out = subprocess.run(
        [need_tool(TSHARK, "tshark"), "-r", str(path), "-T", "fields",
         "-e", "frame.cap_len", "-e", "frame.len"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    expected = [tuple(map(int, line.split())) for line in out.splitlines()]
    with open_capture(str(path)) as cap:
        got = []
        for ch in cap.chunks():
            got += list(zip(ch.caplen.tolist(), ch.origlen.tolist(), strict=True))
    assert got == expected


# -- conversions made by editcap ---------------------------------------------------------


@pytest.mark.corpus
@pytest.mark.parametrize("fmt", ["pcap", "nsecpcap", "pcapng"])
def test_editcap_formats_read_the_same(tmp_path: Path, fmt: str) -> None:
    src = corpus("goffinet__branch-scenario-sipp.pcapng")
    out = tmp_path / f"x.{fmt}"
    subprocess.run([need_tool(EDITCAP, "editcap"), "-F", fmt, str(src), str(out)], check=True)
    f0, t0, d0, _, _ = read_all(src)
    f1, t1, d1, _, cap = read_all(out)
    assert f1 == f0 and d1 == d0
    if fmt == "pcap":  # microseconds: truncated
        assert t1 == [t // 1000 * 1000 for t in t0]
    else:
        assert t1 == t0
    assert cap.format == ("pcapng" if fmt == "pcapng" else "pcap")  # type: ignore[attr-defined]


def swap_pcap(data: bytes) -> bytes:
    """The same pcap written in the other byte order (file and record headers)."""
    magic, vmaj, vmin, zone, sigfigs, snap, link = struct.unpack_from("<IHHiIII", data, 0)
    out = bytearray(struct.pack(">IHHiIII", magic, vmaj, vmin, zone, sigfigs, snap, link))
    off = 24
    while off + 16 <= len(data):
        sec, frac, cl, ol = struct.unpack_from("<IIII", data, off)
        out += struct.pack(">IIII", sec, frac, cl, ol) + data[off + 16 : off + 16 + cl]
        off += 16 + cl
    return bytes(out)


@pytest.mark.corpus
@pytest.mark.parametrize("fmt", ["pcap", "nsecpcap"])
def test_big_endian_pcap(tmp_path: Path, fmt: str) -> None:
    src = corpus("goffinet__sip-phone-to-phone.pcapng")
    le = tmp_path / "le.pcap"
    subprocess.run([need_tool(EDITCAP, "editcap"), "-F", fmt, str(src), str(le)], check=True)
    be = tmp_path / "be.pcap"
    be.write_bytes(swap_pcap(le.read_bytes()))
    assert read_all(be)[:4] == read_all(le)[:4]
    assert tshark_times(be) == read_all(be)[1]  # tshark agrees on the swapped file


# -- pcapng features, written here and read back by tshark --------------------------------


def block(order: str, btype: int, body: bytes) -> bytes:
    body += b"\0" * (-len(body) % 4)
    n = len(body) + 12
    return struct.pack(order + "II", btype, n) + body + struct.pack(order + "I", n)


def opt(order: str, code: int, value: bytes) -> bytes:
    return struct.pack(order + "HH", code, len(value)) + value + b"\0" * (-len(value) % 4)


def shb(order: str) -> bytes:
    return block(order, 0x0A0D0D0A, struct.pack(order + "IHHq", 0x1A2B3C4D, 1, 0, -1))


def idb(order: str, link: int, tsresol: int | None = None, tsoffset: int = 0) -> bytes:
    opts = b""
    if tsresol is not None:
        opts += opt(order, 9, bytes([tsresol]))
    if tsoffset:
        opts += opt(order, 14, struct.pack(order + "q", tsoffset))
    if opts:
        opts += opt(order, 0, b"")
    return block(order, 1, struct.pack(order + "HHI", link, 0, 0) + opts)


def epb(order: str, iface: int, ts: int, data: bytes) -> bytes:
    head = struct.pack(order + "IIIII", iface, ts >> 32, ts & 0xFFFFFFFF, len(data), len(data))
    return block(order, 6, head + data)


ETH = bytes(12) + b"\x08\x00" + bytes(20)  # Ethernet + a bare (zero) IPv4-ish header
RAWIP = b"\x45" + bytes(19)


def feature_file() -> tuple[bytes, list[int], list[int]]:
    """Two sections (little then big endian), interfaces with us, ns, 2^-20 and 10^-3
    resolutions and an offset, SPB, obsolete PB, ISB, NRB and an unknown block. Returns the
    file and the expected ns timestamps and link types."""
    le, be = "<", ">"
    f = shb(le) + idb(le, 1) + idb(le, 101, tsresol=9) + idb(le, 1, tsresol=0x94, tsoffset=10)
    f += epb(le, 0, 1_700_000_000_123_456, ETH)
    f += epb(le, 1, 1_700_000_000_123_456_789, RAWIP)
    f += block(le, 5, struct.pack(le + "III", 0, 0, 0))  # ISB
    f += block(le, 0x99, b"unknown")  # a block type nobody defined
    f += epb(le, 2, (1_700_000_000 << 20) + (1 << 19), ETH)  # 2^-20 s units: .5 s
    f += block(le, 4, b"\0\0\0\0")  # NRB (empty)
    f += shb(be) + idb(be, 113, tsresol=3) + idb(be, 1, tsresol=3)
    f += block(be, 3, struct.pack(be + "I", 16 + 14) + bytes(16) + b"\x08\x00" + bytes(12))
    f += epb(be, 0, 1_700_000_001_500, bytes(16))
    # obsolete Packet Block (pcapng §4.3... Appendix A): iface u16, drops u16, ts, lens
    t = 1_700_000_002_000
    pb = struct.pack(be + "HHIIII", 1, 0, t >> 32, t & 0xFFFFFFFF, 16, 16) + bytes(16)
    f += block(be, 2, pb)
    ts = [
        1_700_000_000_123_456_000,
        1_700_000_000_123_456_789,
        1_700_000_010_500_000_000,
        1_700_000_010_500_000_000,  # SPB: no timestamp, the previous one kept
        1_700_000_001_500_000_000,
        1_700_000_002_000_000_000,
    ]
    return f, ts, [1, 101, 1, 113, 113, 1]


def test_pcapng_features(tmp_path: Path) -> None:
    data, ts, links = feature_file()
    path = tmp_path / "features.pcapng"
    path.write_bytes(data)
    frames, got_ts, got, got_links, cap = read_all(path)
    assert frames == [1, 2, 3, 4, 5, 6]
    assert got_ts == ts
    assert got_links == links
    assert [len(d) for d in got] == [34, 20, 34, 30, 16, 16]
    assert cap.skipped == {  # type: ignore[attr-defined]
        "pcapng_block_isb": 1,
        "pcapng_block_unknown": 1,
        "pcapng_block_nrb": 1,
    }
    assert not cap.findings  # type: ignore[attr-defined]
    if TSHARK:  # the oracle reads the same frames with the same times (SPB: it has none)
        tt = tshark_times(path)
        assert tt == [*ts[:3], None, *ts[4:]]


# -- damaged files -----------------------------------------------------------------------


@pytest.mark.corpus
@pytest.mark.parametrize("name", ["goffinet__SIP-SDP-Example.pcap", "ndpi__sip_hello.pcapng"])
def test_cut_at_every_byte_of_last_two_records(tmp_path: Path, name: str) -> None:
    src = corpus(name).read_bytes()
    hdr = 16 if name.endswith(".pcap") else 28
    with open_capture(str(corpus(name))) as cap:
        chunks = list(cap.chunks())
        offs = np.concatenate([c.offset for c in chunks]).tolist()
        lens = np.concatenate([c.caplen for c in chunks]).tolist()
        data = [c.data(i) for c in chunks for i in range(len(c))]
    if hdr == 16:
        ends = {o + n for o, n in zip(offs, lens, strict=True)}
    else:  # every block boundary (EPBs may carry options)
        ends, off = set(), 0
        while off < len(src):
            off += struct.unpack_from("<I", src, off + 4)[0]
            ends.add(off)
    path = tmp_path / "cut"
    for cut in range(offs[-2] - hdr, len(src)):
        path.write_bytes(src[:cut])
        _, _, d, _, cap = read_all(path)
        assert len(d) >= len(data) - 2
        assert d == data[: len(d)]
        codes = [x.code for x in cap.findings]  # type: ignore[attr-defined]
        assert codes == ([] if cut in ends else ["ingest.truncated_record"]), cut


@pytest.mark.corpus
def test_corrupt_caplen_resyncs(tmp_path: Path) -> None:
    src = bytearray(corpus("goffinet__SIP-Call-with-Proxy-Server.pcap").read_bytes())
    _frames, _, data, _, _ = read_all(corpus("goffinet__SIP-Call-with-Proxy-Server.pcap"))
    off = 24
    for d in data[:4]:
        off += 16 + len(d)
    struct.pack_into("<I", src, off + 8, 0xFFFFFF00)  # record 5: impossible caplen
    path = tmp_path / "corrupt.pcap"
    path.write_bytes(bytes(src))
    _f, _, d, _, cap = read_all(path)
    codes = [x.code for x in cap.findings]  # type: ignore[attr-defined]
    assert codes == ["ingest.corrupt_record"]
    assert d[:4] == data[:4]
    assert d[4:] == data[5:]  # resynchronised on record 6


@pytest.mark.corpus
def test_corrupt_pcapng_block_length_resyncs(tmp_path: Path) -> None:
    name = "goffinet__sip-register-wrong_password-401-403-401-403.pcapng"
    src = bytearray(corpus(name).read_bytes())
    _, _, data, _, _ = read_all(corpus(name))
    # walk blocks to the 3rd EPB and break its length field
    off, seen = 0, 0
    while True:
        btype, blen = struct.unpack_from("<II", src, off)
        if btype == 6:
            seen += 1
            if seen == 3:
                break
        off += blen
    struct.pack_into("<I", src, off + 4, 7)  # not a multiple of 4
    path = tmp_path / "corrupt.pcapng"
    path.write_bytes(bytes(src))
    _, _, d, _, cap = read_all(path)
    assert [x.code for x in cap.findings] == ["ingest.corrupt_record"]  # type: ignore[attr-defined]
    assert d == data[:2] + data[3:]


@pytest.mark.corpus
def test_gzip_and_damaged_gzip(tmp_path: Path) -> None:
    src = corpus("goffinet__sip-2phones-B2BUA-Asterisk.pcapng")
    gz = tmp_path / "capture.bin"  # detected by magic, not by name
    gz.write_bytes(gzip.compress(src.read_bytes()))
    f0, t0, d0, _, _ = read_all(src)
    f1, t1, d1, _, cap = read_all(gz)
    assert (f1, t1, d1) == (f0, t0, d0)
    assert cap.format == "pcapng+gzip"  # type: ignore[attr-defined]
    cut = tmp_path / "cut.gz"
    cut.write_bytes(gz.read_bytes()[: gz.stat().st_size // 2])
    f2, _, d2, _, cap2 = read_all(cut)
    codes = {x.code for x in cap2.findings}  # type: ignore[attr-defined]
    assert "ingest.truncated_gzip" in codes
    assert 0 < len(f2) < len(f0) and d2 == d0[: len(d2)]


@pytest.mark.corpus
def test_stdin(tmp_path: Path) -> None:
    src = corpus("goffinet__SIP-SDP-Example.pcap")
    code = (
        "from sipflow.ingest.pcap import open_capture\n"
        "c = open_capture('-')\n"
        "print(c.format, sum(len(ch) for ch in c.chunks()))\n"
    )
    for payload in (src.read_bytes(), gzip.compress(src.read_bytes())):
        out = subprocess.run(
            [sys.executable, "-c", code], input=payload, capture_output=True, check=True
        )
        assert out.stdout.split()[1] == b"7"


@pytest.mark.parametrize(
    "content",
    [b"", b"hello world, not a capture", b"\xd4\xc3\xb2\xa1\x02\x00", b"GMBU" + bytes(100)],
)
def test_not_a_capture(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "x.pcap"
    path.write_bytes(content)
    with pytest.raises(InputError):
        open_capture(str(path))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot open"):
        open_capture(str(tmp_path / "nope.pcap"))


def test_header_only_pcap_has_no_records(tmp_path: Path) -> None:
    path = tmp_path / "empty.pcap"
    path.write_bytes(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
    with open_capture(str(path)) as cap:
        assert list(cap.chunks()) == []
        assert cap.findings == []


def test_chunk_columns_are_int64(tmp_path: Path) -> None:
    data, _, _ = feature_file()
    path = tmp_path / "f.pcapng"
    path.write_bytes(data)
    with open_capture(str(path)) as cap:
        ch = next(iter(cap.chunks()))
        for col in (ch.frame, ch.ts, ch.link_type, ch.offset, ch.caplen, ch.origlen):
            assert col.dtype == np.int64


def _mapped_rss_kb(path: Path) -> int | None:
    """Resident kB of this process's mappings of ``path`` (Linux /proc/self/smaps)."""
    smaps = Path("/proc/self/smaps")
    if not smaps.exists():
        return None
    total, inside = 0, False
    target = str(path.resolve())
    for line in smaps.read_text().splitlines():
        head = line.split()
        if head and "-" in head[0] and len(head) >= 5:  # a mapping's first line
            inside = len(head) >= 6 and head[5] == target
        elif inside and head and head[0] == "Rss:":
            total += int(head[1])
    return total


@pytest.mark.parametrize(
    "name", ["goffinet__test_voip.pcap.pcapng", "goffinet__branch-scenario-sipp.pcapng"]
)
def test_consumed_pages_are_released(name: str) -> None:
    """Pages of chunks already handed out are dropped from RSS, so memory stays flat with
    the file size (without it every touched page stays resident: ~100% of the file). A
    chunk read again afterwards still gives the file's bytes (its pages fault back in)."""
    path = corpus(name)
    size_kb = path.stat().st_size // 1024
    most = 0
    with open_capture(str(path)) as cap:
        chunks = []
        for ch in cap.chunks(size=500):
            for i in range(len(ch)):
                ch.data(i)  # touch every record's pages
            chunks.append(ch)
            rss = _mapped_rss_kb(path)
            if rss is None:
                pytest.skip("no /proc/self/smaps on this system")
            most = max(most, rss)
        assert size_kb > 2000
        # the kernel maps pages around a fault in blocks, so some slack over a chunk
        assert most < size_kb / 2, f"{most} kB of a {size_kb} kB capture were resident"
        assert cap._released > (size_kb - 4) * 1024
        raw = path.read_bytes()
        first = chunks[0]
        for i in range(len(first)):
            off, n = int(first.offset[i]), int(first.caplen[i])
            assert first.data(i) == raw[off : off + n]
