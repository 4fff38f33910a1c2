"""The CLI's progress bar: drawn on a terminal (a real pseudo-terminal here), silent on pipes."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest
from report_helpers import REGEN, REPO, SAMPLE

from sipflow.engine.progress import ProgressEvent
from sipflow.report.progress_view import analysis_progress, bar_position, status_line

CLI = [sys.executable, "-m", "sipflow.cli"]
B2BUA = REGEN / "regen_basic.pcap"


def _event(**kw: object) -> ProgressEvent:
    base: dict[str, object] = dict(
        files_done=1, files_total=3, packets=311_300, bytes=84_200_000, bytes_total=None,
        elapsed_s=2.0,
    )  # fmt: skip
    base.update(kw)
    return ProgressEvent(**base)  # type: ignore[arg-type]


def test_status_line_and_bar() -> None:
    e = _event()
    assert status_line(e) == "files 1/3 · 311,300 packets · 84.2 MB · 155,650 pkt/s"
    assert bar_position(e) == (1.0, 3.0)  # no sizes: files
    sized = _event(bytes_total=100_000_000)
    assert bar_position(sized) == (84_200_000.0, 100_000_000.0)
    done = _event(files_done=3, bytes=90, bytes_total=100)  # headers: bytes < file size
    assert bar_position(done) == (100.0, 100.0)


def test_no_bar_when_not_a_terminal(tmp_path: Path) -> None:
    with (tmp_path / "err").open("w") as f, analysis_progress(stream=f) as progress:
        assert progress is None


@pytest.mark.parametrize(
    "args",
    [
        ["analyze", str(SAMPLE), str(B2BUA), "-f", "json"],
        ["analyze", str(SAMPLE), str(B2BUA), "-j", "2", "-f", "csv"],
        ["cdr", str(SAMPLE), "--summary"],
        ["ladder", str(B2BUA), "--call", "0"],
    ],
)
def test_cli_quiet_on_a_pipe(args: list[str]) -> None:
    run = subprocess.run(
        [*CLI, *args], capture_output=True, text=True, timeout=120, cwd=REPO, check=False
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout and run.stderr == ""  # stderr is a pipe: no progress text at all


def _on_terminal(args: list[str], timeout: float = 120.0) -> tuple[int, str]:
    """Run the CLI with stderr on a pseudo-terminal; what the terminal received."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [*CLI, *args], stdout=subprocess.DEVNULL, stderr=slave, stdin=subprocess.DEVNULL, cwd=REPO
    )
    os.close(slave)
    seen = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.2)
        if ready:
            try:
                data = os.read(master, 65536)
            except OSError:  # the child closed the terminal (Linux: EIO)
                break
            if not data:
                break
            seen += data
        elif proc.poll() is not None:
            break
    os.close(master)
    return proc.wait(timeout=10), seen.decode("utf-8", errors="replace")


@pytest.mark.timeout(180)
@pytest.mark.parametrize("jobs", ["1", "2"])  # in this process; worker processes
def test_cli_bar_on_a_terminal(jobs: str) -> None:
    code, text = _on_terminal(["analyze", str(SAMPLE), str(B2BUA), "-j", jobs, "-f", "json"])
    assert code == 0
    assert "analysing" in text
    assert "files 2/2" in text  # the last event: every file done
    assert "packets" in text and "pkt/s" in text
    assert "sipflow: files" not in text  # the pool's plain meter gives way to the bar
