"""Paths shared by the tests and a runner for the sipflow CLI (the public interface)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO / ".." / "shared"
CORPUS = SHARED / "corpus"


@dataclass(frozen=True)
class CliResult:
    """One `sipflow analyze ... --format json` run."""

    returncode: int
    stdout: str
    stderr: str

    @property
    def json(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.stdout)
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
