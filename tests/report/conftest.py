"""Fixtures for the report tests: shipped samples analysed once per session."""

from __future__ import annotations

import pytest
from report_helpers import FS_LOG, LONG_CALL, REGEN, SAMPLE, full

from sipflow.trace import Trace


@pytest.fixture(scope="session")
def sample_trace() -> Trace:
    return full(SAMPLE)


@pytest.fixture(scope="session")
def fs_trace() -> Trace:
    return full(FS_LOG)


@pytest.fixture(scope="session")
def long_trace() -> Trace:
    return full(LONG_CALL)


@pytest.fixture(scope="session")
def regen_traces() -> dict[str, Trace]:
    """Each shipped B2BUA sample (``regen_<scenario>.pcap`` / ``.log``), analysed once."""
    return {p.name: full(p) for p in sorted(REGEN.glob("regen_*")) if p.suffix in (".pcap", ".log")}
