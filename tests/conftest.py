"""Fixtures shared by all tests: where ../shared is, and running the sipflow CLI."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO / ".." / "shared"
CORPUS = SHARED / "corpus"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """../shared beside the repository; tests that need it skip when it is absent."""
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} is absent (shared corpus not available on this machine)")
    return SHARED.resolve()


@dataclass(frozen=True)
class CliResult:
    """One `sipflow analyze ... --format json` run."""

    returncode: int
    stdout: str
    stderr: str

    @property
    def json(self) -> dict[str, object]:
        data: dict[str, object] = json.loads(self.stdout)
        return data

    @property
    def traceback(self) -> bool:
        return "Traceback (most recent call last)" in self.stderr + self.stdout


def sipflow_executable() -> list[str]:
    exe = Path(sys.executable).with_name("sipflow")
    if exe.exists():
        return [str(exe)]
    found = shutil.which("sipflow")
    return [found] if found else [sys.executable, "-m", "sipflow.cli"]


def run_sipflow(*args: str | Path, timeout: float = 120) -> CliResult:
    """Run `sipflow analyze ARGS --format json` in a subprocess (the public interface)."""
    argv = [*sipflow_executable(), "analyze", *map(str, args), "--format", "json"]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    return CliResult(r.returncode, r.stdout, r.stderr)


@pytest.fixture(scope="session")
def sipflow_cli() -> Callable[..., CliResult]:
    return run_sipflow
