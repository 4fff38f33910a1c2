"""Session fixtures for the real-peer suite: each scenario runs once, on first use."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from peers.harness import PeerError, Run, Scenario, missing_tools, run_scenario


@pytest.fixture(scope="session")
def peer_runner(tmp_path_factory: pytest.TempPathFactory) -> Callable[[Scenario], Run]:
    """Runs a scenario once per session and caches the result (or the failure)."""
    missing = missing_tools()
    if missing:
        pytest.skip(f"real peers not installed: {', '.join(missing)} (make deb)")
    if os.geteuid() != 0:
        pytest.skip("capturing on lo with tcpdump/dumpcap needs root")
    workdir: Path = tmp_path_factory.mktemp("peers")
    done: dict[str, Run | PeerError] = {}

    def run(sc: Scenario) -> Run:
        if sc.name not in done:
            try:
                done[sc.name] = run_scenario(sc, workdir)
            except PeerError as e:
                done[sc.name] = e
        result = done[sc.name]
        if isinstance(result, PeerError):
            pytest.fail(f"scenario {sc.name}: {result}")
        return result

    return run
