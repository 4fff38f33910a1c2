"""The Parquet store (sipflow.store): round trip, partitions by day, readers, the CLI."""

from __future__ import annotations

import subprocess
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest
from engine.test_pool import SAMPLE, rotate
from peers.sipflow_cli import sipflow_executable

from sipflow.api import Options, analyze
from sipflow.store import TABLES, StoreError, is_store, read_document, read_table, write_store
from sipflow.store.parquet import day_of
from sipflow.trace import Trace

ds = pytest.importorskip("pyarrow.dataset", reason="pyarrow is not installed (sipflow[parquet])")

FRAMES = {
    "messages": "messages",
    "transactions": "transactions",
    "dialogs": "dialogs",
    "calls": "calls",
    "streams": "rtp_streams",
    "findings": "findings",
}


@pytest.fixture(scope="module")
def rotated(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    files: list[str] = rotate(SAMPLE, tmp_path_factory.mktemp("rotated"), 8)
    return files


@pytest.fixture(scope="module")
def trace(rotated: list[str]) -> Trace:
    return analyze(rotated, Options(jobs=2))


def test_round_trip_equals_direct_analysis(trace: Trace, tmp_path: Path) -> None:
    rows = write_store(trace, tmp_path / "store")
    assert is_store(tmp_path / "store")
    assert read_document(tmp_path / "store") == trace.to_dict()
    for table in TABLES:
        assert (
            rows[table]
            == len(getattr(trace, FRAMES[table]))
            == read_table(tmp_path / "store", table).num_rows
        )


@pytest.mark.parametrize(
    "name",
    [
        "heplify__sip_ipv4_tcp.pcap",  # TCP, RTP/RTCP
        "goffinet__REGISTER-Request.pcap",  # no call: empty tables
        "goffinet__sip-2phones-B2BUA-Asterisk.pcapng",  # B2BUA legs, re-INVITEs
        "goffinet__private-test-sip.pcapng",  # fragments, 483 loop, many findings
        "heplify__erspan_sip_ipv4_udp.pcapng",  # bytes that are not UTF-8 in headers
    ],
)
def test_corpus_capture_round_trip(shared_dir: Path, tmp_path: Path, name: str) -> None:
    capture = shared_dir / "corpus" / "pcaps" / name
    if not capture.is_file():
        pytest.skip(f"{capture} is absent")
    direct = analyze([str(capture)], Options())
    rows = write_store(direct, tmp_path / "s")
    assert read_document(tmp_path / "s") == direct.to_dict()
    assert rows["streams"] == len(direct.rtp_stream_list)
    assert rows["calls"] == len(direct.to_dict()["calls"])
    assert read_table(tmp_path / "s", "messages").num_rows == direct.sip_messages


def test_partitioned_by_day_and_read_by_pandas(trace: Trace, tmp_path: Path) -> None:
    import pandas as pd

    write_store(trace, tmp_path / "store")
    days = sorted(p.name for p in (tmp_path / "store" / "messages").iterdir())
    want = sorted({f"day={day_of(m.ts)}" for m in trace.message_list})
    assert days == want
    calls = pd.read_parquet(tmp_path / "store" / "calls")  # hive partitions, read directly
    calls = calls.sort_values("seq")
    assert list(calls["call_id"]) == [c.call_ids[0] for c in trace.call_records]
    assert [str(d) for d in calls["day"]] == [day_of(c.start) for c in trace.call_records]
    msgs = ds.dataset(tmp_path / "store" / "messages", partitioning="hive").to_table()
    assert sorted(msgs.column("raw").to_pylist()) == sorted(m.raw for m in trace.message_list)
    cols = msgs.to_pydict()
    requests = Counter(
        m for m, k in zip(cols["method"], cols["kind"], strict=True) if k == "request"
    )
    assert requests == Counter(trace.counts_requests)


def test_day_of() -> None:
    ns = int(datetime(2026, 3, 1, 23, 59, 59, tzinfo=UTC).timestamp()) * 1_000_000_000
    assert day_of(ns) == "2026-03-01" and day_of(ns + 1_000_000_000) == "2026-03-02"
    assert day_of(None) == "none"


def test_rewrite_replaces_and_foreign_directory_is_refused(trace: Trace, tmp_path: Path) -> None:
    write_store(trace, tmp_path / "s")
    write_store(trace, tmp_path / "s")  # replaced, not appended
    assert read_table(tmp_path / "s", "calls").num_rows == len(trace.call_records)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "keep.txt").write_text("mine")
    with pytest.raises(StoreError, match="not a sipflow store"):
        write_store(trace, tmp_path / "other")
    assert (tmp_path / "other" / "keep.txt").read_text() == "mine"
    with pytest.raises(StoreError):
        read_document(tmp_path / "other")
    with pytest.raises(StoreError, match="no table"):
        read_table(tmp_path / "s", "nope")


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*sipflow_executable(), *args], capture_output=True, text=True, timeout=120
    )


def test_cli_index_then_analyze_store_prints_the_same(rotated: list[str], tmp_path: Path) -> None:
    store = tmp_path / "store"
    made = _cli("index", *rotated, "-o", str(store))
    assert made.returncode == 0, made.stderr
    assert "calls 5" in made.stderr
    for fmt in ("json", "table", "csv"):
        direct = _cli("analyze", *rotated, "-f", fmt)
        stored = _cli("analyze", str(store), "-f", fmt)
        assert direct.returncode == stored.returncode == 0
        assert stored.stdout == direct.stdout
    refused = _cli("index", *rotated, "-o", str(Path(rotated[0]).parent))
    assert refused.returncode == 2 and "not a sipflow store" in refused.stderr
