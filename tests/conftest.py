"""Fixtures shared by all tests: where ../shared is, and running the sipflow CLI."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from peers.sipflow_cli import SHARED, CliResult, run_sipflow


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """../shared beside the repository; tests that need it skip when it is absent."""
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} is absent (shared corpus not available on this machine)")
    return SHARED.resolve()


@pytest.fixture(scope="session")
def sipflow_cli() -> Callable[..., CliResult]:
    return run_sipflow
