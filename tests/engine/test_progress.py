"""Options.progress: ProgressEvents at chunk granularity, files done / total at the end."""

from __future__ import annotations

import itertools
import math
import struct
from pathlib import Path

import pytest

import sipflow
from sipflow.engine.local import SourceResult, source_messages
from sipflow.engine.progress import ProgressEvent, ProgressTracker
from sipflow.ingest.pcap import CHUNK_RECORDS
from sipflow.ingest.types import SourceStats

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "samples" / "pcaps" / "sipp_uac_uas_udp_mixed.pcap"
REGEN = REPO / "samples" / "pcaps" / "regen_basic.pcap"
LOG = REPO / "samples" / "pcaps" / "regen_basic.log"


def _rtp_pcap(path: Path, records: int) -> None:
    """A classic pcap of ``records`` Ethernet/IPv4/UDP packets carrying RTP headers."""
    eth = b"\x00\x00\x00\x00\x00\x02" + b"\x00\x00\x00\x00\x00\x01" + b"\x08\x00"
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)]
    for i in range(records):
        rtp = struct.pack("!BBHII", 0x80, 0, i & 0xFFFF, i * 160, 0x1234) + b"\xff" * 20
        udp = struct.pack("!HHHH", 40000, 40002, 8 + len(rtp), 0) + rtp
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0,
                         bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2]))  # fmt: skip
        frame = eth + ip + udp
        ts = 1_700_000_000 * 1_000_000 + i * 20_000
        out.append(struct.pack("<IIII", ts // 1_000_000, ts % 1_000_000, len(frame), len(frame)))
        out.append(frame)
    path.write_bytes(b"".join(out))


def _check(events: list[ProgressEvent], trace: sipflow.Trace) -> None:
    assert events, "no progress event"
    last = events[-1]
    assert last.finished and last.files_done == last.files_total == len(trace.sources)
    assert last.packets == sum(s.frames for s in trace.sources) > 0
    assert last.bytes == sum(s.bytes for s in trace.sources) > 0
    for a, b in itertools.pairwise(events):  # nothing goes backwards
        assert a.files_done <= b.files_done and a.packets <= b.packets and a.bytes <= b.bytes
        assert a.elapsed_s <= b.elapsed_s


def test_events_in_this_process() -> None:
    events: list[ProgressEvent] = []
    trace = sipflow.analyze([SAMPLE], sipflow.Options(progress=events.append))
    _check(events, trace)
    assert events[-1].bytes_total == SAMPLE.stat().st_size
    assert events[0].files_total == 1 and events[0].path == str(SAMPLE)


def test_events_for_captures_and_a_log() -> None:
    events: list[ProgressEvent] = []
    trace = sipflow.analyze([SAMPLE, LOG], sipflow.Options(progress=events.append))
    _check(events, trace)
    assert [e.files_done for e in events if e.path is not None][-1] == 2
    assert {e.path for e in events} >= {str(SAMPLE), str(LOG)}


def test_events_with_worker_processes() -> None:
    events: list[ProgressEvent] = []
    trace = sipflow.analyze([SAMPLE, REGEN], sipflow.Options(progress=events.append, jobs=2))
    _check(events, trace)
    assert events[-1].bytes_total == SAMPLE.stat().st_size + REGEN.stat().st_size


def test_no_callback_no_tracker() -> None:
    assert ProgressTracker.start([str(SAMPLE)], None) is None


@pytest.mark.timeout(120)
def test_one_event_per_chunk_not_per_packet(tmp_path: Path) -> None:
    """The ingest hook runs once per chunk of records: 2.2 chunks of RTP give 3 calls."""
    path = tmp_path / "rtp.pcap"
    records = 2 * CHUNK_RECORDS + CHUNK_RECORDS // 5
    _rtp_pcap(path, records)
    events: list[ProgressEvent] = []
    tracker = ProgressTracker([str(path)], events.append, min_interval_s=0.0)
    result = SourceResult(SourceStats(path=str(path)))
    (stream,) = tracker.attach([result], [source_messages(str(path), 0, result)])
    assert list(stream) == []  # RTP only: no SIP message
    chunks = math.ceil(records / CHUNK_RECORDS)
    assert tracker.sent == len(events) == chunks + 1  # one per chunk, one when done
    assert [e.packets for e in events[:chunks]] == [
        min((k + 1) * CHUNK_RECORDS, records) for k in range(chunks)
    ]
    assert events[-1].finished and events[-1].packets == result.stats.frames == records
    assert result.rtp.counts["rtp"] == records  # the records were decoded, not skipped


def test_chunk_events_are_throttled() -> None:
    events: list[ProgressEvent] = []
    tracker = ProgressTracker(["/nonexistent/a", "-"], events.append, min_interval_s=3600.0)
    stats = SourceStats(path="/nonexistent/a")
    hook = tracker.chunk_hook(0, stats)
    for _ in range(100):
        stats.frames += 10
        hook()
    assert len(events) == 1  # the first; the other 99 fell inside the interval
    tracker.finish()
    assert len(events) == 2 and events[-1].finished and events[-1].packets == 1000
    assert events[-1].bytes_total is None  # no size for a missing file or stdin


def test_an_unreadable_file_still_counts_as_done(tmp_path: Path) -> None:
    events: list[ProgressEvent] = []
    missing = tmp_path / "missing.pcap"
    trace = sipflow.analyze([SAMPLE, missing], sipflow.Options(progress=events.append))
    assert trace.unreadable == [str(missing)]
    _check(events, trace)
    assert events[-1].bytes_total is None  # a missing file has no size


@pytest.mark.timeout(120)
def test_events_on_dask() -> None:
    distributed = pytest.importorskip(
        "distributed", reason="dask.distributed is not installed (pip install 'sipflow[dask]')"
    )
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    )
    try:
        events: list[ProgressEvent] = []
        opts = sipflow.Options(
            engine="dask", scheduler=cluster.scheduler_address, progress=events.append
        )
        trace = sipflow.analyze([SAMPLE, REGEN], opts)
    finally:
        cluster.close()
    _check(events, trace)
