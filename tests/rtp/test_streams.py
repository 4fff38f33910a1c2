"""RTP stream statistics against tshark, across chunk boundaries, and on edited captures."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from rtp_oracle import PCAPS, TSHARK, read_pcap, tshark_streams, write_pcap

from sipflow.ingest import pcap as pcap_mod
from sipflow.ingest.capture import read_capture
from sipflow.ingest.types import SourceStats
from sipflow.rtp.columns import seq_diff, ts_diff
from sipflow.rtp.streams import RtpCollector, RtpStream, segmented_iir

REPO = Path(__file__).resolve().parents[2]
LOAD = REPO / "benchmarks" / "out" / "load.pcap"


def collect(path: Path) -> tuple[list[RtpStream], RtpCollector]:
    col = RtpCollector()
    for _ in read_capture(str(path), 0, SourceStats(str(path)), [], col):
        pass
    return col.finish(), col


def by_key(streams: list[RtpStream]) -> dict[tuple[str, int, str, int, int], RtpStream]:
    return {(s.src.ip, s.src.port, s.dst.ip, s.dst.port, s.ssrc): s for s in streams}


def close(ours: float, theirs: float) -> bool:
    """Within 1 % (tshark prints 3 decimals: half a unit of the last digit is allowed)."""
    return abs(ours - theirs) <= max(0.01 * abs(theirs), 0.0006)


# Streams where tshark's jitter/delta definitions differ from RFC 3550 §A.8 as we apply
# it (docs/media-quality.md): tshark leaves comfort noise (PT 13) and telephone-event
# packets out of its jitter and has no clock for an unannounced dynamic type.
SPECIAL = ("CN", "telephone-event", "rtpevent")

CORPUS = [
    "heplify__rtp_rtcp_sip_ipv4_udp.pcap",
    "goffinet__RTP-Protocol.pcap",
    "sipnab__SIP_DTMF2.cap",
    "voipshark__SIP-RTP-Normal_Call_two_parties.pcap",
    "sipnab__speech_8k_ulaw.pcap",
    "sipp__g711a.pcap",
    "sipp__dtmf_2833_1.pcap",
]


def compare(path: Path) -> int:
    ours = by_key(collect(path)[0])
    theirs = {t.key: t for t in tshark_streams(path)}
    assert set(ours) == set(theirs)
    for key, t in theirs.items():
        s = ours[key]
        assert (s.packets, s.lost) == (t.packets, t.lost), key
        if any(x in t.payload for x in SPECIAL):
            continue
        assert close(s.max_delta_ms, t.max_delta), (key, s.max_delta_ms, t.max_delta)
        assert close(s.max_jitter_ms, t.max_jitter), (key, s.max_jitter_ms, t.max_jitter)
        assert close(s.mean_jitter_ms, t.mean_jitter), (key, s.mean_jitter_ms, t.mean_jitter)
    return len(theirs)


@pytest.mark.corpus
@pytest.mark.skipif(TSHARK is None, reason="tshark is not installed")
@pytest.mark.parametrize("name", CORPUS)
def test_corpus_against_tshark(name: str) -> None:
    path = PCAPS / name
    if not path.exists():
        pytest.skip(f"{path} is absent (shared corpus not available)")
    assert compare(path) >= 1


@pytest.mark.skipif(TSHARK is None, reason="tshark is not installed")
def test_load_capture_against_tshark() -> None:
    if not LOAD.exists():
        pytest.skip("benchmarks/out/load.pcap not generated (make bench)")
    assert compare(LOAD) == 4600  # 2,300 answered calls x 2 directions, one SSRC for all


def test_chunk_boundaries_change_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """State carried across chunks: 7-record chunks give the very same statistics."""
    path = PCAPS / "heplify__rtp_rtcp_sip_ipv4_udp.pcap"
    if not path.exists():
        pytest.skip("shared corpus absent")
    whole = collect(path)[0]
    original = pcap_mod.Capture.chunks

    def small(self: pcap_mod.Capture, size: int = 7) -> object:
        return original(self, 7)

    monkeypatch.setattr(pcap_mod.Capture, "chunks", small)
    cut = collect(path)[0]
    assert [s.id for s in cut] == list(range(len(whole)))
    for a, b in zip(cut, whole, strict=True):  # floats: summed in another order
        floats = ("max_jitter_ms", "mean_jitter_ms")
        assert replace(a, max_jitter_ms=0.0, mean_jitter_ms=0.0) == replace(
            b, max_jitter_ms=0.0, mean_jitter_ms=0.0
        )
        for f in floats:
            assert getattr(a, f) == pytest.approx(getattr(b, f), rel=1e-12)


# -- deterministic impairments on an edited copy of SIPp's g711a.pcap ---------------------


def reference_jitter(recs: list[tuple[int, int, bytes]], clock: int = 8000) -> list[float]:
    """RFC 3550 §A.8 as a plain loop (independent of the vectorised code), in ms."""
    out, j, prev = [], 0.0, None
    for sec, usec, data in recs:
        rtp = data[42:]
        arr, rts = sec * 1_000_000 + usec, int.from_bytes(rtp[4:8], "big")  # exact µs
        if prev is not None:
            d = (arr - prev[0]) * clock / 1e6 - ts_diff(rts, prev[1])
            j += (abs(d) - j) / 16
        out.append(j * 1000 / clock)
        prev = (arr, rts)
    return out


@pytest.fixture(scope="module")
def impaired(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list]:
    src = PCAPS / "sipp__g711a.pcap"
    if not src.exists():
        pytest.skip("shared corpus absent")
    head, recs = read_pcap(src)
    recs = list(recs)
    (s0, u0, d0), (s1, u1, d1) = recs[150], recs[151]
    recs[150], recs[151] = (s0, u0, d1), (s1, u1, d0)  # reordered: times stay, packets swap
    sec, usec, data = recs[120]
    recs[120] = (sec, usec + 9000, data)  # 9 ms late (still before the next packet)
    dup = recs[100]
    recs.insert(101, (dup[0], dup[1] + 500, dup[2]))  # a duplicate 0.5 ms later
    for i in (60, 11, 10):  # three lost packets
        del recs[i]
    path = tmp_path_factory.mktemp("impaired") / "impaired.pcap"
    write_pcap(path, head, recs)
    return path, recs


def test_injected_loss_reorder_duplicate_delay(impaired: tuple[Path, list]) -> None:
    path, recs = impaired
    (s,) = collect(path)[0]
    assert s.packets == 234  # 236 - 3 lost + 1 duplicate
    assert s.expected == 236
    assert s.lost == 2  # RFC 3550 §A.3: expected - received, the duplicate counts
    assert s.duplicates == 1
    assert s.out_of_order == 1
    ref = reference_jitter(recs)
    assert s.max_jitter_ms == pytest.approx(max(ref), rel=1e-9)
    assert s.mean_jitter_ms == pytest.approx(sum(ref) / (len(ref) - 1), rel=1e-9)
    if TSHARK:
        (t,) = tshark_streams(path)
        assert (t.packets, t.lost) == (s.packets, s.lost)
        assert close(s.max_jitter_ms, t.max_jitter)


def reference_order(seqs: list[int]) -> tuple[int, int]:
    """(duplicates, out of order) as a plain loop: extended numbers (RFC 3550 §A.1) from
    packet to packet; a number seen before is a duplicate, one below the highest is late."""
    seen: set[int] = set()
    dups = late = 0
    ext = highest = seqs[0]
    for i, seq in enumerate(seqs):
        ext = seq if i == 0 else ext + seq_diff(seq, ext & 0xFFFF)
        if ext in seen:
            dups += 1
        elif ext < highest:
            late += 1
        seen.add(ext)
        highest = max(highest, ext)
    return dups, late


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 11, 64, 0])
def test_duplicates_and_late_packets_whatever_the_chunks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, size: int
) -> None:
    """Duplicates and late packets against a plain loop, with chunk sizes that put them
    first in a chunk, inside one, and right after a late packet (0: the default size)."""
    src = PCAPS / "sipp__g711a.pcap"
    if not src.exists():
        pytest.skip("shared corpus absent")
    head, recs = read_pcap(src)
    order = list(range(len(recs)))  # edited from the end: indices are the original ones
    order[200:200] = [190, 199]  # a duplicate after a duplicate
    order[148:158] = [152, 153, 154, 155, 148, 149, 150, 151, 156, 157]  # four late in a row
    order[120:120] = [117, 110]  # duplicates of recent packets
    order[80:85] = [81, 82, 83, 84, 80, 83]  # 80 late, then a duplicate of 83
    sec, usec, _ = recs[0]
    out = [(sec, usec + 20_000 * i, recs[j][2]) for i, j in enumerate(order)]  # every 20 ms
    path = tmp_path / "order.pcap"
    write_pcap(path, head, out)
    if size:
        original = pcap_mod.Capture.chunks
        monkeypatch.setattr(pcap_mod.Capture, "chunks", lambda self, n=0: original(self, size))
    (s,) = collect(path)[0]
    seqs = [int.from_bytes(data[44:46], "big") for _, _, data in out]
    assert reference_order(seqs) == (5, 5)
    assert (s.duplicates, s.out_of_order) == (5, 5)
    assert s.packets == len(out)


def test_sequence_wrap_counted(tmp_path: Path) -> None:
    src = PCAPS / "sipp__g711a.pcap"
    if not src.exists():
        pytest.skip("shared corpus absent")
    head, recs = read_pcap(src)
    out = []
    for i, (sec, usec, data) in enumerate(recs):  # renumber from 65500: wraps once
        seq = (65500 + i) & 0xFFFF
        out.append((sec, usec, data[:44] + seq.to_bytes(2, "big") + data[46:]))
    del out[40]  # lost just before the wrap
    path = tmp_path / "wrap.pcap"
    write_pcap(path, head, out)
    (s,) = collect(path)[0]
    assert (s.seq_wraps, s.packets, s.expected, s.lost) == (1, 235, 236, 1)
    assert (s.first_seq, s.last_seq) == (65500, (65500 + 235) & 0xFFFF)


def test_wrap_helpers() -> None:
    assert seq_diff(0, 65535) == 1
    assert seq_diff(65535, 0) == -1
    assert ts_diff(5, 0xFFFFFFFF) == 6


def test_segmented_iir_matches_loop() -> None:
    import numpy as np

    rng = np.random.default_rng(7)
    x = rng.random(5000)
    seg = np.sort(rng.integers(0, 30, 5000))
    y = segmented_iir(x, seg, 15 / 16)
    ref, prev = np.empty_like(x), None
    for i in range(len(x)):
        ref[i] = x[i] + (15 / 16 * ref[i - 1] if i and seg[i] == seg[i - 1] else 0.0)
        prev = ref[i]
    assert prev is not None
    assert np.allclose(y, ref, rtol=1e-12, atol=1e-12)


def test_streams_in_first_packet_order_and_evolve_is_replace() -> None:
    """finish() numbers streams by their first frame (RtpCollector._finished); evolve()
    copies a stream as dataclasses.replace does, and refuses a field it does not have."""
    path = PCAPS / "sipnab__SIP_DTMF2.cap"
    if not path.exists():
        pytest.skip("shared corpus absent")
    streams = collect(path)[0]
    assert len(streams) >= 2
    assert [s.id for s in streams] == list(range(len(streams)))
    firsts = [s.first_frame for s in streams]
    assert firsts == sorted(firsts)
    s = streams[0]
    assert any(x.events for x in streams)  # kept in memory only: compare=False fields too
    changed = s.evolve(call=3, leg="a", events=((1, 2, 3, 4, 5, 6, b"x"),))
    assert changed == replace(s, call=3, leg="a") and changed.events[0][-1] == b"x"
    assert changed.srtp_keys == s.srtp_keys and s.call is None
    with pytest.raises(TypeError):
        s.evolve(no_such_field=1)
