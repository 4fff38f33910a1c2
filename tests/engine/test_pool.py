"""The per-file stage in a process pool (engine.pool): same results as one process.

The captures are the SIPp sample split by editcap (a real capture rotated by a real tool),
so calls span file boundaries; overlapping slices repeat packets in two files.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from sipflow.api import Options, analyze
from sipflow.engine import pool
from sipflow.engine.pool import PackedMessages, Progress, pack_messages, resolve_jobs
from sipflow.trace import Trace

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "samples" / "pcaps" / "sipp_uac_uas_udp_mixed.pcap"
PER_FILE = 8  # packets per rotated file: 45 packets -> 6 files, calls cross boundaries


def editcap(*args: str | Path) -> None:
    if shutil.which("editcap") is None:
        pytest.skip("editcap (Wireshark tools) is not installed")
    subprocess.run(["editcap", *map(str, args)], check=True, capture_output=True, timeout=60)


def rotate(src: Path, out_dir: Path, per_file: int) -> list[str]:
    """``src`` split by editcap into files of ``per_file`` packets, in time order."""
    out_dir.mkdir(parents=True, exist_ok=True)
    editcap("-F", "pcap", "-c", str(per_file), src, out_dir / "part.pcap")
    return sorted(str(p) for p in out_dir.iterdir())


@pytest.fixture(scope="module")
def rotated(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    return rotate(SAMPLE, tmp_path_factory.mktemp("rotated"), PER_FILE)


def comparable(trace: Trace) -> dict[str, Any]:
    """The JSON document (everything the user sees)."""
    return trace.to_dict()


def test_rotated_files_parallel_equals_single_process(rotated: list[str]) -> None:
    assert len(rotated) == 6
    single = analyze(rotated, Options())
    parallel = analyze(rotated, Options(jobs=2))
    assert comparable(parallel) == comparable(single)
    assert [m.raw for m in parallel.message_list] == [m.raw for m in single.message_list]
    assert parallel.sip_messages == 35 and len(parallel.call_records) == 5


@pytest.mark.parametrize("transfer", ["parsed", "chunks", "raw"])
def test_both_transfers_give_the_same_messages(
    rotated: list[str], transfer: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pool, "TRANSFER", transfer)
    single = analyze(rotated, Options())
    parallel = analyze(rotated, Options(jobs=0))
    assert comparable(parallel) == comparable(single)
    assert parallel.message_list == single.message_list
    origins = [(m.origin, m.problems) for m in parallel.message_list]
    assert origins == [(m.origin, m.problems) for m in single.message_list]


def _global_frames(trace: Trace) -> dict[str, list[int]]:
    """Per Call-ID, the frames of its messages numbered as in the unsplit capture."""
    out: dict[str, list[int]] = defaultdict(list)
    for m in trace.message_list:
        assert m.origin is not None and m.call_id is not None
        out[m.call_id] += [m.origin.source * PER_FILE + f for f in m.origin.frames]
    return dict(out)


def test_a_call_split_across_files_is_one_call_with_all_its_messages(rotated: list[str]) -> None:
    whole = analyze([str(SAMPLE)], Options())
    split = analyze(rotated, Options(jobs=2))
    assert [c.call_ids for c in split.call_records] == [c.call_ids for c in whole.call_records]
    assert [c.messages for c in split.call_records] == [c.messages for c in whole.call_records]
    assert [c.outcome for c in split.call_records] == [c.outcome for c in whole.call_records]
    assert _global_frames(split) == _global_frames(whole)
    spanning = [
        cid
        for cid, frames in _global_frames(split).items()
        if len({(f - 1) // PER_FILE for f in frames}) > 1
    ]
    assert len(spanning) >= 3  # the test means something: calls do cross file boundaries


def test_overlapping_captures_count_each_packet_once(tmp_path: Path) -> None:
    first, second, overlap = tmp_path / "a.pcap", tmp_path / "b.pcap", tmp_path / "o.pcap"
    editcap("-F", "pcap", "-r", SAMPLE, first, "1-30")
    editcap("-F", "pcap", "-r", SAMPLE, second, "20-45")
    editcap("-F", "pcap", "-r", SAMPLE, overlap, "20-30")
    whole = analyze([str(SAMPLE)], Options())
    in_overlap = analyze([str(overlap)], Options()).sip_messages
    assert in_overlap > 0
    for jobs in (1, 2):
        both = analyze([str(first), str(second)], Options(jobs=jobs))
        assert both.sip_messages == whole.sip_messages
        assert sum(s.duplicates for s in both.sources) == in_overlap
        assert [c.call_ids for c in both.call_records] == [c.call_ids for c in whole.call_records]


def test_unreadable_files_become_findings_in_workers(rotated: list[str], tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pcap"
    garbage.write_bytes(b"\xd4\xc3\xb2\xa1 this is not a capture")
    files = [rotated[0], str(tmp_path / "missing.pcap"), str(garbage), rotated[1]]
    single = analyze(files, Options())
    parallel = analyze(files, Options(jobs=2))
    assert comparable(parallel) == comparable(single)
    assert parallel.unreadable == single.unreadable and len(parallel.unreadable) >= 1
    codes = [f.code for f in parallel.finding_list]
    assert "ingest.unreadable" in codes


def test_a_directory_is_its_files(rotated: list[str]) -> None:
    directory = str(Path(rotated[0]).parent)
    assert comparable(analyze([directory], Options(jobs=2))) == comparable(
        analyze(rotated, Options())
    )


def test_packed_messages_round_trip(rotated: list[str]) -> None:
    msgs = analyze(rotated, Options()).message_list
    by_source: dict[int, list[Any]] = defaultdict(list)
    for m in msgs:
        assert m.origin is not None
        by_source[m.origin.source].append(m)
    for source, group in by_source.items():
        packed = pack_messages(source, group)
        assert isinstance(packed, PackedMessages) and len(packed) == len(group)
        again = list(packed.unpack())
        assert again == group
        assert [m.origin for m in again] == [m.origin for m in group]


def test_failed_worker_becomes_a_finding() -> None:
    out = pool.failed_output("x.pcap", 3, RuntimeError("killed"))
    assert out.source == 3 and out.messages == []
    assert out.result.stats.skipped["worker_failed"] == 1
    (finding,) = out.result.findings
    assert finding.code == "engine.worker_failed" and "killed" in finding.message


def test_resolve_jobs() -> None:
    assert resolve_jobs(4, 2) == 2
    assert resolve_jobs(1, 10) == 1
    assert 1 <= resolve_jobs(0, 100) <= 100
    assert resolve_jobs(0, 0) == 1


def test_progress_line() -> None:
    written: list[str] = []
    meter = Progress(3, written.append)
    meter.done(100)
    meter.done(50)
    meter.close()
    assert written[0].startswith("\rsipflow: files 1/3, 100 packets")
    assert "files 2/3, 150 packets" in written[1] and "pkt/s" in written[1]
    assert written[-1] == "\n"
    silent = Progress.for_stderr(2, enabled=False)
    silent.done(1)  # nothing written, nothing raised


def test_the_local_engines_do_not_import_dask(rotated: list[str]) -> None:
    code = (
        "import sys; from sipflow.api import Options, analyze; "
        f"analyze({rotated!r}, Options(jobs=2)); "
        "print(sorted(m for m in ('dask', 'distributed', 'pandas') if m in sys.modules))"
    )
    run = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert run.stdout.strip() == "[]"


def test_unknown_engine_is_refused(rotated: list[str]) -> None:
    with pytest.raises(ValueError, match="unknown engine"):
        analyze(rotated, Options(engine="spark"))


def test_tls_keys_reach_the_workers(tmp_path: Path) -> None:
    """Several files on several processes decrypt with the keys given, as one process does
    (the key files are loaded in each worker: a loaded RSA key does not pickle; before,
    every file of such a run failed in its worker)."""
    pcaps = REPO.parent / "shared" / "corpus" / "pcaps"
    capture = pcaps / "voipshark__SIP-over-TLS-RTP-Normal_Call_two_parties.pcap"
    if not capture.exists():
        pytest.skip(f"{capture} is absent (shared corpus not available)")
    second = tmp_path / "rotated"
    files = [str(capture), *rotate(SAMPLE, second, 20)]  # a TLS file and plain UDP ones
    key = str(pcaps / "voipshark__default.key")
    docs = [
        comparable(analyze(files, Options(jobs=jobs, tls_keys=[key], split=False)))
        for jobs in (1, 2)
    ]
    assert docs[0] == docs[1]
    assert docs[1]["stats"]["transports"]["TLS"] == 48
    assert not [f for f in docs[1]["findings"] if f["code"] == "engine.worker_failed"]
    assert all(s["decrypted"] for s in docs[1]["tls_sessions"] if s["carries_sip"])
