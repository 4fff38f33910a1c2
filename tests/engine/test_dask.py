"""The per-file stage on a real dask.distributed LocalCluster (2 worker processes)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from engine.test_pool import SAMPLE, comparable, editcap, rotate

from sipflow.api import Options, analyze
from sipflow.engine.dask_engine import EngineError

distributed = pytest.importorskip(
    "distributed", reason="dask.distributed is not installed (pip install 'sipflow[dask]')"
)


@pytest.fixture(scope="module")
def scheduler() -> Iterator[str]:
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    )
    try:
        yield cluster.scheduler_address
    finally:
        cluster.close()


@pytest.mark.timeout(120)
def test_local_parallel_and_dask_equal_single_process(
    scheduler: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    files = rotate(SAMPLE, tmp_path_factory.mktemp("rotated"), 8)
    single = analyze(files, Options())
    parallel = analyze(files, Options(jobs=2))
    on_dask = analyze(files, Options(engine="dask", scheduler=scheduler))
    assert comparable(on_dask) == comparable(single) == comparable(parallel)
    assert on_dask.message_list == single.message_list
    whole = analyze([str(SAMPLE)], Options())
    assert [c.messages for c in on_dask.call_records] == [c.messages for c in whole.call_records]


@pytest.mark.timeout(120)
def test_dask_overlapping_and_unreadable(scheduler: str, tmp_path: Path) -> None:
    first, second = tmp_path / "a.pcap", tmp_path / "b.pcap"
    editcap("-F", "pcap", "-r", SAMPLE, first, "1-30")
    editcap("-F", "pcap", "-r", SAMPLE, second, "20-45")
    files = [str(first), str(tmp_path / "missing.pcap"), str(second)]
    single = analyze(files, Options())
    on_dask = analyze(files, Options(engine="dask", scheduler=scheduler))
    assert comparable(on_dask) == comparable(single)
    assert sum(s.duplicates for s in on_dask.sources) > 0
    assert on_dask.unreadable == [str(tmp_path / "missing.pcap")]


def test_dask_without_scheduler_is_a_clear_error() -> None:
    with pytest.raises(EngineError, match="--scheduler"):
        analyze([str(SAMPLE)], Options(engine="dask"))
